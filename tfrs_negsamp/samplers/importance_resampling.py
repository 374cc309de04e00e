"""Importance resampling with replacement: shared mechanics of BIR and XIR.

Sampling-importance-resampling (SIR) turns a proposal sample into an
approximate sample of a target distribution. For retrieval
(docs/design/bir_xir.md#idea),
the proposal is the in-batch items (a popularity sample `q`) and the target
is the model's softmax `P(j | i) ~ exp(s_ij)`. Row `i` draws `K` columns with
replacement from

    w_ij = exp(a_ij) / sum_k exp(a_ik),   a_ij = stop_gradient(s_ij) - log q_j

over its valid columns, and the drawn multiset is fed to the softmax through
the count trick (docs/design/shared.md#count-trick): with `n_ij` the number of
times row `i`
drew column `j`,

    sum over draws exp(s) = sum_j exp(s_ij + log n_ij),

so the multiset is exactly a dense `[B, C]` logits matrix with offset
`log n_ij` where `n_ij > 0` and a mask where `n_ij = 0`. The functions here are
public so that any sampler that draws with replacement can reuse them:

* `resample_with_replacement`: stateless inverse-CDF draws, reproducible and
  independent of how a global batch is split across replicas;
* `draw_counts`: draws -> per-row counts `n [B, C]`;
* `count_offsets`: counts -> `(logit_offset, score_mask)` for a
  `CandidateGroup`;
* `step_seed`: the stateless seed of one (base seed, step, stream);
* `draw_seed`: the same, folded with the replica id and a draw index, for
  the per-replica draws of the other samplers (catalog, adaptive,
  two-stage);
* `encode_unique`: embeds ids through an item model once per distinct id.

Randomness (docs/design/multi_replica.md#d6): all draws are stateless. The
uniforms of a draw
are generated for the whole global batch (`num_rows` rows) from one seed, and
each replica uses its own rows, so a row's draws depend only on the seed, the
row's global index and the row's logits. One device holding the global batch
therefore draws exactly what the replicas draw for their rows, which makes the
multi-replica run testable against a single device.

Paper's towers: MF (id embeddings; `--query_tower=id`).

References:
  Chen, Lian, Li, Wang, Zheng, Chen. Cache-Augmented Inbatch Importance
  Resampling for Training Recommender Retriever. NeurIPS 2022 (arXiv
  2205.14859).
"""

from typing import Callable, Optional, Tuple

import tensorflow as tf

from tfrs_negsamp import distribute

# Streams of one step's seed, so that the draws of one step are independent.
STREAM_BATCH = 0
STREAM_CACHE = 1
STREAM_REFRESH = 2
NUM_STREAMS = 3


def step_seed(seed: int, step: tf.Tensor, stream: int) -> tf.Tensor:
  """The stateless seed `[2]` int64 `[seed, step * NUM_STREAMS + stream]`.

  Args:
    seed: base seed (the sampler's `seed`).
    step: int64 scalar, the sampler's step counter.
    stream: one of the `STREAM_*` constants.

  Under `ParameterServerStrategy` the pair is folded
  (`stateless_fold_in`) with the index of the worker running the step
  (`distribute.worker_index`).

  Returns:
    A `[2]` int64 tensor for `tf.random.stateless_*` ops.
  """
  if not 0 <= stream < NUM_STREAMS:
    raise ValueError("stream must be in [0, %d), got %r."
                     % (NUM_STREAMS, stream))
  step = tf.cast(step, tf.int64)
  pair = tf.stack([tf.constant(seed, tf.int64), step * NUM_STREAMS + stream])
  worker = distribute.worker_index()
  if worker is None:
    return pair
  # Parameter-server training: two workers can read the same step counter,
  # so the worker index is folded in and their draws stay independent.
  return tf.random.experimental.stateless_fold_in(pair, worker)


def draw_seed(seed: int, step: tf.Tensor, draw: int = 0,
              stream: int = STREAM_BATCH) -> tf.Tensor:
  """The stateless seed `[2]` of one per-replica draw of one step.

  `step_seed(seed, step, stream)` folded (`stateless_fold_in`) with this
  replica's id (`distribute.replica_info`), then with `draw`, the index of
  an independent draw within the step (e.g. a redraw round). So the seed is
  a function of `(seed, step, stream, replica id, draw)` only: a run
  restarted from a checkpoint of `step` draws the same numbers, and
  replicas draw different ones. For samplers whose replicas draw their own
  rows or pools; the global-batch draws of `resample_with_replacement` use
  `step_seed` directly.

  Args:
    seed: base seed (the sampler's `seed`).
    step: int scalar, the sampler's step counter.
    draw: static int, the draw's index within the step.
    stream: one of the `STREAM_*` constants.

  Returns:
    A `[2]` int32 tensor for `tf.random.stateless_*` ops.
  """
  replica_id, _ = distribute.replica_info()
  fold = tf.random.experimental.stateless_fold_in
  return fold(fold(step_seed(seed, step, stream), replica_id), draw)


def resample_with_replacement(
    logits: tf.Tensor, valid: tf.Tensor, num_samples, seed: tf.Tensor,
    row_start=0, num_rows=None) -> Tuple[tf.Tensor, tf.Tensor]:
  """Draws `num_samples` columns per row, with replacement, `p ~ exp(logits)`.

  Inverse-CDF sampling: per row, `cdf = cumsum(exp(logits - max))` over the
  valid columns (invalid columns have weight 0 and are never drawn), and each
  draw is the first column whose `cdf` exceeds `u * cdf[-1]` for a uniform `u`.
  The uniforms are `tf.random.stateless_uniform([num_rows, num_samples],
  seed)`, of which this call uses rows `row_start : row_start + B`: pass the
  global batch size and this replica's first global row to make the draws
  independent of the replica split. Cost: `O(B C + B K log C)`.

  Args:
    logits: `[B, C]` float resampling logits (no gradient is taken).
    valid: `[B, C]` bool, False = never draw this column.
    num_samples: `K`, draws per row (int or int scalar tensor, may be 0).
    seed: `[2]` int seed of the stateless uniforms (see `step_seed`).
    row_start: global index of this call's first row.
    num_rows: global number of rows (default `B`, with `row_start` 0).

  Returns:
    `(indices, drawn)`: `[B, K]` int64 column indices and `[B, K]` bool, False
    for a draw that hit no valid column (only in rows without any valid
    column, whose draws must be ignored).
  """
  logits = tf.stop_gradient(tf.cast(logits, tf.float32))
  valid = tf.cast(valid, tf.bool)
  num_cols = tf.shape(logits, out_type=tf.int64)[1]
  batch = tf.shape(logits)[0]
  if num_rows is None:
    num_rows = batch
  uniforms = tf.random.stateless_uniform(
      tf.stack([tf.cast(num_rows, tf.int32), tf.cast(num_samples, tf.int32)]),
      seed=seed)
  uniforms = tf.slice(uniforms, tf.stack([tf.cast(row_start, tf.int32), 0]),
                      tf.stack([batch, -1]))
  indices, total = _by_row_blocks(_inverse_cdf, logits, valid, uniforms)
  # u * total can round up to total (p ~ 2^-24): no column exceeds it.
  indices = tf.minimum(indices, num_cols - 1)
  # A draw lands on a column whose weight is > 0 (its cdf step is > 0), so
  # it is valid iff the row has a valid column (total > 0: the row's best
  # valid column has weight exp(0) = 1): the same as gathering `valid` at
  # the indices, without the `[B, K]` gather.
  drawn = tf.broadcast_to(total > 0, tf.shape(indices))
  return indices, drawn


# Row blocks of the inverse-CDF draws: TensorFlow's CPU `cumsum` (along a
# row) and `searchsorted` kernels run on one thread, so independent row
# blocks let the executor run them on several cores. Each row's values are
# computed by the same kernels in the same order, so the draws are
# bit-identical for any number of blocks (tested).
ROW_BLOCKS = 2
# Below this many `[B, C]` entries one block is cheaper than the split.
MIN_BLOCK_ENTRIES = 1 << 16


def _inverse_cdf(logits: tf.Tensor, valid: tf.Tensor, uniforms: tf.Tensor
                 ) -> Tuple[tf.Tensor, tf.Tensor]:
  """`(indices [b, K] int64, total [b, 1])` of one block of rows."""
  masked = tf.where(valid, logits, float("-inf"))
  row_max = tf.reduce_max(masked, axis=1, keepdims=True)
  row_max = tf.where(tf.math.is_finite(row_max), row_max, 0.0)
  cdf = tf.cumsum(tf.exp(masked - row_max), axis=1)
  total = cdf[:, -1:]
  indices = tf.searchsorted(cdf, uniforms * total, side="right",
                            out_type=tf.int64)
  return indices, total


def _by_row_blocks(fn, logits, valid, uniforms):
  """`fn` on `ROW_BLOCKS` row blocks (when large enough), concatenated."""
  rows, cols = logits.shape[0], logits.shape[1]
  if (ROW_BLOCKS <= 1 or rows is None or cols is None or rows < ROW_BLOCKS
      or rows * cols < MIN_BLOCK_ENTRIES):
    return fn(logits, valid, uniforms)
  sizes = [rows // ROW_BLOCKS] * (ROW_BLOCKS - 1)
  sizes.append(rows - sum(sizes))
  parts = [fn(*block) for block in zip(tf.split(logits, sizes),
                                       tf.split(valid, sizes),
                                       tf.split(uniforms, sizes))]
  return (tf.concat([p[0] for p in parts], axis=0),
          tf.concat([p[1] for p in parts], axis=0))


def draw_counts(indices: tf.Tensor, drawn: tf.Tensor,
                num_columns) -> tf.Tensor:
  """Per-row multiset counts of the drawn columns.

  Args:
    indices: `[B, K]` int column indices.
    drawn: `[B, K]` bool, only True draws are counted.
    num_columns: `C`.

  Returns:
    `n` `[B, C]` float32, `n[i, j]` = times row `i` drew column `j`.
  """
  indices = tf.cast(indices, tf.int64)
  num_columns = tf.cast(num_columns, tf.int64)
  batch = tf.shape(indices, out_type=tf.int64)[0]
  flat = indices + tf.range(batch)[:, None] * num_columns
  counts = tf.math.unsorted_segment_sum(
      tf.cast(drawn, tf.float32), flat, batch * num_columns)
  return tf.reshape(counts, tf.stack([batch, num_columns]))


def count_offsets(counts: tf.Tensor, keep: Optional[tf.Tensor] = None
                  ) -> Tuple[tf.Tensor, tf.Tensor]:
  """The count trick: `(logit_offset, score_mask)` of a per-row multiset.

  Args:
    counts: `[B, C]` non-negative draw counts `n`.
    keep: optional `[B, C]` bool of columns kept regardless of their count
      (the positive column), with offset 0 unless drawn.

  Returns:
    `logit_offset = log n` where `n > 0` else 0, and
    `score_mask = (n > 0) | keep`, both `[B, C]`.
  """
  present = counts > 0
  offset = tf.where(present, tf.math.log(tf.maximum(counts, 1.0)), 0.0)
  mask = present if keep is None else tf.logical_or(present, keep)
  return offset, mask


def encode_unique(item_model: Callable[[tf.Tensor], tf.Tensor],
                  ids: tf.Tensor) -> tf.Tensor:
  """`item_model(ids)`, encoding each distinct id once.

  Gradients are unchanged: `tf.gather`'s gradient sums the rows of a
  repeated id, as the repeated encodings would.

  Args:
    item_model: int64 ids `[n]` -> embeddings `[n, d]`.
    ids: `[M]` int64 ids, possibly repeated.

  Returns:
    `[M, d]` embeddings.
  """
  unique, index = tf.unique(tf.cast(ids, tf.int64))
  return tf.gather(item_model(unique), index)
