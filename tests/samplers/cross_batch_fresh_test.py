"""CBNS `fresh_queue` diagnostic: queue columns are the current embeddings."""

import numpy as np
import tensorflow as tf

from tfrs_negsamp.samplers import cross_batch


class FreshQueueTest(tf.test.TestCase):

  def test_queue_columns_are_re_embedded_with_the_current_table(self):
    table = tf.keras.layers.Embedding(10, 2)
    table.build(None)
    sampler = cross_batch.CrossBatchSampler(
        memory_size=4, fresh_queue=True, item_model=table)
    ids = tf.constant([1, 2], tf.int64)
    query = tf.ones([2, 2])
    sampler(query, table(ids), ids, training=True)       # enqueue 1, 2
    stale = sampler.queue_emb.numpy()
    table.embeddings.assign(table.embeddings * 3.0 + 1.0)  # the model moves
    group, = sampler(query, table(ids), ids, training=False)
    queue_ids = sampler.queue_ids.numpy()
    valid = queue_ids >= 0
    self.assertEqual(int(valid.sum()), 2)
    want = table(tf.constant(np.maximum(queue_ids, 0))).numpy()
    self.assertAllClose(group.extra_embeddings.numpy()[valid], want[valid])
    # The stored (stale) embeddings differ: the diagnostic reads past them.
    self.assertNotAllClose(stale[valid], want[valid])

  def test_default_reads_the_stored_embeddings(self):
    table = tf.keras.layers.Embedding(10, 2)
    table.build(None)
    sampler = cross_batch.CrossBatchSampler(memory_size=4)
    ids = tf.constant([1, 2], tf.int64)
    sampler(tf.ones([2, 2]), table(ids), ids, training=True)
    table.embeddings.assign(table.embeddings * 3.0 + 1.0)
    group, = sampler(tf.ones([2, 2]), table(ids), ids, training=False)
    self.assertAllClose(group.extra_embeddings, sampler.queue_emb)
    self.assertFalse(sampler.get_config()["fresh_queue"])

  def test_gradient_reaches_the_table_only_when_asked(self):
    for keep_gradient in (False, True):
      table = tf.keras.layers.Embedding(10, 2)
      table.build(None)
      sampler = cross_batch.CrossBatchSampler(
          memory_size=4, fresh_queue=True,
          fresh_queue_gradient=keep_gradient, item_model=table)
      ids = tf.constant([1, 2], tf.int64)
      sampler(tf.ones([2, 2]), table(ids), ids, training=True)
      with tf.GradientTape() as tape:
        group, = sampler(tf.ones([2, 2]), table(ids), ids, training=False)
        loss = tf.reduce_sum(group.extra_embeddings)
      grad = tape.gradient(loss, table.embeddings)
      if keep_gradient:
        self.assertGreater(float(tf.reduce_sum(tf.abs(
            tf.convert_to_tensor(grad)))), 0.0)
      else:
        self.assertIsNone(grad)
