"""BIR: draw law, hand-computed loss, gradients, config, errors."""

import numpy as np
import tensorflow as tf

from tests import helpers
from tests.samplers import goodness_of_fit as gof
from tests.samplers import importance_resampling_test as ir_test
from tfrs_negsamp import frequency
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import bir
from tfrs_negsamp.tasks import retrieval


def counts_of(group, batch):
  """`n [B, C]` back from a count-trick group (diagonal = positive)."""
  n = np.where(group.score_mask.numpy(), np.exp(group.logit_offset.numpy()),
               0.0)
  n[np.arange(batch), np.arange(batch)] -= 1.0  # the kept positive
  return np.rint(n).astype(np.int64)


def multiset_loss(s, counts):
  """sum_i -s_ii + logsumexp([s_ii, s_{i,j_1}, ..., s_{i,j_K}]) (numpy)."""
  total = 0.0
  for i in range(counts.shape[0]):
    drawn = np.repeat(np.arange(counts.shape[1]), counts[i])
    terms = np.concatenate([[s[i, i]], s[i, drawn]])
    total += -s[i, i] + np.log(np.sum(np.exp(terms)))
  return total


class BIRTest(tf.test.TestCase):

  def test_draws_follow_softmax_of_score_minus_log_q_per_query(self):
    # 3 queries, 6 in-batch columns; ids 4 appears twice (columns 0 and 3),
    # so row 0 never draws column 3 (accidental hit) nor column 0 (itself).
    # 100 training steps x 200 draws = 20000 draws per row, each step with
    # a fresh stateless seed; tolerance as in importance_resampling_test.
    rng = np.random.RandomState(1)
    q = (0.4 * rng.randn(3, 4)).astype(np.float32)
    c = (0.4 * rng.randn(6, 4)).astype(np.float32)
    ids = np.array([4, 1, 2, 4, 3, 5], np.int64)
    counts = np.array([0., 50., 1., 10., 2., 30.])  # popularity per id
    tau = 0.5
    sampler = bir.BIRSampler(
        num_resampled=200, temperature=tau, seed=3,
        frequency=frequency.StaticItemProbability(counts))

    @tf.function
    def step():
      group, = sampler(tf.constant(q), tf.constant(c), tf.constant(ids),
                       training=True)
      return group.logit_offset, group.score_mask

    total = np.zeros((3, 6))
    for _ in range(100):
      offset, mask = step()
      total += np.where(mask.numpy(), np.exp(offset.numpy()), 0.0)
    total[np.arange(3), np.arange(3)] -= 100  # the kept positives
    total = np.rint(total).astype(np.int64)
    self.assertEqual(int(sampler.step.numpy()), 100)

    s = q @ c.T / tau
    log_q = np.log(counts[ids] / counts.sum())
    valid = np.ones((3, 6), bool)
    valid[np.arange(3), np.arange(3)] = False
    valid &= ids[:3, None] != ids[None, :]
    target = ir_test.softmax_masked(s - log_q, valid)
    ir_test.check_law(self, total, target, tv_tol=0.025)
    # The test has power: without the -log q the law is far away.
    uncorrected = ir_test.softmax_masked(s, valid)
    tv = 0.5 * np.abs(total / total.sum(1, keepdims=True)
                      - uncorrected).sum(1)
    self.assertGreater(tv.min(), 0.1)

  def test_count_vectors_are_multinomial_per_query(self):
    # Goodness of fit of whole outcomes: 4 queries, 4 in-batch columns,
    # K = 3 draws per row; each row has 3 valid columns (not its own), so
    # its count vectors take 10 values with Multinomial(3, softmax(s / tau
    # - log q)) probabilities. 3000 training steps, each a fresh seed. The
    # same counts reject the law with 0.03 of mass moved.
    rng = np.random.RandomState(7)
    q = tf.constant((0.5 * rng.randn(4, 3)).astype(np.float32))
    c = tf.constant((0.5 * rng.randn(4, 3)).astype(np.float32))
    ids = np.array([1, 2, 3, 4], np.int64)
    counts = np.array([0., 5., 1., 20., 3.])
    tau = 0.5
    sampler = bir.BIRSampler(
        num_resampled=3, temperature=tau, seed=8,
        frequency=frequency.StaticItemProbability(counts))
    step = tf.function(lambda: sampler(q, c, tf.constant(ids),
                                       training=True)[0])
    draws = np.stack([counts_of(step(), 4) for _ in range(3000)])
    s = q.numpy() @ c.numpy().T / tau - np.log(counts[ids] / counts.sum())
    valid = ~np.eye(4, dtype=bool)
    target = ir_test.softmax_masked(s, valid)
    for row in range(4):
      keep = valid[row]
      gof.check_fit(self, draws[:, row][:, keep], target[row][keep], 3,
                    wrong_probs=gof.perturbed(target[row][keep]),
                    msg="row %d" % row)

  def test_loss_on_a_fixed_example_matches_hand_computation(self):
    # q = [[1, 0], [0, 1]], c = [[2, 0], [0, 3]] -> s = [[2, 0], [0, 3]].
    # Each row has one valid negative (the other row), drawn K = 3 times:
    # l_0 = -2 + log(e^2 + 3 e^0), l_1 = -3 + log(e^3 + 3 e^0).
    q = tf.constant([[1., 0.], [0., 1.]])
    c = tf.constant([[2., 0.], [0., 3.]])
    ids = tf.constant([7, 8], tf.int64)
    sampler = bir.BIRSampler(num_resampled=3)
    groups = sampler(q, c, ids, training=True)
    self.assertLen(groups, 1)
    self.assertIsNone(groups[0].column_log_q)
    loss = retrieval.Retrieval().groups_loss(q, c, groups, candidate_ids=ids)
    expected = (-2 + np.log(np.exp(2) + 3)) + (-3 + np.log(np.exp(3) + 3))
    self.assertAllClose(loss, expected, atol=1e-5)

  def test_loss_equals_the_explicit_multiset_form(self):
    rng = np.random.RandomState(2)
    q = rng.randn(5, 3).astype(np.float32)
    c = rng.randn(5, 3).astype(np.float32)
    ids = tf.constant([1, 2, 1, 3, 4], tf.int64)
    sampler = bir.BIRSampler(
        num_resampled=7, temperature=0.7,
        frequency=frequency.StaticItemProbability([0., 5., 1., 2., 9.]))
    groups = sampler(tf.constant(q), tf.constant(c), ids, training=True)
    loss = retrieval.Retrieval(temperature=0.7).groups_loss(
        tf.constant(q), tf.constant(c), groups, candidate_ids=ids)
    n = counts_of(groups[0], 5)
    self.assertAllEqual(n.sum(axis=1), [7] * 5)
    self.assertAllEqual(n[0, 2], 0)  # accidental hit never drawn
    self.assertAllEqual(np.diag(n), [0] * 5)
    self.assertAllClose(loss, multiset_loss(q @ c.T / 0.7, n), atol=1e-4)

  def test_gradients_flow_through_positive_and_drawn_scores_only(self):
    # The tape gradient equals the analytic gradient of the multiset loss
    # with the counts held fixed: d/dS_ij = softmax_ij - [i == j] on kept
    # columns, 0 elsewhere. Nothing flows through the resampling.
    rng = np.random.RandomState(3)
    q0 = rng.randn(4, 3).astype(np.float32)
    c0 = rng.randn(4, 3).astype(np.float32)
    ids = tf.constant([1, 2, 3, 4], tf.int64)
    sampler = bir.BIRSampler(num_resampled=3, temperature=0.5)
    task = retrieval.Retrieval(temperature=0.5)
    q, c = tf.Variable(q0), tf.Variable(c0)
    with tf.GradientTape(persistent=True) as tape:
      groups = sampler(q, c, ids, training=True)
      loss = task.groups_loss(q, c, groups, candidate_ids=ids)
    self.assertIsNone(tape.gradient(groups[0].logit_offset, [q, c])[0])
    n = counts_of(groups[0], 4)
    z = np.where(n > 0, q0 @ c0.T / 0.5 + np.log(np.maximum(n, 1)), -np.inf)
    z[np.arange(4), np.arange(4)] = np.diag(q0 @ c0.T / 0.5)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d_s = (p - np.eye(4)) / 0.5
    grad_q, grad_c = tape.gradient(loss, [q, c])
    self.assertAllClose(grad_q, d_s @ c0, atol=1e-5)
    self.assertAllClose(grad_c, d_s.T @ q0, atol=1e-5)
    # An undrawn negative column gets gradient only as its row's positive.
    undrawn = [(i, j) for i in range(4) for j in range(4)
               if i != j and n[i, j] == 0]
    self.assertNotEmpty(undrawn)
    for i, j in undrawn:
      self.assertEqual(d_s[i, j], 0.0)

  def test_step_advances_only_in_training_and_draws_are_reproducible(self):
    rng = np.random.RandomState(4)
    q = tf.constant(rng.randn(4, 3).astype(np.float32))
    c = tf.constant(rng.randn(6, 3).astype(np.float32))
    ids = tf.range(6, dtype=tf.int64)
    a, b = bir.BIRSampler(seed=5), bir.BIRSampler(seed=5)
    eval1 = a(q, c, ids, training=False)[0].logit_offset
    eval2 = a(q, c, ids, training=False)[0].logit_offset
    self.assertAllEqual(eval1, eval2)
    self.assertEqual(int(a.step.numpy()), 0)
    train_a = [a(q, c, ids, training=True)[0].logit_offset for _ in range(2)]
    train_b = [b(q, c, ids, training=True)[0].logit_offset for _ in range(2)]
    self.assertEqual(int(a.step.numpy()), 2)
    self.assertAllEqual(train_a[0], train_b[0])
    self.assertAllEqual(train_a[1], train_b[1])
    self.assertNotAllEqual(train_a[0], train_a[1])
    # num_resampled=None draws G = 6 per row.
    self.assertAllEqual(
        counts_of(bir.BIRSampler()(q, c, ids)[0], 4).sum(1), [6] * 4)

  def test_config_round_trip(self):
    sampler = bir.BIRSampler(
        num_resampled=9, temperature=0.1, seed=3,
        frequency=frequency.StaticItemProbability([1., 2., 3.]),
        remove_accidental_hits=False, resampling="poisson")
    config = sampler.get_config()
    for key in ("num_resampled", "temperature", "seed", "frequency",
                "remove_accidental_hits", "resampling"):
      self.assertIn(key, config)
    clone = bir.BIRSampler.from_config(config)
    self.assertEqual(clone.get_config(), config)
    helpers.check_config_round_trip(self, sampler)

  def test_invalid_values_are_rejected(self):
    for value in (0, -3, 2.5, True, "8"):
      with self.assertRaisesRegex(ValueError, "num_resampled must be an "
                                  "integer >= 1"):
        bir.BIRSampler(num_resampled=value)
    for value in (0.0, -1.0):
      with self.assertRaisesRegex(ValueError, "temperature must be > 0"):
        bir.BIRSampler(temperature=value)
    with self.assertRaisesRegex(ValueError, "seed must be an integer >= 0"):
      bir.BIRSampler(seed=-1)
    with self.assertRaisesRegex(ValueError, "resampling must be one of "
                                "multinomial, poisson, got 'systematic'"):
      bir.BIRSampler(resampling="systematic")

  def test_registered_factory_reads_the_options(self):
    ctx = base.SamplerContext(
        item_counts=np.array([0., 3., 1.]), global_batch_size=16, seed=2,
        options={"num_resampled": 0, "frequency": "static",
                 "warmup_epochs": 0.0}, temperature=0.2)
    sampler = base.create_sampler("bir", ctx)
    self.assertIsInstance(sampler, bir.BIRSampler)
    self.assertIsNone(sampler.num_resampled)
    self.assertEqual(sampler.temperature, 0.2)
    self.assertEqual(sampler.seed, 2)
    self.assertIsInstance(sampler.frequency, frequency.StaticItemProbability)
    ctx = ctx._replace(options={"num_resampled": 5, "warmup_epochs": 0.0},
                       temperature=None)
    sampler = base.create_sampler("bir", ctx)
    self.assertEqual(sampler.num_resampled, 5)
    self.assertIsNone(sampler.temperature)  # raw dot products
    self.assertIsInstance(sampler.frequency,
                          frequency.StreamingFrequencyEstimator)
    with self.assertRaisesRegex(ValueError, "num_resampled must be"):
      base.create_sampler("bir", ctx._replace(options={"num_resampled": -1}))
    self.assertEqual(sampler.resampling, "multinomial")
    sampler = base.create_sampler("bir", ctx._replace(
        options={"resampling": "poisson"}))
    self.assertEqual(sampler.sampler.resampling, "poisson")  # warmed up


if __name__ == "__main__":
  tf.test.main()
