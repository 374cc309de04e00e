"""The tuner: search space table, a tiny end-to-end run, resume, read-back."""

import csv
import dataclasses
import json
import math
import os
import pathlib
import types

import pytest

from trainers.pipeline import benchmarking
from trainers.pipeline import configuration
from trainers.pipeline import experiment
from trainers.pipeline import inputs
from trainers.pipeline import tuning

SYNTHETIC = {"num_users": 120, "num_items": 40, "interactions_per_user": 8}


def _base(**overrides):
  config = configuration.ExperimentConfig(
      batch_size=16, epochs=1, embedding_dim=8, verbose=0,
      query_tower="id", validate_every=0,
      item_features=False, synthetic=dict(SYNTHETIC),
      sampler_options={"num_buckets": 256})
  for k, v in overrides.items():
    setattr(config, k, v)
  return config


def test_space_holds_shared_and_own_parameters():
  names = {p.name for p in tuning.space_for("cross_batch")}
  assert {"temperature", "learning_rate", "memory_size"} <= names
  assert "num_negatives" not in names
  assert {"num_resampled", "cache_size", "cache_weight"} <= {
      p.name for p in tuning.space_for("xir")}
  assert {"pool_size", "num_hard_negatives"} <= {
      p.name for p in tuning.space_for("adaptive_mixed")}
  assert {"pool_size", "beta", "num_hard_negatives",
          "temperature"} <= {p.name for p in tuning.space_for("two_stage")}
  # The CML hinge has no softmax (no temperature) and one negative per
  # pair (no K2); its margin is searched instead.
  hinge = {p.name for p in tuning.space_for("two_stage_triplet")}
  assert {"pool_size", "beta", "margin"} <= hinge
  assert not {"temperature", "num_hard_negatives"} & hinge
  assert "num_negatives" in {p.name for p in tuning.space_for("uniform")}


def test_config_fields_that_do_not_exist_are_skipped():
  space = tuning.SHARED_SPACE + (
      tuning.Param("no_such_field", "categorical", choices=(1, 2),
                   config_field=True),
      tuning.Param("some_future_option", "categorical", choices=("a",),
                   samplers=("in_batch",)))
  names = {p.name for p in tuning.space_for("in_batch", space)}
  assert "no_such_field" not in names
  assert "some_future_option" in names


def _fake_run(calls):
  """An `experiment.run` stand-in: metrics from the settings, no training."""

  def run(config, dataset=None):
    del dataset
    calls.append((config.sampler, config.eval_split))
    temperature = config.temperature
    value = max(0.0, 0.5 - abs(math.log(temperature / 0.1)) / 10)
    value += 0.001 * config.sampler_options.get("num_negatives", 0) / 256
    metrics = {"recall@10": value / 3, "recall@50": value,
               "recall@100": value * 1.5, "hr@10": value / 3,
               "ndcg@10": value / 4, "balance": 0.5,
               "cohorts": {c: {"hr@10": value / 3} for c in
                           ("head", "mid", "tail")},
               "step_seconds": 0.01, "eval_split": config.eval_split,
               "flags": dataclasses.asdict(config)}
    os.makedirs(config.output_dir, exist_ok=True)
    with open(os.path.join(config.output_dir, "metrics.json"), "w") as f:
      json.dump(metrics, f)
    return metrics

  return run


def _check_run(base, dataset, run_fn, calls, out, other="uniform",
               option="num_negatives"):
  """Tunes 2 samplers x 2 trials, 1 final seed; checks outputs and resume.

  `other` is the second sampler and `option` one of its own tuned options.
  """
  # An option the sampler does not read must not crash a trial.
  space = tuning.SHARED_SPACE + (
      tuning.Param("future_rule", "categorical", choices=("x", "y")),)
  samplers = ["in_batch_logq", other]
  result = tuning.tune(base, samplers, trials=2, output_dir=str(out),
                       final_seeds=1, dataset=dataset, run_fn=run_fn,
                       space=space)
  # 2 trials on validation per sampler, then 1 seed on test each, then
  # the two baselines on test.
  assert calls[:4] == [("in_batch_logq", "validation")] * 2 + [
      (other, "validation")] * 2
  assert calls[4:] == [("in_batch_logq", "test"), (other, "test"),
                       ("popularity_baseline", "test"),
                       ("ease_baseline", "test")]
  for name in ("trials.csv", "trials.md", "best.json", "results.csv",
               "results.md", "balance_vs_hr10.png", "cohort_hr10.png",
               "recall50_vs_step_time.png", "optuna.db"):
    assert (out / name).exists(), name
  with open(out / "trials.csv") as f:
    trials = list(csv.DictReader(f))
  assert len(trials) == 4
  assert {r["state"] for r in trials} == {"COMPLETE"}
  assert "param.temperature" in trials[0] and "param.future_rule" in trials[0]
  best = json.loads((out / "best.json").read_text())
  assert set(best) == set(samplers)
  assert option in best[other]["params"]
  assert best[other]["objective"] == "validation recall@50"
  assert best[other]["value"] == max(
      float(r["value"]) for r in trials if r["sampler"] == other)
  results = (out / "results.md").read_text()
  for label in samplers + ["popularity_baseline", "ease_baseline"]:
    assert "| %s |" % label in results
  assert "Best settings" in results
  assert {s["variant"] for s in result["summary"]} == set(
      samplers + ["popularity_baseline", "ease_baseline"])
  # The final runs were evaluated on test with the tuned settings.
  final = json.loads(
      (out / "runs" / other / "seed0" / "metrics.json").read_text())
  assert final["eval_split"] == "test"
  assert (final["flags"]["sampler_options"][option]
          == best[other]["params"][option])
  assert final["flags"]["temperature"] == best[other]["params"][
      "temperature"]

  # Re-running skips every finished trial and run.
  calls.clear()
  tuning.tune(base, samplers, trials=2, output_dir=str(out), final_seeds=1,
              dataset=dataset, run_fn=run_fn, space=space)
  assert not calls

  # The benchmark harness reads best.json back.
  tuned = benchmarking.load_best_settings(str(out / "best.json"))
  variants = benchmarking.with_best_settings(
      [benchmarking.parse_variant(other),
       benchmarking.parse_variant("pinned=%s:%s=3" % (other, option)),
       benchmarking.parse_variant("in_batch")], tuned)
  config = benchmarking.apply_variant(base, variants[0], 0)
  assert (config.sampler_options[option]
          == best[other]["params"][option])
  assert config.learning_rate == best[other]["params"]["learning_rate"]
  assert variants[1].overrides[option] == 3  # own override wins
  assert variants[1].overrides["temperature"] == best[other]["params"][
      "temperature"]
  assert variants[2].overrides == {}  # not tuned: unchanged


def test_tiny_tuning_run_writes_everything_and_resumes(tmp_path):
  base = _base()
  calls = []
  _check_run(base, inputs.load_data(base), _fake_run(calls), calls,
             tmp_path / "tune")


def test_trial_that_a_sampler_rejects_fails_and_the_study_goes_on(tmp_path):
  calls = []
  fake = _fake_run(calls)

  def run_fn(config, dataset=None):
    if config.eval_split == "validation" and len(calls) == 0:
      calls.append(("rejected", "validation"))
      raise ValueError("pool_size must be >= num_hard_negatives")
    return fake(config, dataset)

  base = _base()
  tuning.tune(base, ["in_batch"], trials=2, output_dir=str(tmp_path),
              final_seeds=1, baselines=(),
              dataset=types.SimpleNamespace(name="fake"), run_fn=run_fn)
  with open(tmp_path / "trials.csv") as f:
    states = [r["state"] for r in csv.DictReader(f)]
  assert states == ["FAIL", "COMPLETE"]
  assert json.loads((tmp_path / "best.json").read_text())["in_batch"][
      "trial"] == 1


def test_finished_runs_count_only_with_the_same_settings(tmp_path):
  """A changed tuned setting re-runs the finals it invalidates."""
  base = _base()
  calls = []
  fake = _fake_run(calls)
  dataset = types.SimpleNamespace(name="fake")
  variants = [benchmarking.Variant("a", "in_batch", {"temperature": 0.1}),
              benchmarking.Variant("b", "cross_batch", {"memory_size": 32})]
  benchmarking.run_grid(base, variants, [0], str(tmp_path), run_fn=fake,
                        dataset=dataset)
  assert [c[0] for c in calls] == ["in_batch", "cross_batch"]
  # Same settings (and an output-only change): both skipped.
  calls.clear()
  benchmarking.run_grid(dataclasses.replace(base, verbose=2), variants, [0],
                        str(tmp_path), run_fn=fake, dataset=dataset)
  assert not calls
  # A new temperature for "a", a new own option for "b", an option that
  # "b" does not declare (ignored): "a" and "b" re-run once each.
  changed = [benchmarking.Variant("a", "in_batch", {"temperature": 0.2}),
             benchmarking.Variant("b", "cross_batch", {"memory_size": 64})]
  benchmarking.run_grid(base, changed, [0], str(tmp_path), run_fn=fake,
                        dataset=dataset)
  assert [c[0] for c in calls] == ["in_batch", "cross_batch"]
  calls.clear()
  other = dataclasses.replace(base, sampler_options=dict(
      base.sampler_options, num_negatives=7))
  benchmarking.run_grid(other, changed, [0], str(tmp_path), run_fn=fake,
                        dataset=dataset)
  assert not calls
  saved = json.loads((tmp_path / "runs" / "a" / "seed0" /
                      "metrics.json").read_text())
  assert saved["flags"]["temperature"] == 0.2
  # A run without flags (an older format) still counts as finished.
  assert benchmarking.same_settings(None, base)


@pytest.mark.slow
def test_tiny_tuning_run_with_real_training(tmp_path):
  base = _base()
  dataset = inputs.load_data(base)
  calls = []

  def run_fn(config, dataset=None):
    calls.append((config.sampler, config.eval_split))
    return experiment.run(config, dataset=dataset)

  _check_run(base, dataset, run_fn, calls, tmp_path / "tune",
             other="cross_batch", option="memory_size")


def _settings(study):
  return [t.params for t in study.trials if t.state.name == "COMPLETE"]


def _dir(path):
  os.makedirs(path, exist_ok=True)
  return str(path)


def test_resumed_search_draws_what_an_uninterrupted_one_draws(tmp_path):
  """Each trial's setting depends on the seed and the trials before it."""
  base = _base()
  dataset = types.SimpleNamespace(name="fake")
  calls = []
  fake = _fake_run(calls)
  straight = tuning.search(base, "uniform", 5, _dir(tmp_path / "a"), dataset,
                           run_fn=fake)

  # Stopped after 2 trials, then resumed (a new process: a new sampler).
  tuning.search(base, "uniform", 2, _dir(tmp_path / "b"), dataset,
                run_fn=fake)
  resumed = tuning.search(base, "uniform", 5, _dir(tmp_path / "b"), dataset,
                          run_fn=fake)
  assert _settings(resumed) == _settings(straight)
  assert len({json.dumps(p, sort_keys=True)
              for p in _settings(straight)}) == 5

  # Interrupted inside the third trial: that trial fails and is re-done.
  def interrupted(config, dataset=None):
    if len(calls) == 2:
      calls.append("interrupt")
      raise KeyboardInterrupt
    return fake(config, dataset)

  calls.clear()
  with pytest.raises(KeyboardInterrupt):
    tuning.search(base, "uniform", 5, _dir(tmp_path / "c"), dataset,
                  run_fn=interrupted)
  again = tuning.search(base, "uniform", 5, _dir(tmp_path / "c"), dataset,
                        run_fn=fake)
  assert [t.state.name for t in again.trials].count("FAIL") == 1
  assert _settings(again) == _settings(straight)


def test_a_rejected_setting_is_not_drawn_again(tmp_path):
  calls = []
  fake = _fake_run(calls)
  rejected = []

  def run_fn(config, dataset=None):
    if config.eval_split == "validation" and len(calls) == 1 and not rejected:
      rejected.append(config.sampler_options["num_negatives"])
      raise ValueError("num_negatives rejected")
    return fake(config, dataset)

  study = tuning.search(_base(), "uniform", 3, str(tmp_path),
                        types.SimpleNamespace(name="fake"), run_fn=run_fn)
  states = [t.state.name for t in study.trials]
  assert states == ["COMPLETE", "FAIL", "COMPLETE"]
  assert study.trials[1].user_attrs[tuning.REJECTED]
  assert study.trials[2].params != study.trials[1].params


def test_the_best_variant_by_validation_trains_again_to_convergence(tmp_path):
  """`run_best_to_convergence`: the best mean validation, its own budget."""
  base = _base(validate_every=1)
  seen = []

  def fake(config, dataset=None):
    del dataset
    seen.append(config)
    # Validation by temperature and seed: "b" is best on average though
    # "a" has the single best seed.
    best = {0.1: [0.30, 0.10], 0.2: [0.25, 0.24]}[config.temperature][
        config.seed % 2]
    metrics = {"recall@50": best, "best_validation": best,
               "flags": dataclasses.asdict(config)}
    os.makedirs(config.output_dir, exist_ok=True)
    with open(os.path.join(config.output_dir, "metrics.json"), "w") as f:
      json.dump(metrics, f)
    return metrics

  dataset = types.SimpleNamespace(name="fake")
  variants = [benchmarking.Variant("a", "in_batch", {"temperature": 0.1}),
              benchmarking.Variant("b", "in_batch", {"temperature": 0.2}),
              benchmarking.Variant("popularity_baseline",
                                   "popularity_baseline", {})]
  rows = benchmarking.run_grid(base, variants[:2], [0, 1], str(tmp_path),
                               run_fn=fake, dataset=dataset)
  rows.append({"variant": "popularity_baseline", "recall@50": 0.9})
  assert benchmarking.best_by_validation(rows, variants).label == "b"
  seen.clear()
  variant, long_rows = benchmarking.run_best_to_convergence(
      base, rows, variants, 0, str(tmp_path), minutes=150, patience=10,
      run_fn=fake, dataset=dataset)
  assert variant.label == "b_to_convergence"
  assert [(c.temperature, c.seed, c.time_budget_minutes, c.patience)
          for c in seen] == [(0.2, 0, 150.0, 10)]
  assert [r["variant"] for r in long_rows] == ["b_to_convergence"]
  # Resumable: the finished run is skipped.
  seen.clear()
  benchmarking.run_best_to_convergence(
      base, rows, variants, 0, str(tmp_path), minutes=150, patience=10,
      run_fn=fake, dataset=dataset)
  assert not seen
  # No variant with a validation metric: nothing runs.
  assert benchmarking.run_best_to_convergence(
      base, rows[-1:], variants, 0, str(tmp_path), 150, 10, run_fn=fake,
      dataset=dataset) == (None, [])


def test_an_interrupted_variant_resumes_from_its_backup(tmp_path):
  """Each training run of the grid keeps a backup under its run folder."""
  base = _base()
  dataset = types.SimpleNamespace(name="fake")
  seen = []
  finish = _fake_run([])

  def interrupted(config, dataset=None):
    seen.append(config.backup_dir)
    os.makedirs(config.backup_dir)
    (pathlib.Path(config.backup_dir) / "epoch").write_text("3")
    raise KeyboardInterrupt

  def resumed(config, dataset=None):
    # The second invocation finds the first one's backup where it left it.
    seen.append((pathlib.Path(config.backup_dir) / "epoch").read_text())
    return finish(config, dataset)

  variants = [benchmarking.Variant("a", "in_batch", {})]
  with pytest.raises(KeyboardInterrupt):
    benchmarking.run_grid(base, variants, [0], str(tmp_path),
                          run_fn=interrupted, dataset=dataset)
  assert seen == [str(tmp_path / "runs" / "a" / "seed0" / "backup")]
  benchmarking.run_grid(base, variants, [0], str(tmp_path), run_fn=resumed,
                        dataset=dataset)
  assert seen[1] == "3"
  # A finished run's backup is removed; its metrics stay.
  assert not (tmp_path / "runs" / "a" / "seed0" / "backup").exists()
  assert (tmp_path / "runs" / "a" / "seed0" / "metrics.json").exists()
