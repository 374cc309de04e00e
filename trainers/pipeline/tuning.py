"""Per-sampler hyperparameter search on the validation split (Optuna TPE).

For every sampler, `tune` runs an Optuna study (TPE, fixed seed, stored in
`OUTPUT/optuna.db`) over the shared settings (`SHARED_SPACE`) and the
sampler's own options' search ranges (declared with the options, in the
sampler's module):
each trial trains with `ExperimentConfig.eval_split = "validation"` and
scores the validation objective (default recall@50). The best setting of
each sampler is then re-trained with `final_seeds` seeds and evaluated on
test through `benchmarking.run_grid`, next to the model-free baselines
(popularity, EASE^R), and reported with `benchmarking.write_report`.

Everything is resumable: finished trials live in the SQLite study (trials
left RUNNING by a killed process are marked FAIL and re-done), and finished
final runs are skipped by the harness (`OUTPUT/runs/LABEL/seedS`).

Outputs: `trials.csv` / `trials.md` (every trial), `best.json` (the best
setting per sampler, read back by `trainers.benchmark --best_settings`),
`results.csv` / `results.md` and the harness's plots.
"""

import copy
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from tfrs_negsamp import samplers as samplers_lib
from tfrs_negsamp.evaluation import full_corpus
from trainers.pipeline import benchmarking
from trainers.pipeline import configuration
from trainers.pipeline import experiment
from trainers.pipeline import inputs

ALL = ("*",)
# The validation metrics a study may maximise: those every run reports.
OBJECTIVES = full_corpus.quality_metric_names()
BASELINE_VARIANTS = ("popularity_baseline", "ease_baseline")


@dataclasses.dataclass(frozen=True)
class Param:
  """One searched hyperparameter.

  Attributes:
    name: An `ExperimentConfig` field (e.g. `temperature`) or a sampler
      option (a key of `sampler_options`).
    kind: "float", "int" (ranges `low`..`high`, `log` scale) or
      "categorical" (`choices`).
    samplers: Registry names it applies to; `ALL` for every sampler.
    excluded_losses: Loss families it never applies to (e.g. the
      temperature for the CML hinge, which has no softmax).
    per_batch: The values are multiples of the global batch size.
    config_field: Skipped (not searched) when `ExperimentConfig` has no such
      field.
  """
  name: str
  kind: str
  low: float = 0.0
  high: float = 0.0
  log: bool = False
  choices: Tuple[Any, ...] = ()
  samplers: Tuple[str, ...] = ALL
  excluded_losses: Tuple[str, ...] = ()
  per_batch: bool = False
  config_field: bool = False

  @classmethod
  def from_tune(cls, name: str, tune, sampler: str) -> "Param":
    """The search of sampler option `name`, as its options declare it."""
    return cls(name, tune.kind, low=tune.low, high=tune.high, log=tune.log,
               choices=tuple(tune.choices), samplers=(sampler,),
               per_batch=tune.per_batch)

  def applies_to(self, sampler: str) -> bool:
    if self.samplers != ALL and sampler not in self.samplers:
      return False
    if (self.excluded_losses and
        samplers_lib.loss_kind(sampler) in self.excluded_losses):
      return False
    if self.config_field:
      fields = {f.name for f in dataclasses.fields(
          configuration.ExperimentConfig)}
      return self.name in fields
    return True

  def suggest(self, trial, batch_size: int) -> Any:
    """The trial's value (Optuna `suggest_*`)."""
    if self.kind == "categorical":
      # Per-batch choices are whole numbers of columns (0.25 B -> B / 4).
      choices = [max(1, int(round(c * batch_size))) if self.per_batch
                 else c for c in self.choices]
      return trial.suggest_categorical(self.name, choices)
    if self.kind == "int":
      return trial.suggest_int(self.name, int(self.low), int(self.high),
                               log=self.log)
    if self.kind == "float":
      return trial.suggest_float(self.name, self.low, self.high,
                                 log=self.log)
    raise ValueError("unknown Param kind %r" % self.kind)


# The settings every sampler shares (the trainer's). Each sampler's own
# options are searched over the ranges its options dataclass declares
# (`samplers.option_tunes`); `space_for` puts the two together.
SHARED_SPACE: Tuple[Param, ...] = (
    Param("temperature", "float", 0.02, 0.5, log=True,
          excluded_losses=("triplet",)),
    Param("learning_rate", "float", 1e-3, 5e-2, log=True),
    Param("mask_history", "categorical", choices=(True, False),
          config_field=True),
)


def space_for(sampler: str,
              space: Optional[Sequence[Param]] = None) -> List[Param]:
  """The parameters searched for `sampler` (a later row of a name wins).

  `space` (default `SHARED_SPACE`) followed by the sampler's own options'
  searches from the registry.
  """
  rows = list(SHARED_SPACE if space is None else space)
  if sampler not in configuration.BASELINES:
    rows += [Param.from_tune(name, tune, sampler)
             for name, tune in samplers_lib.option_tunes(sampler).items()]
  chosen: Dict[str, Param] = {}
  for param in rows:
    if param.applies_to(sampler):
      chosen[param.name] = param
  return list(chosen.values())


def _progress(text: str) -> None:
  print("[tune %s] %s" % (time.strftime("%H:%M:%S"), text), file=sys.stderr,
        flush=True)


def _finite(value) -> bool:
  return isinstance(value, (int, float)) and math.isfinite(value)


TRIAL_METRICS = ("recall@10", "recall@50", "recall@100", "ndcg@10",
                 "balance", "step_ms")


def check_objective(objective: str) -> None:
  """ValueError unless `objective` is in `OBJECTIVES` (before any trial)."""
  if objective not in OBJECTIVES:
    raise ValueError("--objective=%s is not a metric a run reports; valid: "
                     "%s" % (objective, ", ".join(OBJECTIVES)))


def open_study(name: str, storage: str):
  """The stored study `name` (its TPE sampler is set per trial)."""
  import optuna  # pylint: disable=g-import-not-at-top
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  study = optuna.create_study(
      study_name=name, storage=storage, direction="maximize",
      load_if_exists=True)
  # Trials a killed process left RUNNING: failed, so they are re-done.
  for trial in study.get_trials(deepcopy=False,
                                states=(optuna.trial.TrialState.RUNNING,)):
    study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
  return study


def search(base: configuration.ExperimentConfig, sampler: str, trials: int,
           output_dir: str, dataset, objective: str = "recall@50",
           seed: int = 0, run_fn: Optional[Callable[..., Dict]] = None,
           space: Optional[Sequence[Param]] = None):
  """Runs (or resumes) the study of `sampler` up to `trials` finished trials.

  Returns:
    The Optuna study.
  """
  import optuna  # pylint: disable=g-import-not-at-top
  run_fn = run_fn or experiment.run
  storage = "sqlite:///" + os.path.abspath(
      os.path.join(output_dir, "optuna.db"))
  study = open_study("tune-%s" % sampler, storage)
  params = space_for(sampler, space)
  if not any(t.state == optuna.trial.TrialState.COMPLETE
             for t in study.trials):
    # Trial 0 is the shared (untuned) setting, so that a tuned sampler is
    # never worse on validation than the one-setting-for-all comparison.
    shared = {p.name: getattr(base, p.name) for p in params
              if p.name in ("temperature", "learning_rate", "mask_history")
              and hasattr(base, p.name)}
    study.enqueue_trial(shared, skip_if_exists=True)
  # Only completed trials count: a failed one (a rejected setting, a killed
  # run) is tried again with new values when the command is re-run.
  done = len(study.get_trials(
      deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
  if done >= trials:
    _progress("%s: %d trials done before, skipped" % (sampler, done))
    return study

  def evaluate(trial):
    overrides = {p.name: p.suggest(trial, base.batch_size) for p in params}
    variant = benchmarking.Variant(sampler, sampler, overrides)
    config = benchmarking.apply_variant(base, variant, base.seed)
    config.eval_split = "validation"
    config.output_dir = os.path.join(output_dir, "trials", sampler,
                                     "trial%d" % trial.number)
    start = time.time()
    try:
      metrics = run_fn(config, dataset=dataset)
    except rejections():
      # Marked, so that `trial_sampler` counts it as ended (not re-drawn).
      trial.set_user_attr(REJECTED, True)
      raise
    flat = benchmarking.flatten(metrics)
    for key in TRIAL_METRICS:
      if _finite(flat.get(key)):
        trial.set_user_attr(key, float(flat[key]))
    trial.set_user_attr("seconds", time.time() - start)
    if objective not in metrics:
      raise ValueError("unknown objective %r" % objective)
    value = float(metrics[objective])
    _progress("%s trial %d/%d: validation %s=%.4f  %s (%.0fs)" % (
        sampler, trial.number + 1, trials, objective, value,
        " ".join("%s=%s" % kv for kv in sorted(overrides.items())),
        time.time() - start))
    return value

  # A setting a sampler rejects (e.g. more hard negatives than its pool)
  # fails its trial and the study goes on.
  for _ in range(trials - done):
    study.sampler = trial_sampler(study, seed)
    study.optimize(evaluate, n_trials=1, catch=rejections())
  return study


REJECTED = "rejected"


def trial_sampler(study, seed: int):
  """The TPE sampler of the study's next trial, seeded by its place.

  A fresh `TPESampler(seed)` on every resume would replay the first random
  draws of the study (the repeated settings of an interrupted search).
  Seeding each trial with `(seed, n)`, `n` the number of trials that ended
  (completed or rejected), makes a trial's setting a function of the seed
  and the trials before it: a search resumed after an interruption (whose
  unfinished trial is failed and re-done) draws the same settings as one
  that ran straight through. TPE reads only completed trials.
  """
  import optuna  # pylint: disable=g-import-not-at-top
  ended = sum(
      1 for t in study.get_trials(deepcopy=False)
      if t.state == optuna.trial.TrialState.COMPLETE
      or t.user_attrs.get(REJECTED))
  return optuna.samplers.TPESampler(seed=seed * 1_000_003 + ended)


def rejections():
  """The errors that mean "the sampler rejects this setting"."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return (ValueError, tf.errors.InvalidArgumentError)


def trial_rows(studies: Dict[str, Any]) -> List[Dict[str, Any]]:
  """One row per trial of every study."""
  rows = []
  for sampler, study in studies.items():
    for trial in study.get_trials(deepcopy=False):
      row = {"sampler": sampler, "trial": trial.number,
             "state": trial.state.name, "value": trial.value}
      row.update({"param." + k: v for k, v in trial.params.items()})
      row.update(trial.user_attrs)
      rows.append(row)
  return rows


def best_settings(studies: Dict[str, Any], objective: str
                  ) -> Dict[str, Dict[str, Any]]:
  """{sampler: {"params", "value", "objective", "trial", "trials"}}."""
  import optuna  # pylint: disable=g-import-not-at-top
  best = {}
  for sampler, study in studies.items():
    complete = study.get_trials(
        deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
      continue
    trial = study.best_trial
    best[sampler] = {"params": dict(trial.params), "value": trial.value,
                     "objective": "validation " + objective,
                     "trial": trial.number,
                     "trials": len(study.get_trials(deepcopy=False))}
  return best


def _cell(value) -> str:
  if isinstance(value, float):
    return "–" if math.isnan(value) else "%.4g" % value
  return "–" if value is None else str(value)


def write_trials(rows: List[Dict[str, Any]], output_dir: str,
                 objective: str) -> None:
  """trials.csv and trials.md (best trial of each sampler first)."""
  benchmarking.write_csv([dict(r, variant=r["sampler"], seed="")
                          for r in rows],
                         os.path.join(output_dir, "trials.csv"))
  keys = ["sampler", "trial", "state", "value"]
  for row in rows:
    keys += [k for k in row if k not in keys and k != "seconds"]
  keys.append("seconds")
  ordered = sorted(rows, key=lambda r: (
      r["sampler"], -(r["value"] if _finite(r["value"]) else -math.inf)))
  lines = ["## Tuning trials (value: validation %s)" % objective, "",
           "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
  for row in ordered:
    lines.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
  with open(os.path.join(output_dir, "trials.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def tune(base: configuration.ExperimentConfig, samplers: Sequence[str],
         trials: int, output_dir: str, final_seeds: int = 3,
         objective: str = "recall@50", seed: int = 0,
         baselines: Sequence[str] = BASELINE_VARIANTS, dataset=None,
         run_fn: Optional[Callable[..., Dict]] = None,
         space: Optional[Sequence[Param]] = None,
         floor: bool = False) -> Dict[str, Any]:
  """Search per sampler, then the best settings on test; writes the report.

  Args:
    base: The shared configuration (data, epochs, batch, ...).
    samplers: Registry names to tune.
    trials: Finished trials per sampler (the budget).
    output_dir: Where the study, runs and reports go.
    final_seeds: Seeds 0..final_seeds-1 of the test runs.
    objective: The validation metric maximised.
    seed: The TPE sampler's seed.
    baselines: Model-free rows added to the results (one run each).
    dataset: The loaded data (default: `inputs.load_data(base)`).
    run_fn: `experiment.run` (tests may pass another).
    space: The search space.
    floor: Also train the plain-TFRS floor (`benchmarking.FLOOR`, the TFRS
      tutorial two-tower at the shared setting, id towers) with the final
      seeds, and make it the step-ratio reference of the results.

  Returns:
    {"best": best settings, "summary": the harness's summary rows}.
  """
  if base.num_validation < 1:
    raise ValueError("tuning needs a validation split: num_validation >= 1.")
  check_objective(objective)
  floor_variants = ([benchmarking.Variant(benchmarking.FLOOR,
                                          benchmarking.FLOOR, {})]
                    if floor else [])
  for variant in floor_variants:  # Refuse before any trial runs.
    benchmarking.apply_variant(base, variant, 0)
  os.makedirs(output_dir, exist_ok=True)
  if dataset is None:
    dataset = inputs.load_data(base)
  base = copy.deepcopy(base)
  base.eval_split = "test"
  studies = {}
  best: Dict[str, Dict[str, Any]] = {}
  for i, sampler in enumerate(samplers):
    _progress("searching %s (%d/%d): %d trials, validation %s" % (
        sampler, i + 1, len(samplers), trials, objective))
    studies[sampler] = search(base, sampler, trials, output_dir, dataset,
                              objective=objective, seed=seed, run_fn=run_fn,
                              space=space)
    write_trials(trial_rows(studies), output_dir, objective)
    best = best_settings(studies, objective)
    with open(os.path.join(output_dir, "best.json"), "w") as f:
      json.dump(best, f, indent=2, sort_keys=True)
  missing = [s for s in samplers if s not in best]
  if missing:
    _progress("no successful trial for %s: left out of the final runs"
              % ", ".join(missing))
  variants = [benchmarking.Variant(s, s, dict(best[s]["params"]))
              for s in samplers if s in best]
  _progress("final runs on test: %d samplers x %d seeds"
            % (len(variants), final_seeds))
  rows = benchmarking.run_grid(base, floor_variants + variants,
                               list(range(final_seeds)), output_dir,
                               run_fn=run_fn, dataset=dataset)
  baseline_variants = [benchmarking.Variant(b, b, {}) for b in baselines]
  if baseline_variants:  # deterministic: one run each
    rows += benchmarking.run_grid(base, baseline_variants, [0], output_dir,
                                  run_fn=run_fn, dataset=dataset)
  labels = [v.label for v in variants]
  reference = (benchmarking.FLOOR if floor else next(
      (r for r in ("in_batch_logq", "in_batch") if r in labels),
      labels[0] if labels else None))
  preamble = _settings_markdown(best, objective)
  report = benchmarking.write_report(
      rows, output_dir, reference=reference, preamble=preamble,
      title="Tuned samplers on %s, %d epochs, %d trials each, test, seeds "
      "0..%d" % (dataset.name, base.epochs, trials, final_seeds - 1))
  return {"best": best, "summary": report["summary"]}


def _settings_markdown(best: Dict[str, Dict[str, Any]],
                       objective: str) -> str:
  lines = ["## Best settings (validation %s)" % objective, "",
           "| sampler | validation | settings |", "|---|---|---|"]
  for sampler, entry in best.items():
    lines.append("| %s | %.4f | %s |" % (
        sampler, entry["value"], ", ".join(
            "%s=%s" % (k, _cell(v)) for k, v in sorted(
                entry["params"].items()))))
  return "\n".join(lines) + "\n"
