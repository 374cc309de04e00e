"""Item-probability sources: the streaming estimator and fixed counts."""

import numpy as np
import tensorflow as tf

from tfrs_negsamp import frequency


def _run_stream(estimator, batches):
  @tf.function
  def step(ids):
    estimator.update(ids)
  for ids in batches:
    step(tf.constant(ids, tf.int64))


class StreamingFrequencyEstimatorTest(tf.test.TestCase):

  def test_converges_to_true_inclusion_rates(self):
    # 40 items with Zipf(1) per-example frequencies f, batches of G = 32
    # i.i.d. draws; the per-step inclusion probability is pi = 1 - (1-f)^G.
    rng = np.random.default_rng(0)
    n_items, g, steps = 40, 32, 3000
    f = 1.0 / np.arange(1, n_items + 1)
    f /= f.sum()
    pi = 1 - (1 - f) ** g
    batches = rng.choice(n_items, size=(steps, g), p=f)
    est = frequency.StreamingFrequencyEstimator(num_buckets=4096,
                                                num_hashes=2, alpha=0.01)
    _run_stream(est, batches)
    p_hat = est.probability(tf.range(n_items, dtype=tf.int64)).numpy()
    err = np.abs(np.log(p_hat / pi))
    # Tolerance: the stationary relative std of the EMA is sqrt(alpha/2) ~ 7%
    # (docs/design/in_batch_logq.md#estimator-statistics); every item here
    # has >= 100 sightings, so a 3-sigma band of 25% per item and a 10%
    # median bound are safe yet meaningful.
    self.assertLess(np.median(err), 0.10)
    self.assertLess(np.max(err), 0.25)
    # The expected-count transform recovers G f for rare items.
    est_ec = frequency.StreamingFrequencyEstimator(
        num_buckets=4096, num_hashes=2, alpha=0.01, expected_count=True)
    _run_stream(est_ec, batches)
    log_q = est_ec.log_q(tf.range(n_items, dtype=tf.int64)).numpy()
    rare = slice(20, 40)
    self.assertLess(np.median(np.abs(log_q[rare] - np.log(g * f[rare]))),
                    0.15)

  def test_update_rules_on_a_scripted_stream(self):
    # Identity hashing; item 1 seen at steps 1, 3, 4 -> gaps 1 (from 0), 2, 1.
    batches = [[1, 1], [2, 2], [1, 2], [1, 3]]
    expected = {
        # debiased, alpha = 0.25: exact mean of the gaps while n <= 1/alpha.
        "debiased": (0.25, np.mean([1, 2, 1])),
        # paper, alpha = 0.5: 0 -> 0.5 -> 1.25 -> 1.125
        "paper": (0.5, 1.125),
        # first_gap, alpha = 0.5: 1 -> 1.5 -> 1.25
        "first_gap": (0.5, 1.25),
    }
    for rule, (alpha, value) in expected.items():
      est = frequency.StreamingFrequencyEstimator(
          num_buckets=8, num_hashes=1, alpha=alpha, update_rule=rule,
          hashing="identity")
      _run_stream(est, batches)
      self.assertAllClose(est.avg_gap.numpy()[1], value, msg=rule)
      self.assertEqual(int(est.last_step.numpy()[1]), 4)
      self.assertEqual(int(est.step.numpy()), 4)
      # Duplicates inside a step count once: item 2's gaps are 2 and 1.
      self.assertEqual(int(est.last_step.numpy()[2]), 3)
      # Never-seen ids get probability 1.
      self.assertAllClose(est.probability(tf.constant([7], tf.int64)), [1.0])

  def test_lookup_without_update_in_eval(self):
    est = frequency.StreamingFrequencyEstimator(num_buckets=8, num_hashes=1,
                                                hashing="identity")
    _run_stream(est, [[1], [2], [1]])
    before = est.avg_gap.numpy().copy()
    est.log_q(tf.constant([1, 2], tf.int64))
    self.assertAllEqual(before, est.avg_gap.numpy())

  def test_string_ids_are_hashed(self):
    est = frequency.StreamingFrequencyEstimator(num_buckets=1024)
    # "a" at steps 1 and 3 (gaps 1, 2), "b" at step 2 (gap 2).
    for ids in (["a"], ["b"], ["a"]):
      est.update(tf.constant(ids))
    p = est.probability(tf.constant(["a", "b", "zzz"])).numpy()
    self.assertAllClose(p, [1 / 1.5, 0.5, 1.0])

  def test_invalid_arguments(self):
    with self.assertRaisesRegex(ValueError, "update_rule"):
      frequency.StreamingFrequencyEstimator(update_rule="ema")
    with self.assertRaisesRegex(ValueError, "alpha"):
      frequency.StreamingFrequencyEstimator(alpha=0.0)
    with self.assertRaisesRegex(ValueError, "num_hashes=1"):
      frequency.StreamingFrequencyEstimator(hashing="identity", num_hashes=2)

  def test_update_and_log_q_equals_update_then_log_q(self):
    # Issue 17: one hashing for both; same values and state.
    for kwargs in ({"num_hashes": 2}, {"hashing": "identity", "num_hashes": 1},
                   {"expected_count": True, "update_rule": "paper"}):
      fused = frequency.StreamingFrequencyEstimator(num_buckets=64, **kwargs)
      plain = frequency.StreamingFrequencyEstimator(num_buckets=64, **kwargs)
      step = tf.function(fused.update_and_log_q)

      @tf.function
      def two_calls(ids, est=plain):
        est.update(ids)
        return est.log_q(ids, tf.size(ids))

      for ids in ([1, 2, 3, 1], [4, 1], [5, 9, 2, 2, 7]):
        ids = tf.constant(ids, tf.int64)
        self.assertAllEqual(step(ids, tf.size(ids)), two_calls(ids),
                            msg=str(kwargs))
      for a, b in zip(fused.weights, plain.weights):
        self.assertAllEqual(a, b, msg=str(kwargs))
    static = frequency.StaticItemProbability([1.0, 2.0, 3.0])
    self.assertAllClose(static.update_and_log_q(tf.constant([0, 2]), 4),
                        static.log_q(tf.constant([0, 2]), 4))

  def test_checkpoint_round_trip(self):
    est = frequency.StreamingFrequencyEstimator(num_buckets=64, num_hashes=2)
    _run_stream(est, [[1, 2, 3], [1, 4], [5, 1]])
    path = tf.train.Checkpoint(est=est).save(self.get_temp_dir() + "/ckpt")
    other = frequency.StreamingFrequencyEstimator(num_buckets=64,
                                                  num_hashes=2)
    other.build()
    tf.train.Checkpoint(est=other).restore(path).assert_consumed()
    for a, b in zip(est.weights, other.weights):
      self.assertAllEqual(a.numpy(), b.numpy())
    ids = tf.constant([1, 2, 9], tf.int64)
    self.assertAllEqual(est.log_q(ids), other.log_q(ids))


class StaticItemProbabilityTest(tf.test.TestCase):

  def test_expected_count_and_inclusion(self):
    src = frequency.StaticItemProbability([6., 3., 1., 0.], min_prob=1e-12)
    ids = tf.constant([0, 1, 2], tf.int64)
    f = np.array([0.6, 0.3, 0.1])
    self.assertAllClose(src.log_q(ids, 5), np.log(5 * f), atol=1e-6)
    inc = frequency.StaticItemProbability([6., 3., 1., 0.], inclusion=True)
    self.assertAllClose(inc.log_q(ids, 5), np.log(1 - (1 - f) ** 5),
                        atol=1e-6)
    # A zero count is clipped, not -inf.
    self.assertTrue(np.isfinite(src.log_q(tf.constant([3], tf.int64), 5)))

  def test_bad_counts(self):
    with self.assertRaisesRegex(ValueError, "non-negative"):
      frequency.StaticItemProbability([1., -1.])
    with self.assertRaisesRegex(ValueError, "all zero"):
      frequency.StaticItemProbability([0., 0.])


if __name__ == "__main__":
  tf.test.main()
