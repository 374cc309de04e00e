"""Tests for tfrs_negsamp.evaluation.metrics (hand-computed rankings)."""

from absl.testing import parameterized
import numpy as np

from tfrs_negsamp.evaluation import metrics

# Discount of rank r: 1 / log2(r + 1).
D2 = 1.0 / np.log2(3.0)  # rank 2: 0.6309...
D3 = 0.5  # rank 3: 1 / log2(4)


class MetricsTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    # Row 0: one relevant item, at rank 3.
    # Row 1: two relevant items, at ranks 1 and 4.
    # Row 2: three relevant items, none in the top 4.
    self.hits = np.array([[0, 0, 1, 0],
                          [1, 0, 0, 1],
                          [0, 0, 0, 0]], bool)
    self.num_relevant = np.array([1, 2, 3])

  def test_dcg_discounts_and_ideal_dcg(self):
    np.testing.assert_allclose(metrics.dcg_discounts(3), [1.0, D2, D3])
    # IDCG@3 for |R_q| = 0, 1, 2, 5: sums of the first min(|R_q|, 3).
    np.testing.assert_allclose(
        metrics.ideal_dcg(np.array([0, 1, 2, 5]), 3),
        [0.0, 1.0, 1.0 + D2, 1.0 + D2 + D3])

  def test_hit_rate(self):
    # HR@2: no row has a hit in ranks 1-2 except row 1.
    np.testing.assert_array_equal(metrics.hit_rate_at_k(self.hits, 2),
                                  [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(metrics.hit_rate_at_k(self.hits, 3),
                                  [1.0, 1.0, 0.0])

  def test_recall(self):
    # Recall@3 = hits in top 3 / |R_q| = [1/1, 1/2, 0/3];
    # Recall@4 = [1, 2/2, 0].
    np.testing.assert_allclose(
        metrics.recall_at_k(self.hits, self.num_relevant, 3), [1.0, 0.5, 0.0])
    np.testing.assert_allclose(
        metrics.recall_at_k(self.hits, self.num_relevant, 4), [1.0, 1.0, 0.0])

  def test_truncated_recall(self):
    # |R_q| = 5 with 2 hits in the top 3: 2/5 plain, 2/min(5, 3) truncated.
    hits = np.array([[1, 0, 1, 0]], bool)
    np.testing.assert_allclose(metrics.recall_at_k(hits, [5], 3), [0.4])
    np.testing.assert_allclose(
        metrics.recall_at_k(hits, [5], 3, truncated=True), [2.0 / 3.0])

  def test_ndcg(self):
    # Row 0: target at rank 3 -> DCG = 1/log2(4) = 0.5, IDCG = 1 -> 0.5.
    # Row 1 @4: DCG = 1 + 1/log2(5), IDCG = 1 + 1/log2(3).
    # Row 1 @3: DCG = 1, IDCG = 1 + 1/log2(3).
    np.testing.assert_allclose(
        metrics.ndcg_at_k(self.hits, self.num_relevant, 4),
        [0.5, (1.0 + 1.0 / np.log2(5.0)) / (1.0 + D2), 0.0])
    np.testing.assert_allclose(
        metrics.ndcg_at_k(self.hits, self.num_relevant, 3),
        [0.5, 1.0 / (1.0 + D2), 0.0])
    # A perfect ranking has NDCG 1.
    np.testing.assert_allclose(
        metrics.ndcg_at_k(np.array([[1, 1, 0]], bool), [2], 3), [1.0])

  def test_k_beyond_ranking_length_uses_whole_ranking(self):
    counts, dcg = metrics.hits_and_dcg_at_ks(self.hits, [2, 100])
    np.testing.assert_array_equal(counts, [[0, 1], [1, 2], [0, 0]])
    np.testing.assert_allclose(
        dcg, [[0, D3], [1, 1 + 1 / np.log2(5.0)], [0, 0]])

  def test_average_per_user_and_per_interaction(self):
    ks = (1, 3)
    counts, dcg = metrics.hits_and_dcg_at_ks(self.hits, ks)
    per_user = metrics.average_metrics(counts, dcg, self.num_relevant, ks,
                                       "user")
    # Users: HR@3 = mean(1, 1, 0); Recall@3 = mean(1, 1/2, 0);
    # NDCG@3 = mean(0.5, 1/(1 + D2), 0).
    self.assertAlmostEqual(per_user["hr@3"], 2.0 / 3.0)
    self.assertAlmostEqual(per_user["recall@3"], 0.5)
    self.assertAlmostEqual(per_user["ndcg@3"], (0.5 + 1 / (1 + D2)) / 3)
    self.assertAlmostEqual(per_user["hr@1"], 1.0 / 3.0)
    per_pair = metrics.average_metrics(counts, dcg, self.num_relevant, ks,
                                       "interaction")
    # 6 (user, target) pairs; 2 ranked within 3 (ranks 3 and 1):
    # HR@3 = Recall@3 = 2/6, NDCG@3 = (1/log2(4) + 1/log2(2)) / 6.
    self.assertAlmostEqual(per_pair["hr@3"], 2.0 / 6.0)
    self.assertAlmostEqual(per_pair["recall@3"], 2.0 / 6.0)
    self.assertAlmostEqual(per_pair["ndcg@3"], 1.5 / 6.0)
    self.assertAlmostEqual(per_pair["hr@1"], 1.0 / 6.0)

  def test_rows_without_relevant_items_are_ignored(self):
    counts, dcg = metrics.hits_and_dcg_at_ks(
        np.array([[1, 0], [0, 0]], bool), [2])
    result = metrics.average_metrics(counts, dcg, [1, 0], [2], "user")
    self.assertEqual(result["hr@2"], 1.0)
    empty = metrics.average_metrics(counts, dcg, [0, 0], [2], "user")
    self.assertEqual(empty, {"hr@2": 0.0, "recall@2": 0.0, "ndcg@2": 0.0})

  @parameterized.parameters([()], [(0, 10)], [(-1,)], [(2.5,)], [(True,)])
  def test_check_ks_rejects_non_positive(self, ks):
    with self.assertRaisesRegex(ValueError, "ks must"):
      metrics.check_ks(ks)

  def test_check_ks_sorts_and_deduplicates(self):
    self.assertEqual(metrics.check_ks([100, 10, 50, 10]), (10, 50, 100))

  def test_unknown_average_raises(self):
    with self.assertRaisesRegex(ValueError, "average must be one of"):
      metrics.average_metrics(np.zeros((1, 1)), np.zeros((1, 1)), [1], [1],
                              "query")
