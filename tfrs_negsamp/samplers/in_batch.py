"""In-batch softmax, optionally with the logQ correction (Yi et al. 2019).

The negatives of row `i` are the other rows' positives (of the whole global
batch under tf.distribute). Logits, for all columns `j` including `j = i`:

    z_ij = <u_i, v_j> / tau - log Q_j

where `log Q_j` is the log expected number of columns showing item `j` (from
a `FrequencySource`), or 0 without correction. Accidental hits (`id_j == id_i`,
`j != i`) are masked. Loss: `sum_i r_i (-z_ii + logsumexp_j z_ij)`. Serving
uses the uncorrected `<u, v>`.

Paper's towers: YouTube two-tower with user and item features.

References:
  Yi et al. Sampling-Bias-Corrected Neural Modeling for Large Corpus Item
  Recommendations. RecSys 2019.
"""

import dataclasses

import tensorflow as tf

from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp.samplers import base


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class InBatchSampler(base.NegativeSampler):
  """In-batch negatives; `frequency` enables the logQ correction.

  Keeps no state of its own; the frequency source (if any) keeps its sketch.
  All corrections go through TFRS's own arguments: `column_log_q` becomes the
  `candidate_sampling_probability` correction and accidental hits are removed
  by `tfrs.layers.loss.RemoveAccidentalHits`.

  Example:

  >>> import tensorflow as tf
  >>> import tfrs_negsamp as tn
  >>> task = tn.tasks.Retrieval(sampler=tn.samplers.InBatchSampler(
  ...     frequency=tn.frequency.StreamingFrequencyEstimator(num_buckets=64)))
  >>> loss = task(tf.eye(2), tf.eye(2), candidate_ids=tf.constant(["a", "b"]))
  >>> round(float(loss), 4)  # both items seen once: log Q = 0
  0.6265
  """

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    del query_embeddings, candidate_embeddings, positive_ids
    del consumed  # the task masks consumed columns
    return [base.CandidateGroup(
        column_log_q=self.in_batch_log_q(candidate_ids, training),
        remove_accidental_hits=self.remove_accidental_hits)]


@dataclasses.dataclass(frozen=True)
class StreamingEstimatorOptions:
  """Options of the streaming `log Q` estimator (Yi et al. 2019).

  Named as `frequency.StreamingFrequencyEstimator`'s arguments (`alpha` and
  `update_rule` with the prefix `estimator_`).
  """
  num_buckets: int = base.option(
      0, low=0, help="streaming log Q estimator: buckets per hash (0: 16x "
      "the catalog)")
  num_hashes: int = base.option(
      2, low=1, help="streaming log Q estimator: hash functions")
  estimator_alpha: float = base.option(
      0.01, low=0, high=1, low_open=True,
      help="streaming log Q estimator: learning rate of the inter-arrival "
      "estimate")
  estimator_update_rule: str = base.option(
      "debiased", choices=frequency_lib.UPDATE_RULES,
      help="streaming log Q estimator: update rule")
  estimator_hashing: str = base.option(
      "auto", choices=("auto", "strong", "identity"),
      help="streaming log Q estimator: bucket of an id; identity: the "
      "item's own index (one bucket per catalog item, no collisions, no "
      "string hashing), strong: num_hashes keyed hashes into num_buckets; "
      "auto: identity unless --num_buckets is set")


LOGQ_SOURCES = ("streaming", "static", "none")


@dataclasses.dataclass(frozen=True)
class LogQOptions(StreamingEstimatorOptions):
  """A choice of `log Q` source (the samplers' `frequency` argument)."""
  frequency: str = base.option(
      "streaming", choices=LOGQ_SOURCES,
      help="source of log Q: the streaming estimator, fixed training counts "
      "(static) or none")


@base.register_sampler("in_batch")
def _in_batch(context: base.SamplerContext,
              options: base.NoOptions) -> InBatchSampler:
  """In-batch softmax, uncorrected (the other rows' positives)."""
  del context, options
  return InBatchSampler()


@base.register_sampler("in_batch_logq", options=StreamingEstimatorOptions)
def _in_batch_logq(context: base.SamplerContext,
                   options: StreamingEstimatorOptions) -> InBatchSampler:
  """In-batch softmax with log Q from a streaming estimate (Yi et al. 2019)."""
  return InBatchSampler(frequency=streaming_estimator(context, options))


@base.register_sampler("in_batch_logq_static")
def _in_batch_logq_static(context: base.SamplerContext,
                          options: base.NoOptions) -> InBatchSampler:
  """In-batch softmax with log Q from the training counts."""
  del options
  return InBatchSampler(frequency=static_probability(context))


def streaming_estimator(
    context: base.SamplerContext, options: StreamingEstimatorOptions
) -> frequency_lib.StreamingFrequencyEstimator:
  """The streaming estimator configured by `options`.

  The registry's ids are the model's dense item indices `0..N`, so by
  default every item gets its own bucket (`hashing="identity"`, `N + 1`
  buckets): Yi et al.'s estimator without its hash collisions, and without
  formatting and hashing the ids as strings at every step (a third of the
  estimator's step time at B = 256). Hashing (`strong`) is for an explicit
  `num_buckets` (an id space larger than the catalog).
  """
  hashing = options.estimator_hashing
  if hashing == "auto":
    hashing = "strong" if options.num_buckets else "identity"
  if hashing == "identity":
    return frequency_lib.dense_id_estimator(
        max(options.num_buckets, len(context.item_counts)),
        alpha=options.estimator_alpha,
        update_rule=options.estimator_update_rule, seed=context.seed)
  return frequency_lib.StreamingFrequencyEstimator(
      num_buckets=options.num_buckets or frequency_lib.auto_num_buckets(
          len(context.item_counts)),
      num_hashes=options.num_hashes,
      alpha=options.estimator_alpha,
      update_rule=options.estimator_update_rule,
      seed=context.seed)


def static_probability(
    context: base.SamplerContext) -> frequency_lib.StaticItemProbability:
  """Fixed probabilities from the training counts in `context`."""
  return frequency_lib.StaticItemProbability(context.item_counts,
                                             smoothing=1.0)


def frequency_from_options(context: base.SamplerContext,
                           options: LogQOptions):
  """`options.frequency` in `LOGQ_SOURCES` -> the source (None: "none")."""
  if options.frequency == "streaming":
    return streaming_estimator(context, options)
  if options.frequency == "static":
    return static_probability(context)
  return None
