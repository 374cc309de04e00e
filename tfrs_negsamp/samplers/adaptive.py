"""Adaptive negative sampling (ANS): the hardest negatives of a batch pool.

The pool follows the reference code (apple/ml-negative-sampling,
`sampler.py`, BNS pool of `adaptive-only`): the batch positives (the
in-batch columns of the global batch) **excluding the row's user's own
items**, i.e. every column whose id is the row's positive and, when the
model passes `consumed` (`--mask_history`), every column whose item the
row's user consumed in training. For row `i`, `P` of the allowed columns
are drawn uniformly without replacement (fewer if fewer are allowed).
Drawing columns uniformly draws items in proportion to their number of
copies in the batch, i.e. the batch multiset of the reference. Out of the
pool, the `k` columns with the highest current score `<u_i, v_j>` are kept
(TFRS `HardNegativeMining`, applied after masks, no logQ correction, so the
selection is on raw scores as in the reference code):

    A_i  = {j != i : id_j != p_i, id_j not consumed by user(i)}
    pool_i ~ P columns of A_i, uniformly without replacement
    S_i  = top-k_{j in pool_i} <u_i, v_j>
    l_i  = -z_ii + logsumexp_{j in {i} + S_i} z_ij,    z_ij = <u_i, v_j>/tau

Parameters in the reference's names (`all_exp_hp.json`): `num_neg_samples`
is the pool `P` (`--pool_size`, 100 in every ANS config) and
`num_adaptive_samples` is `k`, the negatives kept per row out of the pool
(`--num_hard_negatives`; 5 on ML-10M and RetailRocket, 25 on Beauty). The
reference's `num_adaptive_samples` has no other meaning, so no separate
option exists. The default here stays `k = 20` (a choice): under the
softmax at tau = 0.05, a quick check on ML-100K (2 epochs, history masking
on, B = 256) gave recall@50 0.116 with k = 5 and 0.257 with k = 20; the
reference's BCE scores each kept negative on its own, so its `k` does not
carry over. Tune it per data set.

Departures: the unselected pool columns and the columns outside the pool
are **dropped** (not replaced by a constant logit under a sigmoid loss as
in the reference code; docs/design/prakash.md#porting), so gradients flow
only through the
positive and the selected negatives; the loss is the softmax, not BCE.

Randomness: stateless. Each replica draws its rows' pools with the seed
`importance_resampling.draw_seed(seed, step)`, a function of the sampler's
`seed`, its step counter and the replica id
(docs/design/multi_replica.md#d6). State: the
step counter `step` int64 `[]`, non-trainable, identical on every replica,
advanced once per training call, so a run restarted from a checkpoint
draws the same pools.

Paper's query tower: SASRec (`--query_tower=sasrec`).

References:
  Prakash, Bermperidis, Chennu. Evaluating Performance and Bias of Negative
  Sampling in Large-Scale Sequential Recommendation Models. arXiv 2410.17276,
  2024 (ANS, code name `adaptive-only`).
"""

import dataclasses
from typing import Any, Dict

import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import importance_resampling as ir
from tfrs_negsamp.samplers import warmup


def batch_pool_mask(num_queries, num_columns, pool_size: int, seed,
                    num_in_batch=None, allowed=None) -> tf.Tensor:
  """`[B, C]` bool: row `i` keeps column `i` and `P` random allowed columns.

  The pool is drawn among the first `num_in_batch` columns (default all)
  excluding the diagonal and the columns not `allowed`, uniformly without
  replacement (top-P of uniform keys); a row with fewer than `P` allowed
  columns keeps them all. Columns at or after `num_in_batch` are always
  kept. With `allowed=None` every off-diagonal column is allowed.

  Args:
    num_queries: `B`.
    num_columns: `C`, the shared columns.
    pool_size: `P` (capped at the `num_in_batch - 1` other columns).
    seed: `[2]` int seed of the stateless uniform keys (`ir.draw_seed`).
    num_in_batch: the in-batch columns the pool is drawn from.
    allowed: optional bool `[B, num_in_batch]`, False = never in the pool.
  """
  if num_in_batch is None:
    num_in_batch = num_columns
  keys = tf.random.stateless_uniform([num_queries, num_in_batch], seed)
  diag = tf.cast(tf.eye(num_queries, num_in_batch), tf.bool)
  eligible = tf.logical_not(diag)
  if allowed is not None:
    eligible = tf.logical_and(eligible, tf.cast(allowed, tf.bool))
  keys = tf.where(eligible, keys, -1.0)
  k = tf.minimum(pool_size, num_in_batch - 1)
  kth = tf.reduce_min(tf.math.top_k(keys, k=tf.maximum(k, 1)).values, axis=1,
                      keepdims=True)
  keep = tf.logical_or(diag, tf.logical_and(
      tf.logical_and(keys >= kth, k > 0), eligible))
  rest = num_columns - num_in_batch
  return tf.concat([keep, tf.ones([num_queries, rest], tf.bool)], axis=1)


def own_items_allowed(candidate_ids: tf.Tensor, positive_ids: tf.Tensor,
                      consumed=None) -> tf.Tensor:
  """`[B, G]` bool: in-batch columns allowed in row `i`'s pool.

  False where the column's id is the row's positive or, with `consumed`,
  an item the row's user consumed in training (the reference pool drops
  the user's own items).
  """
  allowed = tf.not_equal(tf.expand_dims(candidate_ids, 0),
                         tf.expand_dims(positive_ids, 1))
  if consumed is not None:
    allowed = tf.logical_and(allowed, tf.logical_not(tf.cast(
        consumed(candidate_ids), tf.bool)))
  return allowed


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
    pool_size: `P`, random allowed in-batch columns per row (the reference's
      `num_neg_samples`).
    num_hard_negatives: `k`, kept per row (the reference's
      `num_adaptive_samples`).
    remove_accidental_hits: mask columns equal to the row's positive.
    seed: base seed of the stateless pool draws.

  Example:

  >>> import tensorflow as tf
  >>> import tfrs_negsamp as tn
  >>> sampler = tn.samplers.AdaptiveSampler(pool_size=3, num_hard_negatives=1)
  >>> task = tn.tasks.Retrieval(sampler=sampler)
  >>> loss = task(tf.eye(3, 2), tf.eye(3, 2),
  ...             candidate_ids=tf.constant(["a", "b", "c"]))
  >>> loss.shape
  TensorShape([])
  """

  def __init__(self, pool_size: int = 100, num_hard_negatives: int = 20,
               remove_accidental_hits: bool = True, seed: int = 0,
               **kwargs) -> None:
    kwargs.pop("frequency", None)
    super().__init__(remove_accidental_hits=remove_accidental_hits, **kwargs)
    self.pool_size, self.num_hard_negatives = check_pool_arguments(
        pool_size, num_hard_negatives)
    self.seed = catalog.check_seed(seed)
    self.step = distribute.add_state(self, "step", [], tf.int64)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    del candidate_embeddings
    num_columns = tf.shape(candidate_ids)[0]
    mask = batch_pool_mask(
        tf.shape(query_embeddings)[0], num_columns, self.pool_size,
        ir.draw_seed(self.seed, self.step.read_value()),
        allowed=own_items_allowed(candidate_ids, positive_ids, consumed))
    if training:
      self.step.assign_add(1)
    return [base.CandidateGroup(
        score_mask=mask, num_hard_negatives=self.num_hard_negatives,
        remove_accidental_hits=self.remove_accidental_hits)]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.pop("frequency", None)
    config.update({"pool_size": self.pool_size,
                   "num_hard_negatives": self.num_hard_negatives,
                   "seed": self.seed})
    return config


@dataclasses.dataclass(frozen=True)
class AdaptiveOptions(warmup.WarmupOptions):
  """Options of `--sampler=adaptive` (ANS)."""
  pool_size: int = base.option(
      100, low=0, zero_is_default=True,
      help="adaptive/adaptive_mixed: random in-batch pool per row; "
      "two_stage: the stage-1 pool",
      tune=base.Tune("int", 10, 200, log=True))
  num_hard_negatives: int = base.option(
      20, low=0, zero_is_default=True,
      help="adaptive/adaptive_mixed/two_stage: hardest negatives kept per "
      "row (the reference's num_adaptive_samples; two-stage's K2)",
      tune=base.Tune("int", 4, 64, log=True))


@base.register_sampler("adaptive", options=AdaptiveOptions)
def _adaptive(context: base.SamplerContext,
              options: AdaptiveOptions) -> AdaptiveSampler:
  """ANS: the hardest of a random in-batch pool per row (Prakash et al. 2024)."""
  return warmup.wrap(AdaptiveSampler(
      pool_size=options.pool_size,
      num_hard_negatives=options.num_hard_negatives,
      seed=context.seed), context, options)
