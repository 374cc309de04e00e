"""The task's one-mask path equals the former sequential masks (issue 17).

`Retrieval._dropped_columns` builds one boolean mask of the dropped shared
columns (accidental hits, `score_mask`, consumed items) and applies it with
one `tf.where`. The reference here is the former implementation: TFRS's
`RemoveAccidentalHits` (adds `MIN_FLOAT`), then `tf.where(score_mask)`, then
`+ MIN_FLOAT` on consumed non-label columns. Losses and gradients must be
equal (a masked column has zero softmax mass either way).
"""

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_negsamp import masking
from tfrs_negsamp.samplers import base
from tfrs_negsamp.tasks import retrieval

MIN_FLOAT = retrieval.MIN_FLOAT
B, E, D, N = 6, 4, 3, 5


def reference_logits(task, q, c, ids, group, consumed):
  """The pre-issue-17 `group_logits` (shared columns only)."""
  num_queries = q.shape[0]
  if group.drop_in_batch:
    shared_ids = tf.concat([tf.zeros([1], ids.dtype), group.extra_ids], 0)
    scores = tf.concat([
        tf.reduce_sum(q * c[:num_queries], axis=1, keepdims=True),
        tf.matmul(q, group.extra_embeddings, transpose_b=True)], axis=1)
    labels = tf.one_hot(tf.zeros([num_queries], tf.int32), scores.shape[1])
  else:
    shared, shared_ids = c, ids
    if group.extra_embeddings is not None:
      shared = tf.concat([c, group.extra_embeddings], 0)
      shared_ids = tf.concat([ids, group.extra_ids], 0)
    scores = tf.matmul(q, shared, transpose_b=True)
    labels = tf.eye(num_queries, scores.shape[1])
  scores = task._scale(scores)  # pylint: disable=protected-access
  if group.column_log_q is not None:
    scores -= group.column_log_q
  if group.logit_offset is not None:
    scores += group.logit_offset
  if group.remove_accidental_hits:
    if group.drop_in_batch:
      hits = tf.equal(ids[:num_queries, None], shared_ids[None, :])
      hits = tf.logical_and(hits, tf.equal(labels, 0.0))
      scores = tf.where(hits, MIN_FLOAT, scores)
    else:
      scores = tfrs.layers.loss.RemoveAccidentalHits()(labels, scores,
                                                       shared_ids)
  if group.score_mask is not None:
    scores = tf.where(group.score_mask, scores, MIN_FLOAT)
  if consumed is not None:
    hit = consumed(shared_ids)
    if not group.remove_accidental_hits:
      hit = tf.logical_and(hit, tf.not_equal(shared_ids[None, :],
                                             ids[:num_queries, None]))
    scores += tf.cast(hit, tf.float32) * (1.0 - labels) * MIN_FLOAT
  return scores, labels


class OneMaskTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    rs = np.random.RandomState(0)
    self.q = tf.constant(rs.normal(size=(B, D)).astype(np.float32))
    self.c = tf.constant(rs.normal(size=(B, D)).astype(np.float32))
    self.extra = tf.constant(rs.normal(size=(E, D)).astype(np.float32))
    # Repeated ids: accidental hits in the batch and in the extra columns.
    self.ids = tf.constant([1, 2, 1, 3, 4, 2], tf.int64)
    self.extra_ids = tf.constant([2, 5, 1, 3], tf.int64)
    users = ["u%d" % i for i in range(B)]
    pairs = [(u, j) for i, u in enumerate(users)
             for j in range(1, N + 1) if (i + j) % 3 == 0]
    pairs += [(u, int(self.ids[i])) for i, u in enumerate(users)]
    table = masking.ConsumedItems.from_pairs(
        users, [p[0] for p in pairs], [p[1] for p in pairs], N)
    self.consumed = table.for_users(tf.constant(users))
    self.log_q = tf.constant(rs.normal(size=B + E).astype(np.float32))
    self.offset = tf.constant(rs.normal(size=(B, B + E)).astype(np.float32))
    self.mask = tf.constant(rs.rand(B, B + E) > 0.3)

  def groups(self):
    extra = dict(extra_embeddings=self.extra, extra_ids=self.extra_ids)
    for hits in (True, False):
      yield base.CandidateGroup(remove_accidental_hits=hits)
      yield base.CandidateGroup(column_log_q=self.log_q[:B],
                                remove_accidental_hits=hits)
      yield base.CandidateGroup(column_log_q=self.log_q,
                                score_mask=tf.concat(
                                    [tf.ones([B], tf.bool),
                                     self.mask[0, B:]], 0),
                                remove_accidental_hits=hits, **extra)
      yield base.CandidateGroup(logit_offset=self.offset,
                                score_mask=self.mask,
                                remove_accidental_hits=hits, **extra)
      yield base.CandidateGroup(drop_in_batch=True,
                                logit_offset=self.offset[:, :1 + E],
                                score_mask=self.mask[:, :1 + E],
                                remove_accidental_hits=hits, **extra)

  def test_loss_and_gradients_equal_the_sequential_masks(self):
    task = retrieval.Retrieval(temperature=0.5)
    for consumed in (None, self.consumed):
      for group in self.groups():
        msg = "%s consumed=%s" % (group, consumed is not None)
        with tf.GradientTape(persistent=True) as tape:
          tape.watch([self.q, self.c])
          logits, labels = task.group_logits(self.q, self.c, self.ids, group,
                                             consumed=consumed)
          want, want_labels = reference_logits(task, self.q, self.c,
                                               self.ids, group, consumed)
          loss = tf.nn.softmax_cross_entropy_with_logits(labels, logits)
          ref = tf.nn.softmax_cross_entropy_with_logits(want_labels, want)
        self.assertAllEqual(labels, want_labels, msg=msg)
        self.assertAllEqual(logits <= MIN_FLOAT / 2, want <= MIN_FLOAT / 2,
                            msg=msg)
        kept = want > MIN_FLOAT / 2
        self.assertAllEqual(tf.boolean_mask(logits, kept),
                            tf.boolean_mask(want, kept), msg=msg)
        self.assertAllEqual(loss, ref, msg=msg)
        for got, exp in zip(tape.gradient(loss, [self.q, self.c]),
                            tape.gradient(ref, [self.q, self.c])):
          self.assertAllClose(got, exp, rtol=1e-6, atol=1e-7, msg=msg)


if __name__ == "__main__":
  tf.test.main()
