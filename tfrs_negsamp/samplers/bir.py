"""BIR: in-batch importance resampling (Chen et al., NeurIPS 2022).

The in-batch items are a popularity sample, so a plain in-batch softmax pushes
popular items down too hard. BIR resamples, for each query `i`, `K` negatives
with replacement from the `G` in-batch candidates (the global batch under
tf.distribute) with probability

    w_ij = softmax_j(a_ij),   a_ij = stop_gradient(s_ij) - log q_j,

where `s_ij = <u_i, v_j> / tau` is the model's logit and `q_j` the items'
popularity (a `FrequencySource`). This is sampling-importance-resampling of
the model's own softmax: as `G -> inf` a draw follows `P(j | i)` (the paper
proves asymptotic unbiasedness), and every query gets its own negatives.

Loss, per row (docs/design/bir_xir.md#bir-step, through the count trick of
docs/design/shared.md#count-trick):

    l_i = -s_ii + log(exp(s_ii) + sum_j n_ij exp(s_ij))

with `n_ij` the number of times row `i` drew column `j` (with
`resampling="poisson"`, its expectation-preserving weight instead). It is one
`CandidateGroup` with `logit_offset = log n_ij` (where `n_ij > 0`) and
`score_mask = (n_ij > 0) | diagonal`; the positive keeps its plain logit. No
logQ term enters the loss (`column_log_q=None`): the official loss subtracts
one constant from every term, which cancels.

Draws never pick the row's own positive (the diagonal) and, with
`remove_accidental_hits=True` (default), never pick a column whose id equals
the row's positive id: `a = -inf` there (choice, not in the official code,
docs/design/bir_xir.md#bir-step). A row without any valid column has only its
positive
left, hence loss 0. With `remove_accidental_hits=False`, accidental hits may
be drawn and keep their logits, as in the official code; the diagonal is
always excluded because its column is the label.

Gradients (docs/design/shared.md#gradient-rules,
docs/design/bir_xir.md#bir-step) flow through `s_ii` and the drawn `s_ij`
into both towers; the resampling logits, weights, indices and counts
are constants (`stop_gradient`; the draws are integers).

State: `step` int64 `[]`, the stateless-RNG step counter, plus the frequency
source's own state. It is non-trainable, ON_WRITE / ONLY_FIRST_REPLICA
(docs/design/multi_replica.md#d1) and advances once per training call.

Distribution: the candidates are the global batch, local block first (as the
model gathers them). The resampling runs over the columns in replica order
with uniforms generated for the whole global batch (see
`importance_resampling.resample_counts`), so a row draws the same
negatives whatever the number of replicas: two replicas with `B` rows each
give the loss and gradients of one device with `2B` rows.

Paper's towers: MF (id embeddings; `--query_tower=id`).

References:
  Chen, Lian, Li, Wang, Zheng, Chen. Cache-Augmented Inbatch Importance
  Resampling for Training Recommender Retriever. NeurIPS 2022 (arXiv
  2205.14859).
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp import masking
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import importance_resampling as ir
from tfrs_negsamp.samplers import in_batch
from tfrs_negsamp.samplers import warmup

def check_int(value, name: str, minimum: int = 1,
              allow_none: bool = False) -> Optional[int]:
  """Returns `int(value)`; a clear ValueError for anything else."""
  if value is None and allow_none:
    return None
  if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
      or value < minimum):
    raise ValueError("%s must be an integer >= %d%s, got %r."
                     % (name, minimum, " (or None)" if allow_none else "",
                        value))
  return int(value)


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class BIRSampler(base.NegativeSampler):
  """Per-query negatives resampled from the batch by `exp(s - log q)`.

  Args:
    num_resampled: `K`, draws per query with replacement; None = the number
      of in-batch candidates `G` (the official default).
    temperature: the softmax temperature of the task (None = 1). The
      resampling logits are `<u, v> / temperature - log q`, so this must equal
      the task's temperature, otherwise the draws target another
      softmax than the loss.
    seed: base seed of the stateless draws.
    frequency: `FrequencySource` of `log q` (updated once per training step);
      None resamples by `exp(s)` alone (no popularity correction).
    remove_accidental_hits: never draw a column whose id equals the row's
      positive id (the diagonal is never drawn in any case).
    resampling: "multinomial" (`K` draws with replacement, the paper's
      rule) or "poisson" (each column kept independently with probability
      `min(1, K w_ij)` and weighted `max(1, K w_ij)`: the same expected
      counts, less variance, no search; `ir.poisson_counts`).

  Raises:
    ValueError: `num_resampled < 1`, `temperature <= 0` or an unknown
      `resampling`.

  Example:

  >>> import tensorflow as tf
  >>> import tfrs_negsamp as tn
  >>> task = tn.tasks.Retrieval(sampler=tn.samplers.BIRSampler(num_resampled=2))
  >>> loss = task(tf.eye(3, 2), tf.eye(3, 2),
  ...             candidate_ids=tf.constant(["a", "b", "c"]))
  >>> loss.shape
  TensorShape([])
  """

  def __init__(self, num_resampled: Optional[int] = None,
               temperature: Optional[float] = None, seed: int = 0,
               frequency: Optional[frequency_lib.FrequencySource] = None,
               remove_accidental_hits: bool = True,
               resampling: str = "multinomial", **kwargs) -> None:
    super().__init__(frequency=frequency,
                     remove_accidental_hits=remove_accidental_hits, **kwargs)
    if resampling not in ir.RESAMPLING_SCHEMES:
      raise ValueError("resampling must be one of %s, got %r."
                       % (", ".join(ir.RESAMPLING_SCHEMES), resampling))
    self.resampling = resampling
    self.num_resampled = check_int(num_resampled, "num_resampled",
                                   allow_none=True)
    if temperature is not None and not float(temperature) > 0:
      raise ValueError("temperature must be > 0 or None, got %r."
                       % (temperature,))
    self.temperature = None if temperature is None else float(temperature)
    self.seed = check_int(seed, "seed", minimum=0)

  def build(self, input_shape=None):
    self.step = distribute.add_state(self, "step", [], tf.int64)
    super().build(input_shape)

  def num_samples(self, candidate_ids: tf.Tensor):
    """`K`: `num_resampled`, or the number of in-batch candidates."""
    if self.num_resampled is not None:
      return self.num_resampled
    if candidate_ids.shape[0] is not None:
      return int(candidate_ids.shape[0])
    return tf.shape(candidate_ids)[0]

  def resampling_scores(self, query_embeddings: tf.Tensor,
                        candidate_embeddings: tf.Tensor) -> tf.Tensor:
    """`stop_gradient(<u_i, c_j>) / temperature`, `[B, C]` float32."""
    scores = tf.matmul(tf.cast(query_embeddings, tf.float32),
                       tf.cast(candidate_embeddings, tf.float32),
                       transpose_b=True)
    scores = tf.stop_gradient(scores)
    if self.temperature is not None:
      scores /= self.temperature
    return scores

  def resample_batch(self, query_embeddings, candidate_embeddings,
                     candidate_ids, positive_ids, log_q, num_samples,
                     step, consumed=None
                     ) -> Tuple[base.CandidateGroup, tf.Tensor]:
    """The in-batch group of one step and its draw counts.

    With `consumed` (`masking.Consumed`), columns holding an item of the
    row's user's training history (other than the positive) get resampling
    weight 0, so they are never drawn. A row whose columns are all excluded
    draws nothing: only its positive stays unmasked and its loss is 0.

    Returns:
      `(group, counts)`: the count-trick `CandidateGroup` over the `G`
      in-batch columns (local block first) and the `[B, G]` float32 counts
      `n_ij` of this replica's rows.
    """
    batch = tf.shape(query_embeddings)[0]
    num_cols = tf.shape(candidate_embeddings)[0]
    logits = self.resampling_scores(query_embeddings, candidate_embeddings)
    if log_q is not None:
      logits -= tf.cast(log_q, tf.float32)[None, :]
    diagonal = tf.cast(tf.eye(batch, num_cols), tf.bool)
    valid = tf.logical_not(diagonal)
    if self.remove_accidental_hits:
      valid = tf.logical_and(valid, tf.not_equal(positive_ids[:, None],
                                                 candidate_ids[None, :]))
    if consumed is not None and self.remove_accidental_hits:
      # The diagonal and the positive's duplicates are already invalid.
      valid = tf.logical_and(valid, tf.logical_not(consumed(candidate_ids)))
    elif consumed is not None:
      valid = tf.logical_and(valid, tf.logical_not(masking.negatives_mask(
          consumed, candidate_ids, positive_ids, keep=diagonal)))
    replica_id, num_replicas = distribute.replica_info()
    # Columns in replica order: the same on every replica and on one device
    # (`to_replica_order` rolls the local block from the front; so do these).
    shift = replica_id * batch
    if num_replicas > 1:
      logits = tf.roll(logits, shift=shift, axis=1)
      valid = tf.roll(valid, shift=shift, axis=1)
    counts = ir.column_weights(
        self.resampling, logits, valid, num_samples,
        ir.step_seed(self.seed, step, ir.STREAM_BATCH),
        row_start=replica_id * batch, num_rows=num_replicas * batch)
    if num_replicas > 1:
      counts = tf.roll(counts, shift=-shift, axis=1)
    offset, mask = ir.count_offsets(counts, keep=diagonal)
    group = base.CandidateGroup(
        logit_offset=offset, score_mask=mask,
        remove_accidental_hits=self.remove_accidental_hits)
    return group, counts

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    step = self.step.read_value()
    log_q = self.in_batch_log_q(candidate_ids, training)
    group, _ = self.resample_batch(
        query_embeddings, candidate_embeddings, candidate_ids, positive_ids,
        log_q, self.num_samples(candidate_ids), step, consumed=consumed)
    if training:
      self.step.assign_add(1)
    return [group]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"num_resampled": self.num_resampled,
                   "temperature": self.temperature,
                   "seed": self.seed,
                   "resampling": self.resampling})
    return config


@dataclasses.dataclass(frozen=True)
class BIROptions(in_batch.LogQOptions, warmup.WarmupOptions):
  """Options of `--sampler=bir` (and the `log Q` source's)."""
  # Chosen by the transfer rule: without it BIR starts flat on Amazon Video
  # Games (docs/results/defaults.md#warm-up-default).
  warmup_epochs: float = warmup.warmup_epochs_option(4.0)
  num_resampled: int = base.option(
      0, low=0, help="BIR/XIR: draws per query K (0: the global batch)",
      tune=base.Tune("categorical", choices=(0.25, 0.5, 1), per_batch=True))
  resampling: str = base.option(
      "multinomial", choices=("multinomial", "poisson"),
      help="BIR/XIR: multinomial (K draws with replacement, the paper's "
      "rule) or poisson (each column kept with probability min(1, K w), "
      "same expected counts, cheaper)")


def num_resampled_from_options(options: BIROptions) -> Optional[int]:
  """`options.num_resampled`: 0 -> None (= the batch)."""
  return options.num_resampled or None


@base.register_sampler("bir", options=BIROptions)
def _bir(context: base.SamplerContext, options: BIROptions) -> BIRSampler:
  """BIR: per-query importance resampling of the batch (Chen et al. 2022)."""
  # The resampling logits use the task's temperature.
  return warmup.wrap(BIRSampler(
      num_resampled=num_resampled_from_options(options),
      temperature=context.temperature, seed=context.seed,
      frequency=in_batch.frequency_from_options(context, options),
      resampling=options.resampling), context, options)
