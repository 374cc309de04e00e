"""Popularity negative sampling (PNS): negatives in proportion to counts.

Row `i` (positive `p_i`) gets `K` negatives drawn with replacement from

    q(j) = count_j^alpha / sum_k count_k^alpha     (count_j > 0)

conditioned on `j != p_i`, with the training counts of the items (alpha = 1
in Prakash et al.; alpha = 0.75 is the word2vec choice). Items never seen in
training are never drawn. Per-query softmax over `[positive | K negatives]`,
embedded by the item tower with gradient; the optional correction is
`log(K q(j))` (option `logq`; on by default, off in the paper). Mechanics:
`catalog.py`.

Paper's query tower: SASRec (`--query_tower=sasrec`).

References:
  Prakash, Bermperidis, Chennu. Evaluating Performance and Bias of Negative
  Sampling in Large-Scale Sequential Recommendation Models. arXiv 2410.17276,
  2024 (PNS).
"""

import dataclasses
from typing import Any, Dict

import numpy as np
import tensorflow as tf

from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class PopularitySampler(catalog.CatalogSampler):
  """`K` popularity-proportional negatives per row, excluding the positive.

  Args:
    alpha: exponent of the counts.
    **kwargs: see `catalog.CatalogSampler`.

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> sampler = tn.samplers.PopularitySampler(
  ...     candidates=movies.batch(2), candidate_model=movie_model,
  ...     item_counts={"a": 3, "b": 1}, num_negatives=2)
  >>> sampler.distribution.probabilities()[0].tolist()  # index 0 = OOV
  [0.0, 0.75, 0.25, 0.0, 0.0]
  """

  def __init__(self, item_counts=None, alpha: float = 1.0,
               **kwargs) -> None:
    self.alpha = float(alpha)
    super().__init__(item_counts, **kwargs)

  def _distribution_weights(self) -> np.ndarray:
    return catalog.catalog_weights(self._counts, "popularity", self.alpha)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config["alpha"] = self.alpha
    return config


@dataclasses.dataclass(frozen=True)
class PopularityOptions(catalog.CatalogOptions):
  """Options of `--sampler=popularity` (and the catalog samplers')."""
  alpha: float = base.option(
      1.0, help="popularity: exponent of the training counts")


@base.register_sampler("popularity", options=PopularityOptions)
def _popularity(context: base.SamplerContext,
                options: PopularityOptions) -> PopularitySampler:
  """Per-row negatives in proportion to popularity (PNS; Prakash et al. 2024)."""
  return PopularitySampler(alpha=options.alpha,
                           **catalog.catalog_kwargs(context, options))
