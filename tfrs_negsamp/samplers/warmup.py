"""Warm-up: in-batch + log Q for the first `W` steps, then another sampler.

Samplers that choose their negatives by the model's own scores (BIR, XIR,
ANS, AMNS, two-stage) select nothing useful from a model that has not
learnt yet: at the start every query scores the catalog alike, so the
"hardest" or resampled negatives are the same few items for every row,
and the model can stay there for many epochs (on Amazon Video Games, 30%
of the users, SASRec: validation coverage@10 below 0.1% for 6 to 12
epochs, where in-batch + log Q passes popularity by epoch 4;
docs/results/defaults.md#warm-up). The CBNS paper warms up with plain
in-batch training before its queue joins (`cross_batch`'s own
`warmup_steps`); this wrapper does the same for any sampler:

    L_t = w_t CE_inbatch(z_ij = <u_i, v_j> / tau - log Q_j)
          + (1 - w_t) sum_g w_g CE_g(wrapped sampler),     w_t = [t < W]

with `t` the wrapper's step counter (training calls: one per training
step on flat rows, one per block of positions on sequence rows, as every
sampler counts them) and `log Q` from the
wrapper's own frequency source (updated every step, so it is current when
the warm-up ends). The wrapped sampler runs at every step, its state
updated as alone (XIR's cache, step counters), so it is ready when it
takes over; during the warm-up its groups carry weight 0 (no gradient).
The cost of the warm-up is the wrapped sampler's plus one in-batch
softmax.

State: `step` int64 `[]` (non-trainable, identical on every replica,
checkpointed), the frequency source's and the wrapped sampler's.
"""

import dataclasses
import math
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp.samplers import base


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class WarmupSampler(base.NegativeSampler):
  """`sampler` after `W` training steps of in-batch + log Q.

  Args:
    sampler: the wrapped `NegativeSampler` (not a `Compose`).
    warmup_steps: `W >= 0`, training steps (sampler calls) of in-batch +
      log Q (0: the wrapped sampler from the first step).
    warmup_epochs: the warm-up in epochs instead, `W = ceil(warmup_epochs
      x calls_per_epoch)`; exclusive with `warmup_steps`.
    calls_per_epoch: training calls of the sampler per epoch (needed with
      `warmup_epochs`; the trainer's `SamplerContext` has it).
    frequency: `FrequencySource` of the warm-up's `log Q` (None: the
      in-batch softmax uncorrected). Not the wrapped sampler's own source:
      it would be updated twice per step.
    remove_accidental_hits: of the warm-up group.
    **kwargs: Keras layer arguments.

  Example:

  >>> import tensorflow as tf
  >>> import tfrs_negsamp as tn
  >>> sampler = tn.samplers.WarmupSampler(
  ...     tn.samplers.AdaptiveSampler(pool_size=2, num_hard_negatives=1),
  ...     warmup_steps=1)
  >>> q, c = tf.eye(3), tf.eye(3)
  >>> ids = tf.constant([1, 2, 3])
  >>> tuple(float(g.weight) for g in sampler(q, c, ids, training=True))
  (1.0, 0.0)
  >>> tuple(float(g.weight) for g in sampler(q, c, ids, training=True))
  (0.0, 1.0)
  """

  def __init__(self, sampler: base.NegativeSampler, warmup_steps: int = 0,
               warmup_epochs: float = 0.0,
               calls_per_epoch: Optional[float] = None,
               frequency: Optional[frequency_lib.FrequencySource] = None,
               remove_accidental_hits: bool = True, **kwargs) -> None:
    super().__init__(frequency=frequency,
                     remove_accidental_hits=remove_accidental_hits, **kwargs)
    if (not isinstance(sampler, base.NegativeSampler) or
        hasattr(sampler, "samplers")):
      raise ValueError("sampler must be a NegativeSampler (not a Compose), "
                       "got %r." % (sampler,))
    if (isinstance(warmup_steps, bool) or
        not isinstance(warmup_steps, int) or warmup_steps < 0):
      raise ValueError("warmup_steps must be an int >= 0, got %r."
                       % (warmup_steps,))
    if warmup_epochs:
      if warmup_steps:
        raise ValueError(
            "warmup_steps=%d and warmup_epochs=%g: give one unit of the "
            "warm-up, not both." % (warmup_steps, warmup_epochs))
      if not calls_per_epoch:
        raise ValueError(
            "warmup_epochs=%g needs calls_per_epoch (the trainer's "
            "SamplerContext.sampler_calls_per_epoch); or give warmup_steps."
            % warmup_epochs)
      warmup_steps = int(math.ceil(warmup_epochs * calls_per_epoch))
    self.sampler = sampler
    self.warmup_steps = warmup_steps
    self.needs_embedding_dim = sampler.needs_embedding_dim

  # The task reads these of its sampler: the wrapped sampler's.
  @property
  def candidate_catalog(self):
    return getattr(self.sampler, "candidate_catalog", None)

  @property
  def num_items(self):
    return getattr(self.sampler, "num_items", None)

  def id_keys(self, ids: tf.Tensor) -> tf.Tensor:
    return self.sampler.id_keys(ids)

  def build(self, input_shape=None):
    if not self.sampler.built:
      self.sampler.build(input_shape)
    self.step = distribute.add_state(self, "step", [], tf.int64)
    super().build(input_shape)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    warm = tf.cast(self.step < self.warmup_steps, tf.float32)
    groups = self.sampler.sample(query_embeddings, candidate_embeddings,
                                 candidate_ids, positive_ids,
                                 training=training, consumed=consumed)
    in_batch = base.CandidateGroup(
        weight=warm,
        column_log_q=self.in_batch_log_q(candidate_ids, training),
        remove_accidental_hits=self.remove_accidental_hits)
    if training:
      self.step.assign_add(1)
    return [in_batch] + [g._replace(weight=(1.0 - warm) * g.weight)
                         for g in groups]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"sampler": tf.keras.layers.serialize(self.sampler),
                   "warmup_steps": self.warmup_steps})
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["sampler"] = tf.keras.layers.deserialize(config["sampler"])
    return super().from_config(config)


WARMUP_HELP = ("sampler steps of in-batch (+ log Q) before the sampler's "
               "own negatives join (cross_batch: its queue; bir, xir, "
               "adaptive, adaptive_mixed, two_stage: their selection); with "
               "sequence rows every block of --rows_per_block positions is "
               "a step")

WARMUP_EPOCHS_HELP = (
    "epochs of in-batch + log Q before the sampler's own negatives join, "
    "converted to sampler steps from the data (steps per epoch x sampler "
    "calls per step), so that one value means the same on any data set; "
    "exclusive with --warmup_steps")


def warmup_epochs_option(default: float):
  """The `warmup_epochs` field with `default` (a sampler's own default
  redeclares the field with this)."""
  return base.option(default, low=0.0, help=WARMUP_EPOCHS_HELP,
                     tune=base.Tune("categorical", choices=(0.0, 2.0, 4.0)))


@dataclasses.dataclass(frozen=True)
class WarmupOptions:
  """The warm-up options of the samplers that select by the model's scores.

  Two units for one warm-up: `warmup_steps` (sampler calls) or
  `warmup_epochs` (passes over the training rows, converted with
  `SamplerContext.sampler_calls_per_epoch`); at most one is non-zero, and
  the one given replaces the other's default.
  """
  warmup_steps: int = base.option(0, low=0, help=WARMUP_HELP)
  # Searched in epochs only, the unit that transfers across data sets.
  warmup_epochs: float = warmup_epochs_option(0.0)

  # Two units of one setting: the one given replaces the other's default
  # (`base.build_options`); both given is an error (`__post_init__`).
  exclusive_options = (("warmup_steps", "warmup_epochs"),)

  def __post_init__(self):
    if self.warmup_steps and self.warmup_epochs:
      raise ValueError(
          "warmup_steps=%d and --warmup_epochs=%g: give one unit of the "
          "warm-up, not both" % (self.warmup_steps, self.warmup_epochs))


def wrap(sampler: base.NegativeSampler, context: base.SamplerContext,
         options: WarmupOptions) -> base.NegativeSampler:
  """`sampler` behind the warm-up of `options` (none: as it is).

  `warmup_epochs` counts in `context.sampler_calls_per_epoch` (the
  trainer's exact count), else in flat-row epochs: the training
  interactions (`sum(item_counts)`) over the global batch. The warm-up's
  log Q comes from a streaming estimator of its own, one bucket per
  catalog item (`frequency.dense_id_estimator`).
  """
  if not options.warmup_steps and not options.warmup_epochs:
    return sampler
  calls = context.sampler_calls_per_epoch
  if not calls:
    calls = max(1, math.ceil(float(np.sum(context.item_counts))
                             / context.global_batch_size))
  return WarmupSampler(
      sampler, options.warmup_steps, warmup_epochs=options.warmup_epochs,
      calls_per_epoch=calls,
      frequency=frequency_lib.dense_id_estimator(len(context.item_counts),
                                                 seed=context.seed))
