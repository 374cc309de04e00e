"""`model.fit` with exact resume, step timing and a resume report."""

import logging
import os
import time
from typing import Any, Dict, List, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp import data as data_lib
from tfrs_negsamp import distribute
from tfrs_negsamp.models import two_tower
from trainers.pipeline import configuration
from trainers.pipeline import inputs
from trainers.pipeline import strategies
from trainers.pipeline import summaries


def backup_position(backup_dir: str, steps_per_epoch: int) -> int:
  """The global step `fit` resumes at from `backup_dir` (0: no backup).

  Reads the counters `BackupAndRestore` saves (`ckpt_saved_epoch` `e`,
  `ckpt_saved_batch` `j`: the last finished step) and continues where Keras
  does: `e S + j + 1` (`(e + 1) S` after an epoch-end save).
  """
  latest = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
  if latest is None:
    return 0
  reader = tf.train.load_checkpoint(latest)
  epoch, batch = (int(reader.get_tensor(
      "%s/.ATTRIBUTES/VARIABLE_VALUE" % name))
                  for name in ("ckpt_saved_epoch", "ckpt_saved_batch"))
  if epoch < 0:
    return 0
  if batch < 0:
    return (epoch + 1) * steps_per_epoch
  return epoch * steps_per_epoch + batch + 1


class _DropUnbuiltWarning(logging.Filter):

  def filter(self, record):
    return "BackupAndRestore callback" not in record.getMessage()


class BackupAndRestore(tf.keras.callbacks.BackupAndRestore):
  """Keras's `BackupAndRestore` without its "model is unbuilt" warning.

  A `tfrs.Model` has no `call`, so Keras never marks the model built, and
  the base class warns at every start that it must be built before `fit`.
  That does not hold here: `assembly.create_model` creates every variable
  (sampler state included) before `fit` with one forward pass, and restore
  works (tests/resume_test.py). Marking the model built instead would break
  the tf.keras SavedModel export, so only this warning is dropped.
  """

  def on_train_begin(self, logs=None):
    logger = logging.getLogger("tensorflow")  # Keras's `tf_logging`
    drop = _DropUnbuiltWarning()
    logger.addFilter(drop)
    try:
      super().on_train_begin(logs)
    finally:
      logger.removeFilter(drop)


def interruption(model: two_tower.TwoTowerModel,
                 config: configuration.ExperimentConfig,
                 steps_per_epoch: int) -> str:
  """The line a Ctrl-C during `fit` ends with: the step, what is kept."""
  step = int(model.optimizer.iterations.numpy())
  line = "interrupted at step %d of %d" % (step,
                                           config.epochs * steps_per_epoch)
  if not config.backup_dir:
    return line + ("; progress is lost (with --backup_dir=DIR the same "
                   "command resumes a run)")
  saved = backup_position(config.backup_dir, steps_per_epoch)
  if not saved:
    return line + (", before the first backup (every %d steps): the same "
                   "command starts again from step 0" % config.backup_freq)
  return line + ("; run the same command to resume from %s (backed up at "
                 "step %d)" % (config.backup_dir, saved))


class ExactResume(tf.keras.callbacks.Callback):
  """Checks a restored backup against the input position; restores metrics.

  Goes right after `BackupAndRestore`. The restored optimizer step must be
  `start_step`, the step the input pipeline was built from (else the backup
  came from other flags). When resuming inside an epoch, `fit` resets the
  metrics at the epoch's start: their partial-epoch state is put back from
  the backup, so the epoch's mean covers all its steps, as without a
  restart. The metrics accumulate on replica 0 only (`TwoTowerModel`), so
  the saved (summed) value goes back to replica 0 and zeros elsewhere:
  bit-identical for any replica count.
  """

  def __init__(self, start_step: int, steps_per_epoch: int,
               backup_dir: str):
    super().__init__()
    self.start_step = start_step
    self.steps_per_epoch = steps_per_epoch
    self.backup_dir = backup_dir
    self._metric_state = None

  def on_train_begin(self, logs=None):
    restored = int(self.model.optimizer.iterations.numpy())
    if self.start_step and restored != self.start_step:
      raise ValueError(
          "the backup in %s is at optimizer step %d, but its epoch/batch "
          "counters give step %d with %d steps per epoch: it was written "
          "with other flags; remove it or use the original flags."
          % (self.backup_dir, restored, self.start_step,
             self.steps_per_epoch))
    if self.start_step % self.steps_per_epoch:
      reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
          os.path.join(self.backup_dir, "chief")))
      self._metric_state = [(v, _saved_value(reader, m, v))
                            for m in self.model.metrics
                            for v in m.variables]

  def on_epoch_begin(self, epoch, logs=None):
    if self._metric_state is None:
      return
    state, self._metric_state = self._metric_state, None
    strategy = self.model.distribute_strategy
    if strategy.num_replicas_in_sync == 1:
      for variable, value in state:
        variable.assign(value)
      return

    def put_back():
      context = tf.distribute.get_replica_context()
      first = tf.equal(context.replica_id_in_sync_group, 0)
      for variable, value in state:
        variable.assign(tf.where(first, value, tf.zeros_like(value)))

    strategy.run(put_back)


def _saved_value(reader, metric, variable) -> tf.Tensor:
  """`variable` of `metric` as saved in the backup (summed over replicas).

  Read from the file: the restored variable holds the sum split evenly
  across the replicas, which need not add up to it bit for bit.
  """
  key = "model/%s/%s/.ATTRIBUTES/VARIABLE_VALUE" % (
      metric.name, variable.name.split(":")[0].split("/")[-1])
  if reader.has_tensor(key):
    return tf.constant(reader.get_tensor(key), variable.dtype)
  return tf.convert_to_tensor(variable.read_value())


class StepTimer(tf.keras.callbacks.Callback):
  """Wall time per training step (median after the first `skip` steps)."""

  def __init__(self, skip: int = 5):
    super().__init__()
    self.skip = skip
    self.durations: List[float] = []
    self._last = None
    self.start = self.end = None
    self.steps = 0

  def on_train_begin(self, logs=None):
    self.start = time.perf_counter()

  def on_epoch_begin(self, epoch, logs=None):
    self._last = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    now = time.perf_counter()
    self.steps += 1
    if self.steps > self.skip:
      self.durations.append(now - self._last)
    self._last = now

  def on_train_end(self, logs=None):
    self.end = time.perf_counter()

  @property
  def step_seconds(self) -> float:
    return float(np.median(self.durations)) if self.durations else float("nan")


class ResumeReporter(tf.keras.callbacks.Callback):
  """Says whether training starts fresh or resumes (after BackupAndRestore)."""

  def __init__(self):
    super().__init__()
    self.resumed_from_step = 0

  def on_train_begin(self, logs=None):
    self.resumed_from_step = int(self.model.optimizer.iterations.numpy())
    if self.resumed_from_step:
      print("Resumed from backup at step %d." % self.resumed_from_step,
            flush=True)
    else:
      print("Starting training at step 0.", flush=True)


def train(model: two_tower.TwoTowerModel, dataset: data_lib.Dataset,
          config: configuration.ExperimentConfig, strategy: tf.distribute.Strategy,
          extra_callbacks: Sequence[tf.keras.callbacks.Callback] = ()
          ) -> Dict[str, Any]:
  """`model.fit` on the training split; returns timing statistics."""
  global_batch = config.batch_size
  if dataset.train.num_rows < global_batch:
    raise ValueError("the training split has %d rows, fewer than one batch "
                     "of %d." % (dataset.train.num_rows, global_batch))
  replicas = strategy.num_replicas_in_sync
  if global_batch % replicas:
    raise ValueError("batch_size %d is not divisible by the %d replicas."
                     % (global_batch, replicas))
  steps_per_epoch = inputs.train_steps_per_epoch(dataset, config)
  start_step = (backup_position(config.backup_dir, steps_per_epoch)
                if config.backup_dir else 0)
  if start_step > config.epochs * steps_per_epoch:
    raise ValueError(
        "the backup in %s is at step %d, past the %d steps of --epochs=%d; "
        "remove it or use the original flags."
        % (config.backup_dir, start_step, config.epochs * steps_per_epoch,
           config.epochs))
  train_ds = inputs.train_dataset(dataset, config, start_step=start_step)
  model.local_batch_size = global_batch // replicas
  timer = StepTimer()
  resume = ResumeReporter()
  callbacks = []
  if config.backup_dir:
    callbacks.append(BackupAndRestore(
        config.backup_dir, save_freq=config.backup_freq,
        delete_checkpoint=True))
    callbacks.append(ExactResume(start_step, steps_per_epoch,
                                 config.backup_dir))
  callbacks += [resume, timer] + list(extra_callbacks)
  callbacks += summaries.callbacks(dataset, config, strategy)
  with distribute.GatherLog() as gathers:
    try:
      history = model.fit(train_ds, epochs=config.epochs,
                          steps_per_epoch=steps_per_epoch,
                          callbacks=callbacks, verbose=config.verbose)
    except KeyboardInterrupt:  # Ctrl-C: one line (`common.run`).
      raise KeyboardInterrupt(interruption(model, config,
                                           steps_per_epoch)) from None
  steps = timer.steps
  seconds = timer.end - timer.start
  return {
      "train_seconds": seconds,
      "steps": steps,
      "resumed_from_step": resume.resumed_from_step,
      "step_seconds": timer.step_seconds,
      "examples_per_second": (steps * global_batch / seconds
                              if seconds > 0 else float("nan")),
      # Bytes of the samplers' and the model's all-gathers per step (the
      # gathered results, R x the local blocks), from the traced step.
      "gathered_bytes_per_step": gathers.bytes_per_step(
          strategy.num_replicas_in_sync // strategies.num_workers(strategy)),
      "final_loss_per_example": float(
          history.history["loss_per_example"][-1])
          if history.history.get("loss_per_example") else float("nan"),
  }
