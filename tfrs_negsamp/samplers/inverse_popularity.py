"""Inverse popularity negative sampling (IPNS): rare items as negatives.

Row `i` (positive `p_i`) gets `K` negatives drawn with replacement from

    q(j) = (1 / count_j) / sum_{k: count_k > 0} (1 / count_k)   (count_j > 0)

conditioned on `j != p_i`; items unseen in training get 0 (Prakash et al.).
Per-query softmax over `[positive | K negatives]`, embedded by the item
tower with gradient; optional correction `log(K q(j))`. Mechanics:
`catalog.py`.

Paper's query tower: SASRec (`--query_tower=sasrec`).

References:
  Prakash, Bermperidis, Chennu. Evaluating Performance and Bias of Negative
  Sampling in Large-Scale Sequential Recommendation Models. arXiv 2410.17276,
  2024 (IPNS; the released code has no results for it).
"""

import numpy as np
import tensorflow as tf

from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class InversePopularitySampler(catalog.CatalogSampler):
  """`K` negatives per row with `q ~ 1 / count`, excluding the positive.

  Args: see `catalog.CatalogSampler`.

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> sampler = tn.samplers.InversePopularitySampler(
  ...     candidates=movies.batch(2), candidate_model=movie_model,
  ...     item_counts={"a": 3, "b": 1}, num_negatives=2)
  >>> sampler.distribution.probabilities()[0].tolist()
  [0.0, 0.25, 0.75, 0.0, 0.0]
  """

  def _distribution_weights(self) -> np.ndarray:
    return catalog.catalog_weights(self._counts, "inverse")


@base.register_sampler("inverse_popularity", options=catalog.CatalogOptions)
def _inverse_popularity(
    context: base.SamplerContext,
    options: catalog.CatalogOptions) -> InversePopularitySampler:
  """Per-row negatives in proportion to 1 / popularity (IPNS)."""
  return InversePopularitySampler(**catalog.catalog_kwargs(context, options))
