"""`Retrieval`: `tfrs.tasks.Retrieval` with a negative sampler (candidate groups).

For each `CandidateGroup` the task builds one logits matrix and reuses TFRS's
own pieces, in TFRS's order (docs/design/shared.md#tfrs-order-of-operations):

1. scores `Q C^T` over `C = [in-batch | extra]` (or `[positive | extra]`
   with `drop_in_batch`), then per-query columns `einsum(Q, E_b)`;
2. `/ temperature`;
3. `- log Q` (`column_log_q`, per-query `log_q`) and `+ logit_offset`;
4. accidental hits removed (TFRS `RemoveAccidentalHits`'s rule on the
   shared columns; the same rule on per-query ids);
5. `score_mask` / per-query masks, and the user-history mask: every column
   (shared, extra or per-query) whose item the row's user consumed in
   training, other than the positive column and duplicates of the positive
   id, becomes `MIN_FLOAT` when the caller passes `consumed`
   (`masking.negatives_mask`), so it gets no softmax mass and hard-negative
   mining never picks it over a valid column. On the shared columns, steps
   4-5 are one boolean mask and one `tf.where(mask, MIN_FLOAT, z)`
   (`_dropped_columns`): the `[B, C]` float logits are touched once;
6. optional `HardNegativeMining`;
7. TFRS's `CategoricalCrossentropy(from_logits=True, reduction=SUM)`.

Step 3 departs from `SamplingProbablityCorrection` on purpose: TFRS clips the
probability at 1e-6, which saturates the correction at 13.8 nats and breaks the
"log expected count" unit when sources are mixed
(docs/design/shared.md#tfrs-order-of-operations,
docs/design/sampler_contract.md#task). The correction is otherwise identical
(a test checks it against stock `Retrieval` with
`candidate_sampling_probability`). The total loss is
`sum_g weight_g * CE_g`. With `pairwise_loss` (CML,
docs/design/two_stage.md#cml-loss) each group's CE is replaced by the triplet
hinge over the same negatives.
"""

import functools
from typing import List, Optional, Union

import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_negsamp import distribute
from tfrs_negsamp import full_softmax
from tfrs_negsamp import gbce
from tfrs_negsamp import keys as keys_lib
from tfrs_negsamp import losses
from tfrs_negsamp import masking
from tfrs_negsamp.samplers import base

MIN_FLOAT = tfrs.layers.loss.MIN_FLOAT


def per_query_scores(query_embeddings: tf.Tensor,
                     per_query: base.PerQuery) -> tf.Tensor:
  """`[B, K]` dot products of each row with its own `K` columns.

  Dense embeddings: `einsum("bd,bkd->bk")`. With a table of `U` distinct
  items, whichever intermediate is smaller: the `[B, U]` scores against
  the table, gathered (`U <= K d`, e.g. `B L` sequence positions drawing
  from a small catalog), or the `[B, K, d]` rows, gathered then multiplied.
  Both give the same logits and gradients (up to float summation order).
  """
  dtype = query_embeddings.dtype
  if per_query.table is None:
    return tf.einsum("bd,bkd->bk", query_embeddings,
                     tf.cast(per_query.embeddings, dtype))
  table = tf.cast(per_query.table, dtype)
  index = per_query.index

  def by_table():
    scores = tf.matmul(query_embeddings, table, transpose_b=True)
    return tf.gather(scores, index, batch_dims=1)

  def by_rows():
    return tf.einsum("bd,bkd->bk", query_embeddings,
                     tf.gather(table, index))

  rows, cols = tf.shape(table)[0], tf.shape(index)[1] * tf.shape(table)[1]
  return tf.cond(rows <= cols, by_table, by_rows)


class Retrieval(tfrs.tasks.Retrieval):
  """`tfrs.tasks.Retrieval` with an optional negative sampler.

  A drop-in for `tfrs.tasks.Retrieval`: the constructor takes the same
  arguments plus `sampler`, and `call` the same arguments plus `training`.

  * Without a sampler (and with a softmax loss) `call` is TFRS's own: the
    same loss, metrics and errors.
  * With a sampler, `call` (1) maps `candidate_ids` (int or string) to the
    sampler's int64 keys (`sampler.id_keys`); (2) under a strategy with
    several replicas, gathers the candidate embeddings and keys of every
    replica, local block first (`distribute.all_gather_local_first`), so
    each replica's rows see the global batch; (3) calls the sampler and
    (4) sums its groups' losses, `L = sum_g weight_g CE_g` over this
    replica's rows (the optimizer's cross-replica gradient sum then equals
    one device on the global batch). Factorized metrics get the local
    queries, positives and raw `candidate_ids`; batch metrics get the
    in-batch columns `Q C^T / tau` (accidental hits removed when the sampler
    removes them), as TFRS's.

  Args:
    loss: a Keras loss over `(labels, logits)` (default: TFRS's summed
      softmax cross-entropy), or the CML hinge: `"triplet"` or a
      `tfrs_negsamp.losses.CMLTripletLoss` (needs a sampler's groups or the
      in-batch columns; the temperature does not apply). `"softmax"` is the
      default.
    metrics: `tfrs.metrics.FactorizedTopK` (or a list), as TFRS.
    batch_metrics: Keras metrics over the in-batch columns, as TFRS.
    loss_metrics: Keras metrics fed the loss, as TFRS.
    temperature: softmax temperature `tau` (None = 1).
    num_hard_negatives: keep the hardest negatives per row (TFRS
      `HardNegativeMining`); with a sampler it applies to groups that set
      none.
    remove_accidental_hits: as TFRS (needs `candidate_ids`); with a sampler
      True forces it on every group, False leaves the sampler's setting.
    name: layer name.
    sampler: optional `tfrs_negsamp.samplers.NegativeSampler` (or
      `samplers.Compose`).
    gather_candidates: gather candidates across replicas (with a sampler).
    consumed_items: optional `tfrs_negsamp.masking.ConsumedItems` of the
      training (user, item) pairs (`ConsumedItems.from_interactions`):
      with `query_ids=` in `call`, every negative column whose item the
      row's user consumed in training gets zero softmax mass (the positive
      excepted), and the samplers that select negatives (resampling, pools,
      catalog draws) skip them.
    mask_history: mask the users' consumed items when the call says what
      they are (`query_ids` with `consumed_items`, or `query_history`);
      False turns masking off. Without either input there is nothing to
      mask: the false negatives (a user's own items among the in-batch or
      sampled columns) stay in the softmax, which costs hardness-based
      samplers most (docs/design/findings.md#false-negatives).
    rows_per_block: sequence rows (`[B, L, d]` inputs): the positions of
      one softmax block (its query rows and in-batch columns).

  Raises:
    ValueError: for an unknown `loss` name.
    TypeError: if `sampler` is not a `NegativeSampler`.
  """

  def __init__(self,
               loss: Union[None, str, tf.keras.losses.Loss,
                           losses.CMLTripletLoss] = None,
               metrics=None,
               batch_metrics: Optional[List[tf.keras.metrics.Metric]] = None,
               loss_metrics: Optional[List[tf.keras.metrics.Metric]] = None,
               temperature: Optional[float] = None,
               num_hard_negatives: Optional[int] = None,
               remove_accidental_hits: bool = False,
               name: Optional[str] = None,
               sampler: Optional[base.NegativeSampler] = None,
               gather_candidates: bool = True,
               consumed_items: Optional[masking.ConsumedItems] = None,
               mask_history: bool = True,
               rows_per_block: int = 1024) -> None:
    pairwise = None
    gbce_loss = None
    if isinstance(loss, str):
      if loss not in losses.LOSS_TYPES:
        raise ValueError("unknown loss %r; valid: %s"
                         % (loss, ", ".join(losses.LOSS_TYPES)))
      pairwise = losses.CMLTripletLoss() if loss == losses.TRIPLET else None
      gbce_loss = losses.GBCE() if loss == losses.GBCE_NAME else None
      loss = None
    elif isinstance(loss, losses.CMLTripletLoss):
      pairwise, loss = loss, None
    elif isinstance(loss, losses.GBCE):
      gbce_loss, loss = loss, None
    if sampler is not None and not isinstance(sampler, base.NegativeSampler):
      raise TypeError("sampler must be a tfrs_negsamp NegativeSampler, got "
                      "%r." % (sampler,))
    if consumed_items is not None and not isinstance(
        consumed_items, masking.ConsumedItems):
      raise TypeError("consumed_items must be a "
                      "tfrs_negsamp.masking.ConsumedItems, got %r."
                      % (consumed_items,))
    super().__init__(loss=loss, metrics=metrics, batch_metrics=batch_metrics,
                     loss_metrics=loss_metrics, temperature=temperature,
                     num_hard_negatives=num_hard_negatives,
                     remove_accidental_hits=remove_accidental_hits,
                     name=name)
    self._hit_remover = tfrs.layers.loss.RemoveAccidentalHits()
    self.pairwise_loss = pairwise
    self.gbce_loss = gbce_loss
    self.sampler = sampler
    self.gather_candidates = bool(gather_candidates)
    self.consumed_items = consumed_items
    self.mask_history = bool(mask_history)
    if int(rows_per_block) < 1:
      raise ValueError("rows_per_block must be >= 1, got %r."
                       % (rows_per_block,))
    self.rows_per_block = int(rows_per_block)
    if consumed_items is not None:
      # The table is consulted with the keys the columns carry.
      consumed_items.bind_keys(self._keys)
    # State that does not depend on the embedding dimension is created now,
    # in the caller's strategy scope (XIR's cache, catalog CDFs, frequency
    # sketches); the rest on the first call (see `call`).
    for member in getattr(sampler, "samplers", [sampler] if sampler else []):
      if not member.built and not member.needs_embedding_dim:
        member.build(None)

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
    dropped = self._dropped_columns(shared_ids, candidate_ids[:num_queries],
                                    group, consumed)
    if dropped is not None:
      scores = tf.where(dropped, MIN_FLOAT, scores)

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

  def _dropped_columns(self, ids: tf.Tensor, positive_ids: tf.Tensor,
                       group: base.CandidateGroup,
                       consumed: Optional[masking.Consumed]
                       ) -> Optional[tf.Tensor]:
    """`[B, C]` bool of the shared columns whose logit becomes `MIN_FLOAT`.

    One mask, applied by one `tf.where` (this runs on every `[B, C]`
    logits matrix, so it is built from 1-byte booleans and the float
    logits are touched once):

        dropped = ~score_mask
                  | (not the label column) & (accidental hit | consumed),

    where an accidental hit is `ids[j] == positive_ids[i]` (when
    `group.remove_accidental_hits`) and consumed is `consumed(ids)`, less
    the positive's duplicates when hits are kept (`negatives_mask`). The
    label is column `i` of row `i`, or column 0 with `drop_in_batch`.
    The loss equals TFRS's `RemoveAccidentalHits` (which adds `MIN_FLOAT`)
    and the former sequential masks exactly: a masked logit gets zero
    softmax mass either way.
    """
    ids = tf.convert_to_tensor(ids)
    positive_ids = tf.cast(tf.convert_to_tensor(positive_ids), ids.dtype)
    same_id = None
    if group.remove_accidental_hits or consumed is not None:
      same_id = tf.equal(tf.expand_dims(positive_ids, 1),
                         tf.expand_dims(ids, 0))
    dropped = same_id if group.remove_accidental_hits else None
    if consumed is not None:
      hit = tf.cast(consumed(ids), tf.bool)
      if not group.remove_accidental_hits:
        hit = tf.logical_and(hit, tf.logical_not(same_id))
      dropped = hit if dropped is None else tf.logical_or(dropped, hit)
    if dropped is not None:  # never the label column
      if group.drop_in_batch:
        dropped = tf.concat([tf.zeros_like(dropped[:, :1]), dropped[:, 1:]],
                            axis=1)
      else:
        dropped = tf.linalg.set_diag(
            dropped, tf.zeros(tf.shape(positive_ids), tf.bool))
    if group.score_mask is not None:
      masked = tf.logical_not(tf.cast(group.score_mask, tf.bool))
      dropped = masked if dropped is None else tf.logical_or(dropped, masked)
    return dropped

  def _scale(self, scores: tf.Tensor) -> tf.Tensor:
    if self._temperature is not None:
      return scores / self._temperature
    return scores

  def _per_query_logits(self, query_embeddings, positive_ids,
                        per_query: base.PerQuery, remove_hits: bool,
                        consumed: Optional[masking.Consumed] = None):
    logits = self._scale(per_query_scores(query_embeddings, per_query))
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

  def groups_loss(self,
                  query_embeddings: tf.Tensor,
                  candidate_embeddings: tf.Tensor,
                  groups: List[base.CandidateGroup],
                  candidate_ids: tf.Tensor,
                  sample_weight: Optional[tf.Tensor] = None,
                  consumed: Optional[masking.Consumed] = None) -> tf.Tensor:
    """Summed loss over the groups (per-replica sum): `sum_g w_g CE_g`.

    Args:
      query_embeddings: `[B, d]`.
      candidate_embeddings: `[G, d]` in-batch candidates, local block first.
      groups: the sampler's `CandidateGroup`s.
      candidate_ids: `[G]` int64 keys of the in-batch candidates.
      sample_weight: optional `[B]` example weights.
      consumed: optional `consumed(ids) -> bool [B, K]` of the rows' users
        (`masking.ConsumedItems.for_users`); every consumed column other
        than the positive gets `MIN_FLOAT` before hard-negative mining.
        None: no history masking.
    """
    if not groups:
      raise ValueError("the sampler returned no candidate group.")
    return _sum([_weighted(group.weight, functools.partial(
        self._group_loss, query_embeddings, candidate_embeddings, group,
        candidate_ids, sample_weight, consumed)) for group in groups])

  def _group_loss(self, query_embeddings, candidate_embeddings, group,
                  candidate_ids, sample_weight, consumed) -> tf.Tensor:
    """One group's loss `CE_g` (unweighted)."""
    if group.catalog_softmax is not None:
      return self._catalog_softmax_loss(
          query_embeddings, candidate_ids, group.catalog_softmax,
          sample_weight, consumed)
    if self.pairwise_loss is not None:
      return losses.triplet_group_loss(
          self.pairwise_loss, query_embeddings, candidate_embeddings,
          candidate_ids, group, sample_weight=sample_weight,
          consumed=consumed)
    logits, labels = self.group_logits(query_embeddings,
                                       candidate_embeddings,
                                       candidate_ids, group,
                                       consumed=consumed)
    if self.gbce_loss is not None:
      return self._gbce(logits, labels, sample_weight)
    return self._loss(y_true=labels, y_pred=logits,
                      sample_weight=sample_weight)

  def _catalog_softmax_loss(self, query_embeddings: tf.Tensor,
                            candidate_ids: tf.Tensor,
                            spec: base.CatalogSoftmax,
                            sample_weight: Optional[tf.Tensor],
                            consumed: Optional[masking.Consumed]
                            ) -> tf.Tensor:
    """The exact softmax over the catalog, summed over the rows."""
    if self.pairwise_loss is not None or self.gbce_loss is not None:
      raise ValueError("the full softmax sampler trains the softmax: use "
                       "loss='softmax' with it.")
    positives = candidate_ids[:tf.shape(query_embeddings)[0]]
    return tf.reduce_sum(full_softmax.full_softmax_loss(
        query_embeddings, positives, spec.item_embeddings,
        num_items=spec.num_items, temperature=self._temperature,
        sample_weight=sample_weight, masked_items=consumed,
        chunk_size=spec.chunk_size))

  def _gbce(self, logits: tf.Tensor, labels: tf.Tensor,
            sample_weight: Optional[tf.Tensor]) -> tf.Tensor:
    """gBCE summed over the rows: the label column is the positive, every
    other column a negative (masked ones, at `MIN_FLOAT`, add 0)."""
    num_items = self.gbce_loss.num_items or self._catalog_size()
    if num_items is None:
      raise ValueError("gBCE needs the catalog size: give "
                       "losses.GBCE(num_items=...) or a sampler with a "
                       "catalog (num_items= or candidates=).")
    columns = logits.shape[1]
    if columns is None or columns < 2:
      raise ValueError("gBCE needs a static number (>= 2) of columns per "
                       "row, got %s." % (logits.shape,))
    is_label = tf.cast(labels, tf.bool)
    positive = tf.reduce_sum(tf.where(is_label, logits, 0.0), axis=1)
    negatives = tf.reshape(tf.boolean_mask(logits, ~is_label),
                           [-1, columns - 1])
    return tf.reduce_sum(gbce.gbce_loss(
        positive, negatives, num_items, self.gbce_loss.t,
        sample_weight=sample_weight, negative_mask=negatives > MIN_FLOAT / 2))

  def _catalog_size(self) -> Optional[int]:
    """The sampler's catalog size (`num_items` or its candidate catalog)."""
    for member in getattr(self.sampler, "samplers", [self.sampler]):
      catalog = getattr(member, "candidate_catalog", None)
      if catalog is not None:
        return int(catalog.num_items)
      size = getattr(member, "num_items", None)
      if size is not None:
        return int(size)
    return None

  def call(self,
           query_embeddings: tf.Tensor,
           candidate_embeddings: tf.Tensor,
           sample_weight: Optional[tf.Tensor] = None,
           candidate_sampling_probability: Optional[tf.Tensor] = None,
           candidate_ids: Optional[tf.Tensor] = None,
           compute_metrics: bool = True,
           compute_batch_metrics: bool = True,
           score_mask: Optional[tf.Tensor] = None,
           training: Optional[bool] = None,
           query_ids: Optional[tf.Tensor] = None,
           query_history: Optional[tf.Tensor] = None) -> tf.Tensor:
    """Computes the loss and updates the metrics (TFRS's signature).

    Args:
      query_embeddings: `[B, d]` (or `[B, heads, d]` without a sampler).
      candidate_embeddings: `[B, d]` this replica's positives (more rows are
        extra negatives without a sampler, as in TFRS).
      sample_weight: optional `[B]` example weights.
      candidate_sampling_probability: `[B]` probabilities for TFRS's logQ
        correction; without a sampler only (a sampler has its own).
      candidate_ids: `[B]` int or string ids; needed with a sampler, with
        `remove_accidental_hits`, and for id-based factorized metrics.
      compute_metrics: update the factorized metrics.
      compute_batch_metrics: update the batch metrics.
      score_mask: `[B, B]` bool, without a sampler only (as TFRS).
      training: sampler state (queues, caches, frequency sketches) is
        updated unless this is False; pass `training=training` from
        `compute_loss` so that `model.evaluate` leaves it alone.
      query_ids: `[B]` the rows' user ids (strings or ints), for masking
        with the task's `consumed_items`.
      query_history: `[B, L]` the items each row's user consumed, as a
        history tower reads them (the candidate ids' type; padding: `""`
        for strings, negative for ints), for masking without a table. With
        both, the table (all training items) is used.

    Returns:
      The scalar loss, summed over this replica's rows.

    Raises:
      ValueError: with a sampler, when `candidate_ids` is missing or has a
        length other than the candidates', or when
        `candidate_sampling_probability` or `score_mask` is given.
    """
    if (candidate_embeddings is not None and
        tf.convert_to_tensor(candidate_embeddings).shape.rank == 3):
      if candidate_sampling_probability is not None or score_mask is not None:
        raise ValueError("candidate_sampling_probability and score_mask do "
                         "not apply to sequence rows ([B, L, d] "
                         "candidates).")
      return self._sequence_call(
          query_embeddings, candidate_embeddings, candidate_ids,
          sample_weight, query_ids, query_history, training,
          compute_metrics)
    consumed = self._consumed(query_ids, query_history)
    if (self.sampler is None and self.pairwise_loss is None and
        self.gbce_loss is None and consumed is None):
      return super().call(
          query_embeddings, candidate_embeddings,
          sample_weight=sample_weight,
          candidate_sampling_probability=candidate_sampling_probability,
          candidate_ids=candidate_ids, compute_metrics=compute_metrics,
          compute_batch_metrics=compute_batch_metrics, score_mask=score_mask)
    if candidate_sampling_probability is not None:
      raise ValueError("candidate_sampling_probability is not used with a "
                       "sampler: give the sampler a frequency source "
                       "instead (frequency=...).")
    if score_mask is not None:
      raise ValueError("score_mask is not supported with a sampler.")
    query_embeddings = tf.convert_to_tensor(query_embeddings)
    candidate_embeddings = tf.convert_to_tensor(candidate_embeddings)
    base.check_rank(query_embeddings, 2, "query_embeddings")
    base.check_rank(candidate_embeddings, 2, "candidate_embeddings")
    num_queries = tf.shape(query_embeddings)[0]
    raw_ids = candidate_ids
    if candidate_ids is None:
      if self.sampler is not None:
        raise ValueError("candidate_ids is required with a sampler: pass "
                         "candidate_ids=<the positives' ids> to the task.")
      keys = tf.range(tf.shape(candidate_embeddings)[0], dtype=tf.int64)
    else:
      raw_ids = tf.convert_to_tensor(candidate_ids)
      base.check_rank(raw_ids, 1, "candidate_ids")
      base.check_same_length(raw_ids, candidate_embeddings, "candidate_ids",
                             "candidate_embeddings")
      keys = self._keys(raw_ids)
    loss, candidates, keys, groups = self._sampled_loss(
        query_embeddings, candidate_embeddings, keys, sample_weight,
        consumed, training)

    update_ops = [m.update_state(loss) for m in self._loss_metrics]
    if compute_metrics:
      for metric in self._factorized_metrics:
        update_ops.append(metric.update_state(
            query_embeddings, candidate_embeddings[:num_queries],
            true_candidate_ids=raw_ids, sample_weight=sample_weight))
    if compute_batch_metrics and self._batch_metrics:
      scores = self._scale(tf.linalg.matmul(query_embeddings, candidates,
                                            transpose_b=True))
      labels = tf.eye(num_queries, tf.shape(scores)[1])
      if any(g.remove_accidental_hits for g in groups):
        scores = self._hit_remover(labels, scores, keys)
      for metric in self._batch_metrics:
        update_ops.append(metric.update_state(labels, scores,
                                              sample_weight=sample_weight))
    with tf.control_dependencies(update_ops):
      return tf.identity(loss)

  def _sampled_loss(self, query_embeddings: tf.Tensor,
                    candidate_embeddings: tf.Tensor, keys: tf.Tensor,
                    sample_weight: Optional[tf.Tensor],
                    consumed: Optional[masking.Consumed], training,
                    gather: bool = True):
    """Gathers the candidates, calls the sampler, sums its groups' losses.

    Returns:
      `(loss, gathered candidates, gathered keys, groups)`.
    """
    # Padding rows (key -1, sequence rows) show the sampler the "no item"
    # index 0, which every sampler can look up.
    positive_keys = tf.maximum(keys[:tf.shape(query_embeddings)[0]], 0)
    candidates = candidate_embeddings
    if self.gather_candidates and gather:
      candidates = distribute.all_gather_local_first(candidate_embeddings)
      keys = distribute.all_gather_local_first(keys)
    if self.sampler is not None:
      if not self.sampler.built:
        # Create the sampler's state outside the training function, as a
        # model built before `fit` would: variables created on the first
        # step inside a replicated `tf.function` do not initialise there.
        with tf.init_scope():
          self.sampler.build(query_embeddings.shape)
      groups = self.sampler(query_embeddings, candidates, keys,
                            training=training is not False,
                            positive_ids=positive_keys, consumed=consumed,
                            ids_are_keys=True)
    else:
      groups = [base.CandidateGroup(remove_accidental_hits=False)]
    groups = [self._with_task_options(g) for g in groups]
    loss = self.groups_loss(query_embeddings, candidates, groups, keys,
                            sample_weight=sample_weight, consumed=consumed)
    return loss, candidates, keys, groups

  def _sequence_call(self, query_embeddings, candidate_embeddings,
                     candidate_ids, sample_weight, query_ids, query_history,
                     training, compute_metrics) -> tf.Tensor:
    """The loss of sequence rows: every valid position is a query row.

    Position `t` of row `b` has the query `u_bt` (the causal encoder's output
    there) and the positive `v_bt` (the next item). The valid positions of
    the global batch, in position-major order (every row's position 0, then
    position 1, ...; padding last), are cut into blocks of
    `rows_per_block`; each block is one sampled softmax as for flat rows:
    its positives are its in-batch columns, so there is no `(B L)^2`
    matrix, and positions of many rows share a block. The sampler sees the
    blocks one after another, as batches.

    Under several replicas the positions of the global batch are gathered
    once (queries and candidates keep their gradient,
    docs/design/multi_replica.md#d5) and
    every replica forms the same blocks, scoring each block's rows and
    weighting only its own (`distribute.one_replica_view`): the sum over
    replicas is one device's loss on the global batch.

    Padding positions (`candidate_ids` -1 for ints, "" for strings, or
    `sample_weight` 0) carry no loss; their key is -1, which every sampler
    treats as no item (masked as a column, not counted, not enqueued).
    Masking per position uses the row's user (`query_ids` with the table,
    or `query_history`).
    """
    query = tf.convert_to_tensor(query_embeddings)
    candidates = tf.convert_to_tensor(candidate_embeddings)
    base.check_rank(query, 3, "query_embeddings")
    if candidate_ids is None:
      raise ValueError("candidate_ids [B, L] (the next items, -1 or \"\" "
                       "for padding) are required with sequence rows.")
    ids = tf.convert_to_tensor(candidate_ids)
    base.check_rank(ids, 2, "candidate_ids")
    rows, length = query.shape[0], query.shape[1]
    if rows is None or length is None:
      raise ValueError("sequence rows need a static [B, L] (batch with "
                       "drop_remainder=True), got query shape %s."
                       % query.shape)
    padding = tf.equal(ids, "") if ids.dtype == tf.string else ids < 0
    keys = tf.reshape(self._keys(tf.reshape(ids, [-1])), [rows, length])
    keys = tf.where(padding, -tf.ones_like(keys), keys)
    weight = tf.cast(tf.logical_not(padding), tf.float32)
    if sample_weight is not None:
      sample_weight = tf.cast(tf.convert_to_tensor(sample_weight),
                              tf.float32)
      if sample_weight.shape.rank == 1:
        sample_weight = sample_weight[:, None]
      weight *= sample_weight
    replica, replicas = distribute.replica_info()

    def global_positions(x):
      """`[B, L, ...]` -> `[L * B_global, ...]`, position-major."""
      x = distribute.all_gather(x)                # [B_global, L, ...]
      perm = [1, 0] + list(range(2, x.shape.rank))
      return tf.reshape(tf.transpose(x, perm),
                        tf.concat([[-1], tf.shape(x)[2:]], 0))

    q = global_positions(query)
    c = global_positions(candidates)
    k = global_positions(keys)
    owner = global_positions(tf.fill([rows, length], replica))
    w = tf.where(tf.equal(owner, replica), global_positions(weight), 0.0)
    # The (global) row of every position, for the per-row masks.
    row = tf.tile(tf.range(rows * replicas), [length])
    consumed_of = self._per_row_consumed(query_ids, query_history)
    order = tf.argsort(tf.cast(k < 0, tf.int32), stable=True)
    num_positions = rows * replicas * length

    def block_loss(sel, size):
      consumed = (None if consumed_of is None
                  else consumed_of(tf.gather(row, sel)))
      with distribute.one_replica_view():
        value, _, _, _ = self._sampled_loss(
            tf.gather(q, sel), tf.gather(c, sel), tf.gather(k, sel),
            tf.gather(w, sel), _with_padding(consumed, size),
            training, gather=False)
      return value

    if self.sampler is not None and self.sampler.stateless:
      # No shared columns and no state (the full softmax): one block of
      # the valid positions alone (the same count on every replica), so
      # padding costs nothing (85% of the positions on short-history data).
      num_valid = tf.reduce_sum(tf.cast(k >= 0, tf.int32))
      loss = block_loss(order[:num_valid], num_valid)
    else:
      # Every block is computed, also one of padding alone (a
      # data-dependent skip would put the samplers' state updates, which
      # are cross-replica merges, inside control flow).
      loss = _sum([
          block_loss(order[start:start + self.rows_per_block],
                     min(self.rows_per_block, num_positions - start))
          for start in range(0, num_positions, self.rows_per_block)])
    update_ops = [m.update_state(loss) for m in self._loss_metrics]
    if compute_metrics:
      # The last position (the newest target of left-padded rows) is the
      # query a served model answers.
      for metric in self._factorized_metrics:
        update_ops.append(metric.update_state(
            query[:, -1], candidates[:, -1], true_candidate_ids=ids[:, -1],
            sample_weight=weight[:, -1]))
    with tf.control_dependencies(update_ops):
      return tf.identity(loss)

  def _per_row_consumed(self, query_ids, query_history):
    """`rows [n] -> consumed` over the global batch's rows, or None.

    The users (table indices) or histories (keys) of every replica's rows
    are gathered once; a block picks its rows' with `rows`.
    """
    if not self.mask_history or (query_ids is None and
                                 query_history is None):
      return None
    if query_ids is not None and self.consumed_items is not None:
      if not self.consumed_items.built:
        with tf.init_scope():
          self.consumed_items.build(None)
      users = distribute.all_gather(
          self.consumed_items.user_index(query_ids))
      return lambda rows: self.consumed_items.for_user_index(
          tf.gather(users, rows))
    if query_history is None:
      self._consumed(query_ids, None)  # the missing-table error
    history = distribute.all_gather(self._history_keys(query_history))
    return lambda rows: masking.history_consumed(tf.gather(history, rows))

  def _keys(self, ids: tf.Tensor) -> tf.Tensor:
    """The int64 keys of ids: the sampler's (`id_keys`), else the default."""
    if self.sampler is not None:
      return self.sampler.id_keys(ids)
    return keys_lib.default_keys(ids)

  def _history_keys(self, query_history: tf.Tensor) -> tf.Tensor:
    """`[B, L]` int64 keys of a history (padding `""` or < 0 -> -1)."""
    history = tf.convert_to_tensor(query_history)
    base.check_rank(history, 2, "query_history")
    padding = (tf.equal(history, "") if history.dtype == tf.string
               else history < 0)
    keys = tf.reshape(self._keys(tf.reshape(history, [-1])),
                      tf.shape(history))
    return tf.where(padding, -tf.ones_like(keys), keys)

  def _consumed(self, query_ids: Optional[tf.Tensor],
                query_history: Optional[tf.Tensor]
                ) -> Optional[masking.Consumed]:
    """`consumed(keys) -> bool [B, K]` of the rows' users, or None."""
    if query_ids is not None and self.consumed_items is None:
      if query_history is None:
        raise ValueError("query_ids is used for masking with a table of "
                         "the training pairs: build the task with "
                         "consumed_items=tfrs_negsamp.masking.ConsumedItems"
                         ".from_interactions(...), or pass query_history.")
    if not self.mask_history:
      return None
    if query_ids is not None and self.consumed_items is not None:
      if not self.consumed_items.built:
        with tf.init_scope():
          self.consumed_items.build(None)
      return self.consumed_items.for_users(query_ids)
    if query_history is None:
      return None
    return masking.history_consumed(self._history_keys(query_history))

  def _with_task_options(self, group: base.CandidateGroup
                         ) -> base.CandidateGroup:
    """Applies the task's `remove_accidental_hits` / `num_hard_negatives`."""
    if self._remove_accidental_hits:
      group = group._replace(remove_accidental_hits=True)
    if (self._num_hard_negatives is not None and
        group.num_hard_negatives is None):
      group = group._replace(num_hard_negatives=self._num_hard_negatives)
    return group

  def get_config(self):
    config = super().get_config()
    config.update({
        "temperature": self._temperature,
        "num_hard_negatives": self._num_hard_negatives,
        "remove_accidental_hits": self._remove_accidental_hits,
        "gather_candidates": self.gather_candidates,
        "mask_history": self.mask_history,
        "rows_per_block": self.rows_per_block,
        "consumed_items": (tf.keras.layers.serialize(self.consumed_items)
                           if self.consumed_items is not None else None),
        "sampler": (tf.keras.layers.serialize(self.sampler)
                    if self.sampler is not None else None),
    })
    return config


def _with_padding(consumed: Optional[masking.Consumed],
                  num_rows: int) -> masking.Consumed:
  """`consumed` that also flags padding keys (< 0) for every row.

  Samplers exclude consumed columns from what they select, and the task
  masks them: a padding position's column is never a negative.
  """

  def with_padding(ids: tf.Tensor) -> tf.Tensor:
    pad = tf.cast(ids, tf.int64) < 0
    if ids.shape.rank == 1:
      pad = tf.broadcast_to(pad[None, :], tf.stack([num_rows,
                                                    tf.shape(ids)[0]]))
    if consumed is None:
      return pad
    return tf.logical_or(tf.cast(consumed(ids), tf.bool), pad)
  return with_padding


def _sum(losses: List[tf.Tensor]) -> tf.Tensor:
  """The sum of scalar losses as one reduction, not as adds.

  Grappler turns a chain of adds (its arithmetic optimizer) and then an
  `AddN` (its memory optimizer) into an accumulation through a per-step
  temporary variable. A step stopped between the temporary's creation and
  its destruction (the input running out inside `fit`) leaves it behind,
  and the next `fit` on the model fails with `AlreadyExistsError`
  (tensorflow/tensorflow#33713). `reduce_sum` of the stacked terms gives
  the same sum with no add to rewrite.
  """
  losses = [tf.cast(x, tf.float32) for x in losses]
  return losses[0] if len(losses) == 1 else tf.reduce_sum(tf.stack(losses))


def _weighted(weight, loss_fn) -> tf.Tensor:
  """`weight * loss_fn()`, without computing the loss when the weight is 0.

  A group of weight 0 (a warm-up's in-batch group after the warm-up, the
  wrapped sampler's groups during it) adds nothing to the loss or the
  gradients; its logits, softmax and their gradients are skipped (a
  Python 0 at trace time, a tensor 0 by `tf.cond`, identical on every
  replica since the weights are). Its columns were still drawn: the
  samplers' state updates happen in `sample`, outside the branch.
  """
  if not tf.is_tensor(weight):
    weight = float(weight)
    if weight == 0.0:
      return tf.constant(0.0)
    return weight * tf.cast(loss_fn(), tf.float32)
  weight = tf.cast(weight, tf.float32)
  return tf.cond(tf.not_equal(weight, 0.0),
                 lambda: weight * tf.cast(loss_fn(), tf.float32),
                 lambda: tf.constant(0.0))
