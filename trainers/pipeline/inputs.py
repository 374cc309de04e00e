"""The data of a run: loading, the split and the resumable training input."""

import sys
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from tfrs_negsamp import data as data_lib
from tfrs_negsamp.data import sequences
from tfrs_negsamp.data import tf_dataset
from tfrs_negsamp.models import query_towers
from trainers.pipeline import configuration


def split_kwargs(config: configuration.ExperimentConfig) -> Dict[str, Any]:
  """Arguments of the split function that `config.num_validation` implies."""
  if config.split == "leave_last_out":
    return {"num_validation": config.num_validation}
  # temporal: the split's own validation fraction, or none.
  return {} if config.num_validation else {"validation_fraction": 0.0}


def load_data(config: configuration.ExperimentConfig) -> data_lib.Dataset:
  dataset = data_lib.load_dataset(config.dataset, data_path=config.data_path,
                                  split=config.split, seed=config.seed,
                                  split_kwargs=split_kwargs(config),
                                  duplicates=config.duplicates,
                                  user_fraction=config.user_fraction,
                                  **config.synthetic)
  dropped = dataset.load_report.get("duplicate_rows_dropped", 0)
  if dropped and config.verbose:
    print("%s: dropped %d repeated (user, item) rows (--duplicates=%s)"
          % (dataset.name, dropped, config.duplicates), file=sys.stderr,
          flush=True)
  return dataset


def train_dataset(dataset: data_lib.Dataset, config: configuration.ExperimentConfig,
                  shuffle: bool = True, start_step: int = 0,
                  epochs: Optional[int] = None) -> tf.data.Dataset:
  """The training pipeline: `epochs` epochs of global batches from `start_step`.

  `epochs` defaults to `config.epochs`; one dataset holds them all (`fit`
  gets `steps_per_epoch=train_steps_per_epoch(...)` and one iterator). Epoch
  `e` visits the rows in a stateless permutation seeded by `(seed, e)` and
  global step `t` takes a fixed slice of it (`tf_dataset.epoch_batches`), so
  a run restored from a backup at step `t` (`start_step`) reads exactly the
  batches an uninterrupted run reads from step `t` on.

  Every worker builds the same pipeline (same seed, same order); tf.distribute
  splits each global batch into one contiguous block per replica (replica
  `r` gets rows `[r B/R, (r+1) B/R)`) and, across workers, keeps only the
  blocks of this worker's replicas (`AutoShardPolicy.DATA`). So every example
  is seen once per epoch across workers, and the gathered global batch is the
  same as under `MirroredStrategy` with as many replicas.

  History towers get sequence rows (`sequences.sequence_dataset`:
  `user_id`, `history` and `targets` `[B, max_history]`, every position a
  target) or, with `--training_rows=window`, next-item examples
  (`sequences.next_item_dataset`: `user_id`, `item_id` = target, `history`
  `[B, max_history]`).
  """
  epochs = config.epochs if epochs is None else epochs
  if configuration.sequence_rows(config):
    ds = sequences.sequence_dataset(
        dataset.train, dataset.catalog, config.max_history,
        batch_size=config.batch_size, shuffle=shuffle, seed=config.seed,
        drop_remainder=True, epochs=epochs, start_step=start_step,
        crop=config.sequence_crop)
    return _shard_by_data(ds).prefetch(tf.data.AUTOTUNE)
  if query_towers.uses_history(config.query_tower):
    ds = sequences.next_item_dataset(
        dataset.train, dataset.catalog, config.max_history,
        batch_size=config.batch_size, shuffle=shuffle, seed=config.seed,
        drop_remainder=True, epochs=epochs, start_step=start_step)
    return _shard_by_data(ds).prefetch(tf.data.AUTOTUNE)
  ds = tf_dataset.training_batches(
      dataset.train, config.batch_size, epochs, seed=config.seed,
      shuffle=shuffle, start_step=start_step)
  return _shard_by_data(ds).prefetch(tf.data.AUTOTUNE)


def train_steps_per_epoch(dataset: data_lib.Dataset,
                          config: configuration.ExperimentConfig) -> int:
  """`S = n // B`: n training rows (history towers: sequence rows, or
  next-item examples with window rows)."""
  if configuration.sequence_rows(config):
    return sequences.sequence_rows(
        dataset.train, dataset.catalog,
        config.max_history).steps_per_epoch(config.batch_size)
  if query_towers.uses_history(config.query_tower):
    n = sequences.user_sequences(dataset.train,
                                 dataset.catalog).example_positions.size
  else:
    n = dataset.train.num_rows
  return n // config.batch_size


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
  # The rows come from memory, not files: shard the (re)batched elements.
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return ds.with_options(options)


def _evaluation_histories(dataset: data_lib.Dataset, max_history: int,
                          user_ids: np.ndarray, split: str) -> np.ndarray:
  return sequences.evaluation_histories(dataset, user_ids, split=split,
                                        max_history=max_history)
