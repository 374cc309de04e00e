"""`samplers.Compose`: one softmax, one log Q, checked by hand."""

import numpy as np
import tensorflow as tf

from tfrs_negsamp import frequency
from tfrs_negsamp import samplers
from tfrs_negsamp.tasks import retrieval

# Item table (index 0 unused): e1 = [1, 0], e2 = [0, 1], e3 = [1, 1].
TABLE = tf.constant([[0., 0.], [1., 0.], [0., 1.], [1., 1.]])
Q = tf.constant([[1., 0.], [0., 1.]])
# Training counts [0, 2, 1, 1]: f = [0, 1/2, 1/4, 1/4]; with G = 2 in-batch
# columns the expected in-batch count of item j is E_b(j) = 2 f_j.
F = np.array([0., 0.5, 0.25, 0.25])


def item_model(ids):
  return tf.gather(TABLE, ids)


def hand_loss(ids, positives, log_q, keep):
  """sum_i -z_i,pos + logsumexp over the kept columns, z = s - log Q."""
  emb = TABLE.numpy()[ids]
  z = Q.numpy() @ emb.T - log_q
  total = 0.0
  for i, p in enumerate(positives):
    total += -z[i, p] + np.log(np.sum(np.exp(z[i][keep[i]])))
  return total


class ComposeTest(tf.test.TestCase):

  def test_in_batch_queue_and_uniform_columns_in_one_softmax(self):
    sampler = samplers.Compose(
        [samplers.InBatchSampler(),
         samplers.CrossBatchSampler(memory_size=2),
         samplers.MixedSampler(item_counts=[0, 1, 1, 1], num_uniform=1,
                               item_model=item_model)],
        frequency=frequency.StaticItemProbability([0, 2, 1, 1]))
    # Step 1 fills the queue with items 3 and 1.
    sampler(Q, item_model(tf.constant([3, 1])), tf.constant([3, 1]),
            training=True)
    ids = tf.constant([1, 2])
    groups = sampler(Q, item_model(ids), ids, training=True)
    self.assertLen(groups, 1)
    group = groups[0]
    extra = group.extra_ids.numpy()
    self.assertAllEqual(extra[:2], [3, 1])  # the queue, then 1 uniform draw
    columns = np.concatenate([[1, 2], extra])
    # Q_j = E_b(j) + (2 valid slots / G) E_b(j) + B'/N = 4 f_j + 1/3.
    log_q = np.log(4 * F[columns] + 1.0 / 3.0)
    self.assertAllClose(group.column_log_q, log_q)
    # Accidental hits: a column other than the row's own showing its item.
    keep = np.array([[j == i or columns[j] != columns[i] for j in range(5)]
                     for i in range(2)])
    loss = retrieval.Retrieval().groups_loss(Q, item_model(ids), groups,
                                        candidate_ids=tf.cast(ids, tf.int64))
    self.assertAllClose(loss, hand_loss(columns, [0, 1], log_q, keep),
                        atol=1e-5)

  def test_per_row_catalog_columns_share_the_same_log_q(self):
    sampler = samplers.Compose(
        [samplers.InBatchSampler(),
         samplers.UniformSampler(item_counts=[0, 1, 1, 1], num_negatives=2,
                                 item_model=item_model)],
        frequency=frequency.StaticItemProbability([0, 2, 1, 1]))
    ids = tf.constant([1, 2])
    group, = sampler(Q, item_model(ids), ids, training=True)
    drawn = group.per_query.ids.numpy()  # [2, 2], never the row's positive
    # Q_j = E_b(j) + K q(j) = 2 f_j + 2/3 for shared and per-row columns.
    self.assertAllClose(group.column_log_q, np.log(2 * F[[1, 2]] + 2 / 3))
    self.assertAllClose(group.per_query.log_q, np.log(2 * F[drawn] + 2 / 3))
    loss = retrieval.Retrieval().groups_loss(Q, item_model(ids), [group],
                                        candidate_ids=tf.cast(ids, tf.int64))
    expected = 0.0
    for i in range(2):
      cols = np.concatenate([[1, 2], drawn[i]])
      z = (TABLE.numpy()[cols] @ Q.numpy()[i]) - np.log(2 * F[cols] + 2 / 3)
      keep = [j == i or cols[j] != cols[i] for j in range(4)]
      expected += -z[i] + np.log(np.sum(np.exp(z[keep])))
    self.assertAllClose(loss, expected, atol=1e-5)

  def test_without_frequency_no_column_is_corrected(self):
    sampler = samplers.Compose([samplers.InBatchSampler(),
                                samplers.CrossBatchSampler(memory_size=2)])
    ids = tf.constant([1, 2])
    group, = sampler(Q, item_model(ids), ids, training=True)
    self.assertIsNone(group.column_log_q)

  def test_xir_keeps_its_softmaxes_beside_the_queue(self):
    xir = samplers.XIRSampler(num_items=3, item_model=item_model,
                              cache_size=2, cache_weight=0.3)
    sampler = samplers.Compose([xir, samplers.CrossBatchSampler(2)])
    ids = tf.constant([1, 2])
    groups = sampler(Q, item_model(ids), ids, training=True)
    self.assertEqual([g.weight for g in groups], [1.0, 0.3, 0.7])
    self.assertAllEqual(tf.shape(groups[0].extra_embeddings), [2, 2])
    task = retrieval.Retrieval(sampler=samplers.Compose(
        [samplers.XIRSampler(num_items=3, item_model=item_model,
                             cache_size=2),
         samplers.CrossBatchSampler(2)]))
    self.assertTrue(np.isfinite(task(Q, item_model(ids),
                                     candidate_ids=ids).numpy()))

  def test_bad_members(self):
    with self.assertRaisesRegex(ValueError, "at least one"):
      samplers.Compose([])
    with self.assertRaisesRegex(ValueError, "NegativeSamplers"):
      samplers.Compose(["in_batch"])

  def test_config_round_trip(self):
    sampler = samplers.Compose([samplers.InBatchSampler(),
                                samplers.CrossBatchSampler(memory_size=3)])
    again = tf.keras.layers.deserialize(tf.keras.layers.serialize(sampler))
    self.assertIsInstance(again, samplers.Compose)
    self.assertEqual([type(s) for s in again.samplers],
                     [samplers.InBatchSampler, samplers.CrossBatchSampler])
    self.assertEqual(again.samplers[1].memory_size, 3)


if __name__ == "__main__":
  tf.test.main()
