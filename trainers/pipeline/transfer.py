"""Defaults that transfer: one setting per sampler, chosen on several data sets.

A default is a claim that a setting works on data nobody tuned it on. The
study (`trainers.tune --data=...`) searches each sampler's settings on the
validation splits of several development sets at once and keeps, per
sampler, the setting with the largest minimum over the data sets of

    ratio(s, d) = validation metric of s on d / best validation metric any
                  setting of the study reached on d,

a robust choice rather than the best on one set (SAMPLERS.md section 13).

Each trial trains one setting on every data set (the large ones may be
subsampled by users while searching, `DataSpec.user_fraction`). The TPE
search maximises a stationary proxy of that rule, the minimum over data sets
of the metric divided by the data set's EASE^R validation metric (computed
once per data set and stored). The choice itself uses the rule above over
all finished trials, so trials added later can change it.

A study is labelled `sampler` or `sampler@tower` (the query tower fixed for
that study), so that the trainer's own settings (tower, learning rate,
temperature) are chosen the same way: `--samplers=in_batch_logq
--towers=id,mean,sasrec` runs one study per tower.

Outputs (in the output folder): `transfer.db` (Optuna, resumable),
`references.json`, `transfer_trials.csv`, `transfer.json` (the chosen
setting of every study and its per-data-set numbers) and `transfer.md`.
"""

import copy
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from tfrs_negsamp import samplers as samplers_lib
from trainers.pipeline import benchmarking
from trainers.pipeline import configuration
from trainers.pipeline import experiment
from trainers.pipeline import inputs
from trainers.pipeline import tuning

DATASETS = ("synthetic", "movielens", "csv")


@dataclasses.dataclass(frozen=True)
class DataSpec:
  """One development set of the study.

  Attributes:
    name: short name for the tables (e.g. `ml1m`).
    dataset: `--dataset` (synthetic, movielens, csv).
    path: `--data_path` (None for synthetic or TFDS MovieLens).
    user_fraction: fraction of the users kept while searching.
  """
  name: str
  dataset: str
  path: Optional[str] = None
  user_fraction: float = 1.0


def parse_data_specs(text: Sequence[str]) -> List[DataSpec]:
  """`name:dataset:path[:fraction]` items -> `DataSpec`s.

  Raises:
    ValueError: naming the item and what is wrong with it.
  """
  specs = []
  for item in text:
    parts = item.split(":")
    if len(parts) not in (3, 4) or not parts[0] or not parts[1]:
      raise ValueError("--data item %r: expected name:dataset:path"
                       "[:user_fraction], e.g. ml1m:csv:data/ml1m.csv:0.3"
                       % item)
    name, dataset, path = parts[0], parts[1], parts[2] or None
    if dataset not in DATASETS:
      raise ValueError("--data item %r: unknown dataset %r; valid: %s"
                       % (item, dataset, ", ".join(DATASETS)))
    if path is not None and not os.path.exists(path):
      raise ValueError("--data item %r: %s not found" % (item, path))
    fraction = 1.0
    if len(parts) == 4:
      try:
        fraction = float(parts[3])
      except ValueError:
        fraction = -1.0
      if not 0 < fraction <= 1:
        raise ValueError("--data item %r: user_fraction must be in (0, 1], "
                         "got %r" % (item, parts[3]))
    specs.append(DataSpec(name, dataset, path, fraction))
  names = [s.name for s in specs]
  if len(set(names)) != len(names):
    raise ValueError("--data: each data set needs its own name, got %s"
                     % ", ".join(names))
  if not specs:
    raise ValueError("--data: give at least one data set")
  return specs


def config_for(base: configuration.ExperimentConfig,
               spec: DataSpec) -> configuration.ExperimentConfig:
  """`base` reading `spec`'s data, evaluated on its validation split."""
  config = copy.deepcopy(base)
  config.dataset = spec.dataset
  config.data_path = spec.path
  config.user_fraction = spec.user_fraction
  config.synthetic = {} if spec.dataset != "synthetic" else config.synthetic
  config.eval_split = "validation"
  return config


def split_label(label: str) -> Dict[str, Any]:
  """`sampler` or `sampler@tower` -> {"sampler", "query_tower"?}."""
  sampler, _, tower = label.partition("@")
  out: Dict[str, Any] = {"sampler": sampler}
  if tower:
    out["query_tower"] = tower
  return out


def _progress(text: str) -> None:
  print("[transfer %s] %s" % (time.strftime("%H:%M:%S"), text),
        file=sys.stderr, flush=True)


def references(base: configuration.ExperimentConfig,
               specs: Sequence[DataSpec], datasets: Dict[str, Any],
               output_dir: str, objective: str,
               run_fn: Callable[..., Dict]) -> Dict[str, Dict[str, float]]:
  """{data name: {"ease": v, "popularity": v}}: validation `objective` of
  the model-free baselines (stored in `references.json`, computed once)."""
  path = os.path.join(output_dir, "references.json")
  stored: Dict[str, Dict[str, float]] = {}
  if os.path.exists(path):
    with open(path) as f:
      stored = json.load(f)
  for spec in specs:
    key = "%s|%s|%s|%g|%s" % (spec.name, spec.dataset, spec.path,
                              spec.user_fraction, objective)
    if key in stored:
      continue
    values = {}
    for baseline, short in (("ease_baseline", "ease"),
                            ("popularity_baseline", "popularity")):
      config = config_for(base, spec)
      config.sampler = baseline
      config.sampler_options = {}
      config.output_dir = os.path.join(output_dir, "references", spec.name,
                                       short)
      values[short] = float(run_fn(config, dataset=datasets[spec.name])[
          objective])
    stored[key] = values
    _progress("%s: validation %s: EASE^R %.4f, popularity %.4f"
              % (spec.name, objective, values["ease"], values["popularity"]))
    with open(path + ".tmp", "w") as f:
      json.dump(stored, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
  return {spec.name: stored["%s|%s|%s|%g|%s" % (
      spec.name, spec.dataset, spec.path, spec.user_fraction, objective)]
          for spec in specs}


def current_setting(base: configuration.ExperimentConfig, sampler: str,
                    params: Sequence[tuning.Param]) -> Dict[str, Any]:
  """The values of `params` today: `base`'s shared settings and the
  sampler's option defaults, where they lie in the search space (a default
  of 0 that stands for a size derived at run time is left to the search)."""
  defaults = {f.name: f.default
              for f in dataclasses.fields(samplers_lib.sampler_options(sampler))}
  setting = {}
  for p in params:
    value = (getattr(base, p.name) if hasattr(base, p.name)
             else base.sampler_options.get(p.name, defaults.get(p.name)))
    if p.kind == "categorical":
      choices = [max(1, int(round(c * base.batch_size))) if p.per_batch
                 else c for c in p.choices]
      if value in choices:
        setting[p.name] = value
    elif value is not None and p.low <= value <= p.high:
      setting[p.name] = value
  return setting


def search(base: configuration.ExperimentConfig, label: str,
           specs: Sequence[DataSpec], datasets: Dict[str, Any],
           refs: Dict[str, Dict[str, float]], trials: int, output_dir: str,
           objective: str = "recall@50", seed: int = 0,
           run_fn: Optional[Callable[..., Dict]] = None,
           params: Optional[Sequence[tuning.Param]] = None):
  """Runs (or resumes) the transfer study `label` up to `trials` trials.

  Trial 0 is the current setting (`current_setting`); each trial trains on
  every data set's training split and scores its validation split.

  Returns:
    The Optuna study.
  """
  import optuna  # pylint: disable=g-import-not-at-top
  run_fn = run_fn or experiment.run
  fixed = split_label(label)
  sampler = fixed.pop("sampler")
  storage = "sqlite:///" + os.path.abspath(
      os.path.join(output_dir, "transfer.db"))
  study = tuning.open_study("transfer-" + label, storage)
  if params is None:
    params = tuning.space_for(sampler)
  if not study.get_trials(deepcopy=False):
    study.enqueue_trial(current_setting(base, sampler, params),
                        skip_if_exists=True)
  done = len(study.get_trials(deepcopy=False,
                              states=(optuna.trial.TrialState.COMPLETE,)))
  if done >= trials:
    _progress("%s: %d trials done before, skipped" % (label, done))
    return study

  def evaluate(trial):
    overrides = dict(fixed)
    overrides.update({p.name: p.suggest(trial, base.batch_size)
                      for p in params})
    variant = benchmarking.Variant(label, sampler, overrides)
    start = time.time()
    ratios = []
    for spec in specs:
      config = benchmarking.apply_variant(config_for(base, spec), variant,
                                          base.seed)
      config.output_dir = os.path.join(output_dir, "trials", label,
                                       "trial%d" % trial.number, spec.name)
      try:
        metrics = run_fn(config, dataset=datasets[spec.name])
      except tuning.rejections():
        trial.set_user_attr(tuning.REJECTED, True)
        raise
      value = float(metrics[objective])
      trial.set_user_attr(spec.name, value)
      trial.set_user_attr(spec.name + ":seconds", metrics.get(
          "wall_seconds", float("nan")))
      ratios.append(value / refs[spec.name]["ease"])
    trial.set_user_attr("seconds", time.time() - start)
    _progress("%s trial %d/%d: %s  %s (%.0fs)" % (
        label, trial.number + 1, trials, "  ".join(
            "%s=%.4f" % (s.name, trial.user_attrs[s.name]) for s in specs),
        " ".join("%s=%s" % kv for kv in sorted(overrides.items())),
        time.time() - start))
    return min(ratios)

  for _ in range(trials - done):
    study.sampler = tuning.trial_sampler(study, seed)
    study.optimize(evaluate, n_trials=1, catch=tuning.rejections())
  return study


def choose(study, specs: Sequence[DataSpec]) -> Optional[Dict[str, Any]]:
  """The finished trial with the largest min over data sets of
  metric / the study's best metric on that data set (section 13).

  Returns:
    {"params", "trial", "min_ratio", "per_data": {name: {"value",
    "ratio"}}, "trials"}, or None without a finished trial.
  """
  import optuna  # pylint: disable=g-import-not-at-top
  complete = study.get_trials(deepcopy=False,
                              states=(optuna.trial.TrialState.COMPLETE,))
  if not complete:
    return None
  best = {s.name: max(t.user_attrs[s.name] for t in complete)
          for s in specs}

  def ratios(trial):
    return {s.name: (trial.user_attrs[s.name] / best[s.name]
                     if best[s.name] > 0 else 0.0) for s in specs}

  chosen = max(complete, key=lambda t: (min(ratios(t).values()),
                                        -t.number))
  r = ratios(chosen)
  return {"params": dict(chosen.params), "trial": chosen.number,
          "min_ratio": min(r.values()),
          "per_data": {s.name: {"value": chosen.user_attrs[s.name],
                                "ratio": r[s.name]} for s in specs},
          "trials": len(complete)}


def write_tables(chosen: Dict[str, Dict[str, Any]],
                 specs: Sequence[DataSpec],
                 refs: Dict[str, Dict[str, float]], output_dir: str,
                 objective: str) -> None:
  """`transfer.json` and `transfer.md`: the chosen setting per study."""
  with open(os.path.join(output_dir, "transfer.json.tmp"), "w") as f:
    json.dump({"objective": "validation " + objective,
               "data": [dataclasses.asdict(s) for s in specs],
               "references": refs, "chosen": chosen}, f, indent=2,
              sort_keys=True)
  os.replace(os.path.join(output_dir, "transfer.json.tmp"),
             os.path.join(output_dir, "transfer.json"))
  head = ["study", "trials", "min ratio", "setting"] + [
      "%s (ratio)" % s.name for s in specs]
  lines = ["## Settings chosen to transfer (validation %s; ratio = value / "
           "the study's best on that set)" % objective, "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for label, entry in sorted(chosen.items()):
    setting = ", ".join("%s=%s" % (k, _short(v))
                        for k, v in sorted(entry["params"].items())) or (
                            "the defaults")
    lines.append("| %s | %d | %.3f | %s | %s |" % (
        label, entry["trials"], entry["min_ratio"], setting, " | ".join(
            "%.4f (%.2f)" % (entry["per_data"][s.name]["value"],
                             entry["per_data"][s.name]["ratio"])
            for s in specs)))
  for short, title in (("popularity", "popularity"), ("ease", "EASE^R")):
    lines.append("| %s | – | – | – | %s |" % (title, " | ".join(
        "%.4f" % refs[s.name][short] for s in specs)))
  with open(os.path.join(output_dir, "transfer.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def _short(value: Any) -> str:
  if isinstance(value, float) and not math.isnan(value):
    return "%.4g" % value
  return str(value)


def transfer(base: configuration.ExperimentConfig,
             specs: Sequence[DataSpec], labels: Sequence[str], trials: int,
             output_dir: str, objective: str = "recall@50", seed: int = 0,
             run_fn: Optional[Callable[..., Dict]] = None,
             shared_only: bool = False, own_only: bool = False,
             datasets: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """The study of every label, then the chosen settings' tables.

  Args:
    base: the shared configuration (epochs, batch, ...); its data flags are
      replaced by each spec's.
    specs: the development sets.
    labels: `sampler` or `sampler@tower` per study.
    trials: finished trials per study.
    output_dir: where everything goes.
    objective: the validation metric.
    seed: the TPE seed.
    run_fn: `experiment.run` (tests may pass another).
    shared_only: search only the shared settings (`tuning.SHARED_SPACE`).
    own_only: search only the sampler's own options (the shared settings
      stay at `base`'s).
    datasets: preloaded data per spec name (default: loaded here).

  Returns:
    {label: the chosen entry (`choose`)}.
  """
  if shared_only and own_only:
    raise ValueError("shared_only and own_only exclude each other")
  run_fn = run_fn or experiment.run
  os.makedirs(output_dir, exist_ok=True)
  if datasets is None:
    datasets = {}
    for spec in specs:
      _progress("loading %s" % spec.name)
      datasets[spec.name] = inputs.load_data(config_for(base, spec))
  refs = references(base, specs, datasets, output_dir, objective, run_fn)
  chosen: Dict[str, Any] = {}
  for i, label in enumerate(labels):
    sampler = split_label(label)["sampler"]
    params = tuning.space_for(sampler)
    shared = {p.name for p in tuning.SHARED_SPACE}
    if shared_only:
      params = [p for p in params if p.name in shared]
    elif own_only:
      params = [p for p in params if p.name not in shared]
    _progress("study %s (%d/%d): %d trials over %s" % (
        label, i + 1, len(labels), trials,
        ", ".join(p.name for p in params) or "nothing (the defaults)"))
    study = search(base, label, specs, datasets, refs,
                   trials if params else 1, output_dir,
                   objective=objective, seed=seed, run_fn=run_fn,
                   params=params)
    entry = choose(study, specs)
    if entry is not None:
      chosen[label] = entry
    write_tables(chosen, specs, refs, output_dir, objective)
  return chosen
