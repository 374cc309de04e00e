"""MNS, ANS, AMNS, two-stage and CML: hand-computed losses and selections.

Each test lets the sampler draw (its randomness is part of its definition),
reads the drawn ids / pool back from the returned `CandidateGroup`, and
recomputes the loss in NumPy from the definition in the module docstring.
Selections are checked directly: the kept negatives must be exactly the
top-scoring members of the row's pool.
"""

import numpy as np
import tensorflow as tf

from tests import helpers
from tfrs_negsamp import data as data_lib
from trainers.pipeline import assembly
from trainers.pipeline import strategies
from tfrs_negsamp import losses
from tfrs_negsamp.samplers import adaptive
from tfrs_negsamp.samplers import adaptive_mixed
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import mixed
from tfrs_negsamp.samplers import two_stage
from tfrs_negsamp.tasks import retrieval

# q = [[1, 0], [0, 1], [1, 1]], c = [[1, 0], [0, 2], [1, -1]]
# scores = q c^T = [[1, 0, 1], [0, 2, -1], [1, 2, 0]]
Q = np.array([[1., 0.], [0., 1.], [1., 1.]], np.float32)
C = np.array([[1., 0.], [0., 2.], [1., -1.]], np.float32)
S = Q @ C.T
COUNTS = np.array([0, 40, 35, 30, 25, 20, 12, 8, 5, 3, 0], np.float64)
N = len(COUNTS) - 1
STUDY_SAMPLERS = ("uniform", "popularity", "inverse_popularity", "balanced",
                  "mixed", "adaptive", "adaptive_mixed", "two_stage",
                  "two_stage_triplet")


def lse(x):
  x = np.asarray(x, np.float64)
  return np.log(np.sum(np.exp(x - x.max()))) + x.max()


def table(dim=2, seed=0):
  return np.random.RandomState(seed).normal(size=(N + 1, dim)).astype(
      np.float32)


def task_loss(groups, q, c, ids, temperature=None, pairwise=None):
  task = retrieval.Retrieval(temperature=temperature,
                                    loss=pairwise)
  return float(task.groups_loss(tf.constant(q), tf.constant(c), groups,
                    candidate_ids=tf.constant(ids, tf.int64)))


class AdaptiveTest(tf.test.TestCase):

  def test_hand_example_whole_batch_pool(self):
    # Pool = the whole batch, k = 1: row 0 keeps column 2 (score 1 > 0),
    # row 1 keeps column 0 (0 > -1), row 2 keeps column 1 (2 > 1).
    sampler = adaptive.AdaptiveSampler(pool_size=10, num_hard_negatives=1)
    ids = [1, 2, 3]
    groups = sampler(tf.constant(Q), tf.constant(C),
                     tf.constant(ids, tf.int64))
    expected = (-1 + lse([1, 1])) + (-2 + lse([2, 0])) + (-0 + lse([0, 2]))
    self.assertAllClose(task_loss(groups, Q, C, ids), expected, atol=1e-5)

  def test_keeps_exactly_the_top_k_of_its_random_pool(self):
    rng = np.random.RandomState(1)
    b, d, pool, k = 8, 3, 4, 2
    q = rng.normal(size=(b, d)).astype(np.float32)
    c = rng.normal(size=(b, d)).astype(np.float32)
    ids = np.array([1, 2, 3, 4, 5, 6, 7, 2], np.int64)  # one accidental hit
    tf.random.set_seed(5)
    sampler = adaptive.AdaptiveSampler(pool_size=pool, num_hard_negatives=k)
    groups = sampler(tf.constant(q), tf.constant(c), tf.constant(ids))
    mask = groups[0].score_mask.numpy()
    s = q @ c.T
    expected = 0.0
    task = retrieval.Retrieval()
    logits, labels = task.group_logits(tf.constant(q), tf.constant(c),
                                       tf.constant(ids), groups[0])
    logits = logits.numpy()
    for i in range(b):
      self.assertTrue(mask[i, i])
      in_pool = [j for j in range(b) if mask[i, j] and j != i]
      self.assertLen(in_pool, pool)  # P random columns besides the diagonal
      valid = [j for j in in_pool if ids[j] != ids[i]]
      top = sorted(valid, key=lambda j: -s[i, j])[:k]
      expected += -s[i, i] + lse([s[i, i]] + [s[i, j] for j in top])
      # The selected logits are exactly the positive + the top-k scores.
      kept = sorted(logits[i][logits[i] > -1e30].tolist())
      self.assertAllClose(kept, sorted([s[i, i]] + [s[i, j] for j in top]),
                          atol=1e-5)
    self.assertAllClose(task_loss(groups, q, c, ids), expected, atol=1e-4)


class MixedTest(tf.test.TestCase):

  def test_mixture_logq_and_loss_match_hand_computation(self):
    emb = table()
    num_uniform = 4
    tf.random.set_seed(6)
    sampler = mixed.MixedSampler(COUNTS, num_uniform=num_uniform,
                                 item_model=lambda i: tf.gather(emb, i))
    ids = np.array([1, 3, 1], np.int64)
    groups = sampler(tf.constant(Q), tf.constant(C), tf.constant(ids))
    g = groups[0]
    extra_ids = g.extra_ids.numpy()
    self.assertAllEqual(g.extra_embeddings.numpy(), emb[extra_ids])
    all_ids = np.concatenate([ids, extra_ids])
    f = COUNTS / COUNTS.sum()
    log_q = np.log(3 * f[all_ids] + num_uniform / N)
    self.assertAllClose(g.column_log_q.numpy(), log_q, rtol=1e-5)
    cols = np.concatenate([C, emb[extra_ids]])
    z = Q @ cols.T - log_q[None, :]
    expected = 0.0
    for i in range(3):
      keep = [j for j in range(len(all_ids))
              if j == i or all_ids[j] != ids[i]]
      expected += -z[i, i] + lse(z[i, keep])
    self.assertAllClose(task_loss(groups, Q, C, ids), expected, atol=1e-4)

  def test_uniform_columns_are_uniform(self):
    # Chi-square at p = 0.001 (df = N - 1 = 9: critical value 27.9) on
    # 20 000 uniform draws over the N real items; OOV never drawn.
    tf.random.set_seed(7)
    sampler = mixed.MixedSampler(COUNTS, num_uniform=20000,
                                 item_model=lambda i: tf.zeros([1, 2]))
    extra_ids, _, _ = sampler.uniform_columns(tf.constant([1], tf.int64))
    counts = np.bincount(extra_ids.numpy(), minlength=N + 1)
    self.assertEqual(counts[0], 0)
    expected = 20000 / N
    self.assertLess(np.sum((counts[1:] - expected) ** 2 / expected), 27.88)

  def test_adaptive_mixed_selects_the_top_k_of_batch_pool_plus_uniform(self):
    emb = table()
    tf.random.set_seed(8)
    sampler = adaptive_mixed.AdaptiveMixedSampler(
        COUNTS, pool_size=1, num_uniform=3, num_hard_negatives=2,
        item_model=lambda i: tf.gather(emb, i))
    ids = np.array([1, 3, 5], np.int64)
    groups = sampler(tf.constant(Q), tf.constant(C), tf.constant(ids))
    g = groups[0]
    self.assertIsNone(g.column_log_q)  # raw scores by default
    mask = g.score_mask.numpy()
    all_ids = np.concatenate([ids, g.extra_ids.numpy()])
    cols = np.concatenate([C, g.extra_embeddings.numpy()])
    s = Q @ cols.T
    expected = 0.0
    for i in range(3):
      self.assertEqual(int(mask[i, :3].sum()), 2)  # diagonal + 1 random
      self.assertTrue(mask[i, 3:].all())  # every uniform column
      pool = [j for j in range(6) if mask[i, j] and j != i
              and all_ids[j] != ids[i]]
      top = sorted(pool, key=lambda j: -s[i, j])[:2]
      expected += -s[i, i] + lse([s[i, i]] + [s[i, j] for j in top])
    self.assertAllClose(task_loss(groups, Q, C, ids), expected, atol=1e-4)


class TwoStageTest(tf.test.TestCase):

  def test_pool_is_distinct_and_top_k2_selected(self):
    emb = table(seed=2)
    tf.random.set_seed(9)
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=6, num_hard_negatives=2, rule="query_score",
        logq=False, beta=1.0, item_model=lambda i: tf.gather(emb, i))
    ids = np.array([1, 2, 3], np.int64)
    groups = sampler(tf.constant(Q), tf.constant(C), tf.constant(ids))
    g = groups[0]
    pool = g.extra_ids.numpy()
    self.assertLen(set(pool.tolist()), 6)  # without replacement
    self.assertTrue(np.all(COUNTS[pool] > 0))  # beta = 1: seen items only
    self.assertTrue(g.drop_in_batch)
    task = retrieval.Retrieval()
    logits, _ = task.group_logits(tf.constant(Q), tf.constant(C),
                                  tf.constant(ids), g)
    logits = logits.numpy()
    s_pool = Q @ emb[pool].T
    expected = 0.0
    for i in range(3):
      valid = [j for j in range(6) if pool[j] != ids[i]]
      top = sorted(valid, key=lambda j: -s_pool[i, j])[:2]
      chosen = [s_pool[i, j] for j in top]
      self.assertAllClose(sorted(logits[i].tolist()),
                          sorted([S[i, i]] + chosen), atol=1e-5)
      expected += -S[i, i] + lse([S[i, i]] + chosen)
    self.assertAllClose(task_loss(groups, Q, C, ids), expected, atol=1e-4)

  def test_stage_one_single_draw_follows_popularity_beta(self):
    # C = 1: one Gumbel-top-1 draw is a draw from count^beta (beta = 0.5).
    # 1 500 draws, chi-square at p = 0.001 with df = 8 (critical 26.1).
    sampler = two_stage.TwoStageSampler(COUNTS, pool_size=1, beta=0.5)
    tf.random.set_seed(10)
    draw = tf.function(lambda: tf.map_fn(
        lambda i: sampler.distribution.sample_unique(1, tf.stack([10, i])),
        tf.range(1500),
        fn_output_signature=tf.int64))
    counts = np.bincount(draw().numpy().ravel(), minlength=N + 1)
    q = np.sqrt(COUNTS)
    q /= q.sum()
    support = q > 0
    self.assertEqual(int(counts[~support].sum()), 0)
    expected = 1500 * q[support]
    self.assertLess(np.sum((counts[support] - expected) ** 2 / expected),
                    26.12)

  def test_cml_triplet_hand_computation(self):
    # Unit vectors; pool (0,1) id 7, (-1,0) id 8, (0.6,0.8) id 9.
    # Row 0: u=(1,0), pos=(0.6,0.8): D_pos = 0.16+0.64 = 0.8; negatives
    # 2, 4, 0.8 -> min 0.8 -> [1 + 0.8 - 0.8]_+ = 1.
    # Row 1: u=(0,1), pos=(1,0) (id 7): D_pos = 2; negatives: id 7 (D 0)
    # is an accidental hit, (-1,0): 2, (0.6,0.8): 0.36+0.04 = 0.4 -> min
    # 0.4 -> [1 + 2 - 0.4]_+ = 2.6. Total 3.6.
    q = np.array([[1., 0.], [0., 1.]], np.float32)
    c = np.array([[0.6, 0.8], [1., 0.]], np.float32)
    pool = np.array([[0., 1.], [-1., 0.], [0.6, 0.8]], np.float32)
    pool_ids = np.array([7, 8, 9], np.int64)
    ids = np.array([5, 7], np.int64)  # row 1's positive is pool item 7
    group = base.CandidateGroup(extra_embeddings=tf.constant(pool),
                                extra_ids=tf.constant(pool_ids),
                                drop_in_batch=True)
    loss = task_loss([group], q, c, ids,
                     pairwise=losses.CMLTripletLoss(margin=1.0))
    self.assertAllClose(loss, 3.6, atol=1e-5)
    layer = losses.CMLTripletLoss(margin=0.5)
    self.assertAllClose(float(layer(tf.constant([1.0, 0.2]),
                                    tf.constant([[3., 1.2], [0.1, 5.]]))),
                        (0.5 + 1.0 - 1.2) + (0.5 + 0.2 - 0.1), atol=1e-6)
    # Ranking: on unit vectors -||u - v||^2 = 2 <u, v> - 2.
    u, v = q[0], c[0]
    self.assertAllClose(-np.sum((u - v) ** 2), 2 * u @ v - 2, atol=1e-6)

  def test_two_stage_triplet_model_uses_the_hinge(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(sampler="two_stage_triplet")
    model = assembly.build_model(dataset, config, 8)
    self.assertIsInstance(model.task.pairwise_loss, losses.CMLTripletLoss)
    softmax = assembly.build_model(
        dataset, helpers.tiny_config(sampler="two_stage"), 8)
    self.assertIsNone(softmax.task.pairwise_loss)

  def test_config_round_trip(self):
    for sampler in (
        two_stage.TwoStageSampler(COUNTS, pool_size=5, beta=0.3,
                                  num_hard_negatives=2, logq=True,
                                  loss="triplet", margin=0.5),
        mixed.MixedSampler(COUNTS, num_uniform=7, logq=False),
        adaptive.AdaptiveSampler(pool_size=9, num_hard_negatives=4),
        adaptive_mixed.AdaptiveMixedSampler(COUNTS, pool_size=3,
                                            num_uniform=4,
                                            num_hard_negatives=2)):
      helpers.check_config_round_trip(self, sampler)

  def test_two_stage_logq_is_log_inclusion(self):
    emb = table()
    sampler = two_stage.TwoStageSampler(
        COUNTS, pool_size=4, logq=True, rule="query_score", beta=1.0,
        item_model=lambda i: tf.gather(emb, i))
    ids = np.array([1, 2, 3], np.int64)
    g = sampler(tf.constant(Q), tf.constant(C), tf.constant(ids))[0]
    cols = np.concatenate([ids[:, None],
                           np.tile(g.extra_ids.numpy()[None], (3, 1))], 1)
    p = COUNTS / COUNTS.sum()
    self.assertAllClose(g.column_log_q.numpy(),
                        np.log(1 - (1 - p[cols]) ** 4), rtol=1e-4)


class MirroredTest(tf.test.TestCase):

  def test_every_study_sampler_runs_under_mirrored_strategy(self):
    # One distributed forward/backward step per sampler on two logical
    # CPUs (global batch 8, 4 rows per replica): finite loss, non-zero
    # gradients, sampler state identical on both replicas. `strategy.run`
    # is called eagerly: tracing a tf.function per sampler costs ~8 s each
    # on the shared 2-core machine, and `model.fit` under the strategy is
    # covered by tests/models.
    strategy = strategies.make_strategy("mirrored", 2)
    dataset = helpers.tiny_dataset()
    # One row per user: the first rows all belong to one user, whose own
    # items user-history masking removes from every in-batch pool.
    _, rows = np.unique(dataset.train.user_ids, return_index=True)
    batch = next(iter(data_lib.to_tf_dataset(
        dataset.train.subset(np.sort(rows)[:8]), batch_size=8)))
    options = {"num_negatives": 4, "num_hard_negatives": 2, "num_uniform": 5}
    for name in STUDY_SAMPLERS:
      # Two-stage's pool holds its K2 = 2 among 6 items; the adaptive pools
      # are 3 in-batch items.
      config = helpers.tiny_config(sampler=name, sampler_options=dict(
          options, pool_size=6 if name.startswith("two_stage") else 3))
      with strategy.scope():
        model = assembly.build_model(dataset, config, 8)
      dist = next(iter(strategy.experimental_distribute_dataset(
          tf.data.Dataset.from_tensors(batch))))

      def fn(x, model=model):
        with tf.GradientTape() as tape:
          loss = model.compute_loss(x, training=True)
        grads = tape.gradient(loss, model.trainable_variables)
        norms = [tf.reduce_sum(tf.abs(tf.convert_to_tensor(g)))
                 for g in grads if g is not None]
        return loss, tf.add_n(norms)

      loss, norm = strategy.run(fn, args=(dist,))
      loss = strategy.reduce("SUM", loss, axis=None)
      norm = strategy.reduce("SUM", norm, axis=None)
      self.assertTrue(np.isfinite(float(loss)), name)
      self.assertGreater(float(norm), 0.0, name)
      self.assertNotEmpty(model.sampler.weights, name)
      for var in model.sampler.weights:
        copies = [v.numpy() for v in var.values]
        self.assertLen(copies, 2)
        self.assertAllEqual(copies[0], copies[1], msg=name)


if __name__ == "__main__":
  tf.test.main()
