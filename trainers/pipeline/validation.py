"""Validation during training: a curve against wall time, early stopping,
a wall-clock budget, and the best weights restored at the end.

`ValidationMonitor` evaluates the validation split on the full corpus every
`every_epochs` epochs (and when training stops), records `(epoch, training
seconds, metrics)` (the training seconds exclude the evaluations themselves
and the first step, which is mostly the tracing of the training function),
stops training when the monitored metric has not improved for
`patience` evaluations or when the training time passes `budget_seconds`
(checked after every step), and puts back the weights of the best
evaluation before the test evaluation. With a `floor` (the trainer passes
ranking by popularity's value of the metric on the validation split),
patience counts only once the run has beaten it: a run still below
popularity trains on to its epochs or budget (negatives mined by score
often start below it and take off later; stopping them there gave
recall@50 at the level of random ranking on Amazon and ML-1M). It is what the sequential benchmarks
report as "time to quality".

With `state_dir` (the run's `--backup_dir`) the monitor's own state (the
curve, the best value and its weights, the evaluations since) is written
there at every evaluation, and a resumed run reads it back: early stopping
then decides as in an uninterrupted run (the evaluations are deterministic).
The training clock is saved too, so a time budget holds across restarts
approximately (to the time since the last evaluation).
"""

import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional

import numpy as np
import tensorflow as tf

from tfrs_negsamp import protocol


class ValidationMonitor(tf.keras.callbacks.Callback):
  """Periodic validation, early stopping, a time budget, best weights.

  Args:
    sets: the validation split's `protocol.EvaluationSets`.
    metric: the monitored metric (higher is better), e.g. "ndcg@10".
    every_epochs: evaluate every this many epochs.
    patience: stop after this many evaluations without improvement (0:
      never).
    budget_seconds: stop once training has taken this long (0: no budget).
    restore_best: put back the best evaluation's weights at the end.
    verbose: print one line per evaluation.
    state_dir: folder for the monitor's state (resume), or None.
    floor: patience counts only evaluations after the best value has
      passed this (None: from the first evaluation).
  """

  STATE = "validation_monitor.json"
  WEIGHTS = "validation_monitor_best.npz"

  def __init__(self, sets: protocol.EvaluationSets, metric: str = "ndcg@10",
               every_epochs: int = 1, patience: int = 0,
               budget_seconds: float = 0.0, restore_best: bool = True,
               verbose: bool = True, state_dir: Optional[str] = None,
               floor: Optional[float] = None):
    super().__init__()
    if every_epochs < 1:
      raise ValueError("every_epochs must be >= 1, got %r" % every_epochs)
    self.sets = sets
    self.metric = metric
    self.every_epochs = int(every_epochs)
    self.patience = int(patience)
    self.budget_seconds = float(budget_seconds)
    self.restore_best = restore_best
    self.verbose = verbose
    self.state_dir = state_dir
    self.floor = None if floor is None else float(floor)
    self.curve: List[Dict[str, Any]] = []
    self.best_value = -math.inf
    self.best_epoch = -1
    self.stopped_reason = "epochs"
    self._best_weights: Optional[List[np.ndarray]] = None
    self._train_seconds = 0.0
    self._since = None
    self._begin = None
    self.first_step_seconds = float("nan")
    self._waited = 0
    self._last_evaluated_epoch = -1
    self._epoch = -1

  # -- the training clock (evaluations excluded) --------------------------

  def _tick(self) -> float:
    now = time.perf_counter()
    if self._since is not None:
      self._train_seconds += now - self._since
    self._since = now
    return self._train_seconds

  def on_train_begin(self, logs=None):
    self._begin = time.perf_counter()
    if self.state_dir and int(self.model.optimizer.iterations.numpy()):
      self._load_state()

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_train_batch_end(self, batch, logs=None):
    if self._since is None:
      # The clock starts after the first step: its time is mostly tracing
      # the training function, a one-off cost (reported apart).
      self.first_step_seconds = time.perf_counter() - self._begin
      self._since = time.perf_counter()
      return
    if self.budget_seconds and self._tick() >= self.budget_seconds:
      self.stopped_reason = "time budget"
      self.model.stop_training = True

  def on_epoch_end(self, epoch, logs=None):
    self._tick()
    due = (epoch + 1) % self.every_epochs == 0
    if due or self.model.stop_training:
      self._evaluate(epoch)

  def on_train_end(self, logs=None):
    self._tick()
    if self._last_evaluated_epoch != self._epoch and self._epoch >= 0:
      self._evaluate(self._epoch)
    if self.restore_best and self._best_weights is not None:
      self.model.set_weights(self._best_weights)
    if self.state_dir:  # the run is over: a later run starts afresh
      for name in (self.STATE, self.WEIGHTS):
        path = os.path.join(self.state_dir, name)
        if os.path.exists(path):
          os.remove(path)

  def _evaluate(self, epoch: int) -> None:
    seconds = self._tick()
    metrics = protocol.evaluate_model(self.model, self.sets, progress=False)
    self._since = time.perf_counter()  # the evaluation is not training
    self._last_evaluated_epoch = epoch
    value = float(metrics[self.metric])
    point = {"epoch": epoch + 1, "train_seconds": seconds,
             "steps": int(self.model.optimizer.iterations.numpy())}
    point.update({k: float(v) for k, v in metrics.items()
                  if isinstance(v, (int, float)) and "@" in k})
    self.curve.append(point)
    improved = value > self.best_value
    if improved:
      self.best_value, self.best_epoch, self._waited = value, epoch + 1, 0
      if self.restore_best:
        self._best_weights = [w.copy() for w in self.model.get_weights()]
    elif self.floor is None or self.best_value > self.floor:
      self._waited += 1
      if self.patience and self._waited >= self.patience:
        self.stopped_reason = "no improvement in %d evaluations" % (
            self.patience)
        self.model.stop_training = True
    if self.verbose:
      print("validation after epoch %d (%.0f s of training): %s=%.4f%s"
            % (epoch + 1, seconds, self.metric, value,
               " (best)" if improved else ""), file=sys.stderr, flush=True)
    if self.state_dir:
      self._save_state()

  def _save_state(self) -> None:
    """The monitor's state, beside the backup (atomic renames)."""
    os.makedirs(self.state_dir, exist_ok=True)
    state = {"curve": self.curve, "best_value": self.best_value,
             "best_epoch": self.best_epoch, "waited": self._waited,
             "last_evaluated_epoch": self._last_evaluated_epoch,
             "train_seconds": self._train_seconds,
             "stopped_reason": self.stopped_reason}
    if self._best_weights is not None:
      path = os.path.join(self.state_dir, self.WEIGHTS)
      with open(path + ".tmp", "wb") as f:
        np.savez(f, *self._best_weights)
      os.replace(path + ".tmp", path)
    path = os.path.join(self.state_dir, self.STATE)
    with open(path + ".tmp", "w") as f:
      json.dump(state, f)
    os.replace(path + ".tmp", path)

  def _load_state(self) -> None:
    """Reads back `_save_state` (resuming from a backup)."""
    path = os.path.join(self.state_dir, self.STATE)
    if not os.path.exists(path):
      return
    with open(path) as f:
      state = json.load(f)
    steps = int(self.model.optimizer.iterations.numpy())
    if any(p["steps"] > steps for p in state["curve"]):
      # Evaluated after the backup this run resumes from: those
      # evaluations will happen again; the state before them is not kept,
      # so the monitor starts over (a rare window: an epoch's evaluation
      # done, its backup not yet).
      return
    self.curve = state["curve"]
    self.best_value = state["best_value"]
    self.best_epoch = state["best_epoch"]
    self._waited = state["waited"]
    self._last_evaluated_epoch = state["last_evaluated_epoch"]
    self._train_seconds = state["train_seconds"]
    self.stopped_reason = state["stopped_reason"]
    weights = os.path.join(self.state_dir, self.WEIGHTS)
    if self.restore_best and os.path.exists(weights):
      with np.load(weights) as saved:
        self._best_weights = [saved["arr_%d" % i]
                              for i in range(len(saved.files))]

  def report(self) -> Dict[str, Any]:
    """What metrics.json records about the monitored training."""
    return {"validation_curve": self.curve,
            "validation_metric": self.metric,
            "best_validation": self.best_value
            if self.curve else float("nan"),
            "best_epoch": self.best_epoch,
            "stopped_reason": self.stopped_reason,
            "patience_floor": (float("nan") if self.floor is None
                               else self.floor),
            "train_seconds_monitored": self._train_seconds,
            "first_step_seconds": self.first_step_seconds}
