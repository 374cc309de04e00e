"""Adaptive negative sampling with mixed pool (AMNS).

The pool of row `i` is `P_b` random in-batch columns drawn as in `adaptive`
(the reference code's BNS pool: the batch positives excluding the row's
user's own items, i.e. the row's positive and, with `consumed`, the items
the user consumed in training) plus `B'` uniform catalog items shared by
every row (as in `mixed`; with `consumed`, the ones the row's user consumed
are masked in that row, the reference redraws them), and the `k`
highest-scoring pool columns are kept (TFRS `HardNegativeMining`); the rest
are dropped:

    pool_i = P_b random allowed in-batch columns + B' uniform columns
    S_i    = top-k_{j in pool_i} z_ij
    l_i    = -z_ii + logsumexp_{j in {i} + S_i} z_ij

Parameters in the reference's names (`all_exp_hp.json`, code name
`adaptive`): `num_neg_samples` is `P_b` (`--pool_size`, 10 in every
AMNS config), `num_mixed_samples` is `B'` (`--num_uniform`, 100) and
`num_adaptive_samples` is `k` (`--num_hard_negatives`; 25 on ML-10M, 5 on
Beauty and RetailRocket; the default here stays 20, see `adaptive`).

By default the logits carry no correction (`logq=False`), so the selection
is on raw scores as in the reference code; `logq=True` subtracts the MNS
mixture `log(G f_j + B'/N)` before the selection.

Departures from the reference code (choice): the uniform part is one shared
pool of `B'` items per step (MNS of Yang et al.) instead of per-row uniform
draws, which costs `B'` item-tower forwards per step instead of `B B'`; the
loss is the softmax over the kept columns (the reference: BCE with the
unselected logits set to 0).

Randomness: stateless, as in `mixed` and `adaptive`: the uniform columns
and the in-batch pool are draws 0 and 1 of
`importance_resampling.draw_seed(seed, step, draw)`, per replica; the step
counter `step` advances once per training call.

Paper's query tower: SASRec (`--query_tower=sasrec`).

References:
  Prakash, Bermperidis, Chennu. Evaluating Performance and Bias of Negative
  Sampling in Large-Scale Sequential Recommendation Models. arXiv 2410.17276,
  2024 (AMNS, code name `adaptive`).
  Yang et al. Mixed Negative Sampling for Learning Two-tower Neural Networks
  in Recommendations. WWW 2020.
"""

import dataclasses
from typing import Any, Dict

import tensorflow as tf

from tfrs_negsamp.samplers import adaptive
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import importance_resampling as ir
from tfrs_negsamp.samplers import mixed
from tfrs_negsamp.samplers import warmup


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class AdaptiveMixedSampler(mixed.MixedSampler):
  """Top-`k` out of `P_b` in-batch plus `B'` shared uniform negatives.

  Args:
    item_counts: `[N + 1]` training counts per model index (0 = OOV).
    pool_size: `P_b`, random in-batch columns per row.
    num_uniform: `B'`, shared uniform columns per step.
    num_hard_negatives: `k`, kept per row.
    logq: subtract the MNS mixture correction before selecting.
    **kwargs: see `mixed.MixedSampler`.

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> sampler = tn.samplers.AdaptiveMixedSampler(
  ...     candidates=movies.batch(2), candidate_model=movie_model,
  ...     item_counts=[1, 1, 1, 1], pool_size=2, num_uniform=2,
  ...     num_hard_negatives=1)
  >>> loss = tn.tasks.Retrieval(sampler=sampler)(
  ...     queries, movie_model(titles), candidate_ids=titles)
  >>> loss.shape
  TensorShape([])
  """

  def __init__(self, item_counts=None, pool_size: int = 10,
               num_uniform: int = 100, num_hard_negatives: int = 20,
               logq: bool = False, **kwargs) -> None:
    super().__init__(item_counts, num_uniform=num_uniform, logq=logq,
                     **kwargs)
    self.pool_size, self.num_hard_negatives = adaptive.check_pool_arguments(
        pool_size, num_hard_negatives)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    del candidate_embeddings
    extra_ids, extra, log_q = self.uniform_columns(candidate_ids, training)
    num_in_batch = tf.shape(candidate_ids)[0]
    mask = adaptive.batch_pool_mask(
        tf.shape(query_embeddings)[0], num_in_batch + self.num_uniform,
        self.pool_size, ir.draw_seed(self.seed, self.step.read_value(), 1),
        num_in_batch=num_in_batch,
        allowed=adaptive.own_items_allowed(candidate_ids, positive_ids,
                                           consumed))
    if training:
      self.step.assign_add(1)
    if consumed is not None:
      uniform_free = tf.logical_not(tf.cast(consumed(extra_ids), tf.bool))
      mask = tf.concat([mask[:, :num_in_batch],
                        tf.logical_and(mask[:, num_in_batch:],
                                       uniform_free)], axis=1)
    return [base.CandidateGroup(
        extra_embeddings=extra, extra_ids=extra_ids, column_log_q=log_q,
        score_mask=mask, num_hard_negatives=self.num_hard_negatives,
        remove_accidental_hits=self.remove_accidental_hits)]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"pool_size": self.pool_size,
                   "num_hard_negatives": self.num_hard_negatives})
    return config


@dataclasses.dataclass(frozen=True)
class AdaptiveMixedOptions(warmup.WarmupOptions):
  """Options of `--sampler=adaptive_mixed` (AMNS)."""
  # Without it AMNS stays near ranking by popularity on Amazon Video Games
  # (docs/results/defaults.md#warm-up-default).
  warmup_epochs: float = warmup.warmup_epochs_option(4.0)
  pool_size: int = base.option(
      10, low=0, zero_is_default=True,
      help="adaptive/adaptive_mixed: random in-batch pool per row",
      tune=base.Tune("int", 10, 200, log=True))
  num_uniform: int = base.option(
      100, low=0, zero_is_default=True,
      help="mixed/adaptive_mixed: shared uniform columns B'")
  num_hard_negatives: int = base.option(
      20, low=0, zero_is_default=True,
      help="adaptive/adaptive_mixed: hardest negatives kept per row",
      tune=base.Tune("int", 4, 64, log=True))
  logq: bool = base.option(False, help="the mixture correction (off, as in "
                           "the reference)")


@base.register_sampler("adaptive_mixed", options=AdaptiveMixedOptions)
def _adaptive_mixed(context: base.SamplerContext,
                    options: AdaptiveMixedOptions) -> AdaptiveMixedSampler:
  """AMNS: the hardest of an in-batch + uniform pool per row (Prakash et al.)."""
  return warmup.wrap(AdaptiveMixedSampler(
      item_counts=context.item_counts,
      pool_size=options.pool_size,
      num_uniform=options.num_uniform,
      num_hard_negatives=options.num_hard_negatives,
      logq=options.logq,
      item_model=context.item_model, seed=context.seed), context, options)
