"""The transfer study: one setting per sampler, chosen on several data sets.

A fake `run` (no training) makes each data set prefer another temperature:
the chosen setting must be the one with the largest minimum over the sets of
value / the study's best on that set (SAMPLERS.md section 13), not the best
on either set; trial 0 is the current setting; a re-run resumes.
"""

import json
import math
import os

import pytest

from trainers.pipeline import configuration
from trainers.pipeline import transfer

# Each set's best temperature; the value falls off with the log distance.
PEAK = {"a": 0.05, "b": 0.3}


def _fake_run(calls):

  def run(config, dataset=None):
    calls.append((dataset, config.sampler, config.eval_split,
                  config.temperature))
    if config.sampler == "ease_baseline":
      value = 0.5
    elif config.sampler == "popularity_baseline":
      value = 0.1
    else:
      value = max(0.01, 0.5 - abs(math.log(config.temperature /
                                           PEAK[dataset])) / 4)
    metrics = {"recall@50": value, "wall_seconds": 0.0}
    os.makedirs(config.output_dir, exist_ok=True)
    with open(os.path.join(config.output_dir, "metrics.json"), "w") as f:
      json.dump(metrics, f)
    return metrics

  return run


def _base():
  return configuration.ExperimentConfig(batch_size=8, epochs=1, verbose=0,
                                        temperature=0.05)


def test_the_chosen_setting_maximises_the_worst_ratio(tmp_path):
  specs = [transfer.DataSpec("a", "synthetic"),
           transfer.DataSpec("b", "synthetic")]
  calls = []
  chosen = transfer.transfer(_base(), specs, ["in_batch"], trials=6,
                             output_dir=str(tmp_path),
                             run_fn=_fake_run(calls), shared_only=True,
                             datasets={"a": "a", "b": "b"})
  # References first (EASE^R, popularity per set), then 6 trials x 2 sets,
  # all on validation.
  assert [c[1] for c in calls[:4]] == ["ease_baseline",
                                        "popularity_baseline"] * 2
  trials = calls[4:]
  assert len(trials) == 12 and {c[2] for c in calls} == {"validation"}
  # Trial 0 is the current setting.
  assert trials[0][3] == 0.05 and trials[1][3] == 0.05
  entry = chosen["in_batch"]
  # Recompute the rule by hand from the trials run.
  values = {}
  for dataset, _, _, temperature in trials:
    values.setdefault(temperature, {})[dataset] = max(
        0.01, 0.5 - abs(math.log(temperature / PEAK[dataset])) / 4)
  best = {d: max(v[d] for v in values.values()) for d in PEAK}
  score = {t: min(v[d] / best[d] for d in PEAK) for t, v in values.items()}
  want = max(score, key=score.get)
  assert entry["params"]["temperature"] == pytest.approx(want)
  assert entry["min_ratio"] == pytest.approx(score[want])
  # Neither set's own best (unless it is also the robust one).
  assert entry["trials"] == 6
  table = (tmp_path / "transfer.md").read_text()
  assert "| in_batch | 6 |" in table and "EASE^R" in table
  stored = json.loads((tmp_path / "transfer.json").read_text())
  assert stored["chosen"]["in_batch"]["trial"] == entry["trial"]
  # A re-run resumes: the references and trials are not run again.
  calls.clear()
  again = transfer.transfer(_base(), specs, ["in_batch"], trials=6,
                            output_dir=str(tmp_path),
                            run_fn=_fake_run(calls), shared_only=True,
                            datasets={"a": "a", "b": "b"})
  assert calls == [] and again["in_batch"]["trial"] == entry["trial"]


def test_a_study_label_fixes_the_tower(tmp_path):
  calls = []
  seen = []

  def run(config, dataset=None):
    seen.append(config.query_tower)
    return _fake_run(calls)(config, dataset)

  transfer.transfer(_base(), [transfer.DataSpec("a", "synthetic")],
                    ["in_batch@mean"], trials=1, output_dir=str(tmp_path),
                    run_fn=run, shared_only=True, datasets={"a": "a"})
  assert seen[-1] == "mean"


def test_data_specs_are_checked(tmp_path):
  good = transfer.parse_data_specs(["x:synthetic:", "y:csv:%s:0.3"
                                    % __file__])
  assert good[0] == transfer.DataSpec("x", "synthetic", None, 1.0)
  assert good[1].user_fraction == 0.3
  for items, message in (
      (["x:synthetic"], "expected name:dataset:path"),
      (["x:parquet:f"], "unknown dataset 'parquet'"),
      (["x:csv:/no/such/file"], "not found"),
      (["x:synthetic::0"], r"user_fraction must be in \(0, 1\]"),
      (["x:synthetic::abc"], "user_fraction must be"),
      (["x:synthetic:", "x:synthetic:"], "its own name")):
    with pytest.raises(ValueError, match=message):
      transfer.parse_data_specs(items)
