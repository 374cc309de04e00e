"""`SampledRetrieval`: `tfrs.tasks.Retrieval` fed by sampler candidate groups.

For each `CandidateGroup` the task builds one logits matrix and reuses TFRS's
own pieces, in TFRS's order (SAMPLERS.md 1.6):

1. scores `Q C^T` over `C = [in-batch | extra]` (or `[positive | extra]`
   with `drop_in_batch`), then per-query columns `einsum(Q, E_b)`;
2. `/ temperature`;
3. `- log Q` (`column_log_q`, per-query `log_q`) and `+ logit_offset`;
4. accidental hits removed (TFRS `RemoveAccidentalHits` on the shared
   columns; the same rule on per-query ids);
5. `score_mask` / per-query masks with `tf.where(mask, z, MIN_FLOAT)`, and
   the user-history mask: every column (shared, extra or per-query) whose
   item the row's user consumed in training, other than the positive column
   and duplicates of the positive id, becomes `MIN_FLOAT` when the caller
   passes `consumed` (`masking.negatives_mask`), so it gets no softmax mass
   and hard-negative mining never picks it over a valid column;
6. optional `HardNegativeMining`;
7. TFRS's `CategoricalCrossentropy(from_logits=True, reduction=SUM)`.

Step 3 departs from `SamplingProbablityCorrection` on purpose: TFRS clips the
probability at 1e-6, which saturates the correction at 13.8 nats and breaks the
"log expected count" unit when sources are mixed (SAMPLERS.md 1.6, 9.2). The
correction is otherwise identical (a test checks it against stock
`Retrieval` with `candidate_sampling_probability`). The total loss is
`sum_g weight_g * CE_g`. With `pairwise_loss` (CML, SAMPLERS.md 6.2) each
group's CE is replaced by the triplet hinge over the same negatives.
"""

from typing import List, Optional

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_negsamp import losses
from tfrs_negsamp import masking
from tfrs_negsamp.samplers import base

MIN_FLOAT = tfrs.layers.loss.MIN_FLOAT


class SampledRetrieval(tfrs.tasks.Retrieval):
  """Retrieval task whose columns and corrections come from a sampler.

  Args:
    temperature: softmax temperature `tau` (None = 1).
    loss: optional Keras loss; defaults to TFRS's summed softmax CE.
    name: layer name.
    pairwise_loss: optional `losses.CMLTripletLoss`; when set, each group's
      loss is the CML hinge over its negatives instead of the softmax
      (`losses.triplet_group_loss`; the temperature does not apply).
  """

  def __init__(self, temperature: Optional[float] = None,
               loss: Optional[tf.keras.losses.Loss] = None,
               name: Optional[str] = None,
               pairwise_loss: Optional[losses.CMLTripletLoss] = None
               ) -> None:
    super().__init__(loss=loss, temperature=temperature, name=name)
    self._hit_remover = tfrs.layers.loss.RemoveAccidentalHits()
    self.pairwise_loss = pairwise_loss

  def group_logits(self, query_embeddings: tf.Tensor,
                   candidate_embeddings: tf.Tensor,
                   candidate_ids: tf.Tensor,
                   group: base.CandidateGroup,
                   consumed: Optional[masking.Consumed] = None):
    """Returns `(logits [B, C'], labels [B, C'])` of one group.

    `consumed` (optional, `masking.Consumed`) masks the row's user's
    training items among the negatives.
    """
    num_queries = tf.shape(query_embeddings)[0]
    if group.drop_in_batch:
      shared = candidate_embeddings[:num_queries]
      shared_ids = candidate_ids[:num_queries]
    else:
      shared, shared_ids = candidate_embeddings, candidate_ids
    if group.extra_embeddings is not None:
      shared = tf.concat([shared, tf.cast(group.extra_embeddings,
                                          shared.dtype)], axis=0)
      shared_ids = tf.concat(
          [shared_ids, tf.cast(group.extra_ids, shared_ids.dtype)], axis=0)

    if group.drop_in_batch:
      # Row i keeps only its own positive among the in-batch columns.
      scores = tf.linalg.matmul(query_embeddings, shared[num_queries:],
                                transpose_b=True)
      positive = tf.reduce_sum(query_embeddings * shared[:num_queries],
                               axis=1, keepdims=True)
      scores = tf.concat([positive, scores], axis=1)
      shared_ids = tf.concat([tf.zeros([1], shared_ids.dtype),
                              shared_ids[num_queries:]], axis=0)
      labels = tf.one_hot(tf.zeros([num_queries], tf.int32),
                          tf.shape(scores)[1])
    elif group.extra_embeddings is not None:
      # Two products: stop-gradient extra columns (e.g. the CBNS queue)
      # then get no [E, d] gradient computed only to be discarded.
      scores = tf.concat([
          tf.linalg.matmul(query_embeddings, candidate_embeddings,
                           transpose_b=True),
          tf.linalg.matmul(query_embeddings,
                           tf.cast(group.extra_embeddings,
                                   query_embeddings.dtype),
                           transpose_b=True)], axis=1)
      labels = tf.eye(num_queries, tf.shape(scores)[1])
    else:
      scores = tf.linalg.matmul(query_embeddings, shared, transpose_b=True)
      labels = tf.eye(num_queries, tf.shape(scores)[1])
    scores = self._scale(scores)
    if group.column_log_q is not None:
      scores -= tf.stop_gradient(tf.cast(group.column_log_q, scores.dtype))
    if group.logit_offset is not None:
      scores += tf.stop_gradient(tf.cast(group.logit_offset, scores.dtype))
    if group.remove_accidental_hits:
      if group.drop_in_batch:
        hits = tf.equal(tf.expand_dims(candidate_ids[:num_queries], 1),
                        tf.expand_dims(shared_ids, 0))
        hits = tf.logical_and(hits, tf.equal(labels, 0.0))
        scores = tf.where(hits, MIN_FLOAT, scores)
      else:
        scores = self._hit_remover(labels, scores, shared_ids)
    if group.score_mask is not None:
      scores = tf.where(tf.cast(group.score_mask, tf.bool), scores, MIN_FLOAT)
    if consumed is not None:
      scores = self._mask_consumed(scores, labels, shared_ids,
                                   candidate_ids[:num_queries], consumed,
                                   group.remove_accidental_hits)

    if group.per_query is not None:
      pq_scores = self._per_query_logits(
          query_embeddings, candidate_ids[:num_queries], group.per_query,
          group.remove_accidental_hits, consumed)
      scores = tf.concat([scores, pq_scores], axis=1)
      labels = tf.concat([labels, tf.zeros_like(pq_scores)], axis=1)
    if group.num_hard_negatives is not None:
      scores, labels = tfrs.layers.loss.HardNegativeMining(
          group.num_hard_negatives)(scores, labels)
    return scores, labels

  def _mask_consumed(self, scores, labels, ids, positive_ids, consumed,
                     remove_hits: bool) -> tf.Tensor:
    """Adds `MIN_FLOAT` to the consumed shared columns but the label's.

    This runs on every `[B, C]` logits matrix, so it uses few cheap ops
    (a broadcasting select and an int64 compare each cost more than the
    membership test): a duplicate of the positive id is masked with the
    other consumed columns, which changes nothing when accidental hits are
    removed anyway; otherwise it is spared, as `negatives_mask` does.
    Adding `MIN_FLOAT` (as TFRS's hit removal does) gives the column the
    same zero mass as setting it.
    """
    hit = tf.cast(consumed(ids), tf.bool)
    if not remove_hits:
      hit = tf.logical_and(hit, tf.not_equal(
          tf.expand_dims(tf.cast(ids, tf.int64), 0),
          tf.expand_dims(tf.cast(positive_ids, tf.int64), 1)))
    penalty = tf.cast(hit, scores.dtype) * (1.0 - tf.cast(labels,
                                                          scores.dtype))
    return scores + tf.stop_gradient(penalty) * MIN_FLOAT

  def _scale(self, scores: tf.Tensor) -> tf.Tensor:
    if self._temperature is not None:
      return scores / self._temperature
    return scores

  def _per_query_logits(self, query_embeddings, positive_ids,
                        per_query: base.PerQuery, remove_hits: bool,
                        consumed: Optional[masking.Consumed] = None):
    logits = tf.einsum("bd,bkd->bk", query_embeddings,
                       tf.cast(per_query.embeddings, query_embeddings.dtype))
    logits = self._scale(logits)
    if per_query.log_q is not None:
      logits -= tf.stop_gradient(per_query.log_q)
    if per_query.logit_offset is not None:
      logits += tf.stop_gradient(per_query.logit_offset)
    keep = tf.ones_like(logits, tf.bool)
    if remove_hits:
      keep = tf.not_equal(tf.cast(per_query.ids, positive_ids.dtype),
                          tf.expand_dims(positive_ids, 1))
    if per_query.mask is not None:
      keep = tf.logical_and(keep, tf.cast(per_query.mask, tf.bool))
    history = masking.negatives_mask(consumed, per_query.ids, positive_ids)
    if history is not None:
      keep = tf.logical_and(keep, tf.logical_not(history))
    return tf.where(keep, logits, MIN_FLOAT)

  def call(self,
           query_embeddings: tf.Tensor,
           candidate_embeddings: tf.Tensor,
           groups: List[base.CandidateGroup],
           candidate_ids: tf.Tensor,
           sample_weight: Optional[tf.Tensor] = None,
           compute_metrics: bool = False,
           consumed: Optional[masking.Consumed] = None) -> tf.Tensor:
    """Summed softmax cross-entropy over the groups (per-replica sum).

    Args:
      query_embeddings: `[B, d]`.
      candidate_embeddings: `[G, d]` in-batch candidates, local block first.
      groups: the sampler's `CandidateGroup`s.
      candidate_ids: `[G]` int64 ids of the in-batch candidates.
      sample_weight: optional `[B]` example weights.
      compute_metrics: unused (factorized metrics over extra columns are
        undefined, see SAMPLERS.md 1.6); evaluate with the full-corpus
        evaluator instead.
      consumed: optional `consumed(ids) -> bool [B, K]` of the rows' users
        (`masking.ConsumedItems.for_users`); every consumed column other
        than the positive gets `MIN_FLOAT` before hard-negative mining.
        None: no history masking.
    """
    del compute_metrics
    if not groups:
      raise ValueError("the sampler returned no candidate group.")
    total = tf.constant(0.0)
    for group in groups:
      if self.pairwise_loss is not None:
        total += group.weight * losses.triplet_group_loss(
            self.pairwise_loss, query_embeddings, candidate_embeddings,
            candidate_ids, group, sample_weight=sample_weight,
            consumed=consumed)
        continue
      logits, labels = self.group_logits(query_embeddings,
                                         candidate_embeddings,
                                         candidate_ids, group,
                                         consumed=consumed)
      loss = self._loss(y_true=labels, y_pred=logits,
                        sample_weight=sample_weight)
      total += group.weight * tf.cast(loss, tf.float32)
    return total
