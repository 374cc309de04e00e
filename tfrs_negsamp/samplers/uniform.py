"""Random negative sampling (RNS): uniform negatives from the catalog.

Row `i` (positive `p_i`) gets `K` negatives drawn with replacement from

    q(j) = 1 / N            for every real item j = 1..N,

conditioned on `j != p_i` (so `q(j | j != p_i) = 1 / (N - 1)`), embedded by
the item tower with gradient. Per-query softmax over `[positive | K
negatives]`; the optional correction is `log(K q(j)) = log(K / N)`, a
constant per row that leaves the softmax unchanged (it is offered for
symmetry with the other catalog samplers). Mechanics: `catalog.py`.

Paper's query tower: SASRec (`--query_tower=sasrec`).

References:
  Prakash, Bermperidis, Chennu. Evaluating Performance and Bias of Negative
  Sampling in Large-Scale Sequential Recommendation Models. arXiv 2410.17276,
  2024 (RNS).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class UniformSampler(catalog.CatalogSampler):
  """`K` uniform catalog negatives per row, excluding the positive.

  Args: see `catalog.CatalogSampler` (`item_counts` is optional with
  `candidates=`: the proposal ignores counts). State: the (constant) CDF of
  `catalog.CatalogDistribution`.

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> sampler = tn.samplers.UniformSampler(candidates=movies.batch(2),
  ...                                      candidate_model=movie_model,
  ...                                      num_negatives=3)
  >>> groups = sampler(queries, movie_model(titles), titles)
  >>> groups[0].per_query.ids.shape  # 3 draws per row, never its positive
  TensorShape([2, 3])
  """

  needs_counts = False

  def __init__(self, *args, logq: bool = False, **kwargs) -> None:
    # Off by default, unlike the other catalog samplers: a constant under
    # the softmax, but a shift of every negative under a sigmoid loss
    # (gBCE's uniform negatives, as in gSASRec, are uncorrected).
    super().__init__(*args, logq=logq, **kwargs)

  def _distribution_weights(self) -> np.ndarray:
    return catalog.catalog_weights(self._counts, "uniform")


@dataclasses.dataclass(frozen=True)
class UniformOptions(catalog.CatalogOptions):
  """Options of `--sampler=uniform`: no correction by default (a constant
  under the softmax; a shift under gBCE's sigmoid)."""
  logq: bool = base.option(
      False, help="subtract the log expected count of the sampled columns "
      "(uniform: a constant, off by default)")


@base.register_sampler("uniform", options=UniformOptions)
def _uniform(context: base.SamplerContext,
             options: UniformOptions) -> UniformSampler:
  """Per-row uniform catalog negatives (RNS; Prakash et al. 2024)."""
  return UniformSampler(**catalog.catalog_kwargs(context, options))
