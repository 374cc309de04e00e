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

Sequence rows (`sequence_dataset`, SAMPLERS.md 12.1) train every position of
a user in one pass, as SASRec and its successors do: one row per user with
at least 2 training items, the window `w` of `L + 1` consecutive training
items ending at `e` (left-padded with 0),

    w        = [s_{e-L-1}, .., s_{e-1}]        (0 for indices < 0)
    inputs   = w[0:L]                          ("history" [B, L])
    targets  = w[1:L+1] where inputs > 0, else 0

so position `j`'s target is the item after its input, and its prefix
(inputs `0..j`) ends just before the target. Position `j` has a target iff
it holds an input item: the user's first item is an input only, as in the
reference code (its loss mask is on the input). `e = n` (the user's last
`L + 1` items, `crop="last"`) or, for users with `n > L + 1`, a random
`e in [L + 1, n]` per epoch (`crop="random"`).
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


CROPS = ("last", "random")


@dataclasses.dataclass(frozen=True)
class SequenceRows:
  """The sequence-level training rows: one per user with >= 2 items.

  Row `r` is user `user_ids[r]`, whose chronological items are
  `items[starts[r]:ends[r]]` (`n_r = ends[r] - starts[r] >= 2`). A user with
  a single training item gives no row: its only item has no history, so a
  row would carry no target.
  """
  user_ids: np.ndarray   # [R] str, sorted
  starts: np.ndarray     # [R] int64
  ends: np.ndarray       # [R] int64
  items: np.ndarray      # [T] int64 model item indices (>= 1)
  max_length: int        # L

  @property
  def num_rows(self) -> int:
    """`R`, the rows of one epoch."""
    return int(self.user_ids.size)

  @property
  def lengths(self) -> np.ndarray:
    """`[R]` the users' numbers of training items `n_r`."""
    return self.ends - self.starts

  @property
  def num_targets(self) -> int:
    """Valid targets of one epoch over all rows: `sum_r min(n_r, L+1) - 1`.

    The same for both crops (a crop of a long user always holds `L + 1`
    items). An epoch of `S = R // B` batches drops the `R mod B` rows left
    over, so it trains about `num_targets * S * B / R` targets.
    """
    return int(np.sum(np.minimum(self.lengths, self.max_length + 1) - 1))

  def steps_per_epoch(self, batch_size: int) -> int:
    """`S = R // B`, the batches of one epoch (`epochs` mode)."""
    return self.num_rows // batch_size


def sequence_rows(interactions: Interactions, catalog: Catalog,
                  max_length: int) -> SequenceRows:
  """The rows of `sequence_dataset` (users with at least 2 items).

  Raises:
    ValueError: If `max_length` < 1.
    DataError: If an item is not in the catalog.
  """
  if max_length < 1:
    raise ValueError("max_length must be >= 1, got %r" % (max_length,))
  seqs = user_sequences(interactions, catalog)
  counts = np.diff(seqs.offsets)
  keep = counts >= 2
  return SequenceRows(user_ids=seqs.user_ids[keep],
                      starts=seqs.offsets[:-1][keep],
                      ends=seqs.offsets[1:][keep],
                      items=seqs.items, max_length=int(max_length))


def _splitmix64(x):
  """The splitmix64 mixer of uint64 `x` (a bijection with good avalanche).

  Steele, Lea, Flood. Fast Splittable Pseudorandom Number Generators.
  OOPSLA 2014. uint64 arithmetic wraps modulo 2^64.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  c = lambda v: tf.constant(v, tf.uint64)  # noqa: E731
  x = x + c(0x9E3779B97F4A7C15)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, c(30))) * c(
      0xBF58476D1CE4E5B9)
  x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, c(27))) * c(
      0x94D049BB133111EB)
  return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, c(31)))


def crop_uniforms(seed: int, epoch, rows):
  """`u(seed, epoch, r)` in `[0, 1)` float64 for each row index `rows[i]`.

  A stateless hash, `h = mix(mix(mix(seed) ^ epoch) ^ r)` with the
  splitmix64 mixer, `u = (h >> 11) / 2^53`: a pure function of the seed,
  the epoch and the row (user), independent of batching and order.

  Args:
    seed: the base seed (Python int).
    epoch: int64 scalar tensor.
    rows: int64 `[B]` row indices.

  Returns:
    float64 `[B]`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  to_u64 = lambda v: tf.bitcast(tf.cast(v, tf.int64), tf.uint64)  # noqa
  h = _splitmix64(tf.constant(seed % (1 << 64), tf.uint64))
  h = _splitmix64(tf.bitwise.bitwise_xor(h, to_u64(epoch)))
  h = _splitmix64(tf.bitwise.bitwise_xor(h, to_u64(rows)))
  return tf.cast(tf.bitwise.right_shift(h, tf.constant(11, tf.uint64)),
                 tf.float64) * (2.0 ** -53)


def sequence_dataset(interactions: Interactions,
                     catalog: Catalog,
                     max_length: int,
                     batch_size: int,
                     shuffle: bool = True,
                     seed: int = 0,
                     drop_remainder: bool = True,
                     epochs: Optional[int] = None,
                     start_step: int = 0,
                     crop: str = "last"):
  """Batches of sequence rows `{"user_id", "history", "targets"}`.

  One row per user with at least 2 training items (`sequence_rows`): the
  `L + 1` items of the window ending at `e`, left-padded with 0, split into
  `history = w[:L]` and `targets = w[1:]` (0 where the input is padding; see
  the module docstring). Only `interactions` (the training rows) are read,
  so no validation or test item reaches a row.

  Crops of users longer than `L + 1`:
    * "last" (default): their last `L + 1` training items, every epoch, as
      the SASRec and gSASRec reference code trains (the published ML-1M
      rows use it), and the most recent items are the context of the
      held-out ones. On ML-1M at `L = 200` it keeps 66% of the training
      targets (1,539 of 6,040 users are longer; up to 2,274 items), at
      `L = 50` 27%. Yet at `L = 50` (SASRec, full softmax, one seed,
      `trainers/bench_sequence.py --parts=crop`) both crops reach the same
      validation Recall@10 / NDCG@10 after 12 epochs (0.2646 / 0.1446
      last, 0.2647 / 0.1440 random), "last" ahead at 4 epochs (0.194 vs
      0.184): the extra older targets buy nothing measurable there.
    * "random": a window of `L + 1` consecutive items ending at `e = L + 1
      + floor(u (n - L))` (uniform over the `n - L` windows), `u =
      crop_uniforms(seed, epoch, row)`: a stateless function of the seed,
      the epoch and the user, so every epoch sees another crop and a
      restored run the same ones. Over epochs it trains every target, at
      the cost of the rows' recency. Needs `epochs`.

  Args:
    interactions: The training rows.
    catalog: Maps item ids to model indices.
    max_length: `L`, the positions per row.
    batch_size: Rows per batch.
    shuffle: Shuffle the rows (seeded).
    seed: The shuffle (and crop) seed.
    drop_remainder: Drop the last partial batch (one-pass mode).
    epochs: If set, `epochs` epochs in the resumable order of
      `tf_dataset.epoch_batches` (epoch `e` shuffled by the stateless seed
      `(seed, e)`, remainders dropped), from global step `start_step` on:
      batch `t` is a pure function of `(seed, t)`. Otherwise one pass,
      reshuffled on every iteration.
    start_step: The first global step (with `epochs`).
    crop: "last" or "random" (see above).

  Returns:
    A `tf.data.Dataset` of dicts: `user_id` tf.string `[B]`, `history`
    tf.int64 `[B, L]`, `targets` tf.int64 `[B, L]` (model item indices, 0 =
    padding / no target).

  Raises:
    ValueError: If `max_length` or `batch_size` is < 1, `crop` is unknown,
      or `crop="random"` without `epochs`.
    DataError: If there are fewer rows than one batch and `drop_remainder`
      (or `epochs`).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if max_length < 1 or batch_size < 1:
    raise ValueError("max_length and batch_size must be >= 1, got %r, %r"
                     % (max_length, batch_size))
  if crop not in CROPS:
    raise ValueError("crop must be one of %s, got %r"
                     % (", ".join(CROPS), crop))
  if crop == "random" and epochs is None:
    raise ValueError("crop='random' needs `epochs` (crops are drawn per "
                     "epoch).")
  rows = sequence_rows(interactions, catalog, max_length)
  if (drop_remainder or epochs is not None) and rows.num_rows < batch_size:
    raise DataError(
        "%s: %d sequence rows (users with at least 2 training items) are "
        "fewer than one batch of %d"
        % (interactions.source or "<unknown>", rows.num_rows, batch_size))
  length = int(max_length)
  items = tf.constant(rows.items, tf.int64)
  user_ids = tf.constant(np.asarray(rows.user_ids, dtype=object), tf.string)
  starts = tf.constant(rows.starts, tf.int64)
  ends = tf.constant(rows.ends, tf.int64)
  window = tf.range(-(length + 1), 0, dtype=tf.int64)  # [L + 1]
  steps = rows.steps_per_epoch(batch_size)

  def gather(step, row):
    start = tf.gather(starts, row)
    end = tf.gather(ends, row)
    if crop == "random":
      n = end - start
      u = crop_uniforms(seed, step // steps, row)
      choices = tf.maximum(n - length, 1)
      offset = tf.minimum(
          tf.cast(tf.floor(u * tf.cast(choices, tf.float64)), tf.int64),
          choices - 1)
      end = tf.where(n > length + 1, start + length + 1 + offset, end)
    idx = end[:, None] + window[None, :]                         # [B, L+1]
    w = tf.where(idx >= start[:, None],
                 tf.gather(items, tf.maximum(idx, 0)), tf.zeros_like(idx))
    history = w[:, :-1]
    targets = tf.where(history > 0, w[:, 1:], tf.zeros_like(history))
    return {"user_id": tf.gather(user_ids, row), "history": history,
            "targets": targets}

  if epochs is not None:
    from tfrs_negsamp.data import tf_dataset  # pylint: disable=g-import-not-at-top
    ds = tf_dataset.epoch_batches(rows.num_rows, batch_size, epochs,
                                  seed=seed, shuffle=shuffle,
                                  start_step=start_step)
    ds = ds.enumerate(start=start_step)
    return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                  deterministic=True)
  ds = tf.data.Dataset.range(rows.num_rows)
  if shuffle and rows.num_rows > 1:
    ds = ds.shuffle(rows.num_rows, seed=seed, reshuffle_each_iteration=True)
  ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return ds.map(lambda row: gather(tf.constant(0, tf.int64), row),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


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
