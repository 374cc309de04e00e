"""TensorBoard logs of a training run (`--tensorboard_dir`).

Under the folder, laid out as `tf.keras.callbacks.TensorBoard` lays it out
(one sub-folder per run, the step of an epoch scalar is the 0-based epoch):

- `train/`: per epoch `epoch_loss`, `epoch_loss_per_example` and the
  model's other logged values (Keras's TensorBoard callback), and
  `epoch_step_seconds`, the median wall time of the epoch's training steps;
- `validation/`: per epoch the full-corpus metrics on the validation split
  (`epoch_recall@50`, `epoch_hr@10`, `epoch_ndcg@10`, `epoch_balance`, ...:
  `full_corpus.quality_metric_names`), one full-corpus evaluation per epoch
  (none when the data has no validation split, or none of its users is
  in the training split);
- `<eval_split>/`: the run's final metrics (`final_recall@50`, ...,
  `final_lift_over_popularity`), at the last epoch's step.

Only the chief of a multi-worker job writes.
"""

import os
import time
from typing import Any, Dict, List

import numpy as np
import tensorflow as tf

from tfrs_negsamp import data as data_lib
from tfrs_negsamp import protocol
from tfrs_negsamp.evaluation import full_corpus
from trainers.pipeline import configuration
from trainers.pipeline import strategies

EPOCH_PREFIX = "epoch_"
FINAL_PREFIX = "final_"


class EpochSummaries(tf.keras.callbacks.Callback):
  """Per epoch: the median step time, and the validation metrics.

  Args:
    log_dir: the `--tensorboard_dir`.
    sets: the validation split's evaluation sets, or None for none.
  """

  def __init__(self, log_dir: str, sets=None):
    super().__init__()
    self.sets = sets
    self._train = tf.summary.create_file_writer(os.path.join(log_dir,
                                                             "train"))
    self._validation = (tf.summary.create_file_writer(
        os.path.join(log_dir, "validation")) if sets is not None else None)
    self._durations: List[float] = []
    self._last = 0.0

  def on_epoch_begin(self, epoch, logs=None):
    self._durations = []
    self._last = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    now = time.perf_counter()
    self._durations.append(now - self._last)
    self._last = now

  def on_epoch_end(self, epoch, logs=None):
    if self._durations:
      # Without the epoch's first step (tracing, or the first batch of a
      # pipeline) when there are others.
      steps = self._durations[1:] or self._durations
      with self._train.as_default(step=epoch):
        tf.summary.scalar(EPOCH_PREFIX + "step_seconds",
                          float(np.median(steps)))
      self._train.flush()
    if self._validation is not None:
      metrics = protocol.evaluate_model(self.model, self.sets,
                                        progress=False)
      write_scalars(self._validation, EPOCH_PREFIX, metrics, epoch)

  def on_train_end(self, logs=None):
    self._train.close()
    if self._validation is not None:
      self._validation.close()


def write_scalars(writer, prefix: str, metrics: Dict[str, Any],
                  step: int) -> None:
  """The quality metrics (and the lift, if any) of `metrics` as scalars."""
  names = full_corpus.quality_metric_names() + ("lift_over_popularity",)
  with writer.as_default(step=step):
    for name in names:
      value = metrics.get(name)
      if value is not None and np.isfinite(value):
        tf.summary.scalar(prefix + name, float(value))
  writer.flush()


def callbacks(dataset: data_lib.Dataset,
              config: configuration.ExperimentConfig,
              strategy: tf.distribute.Strategy
              ) -> List[tf.keras.callbacks.Callback]:
  """The TensorBoard callbacks of `fit` ([] without --tensorboard_dir)."""
  if not config.tensorboard_dir or not strategies.is_chief(strategy):
    return []
  sets = None
  if dataset.validation.num_rows:
    sets = protocol.evaluation_sets(dataset, "validation")
    if not sets.user_ids.size:  # no validation user is known to the model
      sets = None
  return [tf.keras.callbacks.TensorBoard(
              config.tensorboard_dir, write_graph=False, profile_batch=0,
              update_freq="epoch"),
          EpochSummaries(config.tensorboard_dir, sets)]


def write_final(config: configuration.ExperimentConfig,
                metrics: Dict[str, Any]) -> None:
  """The run's final metrics under `<tensorboard_dir>/<eval_split>/`."""
  writer = tf.summary.create_file_writer(
      os.path.join(config.tensorboard_dir, config.eval_split))
  write_scalars(writer, FINAL_PREFIX, metrics, max(config.epochs - 1, 0))
  writer.close()
