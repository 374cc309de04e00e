"""Next-item examples and query histories for history-based query towers.

A user's *sequence* is their interactions ordered by timestamp, ties by
original row order (as `splits.leave_last_out` orders them). Items are
stored as model item indices `p + 1` (catalog position `p`; 0 = padding),
the indices `TwoTowerModel.item_lookup` returns.

Training example at sequence position `t >= 1` of user `u` (items
`s_0 .. s_{n-1}`):

    history_t = [0, .., 0, s_{max(0, t - L)}, .., s_{t-1}]   (length L)
    target_t  = s_t

left-padded with 0, most recent item last. Position `t = 0` (empty history)
gives no example. The target is never inside its own window (the window ends
at `t - 1`), and only training rows are used, so no validation or test item
reaches a training example.

The pipeline keeps three flat arrays in memory (per-position item index,
item id string and the offset of the user's first position) and a vector of
example positions; `tf.data` shuffles and batches the positions, then
gathers `[B, L]` histories with vectorised ops (no per-row Python).
"""

import dataclasses
from typing import Optional, Sequence

import numpy as np

from tfrs_negsamp.data.errors import DataError
from tfrs_negsamp.data.interactions import Catalog
from tfrs_negsamp.data.interactions import Dataset
from tfrs_negsamp.data.interactions import Interactions


@dataclasses.dataclass(frozen=True)
class UserSequences:
  """Chronological items of every user, flattened.

  `user_ids[u]`'s items are `items[offsets[u]:offsets[u + 1]]`; `item_ids`
  are the same items as id strings; `row_users[j]` is the user code of flat
  position `j`.
  """
  user_ids: np.ndarray   # [U] str, sorted unique (np.unique order)
  offsets: np.ndarray    # [U + 1] int64
  items: np.ndarray      # [T] int64 model item indices (>= 1)
  item_ids: np.ndarray   # [T] str

  @property
  def starts(self) -> np.ndarray:
    """`[T]` offset of the first position of each position's user."""
    counts = np.diff(self.offsets)
    return np.repeat(self.offsets[:-1], counts)

  @property
  def example_positions(self) -> np.ndarray:
    """`[E]` flat positions with a non-empty history (not a user's first)."""
    return np.flatnonzero(np.arange(self.items.size) != self.starts).astype(
        np.int64)


def user_sequences(interactions: Interactions,
                   catalog: Catalog) -> UserSequences:
  """Groups `interactions` by user, chronologically (ties by row order).

  Raises:
    DataError: If an item is not in the catalog.
  """
  n = interactions.num_rows
  users, user_codes = np.unique(interactions.user_ids, return_inverse=True)
  user_codes = user_codes.reshape(-1)
  order = np.lexsort((np.arange(n), interactions.timestamps, user_codes))
  try:
    positions = catalog.index_of(interactions.item_ids[order])
  except KeyError as e:
    raise DataError("%s: %s" % (interactions.source or "<unknown>",
                                e.args[0])) from None
  counts = np.bincount(user_codes, minlength=users.size)
  offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  return UserSequences(user_ids=users, offsets=offsets,
                       items=positions.astype(np.int64) + 1,
                       item_ids=interactions.item_ids[order])


def window(items: np.ndarray, starts: np.ndarray, ends: np.ndarray,
           length: int) -> np.ndarray:
  """`[n, length]` int64: `items[max(start, end - length):end]`, left-padded.

  Vectorised over rows (numpy); `end - start` may be 0 (all padding).
  """
  idx = ends[:, None] - length + np.arange(length)[None, :]
  valid = idx >= starts[:, None]
  if items.size == 0:
    return np.zeros(idx.shape, np.int64)
  return np.where(valid, items[np.clip(idx, 0, items.size - 1)],
                  0).astype(np.int64)


def next_item_dataset(interactions: Interactions,
                      catalog: Catalog,
                      max_history: int,
                      batch_size: int,
                      shuffle: bool = True,
                      seed: int = 0,
                      drop_remainder: bool = True,
                      epochs: Optional[int] = None,
                      start_step: int = 0):
  """Batches of `{"user_id", "item_id", "history"}` next-item examples.

  Args:
    interactions: The training rows.
    catalog: Maps item ids to model indices.
    max_history: `L`, the history length.
    batch_size: Rows per batch.
    shuffle: Shuffle the examples (seeded, reshuffled every iteration).
    seed: The shuffle seed.
    drop_remainder: Drop the last partial batch.
    epochs: If set, the dataset holds `epochs` epochs in the resumable order
      of `tf_dataset.epoch_batches` (epoch `e` shuffled by the stateless
      seed `(seed, e)`, remainders dropped), from global step `start_step`
      on; otherwise one pass, reshuffled on every iteration.
    start_step: The first global step (with `epochs`).

  Returns:
    A `tf.data.Dataset` of dicts: `user_id` tf.string `[B]`, `item_id`
    tf.string `[B]` (the target), `history` tf.int64 `[B, L]`.

  Raises:
    ValueError: If `max_history` or `batch_size` is < 1.
    DataError: If there are fewer examples than one batch and
      `drop_remainder`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if max_history < 1 or batch_size < 1:
    raise ValueError("max_history and batch_size must be >= 1, got %r, %r"
                     % (max_history, batch_size))
  seqs = user_sequences(interactions, catalog)
  positions = seqs.example_positions
  if drop_remainder and positions.size < batch_size:
    raise DataError(
        "%s: %d next-item examples (interactions with a non-empty history) "
        "are fewer than one batch of %d"
        % (interactions.source or "<unknown>", positions.size, batch_size))
  items = tf.constant(seqs.items, tf.int64)
  item_ids = tf.constant(np.asarray(seqs.item_ids, dtype=object),
                         tf.string)
  user_of = np.repeat(np.arange(seqs.user_ids.size),
                      np.diff(seqs.offsets))
  user_ids = tf.constant(
      np.asarray(seqs.user_ids, dtype=object)[user_of], tf.string)
  starts = tf.constant(seqs.starts, tf.int64)
  offsets = tf.range(-max_history, 0, dtype=tf.int64)  # [L]

  def gather(pos):
    idx = pos[:, None] + offsets[None, :]                       # [B, L]
    valid = idx >= tf.gather(starts, pos)[:, None]
    history = tf.where(valid, tf.gather(items, tf.maximum(idx, 0)),
                       tf.zeros_like(idx))
    return {"user_id": tf.gather(user_ids, pos),
            "item_id": tf.gather(item_ids, pos),
            "history": history}

  if epochs is not None:
    from tfrs_negsamp.data import tf_dataset  # pylint: disable=g-import-not-at-top
    positions_t = tf.constant(positions, tf.int64)
    ds = tf_dataset.epoch_batches(
        positions.size, batch_size, epochs, seed=seed, shuffle=shuffle,
        start_step=start_step).map(lambda i: tf.gather(positions_t, i))
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)
  ds = tf.data.Dataset.from_tensor_slices(positions)
  if shuffle and positions.size > 1:
    ds = ds.shuffle(positions.size, seed=seed, reshuffle_each_iteration=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)


def evaluation_histories(dataset: Dataset,
                         user_ids: Sequence[str],
                         split: str = "test",
                         max_history: int = 50,
                         catalog: Optional[Catalog] = None) -> np.ndarray:
  """Query histories `[U, L]` int64 of the users evaluated on `split`.

  For "test": the user's training then validation items (chronological,
  the last `L`); for "validation": the training items only. Left-padded
  with 0; a user with no such item gets an all-padding row.
  """
  if split not in ("test", "validation"):
    raise ValueError("split must be 'test' or 'validation', got %r." % split)
  catalog = catalog or dataset.catalog
  parts = [dataset.train]
  if split == "test" and dataset.validation.num_rows:
    parts.append(dataset.validation)
  # Training rows precede validation rows with the same timestamp in both
  # splits, so concatenating keeps "ties by original row order".
  rows = Interactions(
      np.concatenate([p.user_ids for p in parts]),
      np.concatenate([p.item_ids for p in parts]),
      np.concatenate([p.timestamps for p in parts]),
      source=dataset.train.source)
  seqs = user_sequences(rows, catalog)
  user_ids = np.asarray(user_ids).astype(str).reshape(-1)
  if seqs.user_ids.size == 0:
    return np.zeros([user_ids.size, max_history], np.int64)
  where = np.searchsorted(seqs.user_ids, user_ids)
  where_c = np.minimum(where, seqs.user_ids.size - 1)
  found = seqs.user_ids[where_c] == user_ids
  starts = np.where(found, seqs.offsets[where_c], 0)
  ends = np.where(found, seqs.offsets[where_c + 1], 0)
  return window(seqs.items, starts, ends, max_history)
