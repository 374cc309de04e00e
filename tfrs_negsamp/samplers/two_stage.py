"""Two-stage negative sampling (Tran et al., SIGIR 2019), softmax or CML.

Stage 1: one pool of `C` distinct items per step, shared by every row,
drawn without replacement with `P_1(j) ~ count_j^beta` (Gumbel-top-C over
`log P_1`, `O(N)`; `beta = 0`: uniform over the items seen in training).
The pool is embedded by the item tower **with gradient** (no stale snapshot;
SAMPLERS.md 6.6 allows either).

Stage 2 (option (a) of SAMPLERS.md 6.6, a choice): per query keep the `K2`
pool items with the highest current model score `<u_i, c_j>` (TFRS
`HardNegativeMining` via `num_hard_negatives`), after accidental hits are
masked. The reference code instead draws, per (user, positive item) pair, by
the inverse cosine density of the *positive item*'s similarity to the pool
(practically an argmax at d = 128); scoring by the query is what a
two-tower softmax can use directly and costs no extra `[B, C]` similarity.

Loss (`loss`):
* "softmax" (default): over `[positive | selected pool items]` (the in-batch
  columns are dropped, as in the reference code, which has no in-batch
  negatives):  `l_i = -z_i0 + logsumexp_{j in {0} + S_i} z_ij`, with
  `z_ij = <u_i, c_j>/tau` and, with `logq=True`, minus the log inclusion
  probability `log(1 - (1 - P_1(j))^C)` on every column (off by default: the
  paper has no correction and, after the hard selection, the softmax is no
  longer an unbiased estimate anyway).
* "triplet": the CML hinge `[margin + ||u - v_pos||^2 - min_j ||u - c_j||^2]_+`
  summed over the batch (`losses.CMLTripletLoss`), the minimum over the
  whole pool (the hardest negative, stage 2 with `K2 = 1`). The model's task
  reads the sampler's `loss` and `margin` attributes.

State: the popularity CDF `[N + 1]` (constant). The pool is drawn per
replica with stateful RNG (SAMPLERS.md 6.7: a per-replica pool is fine).

References:
  Tran, Hennequin, Royo-Letelier, Moussallam. Improving Collaborative Metric
  Learning with Efficient Negative Sampling. SIGIR 2019 (arXiv 1909.10912).
"""

from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp import losses
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class TwoStageSampler(base.NegativeSampler):
  """Popularity^beta pool, then the top-`K2` by score per query.

  The item tower is not part of the config (it is the model's); pass it as
  `item_model=` when deserialising.

  Args:
    item_counts: `[N + 1]` training counts per model index (0 = OOV).
    pool_size: `C`, the stage-1 pool (capped at the items with weight).
    beta: popularity exponent of stage 1.
    num_hard_negatives: `K2`, negatives kept per query (softmax loss).
    logq: subtract the log inclusion probability of stage 1.
    loss: "softmax" or "triplet".
    margin: hinge margin of the triplet loss.
    item_model: callable int64 ids `[...]` -> `[..., d]`.
    remove_accidental_hits: mask pool items equal to the row's positive.
  """

  def __init__(self, item_counts: Sequence[float], pool_size: int = 512,
               beta: float = 1.0, num_hard_negatives: int = 32,
               logq: bool = False, loss: str = losses.SOFTMAX,
               margin: float = 1.0,
               item_model: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               remove_accidental_hits: bool = True, **kwargs) -> None:
    kwargs.pop("frequency", None)
    super().__init__(remove_accidental_hits=remove_accidental_hits, **kwargs)
    if loss not in losses.LOSS_TYPES:
      raise ValueError("unknown loss %r; valid: %s"
                       % (loss, ", ".join(losses.LOSS_TYPES)))
    if int(pool_size) < 1 or int(num_hard_negatives) < 1:
      raise ValueError("pool_size and num_hard_negatives must be >= 1, got "
                       "%r, %r." % (pool_size, num_hard_negatives))
    self._counts = catalog.check_counts(item_counts)
    self.beta = float(beta)
    weights = catalog.catalog_weights(self._counts, "popularity", self.beta)
    self.pool_size = int(pool_size)
    self._pool = min(self.pool_size, int(np.sum(weights > 0)))
    self.num_hard_negatives = int(num_hard_negatives)
    self.logq = bool(logq)
    self.loss = loss
    self.margin = float(margin)
    self.item_model = item_model
    self.distribution = catalog.CatalogDistribution(weights, name="stage1")

  item_model = property(lambda self: catalog.get_item_model(self),
                        lambda self, fn: catalog.set_item_model(self, fn))

  def build(self, input_shape=None):
    self.distribution.build()
    super().build(input_shape)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, user_history):
    del query_embeddings, candidate_embeddings, training, user_history
    pool_ids = self.distribution.sample_unique(self._pool)
    pool = catalog.embed(self, pool_ids)
    log_q = None
    if self.logq:
      # Columns [positive | pool]: row-dependent first column -> [B, 1 + C].
      ids = tf.concat([
          tf.expand_dims(positive_ids, 1),
          tf.broadcast_to(tf.expand_dims(pool_ids, 0),
                          [tf.shape(positive_ids)[0], self._pool])], axis=1)
      p = tf.cast(self.distribution.prob(ids), tf.float64)
      inclusion = -tf.math.expm1(self._pool * tf.math.log1p(
          -tf.minimum(p, 1.0 - 1e-12)))
      log_q = tf.stop_gradient(tf.cast(tf.math.log(
          tf.maximum(inclusion, 1e-30)), tf.float32))
    hard = (self.num_hard_negatives if self.loss == losses.SOFTMAX else None)
    return [base.CandidateGroup(
        extra_embeddings=pool, extra_ids=pool_ids, column_log_q=log_q,
        drop_in_batch=True, num_hard_negatives=hard,
        remove_accidental_hits=self.remove_accidental_hits)]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.pop("frequency", None)
    config.update({"item_counts": self._counts.tolist(),
                   "pool_size": self.pool_size, "beta": self.beta,
                   "num_hard_negatives": self.num_hard_negatives,
                   "logq": self.logq, "loss": self.loss,
                   "margin": self.margin})
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


def _kwargs(context: base.SamplerContext) -> Dict[str, Any]:
  beta = context.options.get("two_stage_beta")
  margin = context.options.get("cml_margin")
  return {"item_counts": context.item_counts,
          "pool_size": int(catalog.option(context, "two_stage_pool", 512)),
          "beta": 1.0 if beta is None else float(beta),
          "num_hard_negatives": int(catalog.option(
              context, "num_hard_negatives", 32)),
          "logq": bool(context.options.get("catalog_logq", False)),
          "margin": 1.0 if margin is None else float(margin),
          "item_model": context.item_model}


@base.register_sampler("two_stage")
def _two_stage(context: base.SamplerContext) -> TwoStageSampler:
  return TwoStageSampler(loss=losses.SOFTMAX, **_kwargs(context))


@base.register_sampler("two_stage_triplet")
def _two_stage_triplet(context: base.SamplerContext) -> TwoStageSampler:
  return TwoStageSampler(loss=losses.TRIPLET, **_kwargs(context))
