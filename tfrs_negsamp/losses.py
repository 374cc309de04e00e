"""Losses besides the softmax: the CML hinge (triplet) and gBCE.

The task's `loss` argument: "softmax" (default), "triplet" (below) or
"gbce" (`GBCE`: the calibrated binary cross-entropy of gSASRec, per row
over the positive and the sampled negatives; the math is in `gbce`).

Collaborative Metric Learning ranks items by `-D(u, v)` with the squared
Euclidean distance `D(u, v) = ||u - v||^2`. For row `i` with query `u_i`,
positive `v_i` and the negatives `N_i` the sampler offers (accidental hits
and masked columns excluded), the Deezer reference code of Tran et al. uses
the hardest negative of the pool:

    l_i = r_i [margin + D(u_i, v_i) - min_{j in N_i} D(u_i, c_j)]_+
    L   = sum_i l_i                                   (sum over the batch)

with margin 1.0 (docs/design/two_stage.md#cml-loss). Rows without any valid
negative add 0.

Ranking: the package evaluates and exports with dot products. With
L2-normalised towers (the default, and what the reference code does for
the two-stage run), `-||u - v||^2 = 2 <u, v> - 2`, so both rank the items
identically. Without normalisation they differ; train CML with
`normalize=True`.

References:
  Tran, Hennequin, Royo-Letelier, Moussallam. Improving Collaborative Metric
  Learning with Efficient Negative Sampling. SIGIR 2019 (arXiv 1909.10912).
  Hsieh, Yang, Cui, Lin, Belongie, Estrin. Collaborative Metric Learning.
  WWW 2017.
"""

from typing import Any, Dict, Optional

import tensorflow as tf

from tfrs_negsamp import masking

TRIPLET = "triplet"
SOFTMAX = "softmax"
GBCE_NAME = "gbce"
LOSS_TYPES = (SOFTMAX, TRIPLET, GBCE_NAME)
# gSASRec's calibration on ML-1M (Petrov & Macdonald 2023).
DEFAULT_GBCE_T = 0.75


class GBCE:
  """gBCE as the task's loss: per row, the positive against its negatives.

  Each of the sampler's groups gives a row its positive logit `s+` and `k`
  negative logits (the group's columns: accidental hits and consumed items
  masked, which add 0); the loss is `gbce.gbce_loss` with `alpha = k / (I -
  1)`, summed over rows (SUM reduction, as every loss of the task). The
  logits are the task's (temperature, log Q where the sampler gives one);
  gSASRec uses per-position uniform negatives and raw dot products.

  Args:
    t: the calibration in `[0, 1]` (0: plain BCE).
    num_items: `I`, the catalog the negatives come from (None: the
      sampler's `num_items` or candidate catalog).
  """

  kind = GBCE_NAME

  def __init__(self, t: float = DEFAULT_GBCE_T,
               num_items: Optional[int] = None) -> None:
    if not 0.0 <= float(t) <= 1.0:
      raise ValueError("gBCE's t must be in [0, 1], got %r." % (t,))
    if num_items is not None and int(num_items) < 2:
      raise ValueError("gBCE needs num_items >= 2, got %r." % (num_items,))
    self.t = float(t)
    self.num_items = None if num_items is None else int(num_items)

  def __repr__(self) -> str:
    return "GBCE(t=%g, num_items=%s)" % (self.t, self.num_items)


def squared_distances(queries: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
  """`||u_b - c_j||^2` for `[B, d]` x `[C, d]` -> `[B, C]` (clipped >= 0)."""
  d = (tf.reduce_sum(tf.square(queries), axis=-1, keepdims=True)
       - 2.0 * tf.linalg.matmul(queries, items, transpose_b=True)
       + tf.expand_dims(tf.reduce_sum(tf.square(items), axis=-1), 0))
  return tf.maximum(d, 0.0)


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class CMLTripletLoss(tf.keras.layers.Layer):
  """Hinge on the hardest negative: `sum_i r_i [m + D_pos - min D_neg]_+`.

  Args:
    margin: the hinge margin `m`.
  """

  kind = "triplet"  # the loss family (`samplers.loss_kind`)

  def __init__(self, margin: float = 1.0, **kwargs) -> None:
    super().__init__(**kwargs)
    if margin < 0:
      raise ValueError("margin must be >= 0, got %r." % margin)
    self.margin = float(margin)

  def call(self, positive_distances: tf.Tensor,
           negative_distances: tf.Tensor, mask: Optional[tf.Tensor] = None,
           sample_weight: Optional[tf.Tensor] = None) -> tf.Tensor:
    """The summed hinge.

    Args:
      positive_distances: `[B]` `D(u_i, v_i)`.
      negative_distances: `[B, C]` `D(u_i, c_j)`.
      mask: optional `[B, C]` bool, True = a valid negative.
      sample_weight: optional `[B]` row weights `r_i`.

    Returns:
      Scalar float32 loss.
    """
    neg = tf.cast(negative_distances, tf.float32)
    if mask is None:
      mask = tf.ones_like(neg, tf.bool)
    mask = tf.cast(mask, tf.bool)
    hardest = tf.reduce_min(tf.where(mask, neg, tf.float32.max), axis=1)
    hinge = tf.nn.relu(self.margin + tf.cast(positive_distances, tf.float32)
                       - hardest)
    hinge = tf.where(tf.reduce_any(mask, axis=1), hinge, 0.0)
    if sample_weight is not None:
      hinge *= tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    return tf.reduce_sum(hinge)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config["margin"] = self.margin
    return config


def triplet_group_loss(loss: CMLTripletLoss, query_embeddings: tf.Tensor,
                       candidate_embeddings: tf.Tensor,
                       candidate_ids: tf.Tensor, group,
                       sample_weight: Optional[tf.Tensor] = None,
                       consumed=None) -> tf.Tensor:
  """The CML loss over the negatives of one `samplers.CandidateGroup`.

  Negatives: the other in-batch columns (unless `drop_in_batch`), the shared
  extra columns and the per-query columns; accidental hits (when the group
  removes them), `score_mask`, per-query masks and, when `consumed` is given
  (`masking.Consumed`), the row's user's training items exclude columns.
  Log-Q terms, offsets and `num_hard_negatives` do not apply: the hinge
  already takes the hardest valid negative.
  """
  num_queries = tf.shape(query_embeddings)[0]
  positives = candidate_embeddings[:num_queries]
  positive_ids = tf.cast(candidate_ids[:num_queries], tf.int64)
  d_pos = tf.reduce_sum(tf.square(query_embeddings - positives), axis=-1)
  shared_emb = []
  shared_ids = []
  if not group.drop_in_batch:
    shared_emb.append(candidate_embeddings)
    shared_ids.append(tf.cast(candidate_ids, tf.int64))
  if group.extra_embeddings is not None:
    shared_emb.append(tf.cast(group.extra_embeddings,
                              query_embeddings.dtype))
    shared_ids.append(tf.cast(group.extra_ids, tf.int64))
  dists, masks = [], []
  if shared_emb:
    emb = tf.concat(shared_emb, axis=0)
    ids = tf.concat(shared_ids, axis=0)
    dists.append(squared_distances(query_embeddings, emb))
    keep = tf.ones([num_queries, tf.shape(ids)[0]], tf.bool)
    if not group.drop_in_batch:  # the diagonal is the positive itself
      keep = tf.logical_not(tf.cast(tf.eye(num_queries, tf.shape(ids)[0]),
                                    tf.bool))
    if group.remove_accidental_hits:
      keep = tf.logical_and(keep, tf.not_equal(
          tf.expand_dims(positive_ids, 1), tf.expand_dims(ids, 0)))
    if group.score_mask is not None:
      score_mask = tf.cast(group.score_mask, tf.bool)
      if group.drop_in_batch:  # laid out over [positive | extra]
        score_mask = score_mask[..., 1:]
      keep = tf.logical_and(keep, score_mask)
    history = masking.negatives_mask(consumed, ids, positive_ids)
    if history is not None:
      keep = tf.logical_and(keep, tf.logical_not(history))
    masks.append(keep)
  if group.per_query is not None:
    pq = group.per_query
    diff = tf.expand_dims(query_embeddings, 1) - tf.cast(
        pq.dense_embeddings(), query_embeddings.dtype)
    dists.append(tf.reduce_sum(tf.square(diff), axis=-1))
    keep = tf.ones(tf.shape(pq.ids), tf.bool)
    if group.remove_accidental_hits:
      keep = tf.not_equal(tf.cast(pq.ids, tf.int64),
                          tf.expand_dims(positive_ids, 1))
    if pq.mask is not None:
      keep = tf.logical_and(keep, tf.cast(pq.mask, tf.bool))
    history = masking.negatives_mask(consumed, pq.ids, positive_ids)
    if history is not None:
      keep = tf.logical_and(keep, tf.logical_not(history))
    masks.append(keep)
  if not dists:
    raise ValueError("the group offers no negative column.")
  return loss(d_pos, tf.concat(dists, axis=1), tf.concat(masks, axis=1),
              sample_weight=sample_weight)
