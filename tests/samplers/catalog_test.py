"""Catalog samplers: the negatives' empirical law matches the definition.

Every test draws `n = ROWS * K` negatives at once on a fixed seed and
compares the counts with the exact expected law of the draw, including the
exclusion of each row's positive: row `b` (positive `p_b`) draws `j` with
probability `q_b(j) / (1 - q_b(p_b))` for `j != p_b`, so the expected count of
`j` is `K * sum_b q_b(j) [j != p_b] / (1 - q_b(p_b))`.

Tolerance: Pearson's chi-square statistic over the support must stay below
the chi-square critical value at p = 0.001 for `df = support - 1`
(Wilson-Hilferty approximation, accurate to < 1% here; SciPy is not
installed). A correct sampler fails with probability 0.001 on a random seed
and, the seed being fixed, never in CI; a wrong law (e.g. alpha 1 vs 0.5, or
0.8 vs 0.1 cohort mass, or forgetting the exclusion) gives statistics in the
thousands at n = 60 000. We also check the total-variation distance
against `3 sqrt(S / n)` (S the support size), a loose bound on the
expected TV of an empirical law, as a readable second criterion.
"""

import numpy as np
import tensorflow as tf

from tests import helpers
from tfrs_negsamp import masking
from tfrs_negsamp.evaluation import cohorts as cohorts_lib
from tfrs_negsamp.samplers import balanced
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import inverse_popularity
from tfrs_negsamp.samplers import popularity
from tfrs_negsamp.samplers import uniform
from tfrs_negsamp.tasks import retrieval

# Model indices 0..10: 0 is OOV (count 0); item 10 is never seen in training.
COUNTS = np.array([0, 40, 35, 30, 25, 20, 12, 8, 5, 3, 0], np.float64)
N = len(COUNTS) - 1
ROWS, K = 60, 1000
Z_999 = 3.090232  # standard normal quantile at 0.999


def chi2_critical(df: int) -> float:
  """Wilson-Hilferty chi-square quantile at p = 0.001."""
  a = 2.0 / (9.0 * df)
  return df * (1.0 - a + Z_999 * np.sqrt(a)) ** 3


def expected_counts(q_rows: np.ndarray, positives: np.ndarray,
                    k: int) -> np.ndarray:
  """`[N + 1]` expected counts of the draw with the positive excluded."""
  total = np.zeros(q_rows.shape[1])
  for q, p in zip(q_rows, positives):
    cond = q.copy()
    cond[p] = 0.0
    total += k * cond / cond.sum()
  return total


def embed_table(dim=4, seed=0):
  table = tf.constant(np.random.RandomState(seed).normal(
      size=(N + 1, dim)).astype(np.float32))
  return lambda ids: tf.gather(table, ids)


def draw(sampler, positives):
  """Calls the sampler; returns (ids [B, K], mask [B, K]) as NumPy."""
  b = len(positives)
  q = tf.zeros([b, 4])
  c = tf.zeros([b, 4])
  groups = sampler(q, c, tf.constant(positives, tf.int64), training=True)
  self_check = groups[0]
  assert self_check.drop_in_batch and self_check.per_query is not None
  return (self_check.per_query.ids.numpy(),
          self_check.per_query.mask.numpy())


class CatalogDistributionTest(tf.test.TestCase):

  def test_uniform_draws_by_arithmetic_equal_the_inverse_cdf_search(self):
    # A uniform proposal skips the CDF search; from the same uniforms it
    # draws the same ids as the search, with and without an excluded id
    # (an OOV exclude 0 removes no mass), and never the excluded one.
    for n in (1, 2, 7, 3416):
      fast = catalog.CatalogDistribution(np.r_[0.0, np.ones(n)])
      searched = catalog.CatalogDistribution(np.r_[0.0, np.ones(n)])
      searched._uniform = False  # pylint: disable=protected-access
      self.assertTrue(fast._uniform)  # pylint: disable=protected-access
      exclude = tf.constant(np.arange(600) % (n + 1), tf.int64)
      seed = tf.constant([n, 3], tf.int64)
      for ex in (None, exclude):
        ids, valid = fast.sample([600, 40], seed, exclude=ex)
        ref_ids, ref_valid = searched.sample([600, 40], seed, exclude=ex)
        self.assertAllEqual(valid, ref_valid, msg=n)
        self.assertAllEqual(tf.where(valid, ids, 0),
                            tf.where(ref_valid, ref_ids, 0), msg=n)
        if ex is not None:
          hit = tf.logical_and(valid, tf.equal(ids, ex[:, None]))
          self.assertFalse(tf.reduce_any(hit), msg=n)
    self.assertFalse(catalog.CatalogDistribution(
        [0.0, 1.0, 2.0])._uniform)  # pylint: disable=protected-access

  def assert_law(self, ids, expected):
    counts = np.bincount(ids.ravel(), minlength=len(expected))
    support = expected > 0
    self.assertEqual(int(counts[~support].sum()), 0,
                     "drew ids outside the support")
    stat = float(np.sum((counts[support] - expected[support]) ** 2
                        / expected[support]))
    df = int(support.sum()) - 1
    self.assertLess(stat, chi2_critical(df),
                    "chi-square %.1f (df %d)" % (stat, df))
    n = ids.size
    tv = 0.5 * np.abs(counts / n - expected / expected.sum()).sum()
    self.assertLess(tv, 3.0 * np.sqrt(support.sum() / n))

  def positives(self, choices=(1, 3, 9)):
    return np.array([choices[i % len(choices)] for i in range(ROWS)])

  def test_weights(self):
    w = catalog.catalog_weights(COUNTS, "uniform")
    self.assertAllEqual(w, [0] + [1] * N)
    w = catalog.catalog_weights(COUNTS, "popularity", 0.5)
    self.assertAllClose(w, np.sqrt(COUNTS))
    w = catalog.catalog_weights(COUNTS, "inverse")
    self.assertAllClose(w[1:-1], 1.0 / COUNTS[1:-1])
    self.assertEqual(w[0], 0.0)
    self.assertEqual(w[-1], 0.0)
    with self.assertRaisesRegex(ValueError, "unknown weighting"):
      catalog.catalog_weights(COUNTS, "zipf")

  def test_cdf_rows_stay_sorted_with_extreme_weights(self):
    # One weight 1e15 times the others: float64 rounding takes the running
    # sum past 1 before the row ends (np.cumsum gives 1 + 2^-52 there); the
    # stored CDF is capped at 1, so the rows stay sorted for the search.
    weights = np.concatenate([[0.0, 1e6], np.ones(500), [1e-9] * 50])
    self.assertGreater(np.cumsum(weights / weights.sum()).max(), 1.0)
    dist = catalog.CatalogDistribution(weights)
    dist.build()
    cdf = dist.cdf.numpy()
    self.assertTrue(np.all(np.diff(cdf) >= 0))
    self.assertEqual(cdf[-1], 1.0)

  def test_uniform_law_and_positive_excluded(self):
    tf.random.set_seed(1)
    sampler = uniform.UniformSampler(COUNTS, num_negatives=K,
                                     item_model=embed_table())
    pos = self.positives()
    ids, mask = draw(sampler, pos)
    self.assertTrue(mask.all())
    self.assertFalse(np.any(ids == pos[:, None]))  # never its own positive
    self.assertFalse(np.any(ids == 0))  # never OOV
    q = np.array([0] + [1.0 / N] * N)
    self.assert_law(ids, expected_counts(np.tile(q, (ROWS, 1)), pos, K))

  def test_popularity_law(self):
    for alpha in (1.0, 0.5):
      tf.random.set_seed(2)
      sampler = popularity.PopularitySampler(
          COUNTS, alpha=alpha, num_negatives=K, item_model=embed_table())
      pos = self.positives()
      ids, _ = draw(sampler, pos)
      self.assertFalse(np.any(ids == pos[:, None]))
      q = COUNTS ** alpha
      q[COUNTS == 0] = 0
      q /= q.sum()
      self.assert_law(ids, expected_counts(np.tile(q, (ROWS, 1)), pos, K))

  def test_popularity_law_rejects_the_wrong_exponent(self):
    # The test has power: the alpha = 1 draw fails against alpha = 0.5.
    tf.random.set_seed(2)
    sampler = popularity.PopularitySampler(COUNTS, alpha=1.0,
                                           num_negatives=K,
                                           item_model=embed_table())
    pos = self.positives()
    ids, _ = draw(sampler, pos)
    q = np.sqrt(COUNTS)
    q /= q.sum()
    with self.assertRaises(AssertionError):
      self.assert_law(ids, expected_counts(np.tile(q, (ROWS, 1)), pos, K))

  def test_inverse_popularity_law(self):
    tf.random.set_seed(3)
    sampler = inverse_popularity.InversePopularitySampler(
        COUNTS, num_negatives=K, item_model=embed_table())
    pos = self.positives()
    ids, _ = draw(sampler, pos)
    self.assertFalse(np.any(ids == pos[:, None]))
    self.assertFalse(np.any(ids == N))  # unseen item: weight 0
    q = np.where(COUNTS > 0, 1.0 / np.maximum(COUNTS, 1), 0.0)
    q /= q.sum()
    self.assert_law(ids, expected_counts(np.tile(q, (ROWS, 1)), pos, K))

  def test_balanced_cohort_probabilities(self):
    cohort = catalog.item_cohorts(COUNTS)
    # The evaluation's cohorts, OOV as tail.
    self.assertAllEqual(cohort[1:],
                        cohorts_lib.popularity_cohorts(COUNTS[1:]))
    sizes = np.bincount(cohort[1:], minlength=3)
    self.assertTrue(np.all(sizes > 1), sizes)
    tf.random.set_seed(4)
    sampler = balanced.BalancedSampler(COUNTS, num_negatives=K,
                                       item_model=embed_table())
    # One positive per cohort: the first item of each cohort.
    firsts = [int(np.flatnonzero(cohort[1:] == c)[0]) + 1 for c in range(3)]
    pos = self.positives(firsts)
    ids, _ = draw(sampler, pos)
    self.assertFalse(np.any(ids == pos[:, None]))
    pmf = np.array(catalog.DEFAULT_COHORT_PMF)
    q_rows = np.stack([pmf[cohort[p], cohort] / sizes[cohort] for p in pos])
    q_rows[:, 0] = 0.0
    self.assert_law(ids, expected_counts(q_rows, pos, K))
    # Readable form: with the positive excluded, the own cohort gets
    # (0.8 - q(p)) / (1 - q(p)); e.g. about 0.8 minus a few points.
    for c in range(3):
      rows = cohort[pos] == c
      drawn = cohort[ids[rows]].ravel()
      q_p = 0.8 / sizes[c]
      own = (0.8 - q_p) / (1 - q_p)
      self.assertAllClose(np.mean(drawn == c), own, atol=0.01)

  def test_loss_matches_hand_computation(self):
    # Per-query path: row i's logits are [<u_i, v_i> | <u_i, e_ik> - log
    # (K q(j_ik))]; loss = sum_i -z_i0 + logsumexp(z_i). Recomputed in NumPy
    # from the ids the sampler drew (temperature 0.5).
    emb = np.random.RandomState(3).normal(size=(N + 1, 2)).astype(
        np.float32)
    q = np.array([[1., 0.], [0., 1.], [1., 1.]], np.float32)
    c = np.array([[1., 0.], [0., 2.], [1., -1.]], np.float32)
    ids = np.array([1, 4, 9], np.int64)
    task = retrieval.Retrieval(temperature=0.5)
    for cls, logq in ((uniform.UniformSampler, False),
                      (popularity.PopularitySampler, True),
                      (inverse_popularity.InversePopularitySampler, True),
                      (balanced.BalancedSampler, True)):
      sampler = cls(COUNTS, num_negatives=5, logq=logq,
                    item_model=lambda i: tf.gather(emb, i))
      groups = sampler(tf.constant(q), tf.constant(c), tf.constant(ids))
      loss = float(task.groups_loss(tf.constant(q), tf.constant(c), groups,
                        candidate_ids=tf.constant(ids)))
      pq = groups[0].per_query
      neg = pq.ids.numpy()
      probs = sampler.distribution.probabilities()
      rows = (catalog.item_cohorts(COUNTS)[ids]
              if cls is balanced.BalancedSampler else np.zeros(3, int))
      expected = 0.0
      for i in range(3):
        pos = q[i] @ c[i] / 0.5
        z = emb[neg[i]] @ q[i] / 0.5
        if logq:
          z -= np.log(5 * probs[rows[i], neg[i]])
        row = np.concatenate([[pos], z])
        expected += -pos + np.log(np.sum(np.exp(row)))
      self.assertAllClose(loss, expected, atol=1e-4, msg=cls.__name__)

  def test_positive_with_all_the_mass_is_masked(self):
    counts = np.array([0, 5, 0, 0], np.float64)
    sampler = popularity.PopularitySampler(counts, num_negatives=3,
                                           item_model=embed_table())
    ids, mask = draw(sampler, np.array([1, 1]))
    self.assertFalse(mask.any())
    del ids

  def test_history_is_masked(self):
    sampler = uniform.UniformSampler(COUNTS, num_negatives=200,
                                     item_model=embed_table())
    hist = tf.constant([[2, 3, -1], [4, -1, -1]], tf.int64)
    groups = sampler(tf.zeros([2, 4]), tf.zeros([2, 4]),
                     tf.constant([1, 5], tf.int64), training=True,
                     consumed=masking.history_consumed(hist))
    pq = groups[0].per_query
    ids, mask = pq.ids.numpy(), pq.mask.numpy()
    self.assertTrue(np.all(~mask[0][np.isin(ids[0], [2, 3])]))
    self.assertTrue(np.all(mask[0][~np.isin(ids[0], [2, 3])]))
    self.assertTrue(np.all(~mask[1][ids[1] == 4]))

  def test_logq_is_log_expected_count(self):
    sampler = popularity.PopularitySampler(COUNTS, num_negatives=7,
                                           logq=True,
                                           item_model=embed_table())
    groups = sampler(tf.zeros([3, 4]), tf.zeros([3, 4]),
                     tf.constant([1, 2, 3], tf.int64))
    pq = groups[0].per_query
    q = COUNTS / COUNTS.sum()
    self.assertAllClose(pq.log_q.numpy(), np.log(7 * q[pq.ids.numpy()]),
                        rtol=1e-5)
    off = popularity.PopularitySampler(COUNTS, logq=False,
                                       item_model=embed_table())
    groups = off(tf.zeros([3, 4]), tf.zeros([3, 4]),
                 tf.constant([1, 2, 3], tf.int64))
    self.assertIsNone(groups[0].per_query.log_q)

  def test_the_correction_is_on_by_default_in_both_doors(self):
    # The constructor and the registry (trainer flags) agree.
    from tfrs_negsamp import samplers as samplers_lib  # pylint: disable=g-import-not-at-top
    sampler = popularity.PopularitySampler(COUNTS, item_model=embed_table())
    self.assertTrue(sampler.logq)
    for name in ("popularity", "balanced", "inverse_popularity"):
      self.assertTrue(samplers_lib.sampler_options(name)().logq, name)
    # Uniform's correction is a constant under the softmax and a shift
    # under a sigmoid loss (gBCE): off in both doors.
    self.assertFalse(samplers_lib.sampler_options("uniform")().logq)
    self.assertFalse(uniform.UniformSampler(COUNTS).logq)

  def test_negatives_keep_their_gradient(self):
    table = tf.Variable(np.random.RandomState(0).normal(
        size=(N + 1, 4)).astype(np.float32))
    sampler = uniform.UniformSampler(COUNTS, num_negatives=5,
                                     item_model=lambda i: tf.gather(table, i))
    with tf.GradientTape() as tape:
      groups = sampler(tf.ones([2, 4]), tf.zeros([2, 4]),
                       tf.constant([1, 2], tf.int64))
      out = tf.reduce_sum(groups[0].per_query.dense_embeddings())
    self.assertIsNotNone(tape.gradient(out, table))

  def test_config_round_trip_and_registry(self):
    model = embed_table()
    for sampler in (
        uniform.UniformSampler(COUNTS, num_negatives=3, logq=True),
        popularity.PopularitySampler(COUNTS, alpha=0.75),
        inverse_popularity.InversePopularitySampler(COUNTS),
        balanced.BalancedSampler(COUNTS, cohort_pmf=[[0.6, 0.2, 0.2],
                                                     [0.2, 0.6, 0.2],
                                                     [0.2, 0.2, 0.6]])):
      config = sampler.get_config()
      clone = type(sampler).from_config(config)
      self.assertEqual(clone.get_config(), config)
      again = helpers.check_config_round_trip(self, sampler)
      self.assertIsNone(again.item_model)  # not config: pass it again
      again.item_model = model
      again(tf.zeros([2, 4]), tf.zeros([2, 4]), tf.constant([1, 2],
                                                            tf.int64))
    ctx = base.SamplerContext(item_counts=COUNTS, item_model=model,
                              options={"num_negatives": 9})
    for name, cls in (("uniform", uniform.UniformSampler),
                      ("popularity", popularity.PopularitySampler),
                      ("inverse_popularity",
                       inverse_popularity.InversePopularitySampler),
                      ("balanced", balanced.BalancedSampler)):
      sampler = base.create_sampler(name, ctx)
      self.assertIsInstance(sampler, cls)
      self.assertEqual(sampler.num_negatives, 9)
    # alpha is popularity's own option; the others refuse it.
    ctx = ctx._replace(options={"num_negatives": 9, "alpha": 0.5})
    self.assertEqual(base.create_sampler("popularity", ctx).alpha, 0.5)
    with self.assertRaisesRegex(ValueError, "no option 'alpha'"):
      base.create_sampler("uniform", ctx)

  def test_item_tower_is_not_tracked_by_the_sampler(self):
    tower = tf.keras.layers.Embedding(N + 1, 4)
    sampler = uniform.UniformSampler(COUNTS, item_model=tower)
    sampler(tf.zeros([2, 4]), tf.zeros([2, 4]), tf.constant([1, 2],
                                                            tf.int64))
    self.assertEmpty(sampler.trainable_weights)
    # The CDF and the step counter of the stateless draws.
    self.assertLen(sampler.non_trainable_weights, 2)


if __name__ == "__main__":
  tf.test.main()
