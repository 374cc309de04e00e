"""Popularity-cohort ("balanced") negative sampling (PCNS).

Items are split into head / mid / tail cohorts by equal-interaction-mass
tertiles of the training counts, exactly the cohorts of the evaluation
(`evaluation.cohorts.popularity_cohorts`; unseen items are tail). For a row
whose positive `p_i` is in cohort `a`, each of the `K` negatives picks
cohort `c` with probability `pmf[a][c]` (default 0.8 for `c = a`, 0.1 for
each other cohort: the intended rule of Prakash et al., SAMPLERS.md 7.2),
then an item uniformly inside `c`:

    q_a(j) = pmf[a][c(j)] / |c(j)|,     conditioned on j != p_i.

This is one proposal row per cohort of `catalog.CatalogDistribution`, so it
is drawn by the same inverse-CDF search as the other catalog samplers
(`O(K log N)` per row) instead of a categorical draw plus per-cohort id
arrays. An empty cohort's mass is spread over the others in proportion.
Per-query softmax over `[positive | K negatives]`, embedded by the item
tower with gradient; optional correction `log(K q_a(j))`.

State: `cdf` float64 `[3 (N + 1)]` and `cohort_of` int32 `[N + 1]`, both
constant, non-trainable and identical on every replica.

Paper's query tower: SASRec (`--query_tower=sasrec`).

References:
  Prakash, Bermperidis, Chennu. Evaluating Performance and Bias of Negative
  Sampling in Large-Scale Sequential Recommendation Models. arXiv 2410.17276,
  2024 (PCNS).
"""

from typing import Any, Dict, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class BalancedSampler(catalog.CatalogSampler):
  """`K` negatives per row from the positive's cohort-dependent proposal.

  Args:
    cohort_pmf: 3x3 table, row = cohort of the positive (head, mid, tail),
      column = cohort drawn.
    **kwargs: see `catalog.CatalogSampler`.

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> sampler = tn.samplers.BalancedSampler(
  ...     candidates=movies.batch(2), candidate_model=movie_model,
  ...     item_counts=[8, 4, 2, 1], num_negatives=2)
  >>> sampler.distribution.probabilities().shape  # one row per cohort
  (3, 5)
  """

  def __init__(self, item_counts=None,
               cohort_pmf: Sequence[Sequence[float]] = (
                   catalog.DEFAULT_COHORT_PMF), **kwargs) -> None:
    self.cohort_pmf = [list(map(float, row)) for row in cohort_pmf]
    super().__init__(item_counts, **kwargs)
    self._cohort_init = catalog.item_cohorts(self._counts)

  def _distribution_weights(self) -> np.ndarray:
    return catalog.cohort_weights(self._counts, self.cohort_pmf)

  def build(self, input_shape=None):
    self.cohort_of = distribute.add_state(
        self, "cohort_of", [self._cohort_init.shape[0]], tf.int32,
        tf.keras.initializers.Constant(self._cohort_init))
    super().build(input_shape)

  def _rows(self, positive_ids: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.gather(self.cohort_of, positive_ids), tf.int64)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config["cohort_pmf"] = self.cohort_pmf
    return config


@base.register_sampler("balanced", options=catalog.PerRowCatalogOptions)
def _balanced(context: base.SamplerContext,
              options: catalog.PerRowCatalogOptions) -> BalancedSampler:
  """Per-row negatives by popularity cohort, 0.8 from the positive's (PCNS)."""
  return BalancedSampler(**catalog.catalog_kwargs(context, options))
