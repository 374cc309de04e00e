"""Adaptive negative sampling (ANS): the hardest negatives of a random pool.

For row `i`, a pool of `P` in-batch columns is drawn uniformly without
replacement from the other `G - 1` columns of the (global) batch. Drawing
columns uniformly draws items in proportion to their number of copies in the
batch, i.e. the batch multiset of Prakash et al.'s BNS pool. Out of the
pool, the `k` columns with the highest current score `<u_i, v_j>` are kept
(TFRS `HardNegativeMining`, applied after masks, no logQ correction, so the
selection is on raw scores as in the reference code):

    S_i  = top-k_{j in pool_i} <u_i, v_j>
    l_i  = -z_ii + logsumexp_{j in {i} + S_i} z_ij,    z_ij = <u_i, v_j>/tau

The unselected pool columns and the columns outside the pool are **dropped**
(not replaced by a constant logit as in the reference code; SAMPLERS.md 7.5),
so gradients flow only through the positive and the selected negatives.
Accidental hits are masked before the selection.

Randomness: the pool is drawn with stateful `tf.random.uniform` per replica
(SAMPLERS.md D6); no state.

References:
  Prakash, Bermperidis, Chennu. Evaluating Performance and Bias of Negative
  Sampling in Large-Scale Sequential Recommendation Models. arXiv 2410.17276,
  2024 (ANS, code name `adaptive-only`).
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from tfrs_negsamp.samplers import base


def batch_pool_mask(num_queries, num_columns, pool_size: int,
                    num_in_batch=None) -> tf.Tensor:
  """`[B, C]` bool: row `i` keeps column `i` and `P` random other columns.

  The pool is drawn among the first `num_in_batch` columns (default all)
  excluding the diagonal, uniformly without replacement (top-P of uniform
  keys). Columns at or after `num_in_batch` are always kept.

  Args:
    num_queries: `B`.
    num_columns: `C`, the shared columns.
    pool_size: `P` (capped at the `num_in_batch - 1` other columns).
    num_in_batch: the in-batch columns the pool is drawn from.
  """
  if num_in_batch is None:
    num_in_batch = num_columns
  keys = tf.random.uniform([num_queries, num_in_batch])
  diag = tf.cast(tf.eye(num_queries, num_in_batch), tf.bool)
  keys = tf.where(diag, -1.0, keys)
  k = tf.minimum(pool_size, num_in_batch - 1)
  kth = tf.reduce_min(tf.math.top_k(keys, k=tf.maximum(k, 1)).values, axis=1,
                      keepdims=True)
  keep = tf.logical_or(diag, tf.logical_and(keys >= kth, k > 0))
  rest = num_columns - num_in_batch
  return tf.concat([keep, tf.ones([num_queries, rest], tf.bool)], axis=1)


def check_pool_arguments(pool_size, num_hard_negatives):
  """Validates `(P, k)` of the adaptive samplers; returns them as ints."""
  if int(pool_size) < 1 or int(num_hard_negatives) < 1:
    raise ValueError("pool_size and num_hard_negatives must be >= 1, got "
                     "%r, %r." % (pool_size, num_hard_negatives))
  return int(pool_size), int(num_hard_negatives)


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class AdaptiveSampler(base.NegativeSampler):
  """Top-`k` by current score out of `P` random in-batch negatives per row.

  Args:
    pool_size: `P`, random in-batch columns per row.
    num_hard_negatives: `k`, kept per row.
    remove_accidental_hits: mask columns equal to the row's positive.
  """

  def __init__(self, pool_size: int = 100, num_hard_negatives: int = 20,
               remove_accidental_hits: bool = True, **kwargs) -> None:
    kwargs.pop("frequency", None)
    super().__init__(remove_accidental_hits=remove_accidental_hits, **kwargs)
    self.pool_size, self.num_hard_negatives = check_pool_arguments(
        pool_size, num_hard_negatives)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, user_history):
    del candidate_embeddings, positive_ids, training, user_history
    num_columns = tf.shape(candidate_ids)[0]
    mask = batch_pool_mask(tf.shape(query_embeddings)[0], num_columns,
                           self.pool_size)
    return [base.CandidateGroup(
        score_mask=mask, num_hard_negatives=self.num_hard_negatives,
        remove_accidental_hits=self.remove_accidental_hits)]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.pop("frequency", None)
    config.update({"pool_size": self.pool_size,
                   "num_hard_negatives": self.num_hard_negatives})
    return config


def _option(context: base.SamplerContext, name: str, default: int) -> int:
  value: Optional[Any] = context.options.get(name)
  return int(value) if value else int(default)


@base.register_sampler("adaptive")
def _adaptive(context: base.SamplerContext) -> AdaptiveSampler:
  return AdaptiveSampler(
      pool_size=_option(context, "adaptive_pool", 100),
      num_hard_negatives=_option(context, "num_hard_negatives", 20))
