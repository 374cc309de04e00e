"""Two-stage sampler, reference rule: weights, draws, exclusions, stale table.

The reference rule (deezer/sigir2019-2stagesampling, `SpreadoutSampler`)
draws, per (user, positive) pair, pool items with weights
`(1 - s^2)^(1 - (d - 1)/2)` for `s > 0` (`s`: cosine similarity to the
positive on a stale item table), rejects the user's items, and refreshes
the table every `refresh_steps` steps. The query-score rule must give
today's numbers exactly.
"""

import numpy as np
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import strategies
from tfrs_negsamp import losses
from tfrs_negsamp import masking
from tfrs_negsamp.samplers import two_stage
from tfrs_negsamp.tasks import retrieval

COUNTS = np.array([0, 40, 35, 30, 25, 20, 12, 8, 5, 3, 0], np.float64)
N = len(COUNTS) - 1
SEEN = np.flatnonzero(COUNTS > 0)  # items 1..9: the stage-1 support
# Chi-square critical values at p = 0.001 by degrees of freedom.
CHI2_999 = {1: 10.83, 2: 13.82, 3: 16.27, 4: 18.47, 5: 20.52, 6: 22.46,
            7: 24.32, 8: 26.12}


def unit_table(dim, seed):
  emb = np.random.RandomState(seed).normal(size=(N + 1, dim))
  return (emb / np.linalg.norm(emb, axis=1, keepdims=True)).astype(
      np.float32)


def reference_weights(table, positive, pool):
  """The reference code's `_calculate_weights`, normalised (NumPy)."""
  s = table[pool] @ table[positive]
  dim = table.shape[1]
  log_w = (1.0 - (dim - 1.0) / 2.0) * np.log(1.0 - s ** 2 + 1e-8)
  w = np.where(s > 0, np.exp(log_w), 0.0)
  return w / w.sum()


def call(sampler, positives, dim, training=True, consumed=None):
  b = len(positives)
  ids = tf.constant(positives, tf.int64)
  zeros = tf.zeros([b, dim])
  return sampler(zeros, zeros, ids, training=training, consumed=consumed)


class SpreadOutWeightsTest(tf.test.TestCase):

  def test_log_weights_match_the_reference_formula(self):
    s = np.array([-0.5, 0.0, 0.1, 0.5, 0.9, 0.999])
    for dim in (2, 4, 16, 128):
      got = two_stage.spread_out_log_weights(tf.constant(s), dim).numpy()
      expected = (1 - (dim - 1) / 2) * np.log(1 - s ** 2 + 1e-8)
      self.assertTrue(np.all(np.isneginf(got[s <= 0])))
      self.assertAllClose(got[s > 0], expected[s > 0], rtol=1e-12)

  def test_default_pool_scales_with_the_catalog(self):
    self.assertEqual(two_stage.default_pool_size(130791), 2000)
    self.assertEqual(two_stage.default_pool_size(10 ** 7), 2000)
    self.assertEqual(two_stage.default_pool_size(1682), 128)
    self.assertEqual(two_stage.default_pool_size(30000), 459)
    self.assertEqual(two_stage.default_pool_size(1682, "query_score"), 512)
    sampler = two_stage.TwoStageSampler(COUNTS)
    self.assertEqual(sampler.rule, "reference")
    self.assertEqual(sampler.pool_size, 128)
    self.assertEqual(sampler._pool, len(SEEN))  # capped at the support


class ReferenceRuleTest(tf.test.TestCase):

  def test_draw_frequencies_match_spread_out_weights(self):
    # Pool = the whole stage-1 support (C = 9), one negative per row
    # (triplet), 6000 rows with the same positive: the drawn ids follow
    # the normalised spread-out weights of the positive's similarities.
    dim, positive, rows = 6, 3, 6000
    table = unit_table(dim, seed=9)
    pool = np.array([j for j in SEEN if j != positive])
    w = reference_weights(table, positive, pool)
    support = w > 0
    # A real test: 6 items with weights from 0.12 to 0.29 (a uniform draw
    # over them would give a chi-square of about 480).
    self.assertEqual(int(support.sum()), 6)
    self.assertGreater(w.max() / w[support].min(), 2.0)
    tf.random.set_seed(11)
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=len(SEEN), loss=losses.TRIPLET,
        item_model=lambda i: tf.gather(table, i))
    group = call(sampler, [positive] * rows, dim)[0]
    drawn = group.per_query.ids.numpy()
    self.assertEqual(drawn.shape, (rows, 1))
    self.assertTrue(group.per_query.mask.numpy().all())
    counts = np.bincount(drawn.ravel(), minlength=N + 1)[pool]
    self.assertEqual(int(counts[~support].sum()), 0)  # zero weight
    expected = rows * w[support]
    chi2 = float(np.sum((counts[support] - expected) ** 2 / expected))
    self.assertLess(chi2, CHI2_999[int(support.sum()) - 1])

  def test_several_draws_are_distinct_weighted_first_then_uniform(self):
    # K2 = 6 > number of positive-weight items: those come first, the
    # rest are distinct zero-weight pool items; never the positive.
    dim, positive = 6, 3
    table = unit_table(dim, seed=4)
    pool = np.array([j for j in SEEN if j != positive])
    w = reference_weights(table, positive, pool)
    weighted = set(pool[w > 0].tolist())
    tf.random.set_seed(12)
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=len(SEEN), num_hard_negatives=6,
        item_model=lambda i: tf.gather(table, i))
    group = call(sampler, [positive] * 50, dim)[0]
    drawn = group.per_query.ids.numpy()
    self.assertTrue(group.per_query.mask.numpy().all())
    for row in drawn:
      self.assertLen(set(row.tolist()), 6)
      self.assertNotIn(positive, row.tolist())
      self.assertEqual(set(row[:len(weighted)].tolist()), weighted)
    self.assertTrue(group.drop_in_batch)
    self.assertIsNone(group.num_hard_negatives)

  def test_consumed_items_are_never_drawn(self):
    dim = 4
    table = unit_table(dim, seed=5)
    positives = [1, 2, 3, 4]
    history = np.array([[1, 2, 3, 5, 6, 7, -1, -1, -1],
                        [2, 1, 4, 8, 9, -1, -1, -1, -1],
                        [3, -1, -1, -1, -1, -1, -1, -1, -1],
                        # Row 3's user consumed the whole pool.
                        [1, 2, 3, 4, 5, 6, 7, 8, 9]], np.int64)
    consumed = masking.history_consumed(tf.constant(history))
    tf.random.set_seed(13)
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=len(SEEN), num_hard_negatives=2,
        item_model=lambda i: tf.gather(table, i))
    for _ in range(20):
      group = call(sampler, positives, dim, consumed=consumed)[0]
      drawn = group.per_query.ids.numpy()
      ok = group.per_query.mask.numpy()
      for i in range(3):
        self.assertTrue(ok[i].all())
        for j in drawn[i]:
          self.assertNotIn(j, history[i])
          self.assertNotEqual(j, positives[i])
      self.assertFalse(ok[3].any())  # masked columns, never consumed
    # The task gives the masked columns no mass: row 3's loss is 0.
    q = tf.constant(np.eye(4, dim, dtype=np.float32))
    c = tf.constant(table[positives])
    task = retrieval.Retrieval()
    logits, _ = task.group_logits(q, c, tf.constant(positives, tf.int64),
                                  group)
    self.assertAllEqual(logits.numpy()[3, 1:] > -1e30, [False, False])

  def test_triplet_hinge_over_the_drawn_negative(self):
    dim = 4
    table = unit_table(dim, seed=6)
    tf.random.set_seed(14)
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=len(SEEN), loss=losses.TRIPLET, margin=0.5,
        item_model=lambda i: tf.gather(table, i))
    positives = np.array([1, 5], np.int64)
    q = np.random.RandomState(0).normal(size=(2, dim)).astype(np.float32)
    c = table[positives]
    group = sampler(tf.constant(q), tf.constant(c), tf.constant(positives),
                    training=True)[0]
    neg = table[group.per_query.ids.numpy()[:, 0]]
    expected = np.sum(np.maximum(
        0.5 + np.sum((q - c) ** 2, 1) - np.sum((q - neg) ** 2, 1), 0.0))
    task = retrieval.Retrieval(
        loss=losses.CMLTripletLoss(margin=0.5))
    loss = task.groups_loss(tf.constant(q), tf.constant(c), [group],
                candidate_ids=tf.constant(positives))
    self.assertAllClose(float(loss), expected, atol=1e-5)

  def test_negatives_are_embedded_freshly_with_gradient(self):
    dim = 4
    var = tf.Variable(unit_table(dim, seed=7))
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=len(SEEN), num_hard_negatives=2,
        item_model=lambda i: tf.gather(var, i))
    q = tf.constant(np.ones((2, dim), np.float32))
    ids = tf.constant([1, 2], tf.int64)
    with tf.GradientTape() as tape:
      c = tf.gather(var, ids)
      groups = sampler(q, c, ids, training=True)
      loss = retrieval.Retrieval().groups_loss(q, c, groups, candidate_ids=ids)
    grad = tf.convert_to_tensor(tape.gradient(loss, var)).numpy()
    drawn = np.unique(groups[0].per_query.ids.numpy())
    self.assertGreater(np.abs(grad[drawn]).sum(), 0.0)


  def test_logq_is_the_stage_one_log_inclusion(self):
    dim, pool_size = 4, 5
    table = unit_table(dim, seed=8)
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=pool_size, num_hard_negatives=2, logq=True,
        beta=1.0,
        item_model=lambda i: tf.gather(table, i))
    positives = np.array([1, 2, 3], np.int64)
    group = call(sampler, positives, dim)[0]
    p = COUNTS / COUNTS.sum()
    drawn = group.per_query.ids.numpy()
    self.assertAllClose(group.per_query.log_q.numpy(),
                        np.log(1 - (1 - p[drawn]) ** pool_size), rtol=1e-4)
    self.assertAllClose(group.column_log_q.numpy()[:, 0],
                        np.log(1 - (1 - p[positives]) ** pool_size),
                        rtol=1e-4)
    q = tf.constant(np.ones((3, dim), np.float32))
    loss = retrieval.Retrieval().groups_loss(q, tf.constant(table[positives]),
                                        [group], candidate_ids=positives)
    self.assertTrue(np.isfinite(float(loss)))


class StaleTableTest(tf.test.TestCase):

  def test_refreshes_exactly_every_refresh_steps(self):
    dim = 3
    var = tf.Variable(np.zeros((N + 1, dim), np.float32))
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=4, refresh_steps=3,
        item_model=lambda i: tf.gather(var, i))

    def weights_at(step):
      return np.random.RandomState(step).normal(size=(N + 1, dim)).astype(
          np.float32)

    for step in range(8):
      var.assign(weights_at(step))
      call(sampler, [1, 2], dim)
      last = 3 * (step // 3)
      w = weights_at(last)
      self.assertAllClose(sampler.item_table.numpy(),
                          w / np.linalg.norm(w, axis=1, keepdims=True),
                          atol=1e-6, msg="step %d" % step)
      self.assertEqual(int(sampler.step.numpy()), step + 1)
    # Evaluation reads the table and neither refreshes nor counts.
    before = sampler.item_table.numpy()
    var.assign(weights_at(99))
    call(sampler, [1, 2], dim, training=False)
    self.assertAllEqual(sampler.item_table.numpy(), before)
    self.assertEqual(int(sampler.step.numpy()), 8)

  def test_identical_on_both_replicas_under_mirrored_strategy(self):
    # Refresh every 2 steps; the item tower changes between steps, so the
    # table must hold the tower of steps 0 and 2 after steps 1 and 3.
    strategy = strategies.make_strategy("mirrored", 2)
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(sampler="two_stage", sampler_options={
        "refresh_steps": 2, "pool_size": 6,
        "num_hard_negatives": 2})
    # create_model builds every variable (as the trainer does) with an
    # evaluation-mode call, which neither refreshes nor counts.
    model = assembly.create_model(dataset, config, strategy)
    batch = helpers.first_batch(dataset, 8)
    dist = next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch))))
    sampler = model.sampler
    self.assertEqual(sampler.rule, "reference")
    all_ids = tf.range(len(sampler.get_config()["item_counts"]),
                       dtype=tf.int64)
    self.assertEqual(int(sampler.step.values[0].numpy()), 0)
    # In a tf.function, as in training (tf.cond + replica-context writes).
    step_fn = tf.function(lambda x: strategy.run(
        lambda y: model.compute_loss(y, training=True), args=(x,)))
    expected = None
    for step in range(4):
      for v in model.item_model.trainable_variables:
        v.assign(v + 0.1 * (step + 1))
      if step % 2 == 0:
        expected = tf.math.l2_normalize(model.item_model(all_ids),
                                        axis=-1).numpy()
      step_fn(dist)
      for var in (sampler.item_table, sampler.step):
        copies = [v.numpy() for v in var.values]
        self.assertLen(copies, 2)
        self.assertAllEqual(copies[0], copies[1])
      self.assertAllClose(sampler.item_table.values[0].numpy(), expected,
                          atol=1e-6, msg="step %d" % step)
      self.assertEqual(int(sampler.step.values[0].numpy()), step + 1)


class QueryScoreRuleTest(tf.test.TestCase):

  def test_reproduces_the_previous_rule_exactly(self):
    # Golden values from the package's previous TwoStageSampler (before
    # the reference rule; same seed, same op sequence).
    emb = np.random.RandomState(3).normal(size=(N + 1, 2)).astype(np.float32)
    q = np.array([[1., 0.], [0., 1.], [1., 1.]], np.float32)
    c = np.array([[1., 0.], [0., 2.], [1., -1.]], np.float32)
    ids = np.array([1, 2, 3], np.int64)
    golden = {False: 1.6786929368972778, True: 2.0321431159973145}
    for logq, expected in golden.items():
      tf.random.set_seed(21)
      sampler = two_stage.TwoStageSampler(
          COUNTS, pool_size=5, num_hard_negatives=2, logq=logq, beta=1.0,
          rule="query_score", item_model=lambda i: tf.gather(emb, i))
      groups = sampler(tf.constant(q), tf.constant(c), tf.constant(ids),
                       training=True)
      # The pool is the whole support, so the loss does not depend on the
      # draw (the order of the pool does: it was [2, 3, 4, 5, 1] with the
      # former stateful draw, it is step-seeded now).
      self.assertAllEqual(np.sort(groups[0].extra_ids.numpy()),
                          [1, 2, 3, 4, 5])
      loss = retrieval.Retrieval().groups_loss(tf.constant(q), tf.constant(c),
                                          groups,
                                          candidate_ids=tf.constant(ids))
      self.assertAllClose(float(loss), expected, atol=1e-6)
      self.assertEmpty([w for w in sampler.weights if "item_table" in w.name])

  def test_config_round_trip_and_validation(self):
    for sampler in (
        two_stage.TwoStageSampler(COUNTS, rule="reference", refresh_steps=7,
                                  pool_size=5),
        two_stage.TwoStageSampler(COUNTS, rule="query_score",
                                  loss="triplet")):
      helpers.check_config_round_trip(self, sampler)
    with self.assertRaisesRegex(ValueError, "rule"):
      two_stage.TwoStageSampler(COUNTS, rule="nope")
    with self.assertRaisesRegex(ValueError, "refresh_steps"):
      two_stage.TwoStageSampler(COUNTS, refresh_steps=0)


if __name__ == "__main__":
  tf.test.main()
