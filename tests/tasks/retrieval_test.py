"""Retrieval.groups_loss: extra columns, masks, offsets, per-query negatives."""

import numpy as np
import tensorflow as tf

from tfrs_negsamp.samplers import base
from tfrs_negsamp.tasks import retrieval

# q = [[1, 0], [0, 1]];  c = [[2, 0], [0, 3]];  extra = [[1, 1]]
# scores = [[2, 0, 1], [0, 3, 1]]
Q = tf.constant([[1., 0.], [0., 1.]])
C = tf.constant([[2., 0.], [0., 3.]])
E = tf.constant([[1., 1.]])
IDS = tf.constant([10, 11], tf.int64)


def lse(*xs):
  return np.log(np.sum(np.exp(xs)))


class GroupsLossTest(tf.test.TestCase):

  def test_a_zero_weight_group_is_not_computed(self):
    # Its extra column is NaN: computed, it would make the loss NaN
    # (0 x NaN); skipped, the loss and gradients are the other group's.
    nan = base.CandidateGroup(extra_embeddings=tf.constant([[np.nan, 1.]]),
                              extra_ids=tf.constant([12], tf.int64))
    task = retrieval.Retrieval()
    alone = task.groups_loss(Q, C, [base.CandidateGroup()], candidate_ids=IDS)
    for zero in (0.0, tf.constant(0.0), tf.Variable(0.0)):
      with tf.GradientTape() as tape:
        tape.watch(Q)
        loss = task.groups_loss(
            Q, C, [base.CandidateGroup(), nan._replace(weight=zero)],
            candidate_ids=IDS)
      self.assertAllClose(loss, alone)
      self.assertTrue(np.all(np.isfinite(tape.gradient(loss, Q))))
    # The same inside a tf.function, where the weight is a traced tensor.
    weight = tf.Variable(0.0)
    fn = tf.function(lambda: task.groups_loss(
        Q, C, [base.CandidateGroup(), nan._replace(weight=weight)],
        candidate_ids=IDS))
    self.assertAllClose(fn(), alone)
    weight.assign(1.0)
    self.assertTrue(np.isnan(float(fn())))  # a non-zero weight computes it

  def test_extra_column_with_log_q(self):
    # in-batch columns log Q = 0, the sampled column log Q = log 0.5 -> +log 2
    group = base.CandidateGroup(extra_embeddings=E,
                                extra_ids=tf.constant([12], tf.int64),
                                column_log_q=tf.math.log([1., 1., 0.5]))
    loss = retrieval.Retrieval().groups_loss(Q, C, [group], candidate_ids=IDS)
    expected = (-2 + lse(2, 0, 1 + np.log(2))) + (-3 + lse(0, 3,
                                                          1 + np.log(2)))
    self.assertAllClose(loss, expected, atol=1e-5)

  def test_score_mask_equals_deleting_the_column(self):
    mask = tf.constant([[True, True, False], [True, True, True]])
    group = base.CandidateGroup(extra_embeddings=E,
                                extra_ids=tf.constant([12], tf.int64),
                                score_mask=mask)
    loss = retrieval.Retrieval().groups_loss(Q, C, [group], candidate_ids=IDS)
    expected = (-2 + lse(2, 0)) + (-3 + lse(0, 3, 1))
    self.assertAllClose(loss, expected, atol=1e-5)

  def test_offsets_are_multiset_counts(self):
    # Row 0 drew column 1 twice (offset log 2), row 1 drew column 0 once.
    offset = tf.constant([[0., np.log(2.)], [0., 0.]])
    group = base.CandidateGroup(logit_offset=offset)
    loss = retrieval.Retrieval().groups_loss(Q, C, [group], candidate_ids=IDS)
    expected = (-2 + np.log(np.exp(2) + 2 * np.exp(0))) + (-3 + lse(0, 3))
    self.assertAllClose(loss, expected, atol=1e-5)

  def test_per_query_negatives_and_accidental_hits(self):
    # Row 0's own negatives: [[1, 1], [0, 2]] with ids [12, 10]: id 10 is
    # row 0's positive -> masked. Row 1: [[1, 0], [0, 0]] ids [13, 14].
    per_query = base.PerQuery(
        embeddings=tf.constant([[[1., 1.], [0., 2.]], [[1., 0.], [0., 0.]]]),
        ids=tf.constant([[12, 10], [13, 14]], tf.int64),
        log_q=tf.math.log(tf.constant([[1., 1.], [1., 2.]])))
    group = base.CandidateGroup(per_query=per_query, drop_in_batch=True)
    loss = retrieval.Retrieval().groups_loss(Q, C, [group], candidate_ids=IDS)
    # row 0: [pos 2 | 1]; row 1: [pos 3 | 0, 0 - log 2]
    expected = (-2 + lse(2, 1)) + (-3 + lse(3, 0, -np.log(2)))
    self.assertAllClose(loss, expected, atol=1e-5)

  def test_groups_are_weighted(self):
    g1 = base.CandidateGroup(weight=0.25)
    g2 = base.CandidateGroup(weight=0.75, extra_embeddings=E,
                             extra_ids=tf.constant([12], tf.int64))
    task = retrieval.Retrieval()
    l1 = float(task.groups_loss(Q, C, [base.CandidateGroup()], candidate_ids=IDS))
    l2 = float(task.groups_loss(Q, C, [g2._replace(weight=1.0)], candidate_ids=IDS))
    self.assertAllClose(task.groups_loss(Q, C, [g1, g2], candidate_ids=IDS),
                        0.25 * l1 + 0.75 * l2, atol=1e-5)

  def test_hard_negative_mining(self):
    # Keep 1 hardest negative: row 0 keeps the extra column (1 > 0).
    group = base.CandidateGroup(extra_embeddings=E,
                                extra_ids=tf.constant([12], tf.int64),
                                num_hard_negatives=1)
    loss = retrieval.Retrieval().groups_loss(Q, C, [group], candidate_ids=IDS)
    expected = (-2 + lse(2, 1)) + (-3 + lse(3, 1))
    self.assertAllClose(loss, expected, atol=1e-5)

  def test_no_group_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "no candidate group"):
      retrieval.Retrieval().groups_loss(Q, C, [], candidate_ids=IDS)


if __name__ == "__main__":
  tf.test.main()


class PerQueryTableTest(tf.test.TestCase):
  """A table of distinct items and an index give the dense form's logits."""

  def _check(self, num_items, k, d):
    rng = np.random.RandomState(num_items)
    q = tf.constant(rng.randn(5, d).astype(np.float32))
    table = tf.constant(rng.randn(num_items, d).astype(np.float32))
    index = tf.constant(rng.randint(0, num_items, size=(5, k)), tf.int32)
    with tf.GradientTape(persistent=True) as tape:
      tape.watch([q, table])
      dense = tf.einsum("bd,bkd->bk", q, tf.gather(table, index))
      pq = base.PerQuery(embeddings=None, ids=tf.cast(index, tf.int64),
                         table=table, index=index)
      got = retrieval.per_query_scores(q, pq)
      weights = tf.constant(rng.randn(5, k).astype(np.float32))
      loss_dense = tf.reduce_sum(dense * weights)
      loss_got = tf.reduce_sum(got * weights)
    self.assertAllClose(got, dense, atol=1e-5)
    self.assertAllClose(pq.dense_embeddings(), tf.gather(table, index))
    for x in (q, table):
      self.assertAllClose(tf.convert_to_tensor(tape.gradient(loss_got, x)),
                          tf.convert_to_tensor(tape.gradient(loss_dense, x)),
                          atol=1e-4)

  def test_scores_against_the_table_when_it_is_small(self):
    self._check(num_items=6, k=4, d=3)  # U = 6 <= K d = 12: [B, U] scores

  def test_gathered_rows_when_the_table_is_large(self):
    self._check(num_items=40, k=2, d=3)  # U = 40 > K d = 6: [B, K, d]

  def test_loss_is_the_same_in_both_forms(self):
    # The task's loss with a table equals the loss with dense embeddings.
    rng = np.random.RandomState(3)
    table = tf.constant(rng.randn(4, 2).astype(np.float32))
    index = tf.constant([[0, 1, 1], [2, 3, 0]], tf.int32)
    ids = tf.constant([[20, 21, 21], [22, 23, 20]], tf.int64)
    dense = base.CandidateGroup(per_query=base.PerQuery(
        embeddings=tf.gather(table, index), ids=ids), drop_in_batch=True)
    tabled = base.CandidateGroup(per_query=base.PerQuery(
        embeddings=None, ids=ids, table=table, index=index),
                                 drop_in_batch=True)
    task = retrieval.Retrieval()
    self.assertAllClose(
        task.groups_loss(Q, C, [tabled], candidate_ids=IDS),
        task.groups_loss(Q, C, [dense], candidate_ids=IDS), atol=1e-6)
