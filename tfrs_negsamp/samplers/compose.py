"""`Compose`: several samplers' columns in one softmax with one log Q.

Each member is called on the same step (its state updated as alone). Their
plain groups (weight 1, no logit offsets: in-batch, CBNS, MNS, catalog
samplers) are merged into one softmax for row `i`:

    columns = [in-batch (once) | shared extras of member 1 | ... |
               per-row columns of every catalog member]
    z_ij    = <u_i, c_j> / tau - log Q_j
    Q_j     = sum_m E_m(j)                (docs/design/shared.md#logq-units)

`E_m(j)` is the expected number of member `m`'s columns of row `i` showing
item `j` per step, for every column whatever its source:

    in-batch columns (any member keeping them):  E_b(j) = exp(log_q_f(j))
    CBNS queue of `n` valid slots:               n / G * E_b(j)
    MNS's `B'` uniform columns:                  B' / N
    catalog sampler, `K` per row from `q`:       K q(j)

with `log_q_f` the Compose's `frequency` source (updated once per training
step with the global batch's ids). Without `frequency` no column is
corrected (the members' own corrections are never mixed: their units
differ). Masks (empty queue slots, warm-up, invalid draws) carry over;
accidental hits are removed if any member removes them.

Resampling members (BIR, XIR, two-stage, adaptive) weight their groups or
shift logits by `log n` counts: their groups are kept as they are and their
losses added (`L = sum_g w_g CE_g`), e.g. XIR's two softmaxes plus the
merged in-batch + CBNS queue softmax.
"""

from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import cross_batch
from tfrs_negsamp.samplers import mixed


def _concat_per_query(parts, dtype) -> Dict[str, Any]:
  """The members' per-row columns side by side, as `PerQuery` fields.

  Tables are stacked and each member's index shifted past the tables
  before it; a member with dense embeddings makes the result dense.
  """
  if all(pq.table is not None for pq in parts):
    offsets, tables, total = [], [], 0
    for pq in parts:
      offsets.append(total)
      tables.append(tf.cast(pq.table, dtype))
      total += tf.shape(pq.table)[0]
    return {"table": tf.concat(tables, axis=0),
            "index": tf.concat([tf.cast(pq.index, tf.int32) + o
                                for pq, o in zip(parts, offsets)], axis=1)}
  return {"embeddings": tf.concat([tf.cast(pq.dense_embeddings(), dtype)
                                   for pq in parts], axis=1)}


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class Compose(base.NegativeSampler):
  """Combines samplers in one softmax with one consistent log Q.

  Example:

  >>> import tensorflow as tf
  >>> import tfrs_negsamp as tn
  >>> sampler = tn.samplers.Compose(
  ...     [tn.samplers.InBatchSampler(),
  ...      tn.samplers.CrossBatchSampler(memory_size=4)],
  ...     frequency=tn.frequency.StreamingFrequencyEstimator(num_buckets=64))
  >>> q, c = tf.eye(2), tf.eye(2)
  >>> groups = sampler(q, c, tf.constant(["a", "b"]), training=True)
  >>> groups = sampler(q, c, tf.constant(["c", "a"]), training=True)
  >>> len(groups), int(groups[0].extra_embeddings.shape[0])
  (1, 4)

  Args:
    samplers: the members (`NegativeSampler`s, not `Compose`s). Members
      sharing an id space: at most one distinct `candidates=` catalog
      (its keys are used for every member).
    frequency: optional `FrequencySource` for the in-batch frequency in
      `Q_j` (None: no log Q correction). Leave the members' own
      `frequency` unset: it would be updated twice per step.
    remove_accidental_hits: mask merged columns equal to the positive
      (also on when any member removes them).
    **kwargs: Keras layer arguments.

  Raises:
    ValueError: for an empty list, a non-sampler member, or members with
      different candidate catalogs.
  """

  def __init__(self, samplers: Sequence[base.NegativeSampler],
               frequency: Optional[frequency_lib.FrequencySource] = None,
               remove_accidental_hits: bool = True, **kwargs) -> None:
    super().__init__(frequency=frequency,
                     remove_accidental_hits=remove_accidental_hits, **kwargs)
    samplers = list(samplers)
    if not samplers:
      raise ValueError("samplers must list at least one sampler.")
    for s in samplers:
      if not isinstance(s, base.NegativeSampler) or isinstance(s, Compose):
        raise ValueError("samplers must hold NegativeSamplers (not Compose),"
                         " got %r." % (s,))
    catalogs = [s.candidate_catalog for s in samplers
                if getattr(s, "candidate_catalog", None) is not None]
    if any(c is not catalogs[0] and
           list(c.vocabulary) != list(catalogs[0].vocabulary)
           for c in catalogs[1:]):
      raise ValueError("samplers were built from different candidates=; "
                       "build them from the same candidates.")
    self.samplers = samplers
    self._catalog_ref = catalog._Untracked(catalogs[0] if catalogs else None)

  @property
  def candidate_catalog(self):
    return self._catalog_ref.fn

  def build(self, input_shape=None):
    for sampler in self.samplers:
      if not sampler.built:
        sampler.build(input_shape)
    super().build(input_shape)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    batch = tf.shape(query_embeddings)[0]
    num_columns = tf.shape(candidate_ids)[0]
    merged, kept = [], []
    for sampler in self.samplers:
      for group in sampler(query_embeddings, candidate_embeddings,
                           candidate_ids, training=training,
                           positive_ids=positive_ids, consumed=consumed,
                           ids_are_keys=True):
        mergeable = (group.weight == 1.0 and group.logit_offset is None and
                     (not group.drop_in_batch or
                      group.extra_embeddings is None))
        (merged if mergeable else kept).append((sampler, group))
    if not merged:
      return [g for _, g in kept]

    keep_batch = any(not g.drop_in_batch for _, g in merged)
    batch_mask = tf.ones([batch, num_columns], tf.bool)
    extra_emb, extra_ids, extra_masks, sources = [], [], [], []
    pq_emb, pq_ids, pq_masks, pq_sources = [], [], [], []
    for sampler, group in merged:
      if group.extra_embeddings is not None:
        num_extra = tf.shape(group.extra_ids)[0]
        mask = _rows(group.score_mask, batch, num_columns + num_extra)
        batch_mask = tf.logical_and(batch_mask, mask[:, :num_columns])
        extra_emb.append(group.extra_embeddings)
        extra_ids.append(tf.cast(group.extra_ids, tf.int64))
        extra_masks.append(mask[:, num_columns:])
        sources.append((sampler, mask[:, num_columns:]))
      if group.per_query is not None:
        pq = group.per_query
        pq_emb.append(pq)
        pq_ids.append(tf.cast(pq.ids, tf.int64))
        pq_masks.append(tf.ones(tf.shape(pq.ids), tf.bool)
                        if pq.mask is None else tf.cast(pq.mask, tf.bool))
        pq_sources.append(sampler)

    # Shared columns [in-batch | extras]. Members that all drop the
    # in-batch columns (catalog samplers) only have per-row columns, so the
    # shared columns are the positive alone (`drop_in_batch`, uncorrected
    # as in the catalog samplers).
    if keep_batch:
      shared_ids = tf.concat([candidate_ids] + extra_ids, axis=0)
      shared_mask = tf.concat([batch_mask] + extra_masks, axis=1)
    else:
      shared_mask = None
    column_log_q, pq_log_q = None, None
    if self.frequency is not None:
      # Updates the source with the global batch (training only); every
      # lookup below then sees this step's ids.
      self.in_batch_log_q(candidate_ids, training)
      g = tf.cast(num_columns, tf.float32)

      def log_expected(ids):
        ids = tf.maximum(ids, 0)  # empty queue slots (-1) are masked
        total = tf.zeros(tf.shape(ids), tf.float32)
        if keep_batch:
          e_b = tf.exp(tf.cast(self.frequency.log_q(ids, num_columns),
                               tf.float32))
          total += e_b
          for sampler, mask in sources:
            if isinstance(sampler, cross_batch.CrossBatchSampler):
              valid = tf.reduce_sum(tf.cast(mask[0], tf.float32))
              total += valid / g * e_b
        for sampler, _ in sources:
          if isinstance(sampler, mixed.MixedSampler):
            total += (sampler.num_uniform /
                      float(sampler.distribution.num_items))
        for sampler in pq_sources:
          if isinstance(sampler, catalog.CatalogSampler):
            total += float(sampler.num_negatives) * (
                sampler.distribution.prob(ids))
        return tf.stop_gradient(tf.math.log(tf.maximum(total, 1e-30)))

      if keep_batch:
        column_log_q = log_expected(shared_ids)
      if pq_ids:
        pq_log_q = log_expected(tf.concat(pq_ids, axis=1))
    per_query = None
    if pq_ids:
      columns = _concat_per_query(pq_emb, query_embeddings.dtype)
      per_query = base.PerQuery(
          embeddings=columns.get("embeddings"),
          ids=tf.concat(pq_ids, axis=1), log_q=pq_log_q,
          mask=tf.concat(pq_masks, axis=1), table=columns.get("table"),
          index=columns.get("index"))
    hits = self.remove_accidental_hits or any(
        g.remove_accidental_hits for _, g in merged)
    group = base.CandidateGroup(
        extra_embeddings=(tf.concat([tf.cast(e, query_embeddings.dtype)
                                     for e in extra_emb], axis=0)
                          if extra_emb else None),
        extra_ids=tf.concat(extra_ids, axis=0) if extra_ids else None,
        column_log_q=column_log_q,
        score_mask=shared_mask, per_query=per_query,
        drop_in_batch=not keep_batch, remove_accidental_hits=hits)
    return [group] + [g for _, g in kept]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config["samplers"] = [tf.keras.layers.serialize(s)
                          for s in self.samplers]
    return config

  @classmethod
  def from_config(cls, config):
    config = dict(config)
    config["samplers"] = [tf.keras.layers.deserialize(s)
                          for s in config["samplers"]]
    return super().from_config(config)


def _rows(mask: Optional[tf.Tensor], batch, columns) -> tf.Tensor:
  """A `[C]` / `[B, C]` / None mask as `[B, C]` bool."""
  if mask is None:
    return tf.ones([batch, columns], tf.bool)
  mask = tf.cast(mask, tf.bool)
  if mask.shape.rank == 1:
    mask = tf.broadcast_to(mask[None, :], [batch, columns])
  return mask


def members_of(sampler: base.NegativeSampler) -> List[base.NegativeSampler]:
  """The members of a `Compose`, or `[sampler]`."""
  if isinstance(sampler, Compose):
    return list(sampler.samplers)
  return [sampler]
