"""Mixed negative sampling (MNS; Yang et al., WWW 2020).

The in-batch negatives are past positives, so never-clicked and fresh items
are never pushed down. MNS adds `B'` items drawn uniformly from the whole
catalog, shared by every row, to the `G` in-batch columns. Both sources are
corrected with one unit, the expected number of columns showing item `j`
per step (SAMPLERS.md 1.2, 7.2):

    log Q_j = log(G f_j + B' / N)        on every column, positive included,

with `f_j = count_j / sum_k count_k` the per-example training frequency
(`G f_j` expected in-batch copies, `B' / N` expected uniform copies).
Logits of row `i` over `[v_1 .. v_G | e_1 .. e_B']`:

    z_ij = <u_i, c_j> / tau - log Q_j,   MASK for accidental hits (j != i)
    l_i  = -z_ii + logsumexp_j z_ij

The uniform columns are drawn with replacement by
`catalog.CatalogDistribution` and embedded by the item tower with
gradient; their `B'` tower forwards per step are the price of the method
and show in the benchmark's step time.

Randomness: stateless, each replica draws its own `B'` columns with the
seed `importance_resampling.draw_seed(seed, step, 0)` (a function of the
sampler's `seed`, its step counter, the replica id), so a run restarted
from a checkpoint draws what the uninterrupted run draws.

State: the uniform CDF `[N + 1]` and `log_f` float32 `[N + 1]`, constant,
and the step counter `step` int64 `[]` (advanced once per training call),
non-trainable, identical on every replica.

Papers' towers: two-tower with item features (Yang et al.); SASRec
(Prakash et al., `--query_tower=sasrec`).

References:
  Yang, Yi, Chen, Hong, Cheng, Hua, Ahmed, Chi. Mixed Negative Sampling for
  Learning Two-tower Neural Networks in Recommendations. WWW 2020.
  Prakash, Bermperidis, Chennu. arXiv 2410.17276, 2024 (MNS as studied).
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import importance_resampling as ir


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class MixedSampler(base.NegativeSampler):
  """In-batch columns plus `B'` shared uniform catalog columns.

  The item tower is not part of the config (it is the model's); pass it as
  `item_model=` when deserialising.

  Args:
    item_counts: `[N + 1]` training counts per model index (0 = OOV).
    num_uniform: `B'`, shared uniform columns per step.
    logq: apply the mixture correction `log(G f_j + B'/N)`.
    item_model: callable int64 ids `[...]` -> `[..., d]`.
    remove_accidental_hits: mask columns equal to the row's positive.
    candidates: instead of model indices, a batched dataset of the candidate
      ids (int or string), with `candidate_model`; `item_counts` (per
      candidate, see `catalog.CandidateCatalog.counts`) is then optional.
    candidate_model: the candidate tower, ids -> embeddings.
    frequency: the source of `G f_j` when `item_counts` is absent; default
      a `StreamingFrequencyEstimator(expected_count=True)`, learned from the
      in-batch ids.
    seed: base seed of the stateless draws.

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> sampler = tn.samplers.MixedSampler(candidates=movies.batch(2),
  ...                                    candidate_model=movie_model,
  ...                                    num_uniform=2)
  >>> groups = sampler(queries, movie_model(titles), titles,
  ...                  training=True)
  >>> groups[0].extra_embeddings.shape  # 2 shared uniform columns
  TensorShape([2, 2])
  """

  def __init__(self, item_counts: Optional[Sequence[float]] = None,
               num_uniform: int = 128, logq: bool = True,
               item_model: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               remove_accidental_hits: bool = True,
               candidates=None, candidate_model=None,
               frequency: Optional[frequency_lib.FrequencySource] = None,
               seed: int = 0, **kwargs) -> None:
    learned = (item_counts is None and logq and
               (candidates is not None or frequency is not None))
    super().__init__(frequency=frequency if learned else None,
                     remove_accidental_hits=remove_accidental_hits, **kwargs)
    if (isinstance(num_uniform, bool) or
        not isinstance(num_uniform, (int, np.integer)) or num_uniform < 1):
      raise ValueError("num_uniform must be an integer >= 1, got %r."
                       % (num_uniform,))
    item_counts, item_model = catalog.attach_candidates(
        self, candidates, candidate_model, item_counts, item_model,
        needs_counts=False)
    if learned and self.frequency is None:
      self.frequency = frequency_lib.StreamingFrequencyEstimator(
          num_buckets=frequency_lib.auto_num_buckets(len(item_counts) - 1),
          expected_count=True, name="frequency")
    self._counts = catalog.check_counts(item_counts)
    self.seed = catalog.check_seed(seed)
    self.step = distribute.add_state(self, "step", [], tf.int64)
    self.num_uniform = int(num_uniform)
    self.logq = bool(logq)
    self.item_model = item_model
    self.distribution = catalog.CatalogDistribution(
        catalog.catalog_weights(self._counts, "uniform"), name="uniform")
    total = self._counts.sum()
    freq = self._counts / total if total > 0 else np.zeros_like(self._counts)
    self._freq_init = freq.astype(np.float32)

  item_model = property(lambda self: catalog.get_item_model(self),
                        lambda self, fn: catalog.set_item_model(self, fn))

  def build(self, input_shape=None):
    self.distribution.build()
    self.freq = distribute.add_state(
        self, "freq", [self._freq_init.shape[0]], tf.float32,
        tf.keras.initializers.Constant(self._freq_init))
    super().build(input_shape)

  def uniform_columns(self, candidate_ids: tf.Tensor, training=False):
    """`(extra_ids [B'], extra_embeddings [B', d], column_log_q or None)`.

    With a learned `frequency` (no counts), `G f_j` is its expected count
    per step (updated here with the batch when `training`). The draw is
    seeded by the current `step` (the caller advances it).
    """
    if not self.built:
      self.build(None)
    extra_ids, _ = self.distribution.sample(
        [self.num_uniform], ir.draw_seed(self.seed, self.step.read_value()))
    extra = catalog.embed(self, extra_ids)
    log_q = None
    if self.logq and self.frequency is not None:
      batch = tf.exp(tf.cast(self.in_batch_log_q(candidate_ids, training),
                             tf.float32))
      drawn = tf.exp(tf.cast(self.frequency.log_q(extra_ids, None),
                             tf.float32))
      uniform = self.num_uniform / float(self.distribution.num_items)
      log_q = tf.stop_gradient(tf.math.log(
          tf.concat([batch, drawn], axis=0) + uniform))
    elif self.logq:
      ids = tf.concat([candidate_ids, extra_ids], axis=0)
      g = tf.cast(tf.shape(candidate_ids)[0], tf.float32)
      expected = (g * tf.gather(self.freq, ids) +
                  self.num_uniform / float(self.distribution.num_items))
      log_q = tf.stop_gradient(tf.math.log(expected))
    return extra_ids, extra, log_q

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    del query_embeddings, candidate_embeddings, positive_ids
    del consumed  # the task masks consumed columns
    extra_ids, extra, log_q = self.uniform_columns(candidate_ids, training)
    if training:
      self.step.assign_add(1)
    return [base.CandidateGroup(
        extra_embeddings=extra, extra_ids=extra_ids, column_log_q=log_q,
        remove_accidental_hits=self.remove_accidental_hits)]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    if self.frequency is None:
      config.pop("frequency", None)
    config.update({"item_counts": self._counts.tolist(),
                   "num_uniform": self.num_uniform, "logq": self.logq,
                   "seed": self.seed})
    return config

  @classmethod
  def from_config(cls, config):
    if config.get("frequency") is not None:
      return super().from_config(config)
    return cls(**config)


@dataclasses.dataclass(frozen=True)
class MixedOptions:
  """Options of `--sampler=mixed` (MNS)."""
  num_uniform: int = base.option(
      0, low=0, help="mixed/adaptive_mixed: shared uniform columns B' "
      "(0: the global batch for mixed, 100 for adaptive_mixed)",
      tune=base.Tune("categorical", choices=(0.25, 1, 4), per_batch=True))
  logq: bool = base.option(True, help="the mixture correction "
                           "log(G f + B'/N)")


@base.register_sampler("mixed", options=MixedOptions)
def _mixed(context: base.SamplerContext,
           options: MixedOptions) -> MixedSampler:
  """MNS: in-batch plus B' shared uniform catalog columns (Yang et al. 2020)."""
  return MixedSampler(
      item_counts=context.item_counts,
      num_uniform=options.num_uniform or context.global_batch_size,
      logq=options.logq,
      item_model=context.item_model, seed=context.seed)
