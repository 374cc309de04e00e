"""One training run end to end: data, model, `model.fit`, evaluation, export.

Trainers and benchmarks call `run()` with an `ExperimentConfig`, so every
program trains and measures the same way. The pieces live in their own
modules: `configuration` (settings and checks), `inputs` (data),
`strategies`, `assembly` (the model), `fitting` (`model.fit`) and
`exporting`.
"""

import dataclasses
import os
import sys
import time
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from tfrs_negsamp import data as data_lib
from tfrs_negsamp import protocol
from tfrs_negsamp.models import query_towers
from trainers.pipeline import assembly
from trainers.pipeline import cluster
from trainers.pipeline import configuration
from trainers.pipeline import exporting
from trainers.pipeline import fitting
from trainers.pipeline import inputs
from trainers.pipeline import outputs
from trainers.pipeline import strategies
from trainers.pipeline import summaries
from trainers.pipeline import validation


def _jsonable(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, tuple):
    return list(value)
  return value


def evaluate_baseline(config: configuration.ExperimentConfig, dataset: data_lib.Dataset,
                      sets: protocol.EvaluationSets, progress: bool = True
                      ) -> Dict[str, Any]:
  """Metrics of a model-free baseline in `BASELINES` on `sets`."""
  if config.sampler == "popularity_baseline":
    return protocol.evaluate_popularity(sets, progress=progress)
  return protocol.evaluate_ease(dataset, sets, config.ease_lambda,
                                progress=progress)


class PhaseClock:
  """Wall time per phase of a run and the process's peak memory.

  `lap(name)` charges the time since the previous lap to `name`;
  `report()` gives `{"phase_seconds": {name: s}, "wall_seconds": total,
  "peak_memory_bytes": the peak resident set size so far}`.
  """

  def __init__(self):
    self.start = self.last = time.perf_counter()
    self.phases: Dict[str, float] = {}

  def lap(self, name: str) -> None:
    now = time.perf_counter()
    self.phases[name] = self.phases.get(name, 0.0) + now - self.last
    self.last = now

  def report(self) -> Dict[str, Any]:
    import resource  # pylint: disable=g-import-not-at-top
    # Linux reports ru_maxrss in KiB.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"phase_seconds": dict(self.phases),
            "wall_seconds": self.last - self.start,
            "peak_memory_bytes": int(peak)}


LIFT_METRIC = "recall@50"


def patience_floor(sets, metric: str) -> float:
  """Ranking by popularity's `metric` on `sets` (the validation split):
  early stopping's patience counts only once a run has beaten it."""
  return float(protocol.evaluate_popularity(sets, progress=False)[metric])


def popularity_lift(metrics: Dict[str, Any],
                    sets: protocol.EvaluationSets) -> Dict[str, Any]:
  """Popularity's `recall@50` on the same split, and the run's lift over it.

  `lift_over_popularity = recall@50 / popularity's recall@50` (popularity:
  training counts, the user's training items excluded, as for every model;
  `protocol.evaluate_popularity`). Cheap: one ranking shared by all users.
  """
  popular = protocol.evaluate_popularity(sets, progress=False)
  reference = float(popular[LIFT_METRIC])
  value = float(metrics[LIFT_METRIC])
  return {"popularity_" + LIFT_METRIC: reference,
          "lift_over_popularity": (value / reference if reference > 0
                                   else float("nan"))}


def lift_line(metrics: Dict[str, Any],
              config: configuration.ExperimentConfig) -> str:
  """The run's last line: where it stands against ranking by popularity."""
  lift = metrics.get("lift_over_popularity")
  if lift is None:
    return "%s: evaluated nothing" % config.sampler
  line = "lift over popularity %.2fx (%s %.4f vs %.4f on %s)" % (
      lift, LIFT_METRIC, metrics[LIFT_METRIC],
      metrics["popularity_" + LIFT_METRIC], config.eval_split)
  if lift < 1:
    hint = "see the docs' defaults study for settings that work"
    if config.dataset == "synthetic" and config.query_tower in ("gru",
                                                                "sasrec"):
      # The generator shuffles each user's items before drawing times.
      hint = ("the synthetic data has no order in time for a sequence "
              "tower to use (--query_tower=mean suits it); " + hint)
    line = "warning: below ranking by popularity: " + line + "; " + hint
  return line


def run(config: configuration.ExperimentConfig,
        strategy: Optional[tf.distribute.Strategy] = None,
        dataset: Optional[data_lib.Dataset] = None) -> Dict[str, Any]:
  """Trains (or ranks by popularity), evaluates, exports; returns metrics.

  In a multi-worker job every worker trains; only the chief evaluates and
  writes `metrics.json` and the export (the other workers export to a
  temporary folder that is removed, since a save may need every worker).
  """
  config.validate()
  config = config.resolved()
  if config.strategy == "parameter_server":
    from trainers.pipeline import parameter_server  # pylint: disable=g-import-not-at-top
    return parameter_server.run(config, dataset=dataset)
  clock = PhaseClock()
  if strategy is None:
    strategy = strategies.make_strategy(config.strategy, config.cpu_replicas)
  if dataset is None:
    dataset = inputs.load_data(config)
  configuration.check_dataset(config, dataset, strategy.num_replicas_in_sync)
  chief = strategies.is_chief(strategy)
  if chief:
    for note in configuration.notes(config, dataset):
      print("note: " + note, file=sys.stderr, flush=True)
  if chief:  # an earlier run's results must not pass for this run's
    try:
      outputs.clear_stale_outputs(config.output_dir, config.export_dir)
    except ValueError as e:
      raise configuration.ConfigError("--export_dir=%s: %s"
                                      % (config.export_dir, e)) from e
  progress = config.verbose > 0
  sets = protocol.evaluation_sets(dataset, config.eval_split)
  clock.lap("data")
  if config.sampler in configuration.BASELINES:
    stats = {"train_seconds": 0.0, "examples_per_second": float("nan"),
             "step_seconds": float("nan"), "steps": 0}
    metrics = evaluate_baseline(config, dataset, sets, progress=progress)
    clock.lap("evaluation")
  else:
    model = assembly.create_model(dataset, config, strategy)
    clock.lap("build")
    monitor = None
    if config.validate_every:
      validation_sets = protocol.evaluation_sets(dataset, "validation")
      monitor = validation.ValidationMonitor(
          validation_sets,
          metric=config.monitor, every_epochs=config.validate_every,
          patience=config.patience,
          budget_seconds=60.0 * config.time_budget_minutes,
          verbose=progress, state_dir=config.backup_dir,
          floor=patience_floor(validation_sets, config.monitor))
    stats = fitting.train(model, dataset, config, strategy,
                          extra_callbacks=[monitor] if monitor else ())
    if monitor is not None:
      stats.update(monitor.report())
    clock.lap("training")
    stats["optimizer_steps"] = int(model.optimizer.iterations.numpy())
    estimator = getattr(model.sampler, "frequency", None)
    if estimator is not None and hasattr(estimator, "step"):
      stats["estimator_step"] = int(estimator.step.numpy())
    metrics = (protocol.evaluate_model(model, sets, progress=progress)
               if chief else {})
    clock.lap("evaluation")
    if config.export_dir:
      with cluster.chief_path(config.export_dir, chief) as export_dir:
        history = query_towers.uses_history(config.query_tower)
        # An id tower's answers leave out the user's training items (a
        # history tower's leave out the request's history).
        exporting.export_model(
            model, dataset, export_dir, config.index, config.top_k,
            config.scann_overrides,
            history_length=config.max_history if history else None,
            seen_items=None if history else (dataset.train.user_ids,
                                             dataset.train.item_ids))
      clock.lap("export")
  if chief and metrics:
    metrics.update(popularity_lift(metrics, sets))
    if config.tensorboard_dir:
      summaries.write_final(config, metrics)
  metrics.update(stats)
  metrics.update(clock.report())
  metrics["eval_split"] = config.eval_split
  metrics["dataset_summary"] = dataset.summary()
  metrics["strategy"] = config.strategy
  metrics["num_replicas"] = strategy.num_replicas_in_sync
  metrics["num_workers"] = strategies.num_workers(strategy)
  metrics["flags"] = {k: _jsonable(v)
                      for k, v in dataclasses.asdict(config).items()}
  if config.output_dir and chief:
    os.makedirs(config.output_dir, exist_ok=True)
    outputs.write_json(os.path.join(config.output_dir, "metrics.json"),
                       metrics, indent=2, sort_keys=True, default=_jsonable)
  if chief:
    print("%s: %s" % (config.sampler, protocol.summarize(metrics)),
          file=sys.stderr, flush=True)
    print("wall time %.1f s (%s); peak memory %.2f GiB" % (
        metrics["wall_seconds"], ", ".join(
            "%s %.1f s" % kv for kv in metrics["phase_seconds"].items()),
        metrics["peak_memory_bytes"] / 2.0**30), file=sys.stderr, flush=True)
    print(lift_line(metrics, config), file=sys.stderr, flush=True)
  else:
    print("%s: trained %d steps; the chief evaluates and writes the outputs."
          % (config.sampler, stats["steps"]), file=sys.stderr, flush=True)
  return metrics
