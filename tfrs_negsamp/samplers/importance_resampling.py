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

* `resample_counts`: the per-row counts `n [B, C]` of stateless inverse-CDF
  draws, reproducible and independent of how a global batch is split
  across replicas (what BIR and XIR use);
* `poisson_counts`: an option with the same expected counts, each column
  kept independently with probability `min(1, K w_ij)` (no search);
  `column_weights` picks the scheme;
* `resample_with_replacement`: the same draws as column indices `[B, K]`;
* `sorted_uniforms`: the sorted uniforms both are computed from;
* `prefix_sums`: the blocked prefix sums of the CDFs and of those uniforms;
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
multi-replica run testable against a single device. A row's `K` uniforms
are generated sorted (`sorted_uniforms`), which makes the searches of its
draws cheap (a sorted series of binary searches takes the same branches);
only their multiset matters, and it is that of `K` iid uniforms.

Paper's towers: MF (id embeddings; `--query_tower=id`).

References:
  Chen, Lian, Li, Wang, Zheng, Chen. Cache-Augmented Inbatch Importance
  Resampling for Training Recommender Retriever. NeurIPS 2022 (arXiv
  2205.14859).
"""

from typing import Callable, Optional, Tuple

import numpy as np
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


# Width of the blocks of `prefix_sums`.
PREFIX_BLOCK = 32


def prefix_sums(x: tf.Tensor) -> tf.Tensor:
  """Inclusive prefix sums along the rows of a non-negative `[rows, n]`.

  Blocked: each row is cut into blocks of `PREFIX_BLOCK` entries (zero
  padded), the sums within a block are one matmul with a 0/1 triangular
  matrix and the block totals are accumulated by a `cumsum` over the
  blocks; about 3x faster than `tf.cumsum` along a row on CPU, whose
  kernel is sequential. The matmul kernel accumulates the products of
  every output column in one order, and rounding is monotone, so for
  non-negative `x` the result is non-decreasing along a row and unchanged
  across a zero entry: an inverse-CDF search never lands on a zero-weight
  column. A row's values do not depend on the other rows. (Both tested.)
  They may differ from a sequential sum in the last bits.

  Args:
    x: `[rows, n]` float32, non-negative.

  Returns:
    `[rows, n]` float32.
  """
  x = tf.convert_to_tensor(x, tf.float32)
  rows, n = tf.shape(x)[0], tf.shape(x)[1]
  pad = -n % PREFIX_BLOCK
  blocks = (n + pad) // PREFIX_BLOCK
  x = tf.pad(x, [[0, 0], [0, pad]])
  triangle = tf.constant(np.triu(np.ones([PREFIX_BLOCK, PREFIX_BLOCK],
                                         np.float32)))
  within = tf.reshape(
      tf.matmul(tf.reshape(x, [rows * blocks, PREFIX_BLOCK]), triangle),
      tf.stack([rows, blocks, PREFIX_BLOCK]))
  before = tf.cumsum(within[:, :, -1], axis=1, exclusive=True)
  sums = tf.reshape(within + before[:, :, None],
                    tf.stack([rows, blocks * PREFIX_BLOCK]))
  return sums[:, :n]


def sorted_uniforms(num_samples, seed: tf.Tensor, row_start=0,
                    num_rows=None, batch=None) -> tf.Tensor:
  """Rows `row_start : row_start + batch` of `[num_rows, K]` sorted uniforms.

  Each row holds the order statistics of `K` iid `U[0, 1)` draws, generated
  directly from exponential spacings: with `E_1 .. E_{K+1}` iid `Exp(1)`
  (`E = -log(1 - u)`, `u ~ stateless_uniform([num_rows, K + 1], seed)`) and
  `S_k = E_1 + ... + E_k`,

      (S_1 / S_{K+1}, ..., S_K / S_{K+1})

  has the law of the sorted sample (Devroye 1986, V.2.2). A row's values
  depend only on `seed`, its global index and `K`, so any split of the
  global batch draws the same rows. Cost: `O(num_rows K)` uniforms, then
  `O(batch K)`.

  Args:
    num_samples: `K` (int or int scalar tensor, may be 0).
    seed: `[2]` int seed of the stateless uniforms (see `step_seed`).
    row_start: global index of the first row returned.
    num_rows: global number of rows (default `batch`).
    batch: rows returned (default `num_rows - row_start`).

  Returns:
    `[batch, K]` float32, non-decreasing along each row, values in `[0, 1]`.
  """
  if num_rows is None:
    num_rows = batch
  num_samples = tf.cast(num_samples, tf.int32)
  uniforms = tf.random.stateless_uniform(
      tf.stack([tf.cast(num_rows, tf.int32), num_samples + 1]), seed=seed)
  if batch is not None:
    uniforms = tf.slice(uniforms,
                        tf.stack([tf.cast(row_start, tf.int32), 0]),
                        tf.stack([tf.cast(batch, tf.int32), -1]))
  sums = prefix_sums(-tf.math.log1p(-uniforms))
  return sums[:, :-1] / sums[:, -1:]


def resample_counts(logits: tf.Tensor, valid: tf.Tensor, num_samples,
                    seed: tf.Tensor, row_start=0, num_rows=None
                    ) -> tf.Tensor:
  """Per-row counts of `K` draws with replacement, `p ~ exp(logits)`.

  Row `i`'s counts `n_i [C]` follow `Multinomial(K, w_i)` with
  `w_ij = exp(logits_ij) / sum over valid k of exp(logits_ik)` on its valid
  columns (invalid columns have weight 0 and count 0). They are the counts
  of the draws of `resample_with_replacement` (`j` = the first column whose
  `cdf_j` exceeds the target `t = u * total`, `u` the row's sorted
  uniforms), computed without listing them: with the sorted targets
  `t_(k)`, `r_j = #{k : t_(k) < cdf_j}` and `n_ij = r_j - r_{j-1}` (one
  search per column, of a sorted series in a sorted row); when `K <= C / 2`
  each target is searched in the CDF instead and the draws are counted.
  Both give the same counts. The uniforms of row `g` of the global batch
  depend only on `(seed, g)`, so a replica drawing rows `row_start :
  row_start + B` draws what one device holding the global batch draws for
  them. A row without a valid column draws nothing (all counts 0). Cost:
  `O(B (C + K))` and `C` binary searches per row (`K` when `K <= C / 2`).

  Args:
    logits: `[B, C]` float resampling logits (no gradient is taken).
    valid: `[B, C]` bool, False = never draw this column.
    num_samples: `K`, draws per row (int or int scalar tensor, may be 0).
    seed: `[2]` int seed of the stateless uniforms (see `step_seed`).
    row_start: global index of this call's first row.
    num_rows: global number of rows (default `B`, with `row_start` 0).

  Returns:
    `[B, C]` float32 counts `n_ij`; each row sums to `K` (0 for a row
    without a valid column).
  """
  logits = tf.stop_gradient(tf.cast(logits, tf.float32))
  valid = tf.cast(valid, tf.bool)
  batch = tf.shape(logits)[0]
  uniforms = sorted_uniforms(num_samples, seed, row_start=row_start,
                             num_rows=num_rows, batch=batch)
  num_cols = logits.shape[1]
  static_samples = tf.get_static_value(num_samples)
  by_draws = (static_samples is not None and num_cols is not None
              and 2 * int(static_samples) <= num_cols)
  fn = _counts_by_draws if by_draws else _counts_by_columns
  return _by_row_blocks(fn, logits, valid, uniforms)


RESAMPLING_SCHEMES = ("multinomial", "poisson")


def poisson_counts(logits: tf.Tensor, valid: tf.Tensor, num_samples,
                   seed: tf.Tensor, row_start=0, num_rows=None
                   ) -> tf.Tensor:
  """Poisson sampling: each column kept independently, weighted.

  Row `i`'s expected multinomial counts are `m_ij = K w_ij`
  (`w_ij = exp(logits_ij) / sum over valid k of exp(logits_ik)`). Here
  column `j` is kept with probability `pi_ij = min(1, m_ij)` (one uniform
  per entry, `u_ij < m_ij`) and a kept column weighs
  `c_ij = m_ij / pi_ij = max(1, m_ij)`, so

      E[c_ij 1{kept}] = m_ij = E[n_ij]     (n ~ Multinomial(K, w_i)),

  the count trick's sum `sum_j c_ij exp(s_ij)` has the multinomial's
  expectation, and columns are kept about `sum_j min(1, m_ij) <= K` times
  per row. It is a different law (independent columns, no replacement; a
  column with `m_ij >= 1` is always kept, with its expected count as
  weight), with less variance than `resample_counts`, and no search: one
  uniform per entry. The uniforms of row `g` of the global batch depend
  only on `(seed, g)` (rows `row_start : row_start + B` of a
  `[num_rows, C]` draw), so any replica split keeps each row's columns.

  Args:
    logits: `[B, C]` float resampling logits (no gradient is taken).
    valid: `[B, C]` bool, False = never keep this column.
    num_samples: `K` (int or int scalar tensor, may be 0).
    seed: `[2]` int seed of the stateless uniforms (see `step_seed`).
    row_start: global index of this call's first row.
    num_rows: global number of rows (default `B`, with `row_start` 0).

  Returns:
    `[B, C]` float32 weights `c_ij 1{kept}` (0 where not kept; a row
    without a valid column keeps nothing).
  """
  logits = tf.stop_gradient(tf.cast(logits, tf.float32))
  valid = tf.cast(valid, tf.bool)
  batch = tf.shape(logits)[0]
  if num_rows is None:
    num_rows = batch
  masked = tf.where(valid, logits, float("-inf"))
  row_max = tf.reduce_max(masked, axis=1, keepdims=True)
  row_max = tf.where(tf.math.is_finite(row_max), row_max, 0.0)
  weights = tf.exp(masked - row_max)
  total = tf.reduce_sum(weights, axis=1, keepdims=True)
  expected = tf.cast(num_samples, tf.float32) * tf.math.divide_no_nan(
      weights, total)
  uniforms = tf.random.stateless_uniform(
      tf.stack([tf.cast(num_rows, tf.int32), tf.shape(logits)[1]]),
      seed=seed)
  uniforms = tf.slice(uniforms, tf.stack([tf.cast(row_start, tf.int32), 0]),
                      tf.stack([batch, -1]))
  kept = tf.logical_and(valid, uniforms < expected)
  return tf.where(kept, tf.maximum(expected, 1.0), 0.0)


def column_weights(scheme: str, logits: tf.Tensor, valid: tf.Tensor,
                   num_samples, seed: tf.Tensor, row_start=0,
                   num_rows=None) -> tf.Tensor:
  """`[B, C]` count-trick weights of `K` draws per row under `scheme`.

  "multinomial": the counts of `K` draws with replacement
  (`resample_counts`, the papers' rule); "poisson": `poisson_counts`
  (same expected weights, independent columns, cheaper).
  """
  if scheme == "multinomial":
    return resample_counts(logits, valid, num_samples, seed,
                           row_start=row_start, num_rows=num_rows)
  if scheme == "poisson":
    return poisson_counts(logits, valid, num_samples, seed,
                          row_start=row_start, num_rows=num_rows)
  raise ValueError("resampling must be one of %s, got %r."
                   % (", ".join(RESAMPLING_SCHEMES), scheme))


def resample_with_replacement(
    logits: tf.Tensor, valid: tf.Tensor, num_samples, seed: tf.Tensor,
    row_start=0, num_rows=None) -> Tuple[tf.Tensor, tf.Tensor]:
  """Draws `num_samples` columns per row, with replacement, `p ~ exp(logits)`.

  Inverse-CDF sampling: per row, `cdf = cumsum(exp(logits - max))` over the
  valid columns (invalid columns have weight 0 and are never drawn), and
  each draw is the first column whose `cdf` exceeds `u * cdf[-1]`. The `u`
  of a row are its sorted uniforms (`sorted_uniforms`, rows `row_start :
  row_start + B` of `num_rows`: pass the global batch size and this
  replica's first global row to make the draws independent of the replica
  split), so each row holds `K` iid draws listed in increasing column
  order. Cost: `O(B C + B K log C)`; for the counts of the draws,
  `resample_counts` is cheaper.

  Args:
    logits: `[B, C]` float resampling logits (no gradient is taken).
    valid: `[B, C]` bool, False = never draw this column.
    num_samples: `K`, draws per row (int or int scalar tensor, may be 0).
    seed: `[2]` int seed of the stateless uniforms (see `step_seed`).
    row_start: global index of this call's first row.
    num_rows: global number of rows (default `B`, with `row_start` 0).

  Returns:
    `(indices, drawn)`: `[B, K]` int64 column indices (non-decreasing along
    a row) and `[B, K]` bool, False for a draw that hit no valid column
    (only in rows without any valid column, whose draws must be ignored).
  """
  logits = tf.stop_gradient(tf.cast(logits, tf.float32))
  valid = tf.cast(valid, tf.bool)
  batch = tf.shape(logits)[0]
  uniforms = sorted_uniforms(num_samples, seed, row_start=row_start,
                             num_rows=num_rows, batch=batch)
  indices, total = _by_row_blocks(_draw_indices, logits, valid, uniforms)
  # A draw lands on a column whose weight is > 0 (its cdf step is > 0), so
  # it is valid iff the row has a valid column (total > 0: the row's best
  # valid column has weight exp(0) = 1).
  drawn = tf.broadcast_to(total > 0, tf.shape(indices))
  return tf.cast(indices, tf.int64), drawn


# Row blocks of the draws: TensorFlow's CPU `searchsorted` kernel runs on
# one thread, so independent row blocks let the executor run the searches
# on several cores. Every row is computed by the same
# kernels whatever the blocks, so the draws do not depend on them (tested).
ROW_BLOCKS = 2
# Below this many `[B, C]` entries one block is cheaper than the split.
MIN_BLOCK_ENTRIES = 1 << 16


def _cdf(logits: tf.Tensor, valid: tf.Tensor
         ) -> Tuple[tf.Tensor, tf.Tensor]:
  """`(cdf [b, C], total [b, 1])` of `exp(logits - row max)` on `valid`.

  `prefix_sums` of the weights: non-decreasing, and flat across a
  zero-weight column, so no search ever lands on one.
  """
  masked = tf.where(valid, logits, float("-inf"))
  row_max = tf.reduce_max(masked, axis=1, keepdims=True)
  row_max = tf.where(tf.math.is_finite(row_max), row_max, 0.0)
  cdf = prefix_sums(tf.exp(masked - row_max))
  return cdf, cdf[:, -1:]


def _targets(total: tf.Tensor, uniforms: tf.Tensor) -> tf.Tensor:
  """`[b, K]`: `u * total`, capped below `total` (it can round up to it).

  So a draw never passes the row's last positive-weight column (whose cdf
  is `total`). Non-decreasing along a row when the uniforms are.
  """
  return tf.minimum(uniforms * total, tf.math.nextafter(total, 0.0))


def _search_draws(cdf: tf.Tensor, total: tf.Tensor,
                  uniforms: tf.Tensor) -> tf.Tensor:
  """`[b, K]` int32: the first column with `cdf > target`, per draw.

  In a row whose total is 0 every draw is `C - 1` (and must be ignored).
  """
  indices = tf.searchsorted(cdf, _targets(total, uniforms), side="right",
                            out_type=tf.int32)
  return tf.minimum(indices, tf.shape(cdf)[1] - 1)


def _draw_indices(logits, valid, uniforms):
  """`(indices [b, K] int32, total [b, 1])` of one block of rows."""
  cdf, total = _cdf(logits, valid)
  return _search_draws(cdf, total, uniforms), total


def _counts_by_draws(logits, valid, uniforms):
  """`[b, C]` counts of one block: each draw searched in the CDF."""
  cdf, total = _cdf(logits, valid)
  indices = _search_draws(cdf, total, uniforms)
  num_cols = tf.shape(cdf)[1]
  counts = tf.math.bincount(indices, minlength=num_cols, maxlength=num_cols,
                            axis=-1, dtype=tf.float32)
  return tf.where(total > 0, counts, 0.0)


def _counts_by_columns(logits, valid, uniforms):
  """`[b, C]` counts of one block: each column's CDF value ranked.

  With the draws' (sorted) targets `t_k`, `r_j = #{k : t_k < cdf_j}` draws
  land at or left of column `j`, so `n_j = r_j - r_{j-1}` counts those with
  `cdf_{j-1} <= t_k < cdf_j`: exactly the draws that `_search_draws` puts in
  column `j`. Every target is below the row total, so the counts sum to
  `K`; a row whose total is 0 has targets 0 and counts 0.
  """
  cdf, total = _cdf(logits, valid)
  ranks = tf.searchsorted(_targets(total, uniforms), cdf, side="left",
                          out_type=tf.int32)
  counts = ranks - tf.pad(ranks[:, :-1], [[0, 0], [1, 0]])
  return tf.cast(counts, tf.float32)


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
  if isinstance(parts[0], tuple):
    return tuple(tf.concat([p[i] for p in parts], axis=0)
                 for i in range(len(parts[0])))
  return tf.concat(parts, axis=0)


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
  offset = tf.math.log(tf.maximum(counts, 1.0))  # 0 where n <= 1
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
