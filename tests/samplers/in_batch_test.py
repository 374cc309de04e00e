"""In-batch softmax, logQ correction and accidental hits (hand-computed)."""

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tests import helpers
from tfrs_negsamp import frequency
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import in_batch
from tfrs_negsamp.tasks import retrieval

# q = [[1, 0], [0, 1], [1, 1]], c = [[1, 0], [0, 2], [1, -1]]
# scores = q c^T = [[1, 0, 1], [0, 2, -1], [1, 2, 0]]
Q = np.array([[1., 0.], [0., 1.], [1., 1.]], np.float32)
C = np.array([[1., 0.], [0., 2.], [1., -1.]], np.float32)
S = Q @ C.T


def _lse(row):
  return np.log(np.sum(np.exp(row)))


def _loss(sampler, ids, temperature=None, training=False):
  task = retrieval.Retrieval(temperature=temperature)
  groups = sampler(tf.constant(Q), tf.constant(C), tf.constant(ids, tf.int64),
                   training=training)
  return float(task.groups_loss(tf.constant(Q), tf.constant(C), groups,
                    candidate_ids=tf.constant(ids, tf.int64)))


class InBatchTest(tf.test.TestCase):

  def test_plain_loss_matches_hand_computation(self):
    # rows: -1 + lse(1,0,1); -2 + lse(0,2,-1); -0 + lse(1,2,0)
    expected = sum(-S[i, i] + _lse(S[i]) for i in range(3))
    self.assertAllClose(
        _loss(in_batch.InBatchSampler(), [0, 1, 2]), expected, atol=1e-5)

  def test_temperature_divides_scores(self):
    expected = sum(-S[i, i] / 0.5 + _lse(S[i] / 0.5) for i in range(3))
    self.assertAllClose(_loss(in_batch.InBatchSampler(), [0, 1, 2],
                              temperature=0.5), expected, atol=1e-5)

  def test_logq_loss_matches_hand_computation(self):
    # Item frequencies f = [0.5, 0.25, 0.25] over ids 0..2; with 3 in-batch
    # columns log Q_j = log(3 f_j); z = s - log Q on every column.
    counts = [2., 1., 1.]
    sampler = in_batch.InBatchSampler(
        frequency=frequency.StaticItemProbability(counts))
    log_q = np.log(3 * np.array([0.5, 0.25, 0.25]))
    z = S - log_q[None, :]
    expected = sum(-z[i, i] + _lse(z[i]) for i in range(3))
    self.assertAllClose(_loss(sampler, [0, 1, 2]), expected, atol=1e-5)
    # The correction helps rare items: the rare columns gain logit mass.
    self.assertNotAllClose(_loss(sampler, [0, 1, 2]),
                           _loss(in_batch.InBatchSampler(), [0, 1, 2]))

  def test_logq_equals_stock_tfrs_retrieval(self):
    counts = [5., 1., 3., 1.]
    ids = np.array([0, 2, 0], np.int64)
    sampler = in_batch.InBatchSampler(
        frequency=frequency.StaticItemProbability(counts))
    probs = np.array(counts)[ids] / sum(counts)
    stock = tfrs.tasks.Retrieval(remove_accidental_hits=True,
                                 temperature=0.7)
    expected = stock(tf.constant(Q), tf.constant(C),
                     candidate_sampling_probability=tf.constant(probs,
                                                                tf.float32),
                     candidate_ids=tf.constant(ids), compute_metrics=False)
    self.assertAllClose(_loss(sampler, ids, temperature=0.7),
                        float(expected), atol=1e-4)

  def test_accidental_hits_are_masked(self):
    # ids [7, 8, 7]: row 0 column 2 and row 2 column 0 are accidental hits;
    # the loss equals the loss with those columns deleted from those rows.
    ids = [7, 8, 7]
    expected = (-S[0, 0] + _lse(S[0, [0, 1]]) - S[1, 1] + _lse(S[1])
                - S[2, 2] + _lse(S[2, [1, 2]]))
    self.assertAllClose(_loss(in_batch.InBatchSampler(), ids), expected,
                        atol=1e-5)
    unmasked = in_batch.InBatchSampler(remove_accidental_hits=False)
    self.assertAllClose(_loss(unmasked, ids),
                        sum(-S[i, i] + _lse(S[i]) for i in range(3)),
                        atol=1e-5)

  def test_gradient_flows_to_candidates_not_to_logq(self):
    sampler = in_batch.InBatchSampler(
        frequency=frequency.StreamingFrequencyEstimator(num_buckets=64))
    task = retrieval.Retrieval()
    c = tf.Variable(C)
    ids = tf.constant([0, 1, 2], tf.int64)
    with tf.GradientTape() as tape:
      groups = sampler(tf.constant(Q), c, ids, training=True)
      loss = task.groups_loss(tf.constant(Q), c, groups, candidate_ids=ids)
    grad = tape.gradient(loss, c)
    self.assertIsNotNone(grad)
    self.assertGreater(float(tf.reduce_sum(tf.abs(grad))), 0.0)
    # log Q carries no gradient path (stop_gradient).
    with tf.GradientTape() as tape:
      tape.watch(c)
      log_q = sampler.in_batch_log_q(ids, training=False)
    self.assertIsNone(tape.gradient(log_q, c))

  def test_config_round_trip(self):
    sampler = in_batch.InBatchSampler(
        frequency=frequency.StreamingFrequencyEstimator(
            num_buckets=128, num_hashes=3, alpha=0.05, seed=4),
        remove_accidental_hits=False)
    clone = in_batch.InBatchSampler.from_config(sampler.get_config())
    self.assertEqual(clone.get_config(), sampler.get_config())
    self.assertEqual(clone.frequency.num_hashes, 3)
    helpers.check_config_round_trip(self, sampler)

  def test_registry_names_and_unknown_name(self):
    names = base.available_samplers()
    for name in ("in_batch", "in_batch_logq", "in_batch_logq_static"):
      self.assertIn(name, names)
    ctx = base.SamplerContext(item_counts=np.array([0, 3, 1]))
    with self.assertRaisesRegex(ValueError, "unknown sampler 'nope'.*in_batch"):
      base.create_sampler("nope", ctx)

  def test_the_registry_estimator_gives_each_catalog_item_its_bucket(self):
    counts = np.array([0, 3, 1, 2, 5], np.float64)  # N = 4 items + OOV
    ctx = base.SamplerContext(item_counts=counts)
    est = base.create_sampler("in_batch_logq", ctx).frequency
    self.assertEqual((est.hashing, est.num_buckets, est.num_hashes),
                     ("identity", 5, 1))
    sized = base.create_sampler("in_batch_logq", base.SamplerContext(
        item_counts=counts, options={"num_buckets": 64})).frequency
    self.assertEqual((sized.hashing, sized.num_hashes), ("strong", 2))
    # Without collisions, identity and strong hashing give the same
    # estimates; padding ids (-1) read the OOV bucket and do not fail.
    strong = frequency.StreamingFrequencyEstimator(num_buckets=4096,
                                                   num_hashes=2)
    for batch in ([1, 4, 4, 2], [4, 3, 1, 1], [2, 4, 4, 4]):
      ids = tf.constant(batch, tf.int64)
      self.assertAllClose(est.update_and_log_q(ids),
                          strong.update_and_log_q(ids))
    valid = tf.constant([True, False])
    est.update(tf.constant([3, -1], tf.int64), valid=valid)
    self.assertAllEqual(tf.shape(est.log_q(tf.constant([-1, 3], tf.int64))),
                        [2])
    self.assertEqual(float(est.n_updates[0]), 0.0)

  def test_wrong_rank_is_rejected(self):
    with self.assertRaisesRegex(ValueError, "candidate_embeddings must have"):
      in_batch.InBatchSampler()(tf.constant(Q), tf.constant([1., 2.]),
                                tf.constant([0, 1], tf.int64))


if __name__ == "__main__":
  tf.test.main()
