"""Full softmax: every catalog item is a negative (no sampling).

For query row `i` with positive `p_i`, the exact cross-entropy over the
catalog `j = 1..I`,

    l_i = log sum_{j in A_i} exp(<u_i, e_j> / tau) - <u_i, e_{p_i}> / tau,

where `A_i` is the catalog minus the items the row's user consumed (other
than the positive) when the task masks them. It is what every sampler
approximates, the reference row of every table
(docs/design/sequence_training.md#full-softmax; SASRec+,
Klenitskiy & Vasilev 2023, the strongest loss on ML-1M). The task computes
it chunk by chunk over the items with a running log-sum-exp
(`tfrs_negsamp.full_softmax`): memory `O(rows x chunk)` in both passes.

No state, no randomness, no log Q (there is nothing to correct); the item
tower runs once per call over the whole catalog, so the cost is one
`rows x I x d` product forward and three backward.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from tfrs_negsamp import full_softmax
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class FullSoftmax(base.NegativeSampler):
  """Exact softmax over the whole catalog (the reference of the samplers).

  Args:
    num_items: `I`, the catalog size (item indices `1..I`), with
      `item_model`.
    item_model: int64 item indices `[n]` -> embeddings `[n, d]` (the item
      tower).
    chunk_size: items per chunk of the running log-sum-exp.
    candidates: instead of `num_items` and `item_model`, a batched dataset
      of the candidate ids (int or string, e.g. `movies.batch(128)`)...
    candidate_model: ...and the candidate tower (ids -> embeddings).

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> task = tn.tasks.Retrieval(sampler=tn.samplers.FullSoftmax(
  ...     candidates=movies.batch(2), candidate_model=movie_model))
  >>> loss = task(queries, movie_model(titles), candidate_ids=titles)
  >>> bool(loss > 0)
  True
  """

  stateless = True

  def __init__(self, num_items: Optional[int] = None,
               item_model: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               chunk_size: int = full_softmax.DEFAULT_CHUNK_SIZE,
               candidates=None, candidate_model=None, **kwargs) -> None:
    kwargs.pop("frequency", None)
    super().__init__(**kwargs)
    if candidates is not None or candidate_model is not None:
      _, item_model = catalog.attach_candidates(
          self, candidates, candidate_model, None, item_model,
          needs_counts=False)
      num_items = self.candidate_catalog.num_items
    elif num_items is None or item_model is None:
      raise ValueError("FullSoftmax needs num_items and item_model, or "
                       "candidates= and candidate_model=.")
    if int(num_items) < 1:
      raise ValueError("num_items must be >= 1, got %r." % (num_items,))
    if int(chunk_size) < 1:
      raise ValueError("chunk_size must be >= 1, got %r." % (chunk_size,))
    self.num_items = int(num_items)
    self.chunk_size = int(chunk_size)
    self.item_model = item_model

  item_model = property(lambda self: catalog.get_item_model(self),
                        lambda self, fn: catalog.set_item_model(self, fn))

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    del query_embeddings, candidate_embeddings, candidate_ids, positive_ids
    del training, consumed  # the task masks consumed items per chunk
    return [base.CandidateGroup(catalog_softmax=base.CatalogSoftmax(
        item_embeddings=lambda ids: catalog.embed(self, ids),
        num_items=self.num_items, chunk_size=self.chunk_size))]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.pop("frequency", None)
    config.update({"num_items": self.num_items,
                   "chunk_size": self.chunk_size})
    return config


@dataclasses.dataclass(frozen=True)
class FullOptions:
  """Options of `--sampler=full`."""
  chunk_size: int = base.option(
      full_softmax.DEFAULT_CHUNK_SIZE, low=1,
      help="full: items per chunk of the running log-sum-exp (memory: "
      "rows x chunk floats)")


@base.register_sampler("full", options=FullOptions)
def _full(context: base.SamplerContext, options: FullOptions) -> FullSoftmax:
  """Full softmax over the whole catalog: the reference every sampler approximates."""
  if context.item_model is None:
    raise ValueError("the full sampler needs context.item_model to embed "
                     "the catalog.")
  return FullSoftmax(num_items=len(context.item_counts) - 1,
                     item_model=context.item_model,
                     chunk_size=options.chunk_size)
