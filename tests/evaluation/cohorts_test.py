"""Tests for tfrs_negsamp.evaluation.cohorts."""

from absl.testing import parameterized
import numpy as np

from tfrs_negsamp.evaluation import cohorts

HEAD, MID, TAIL = 0, 1, 2


class PopularityCohortsTest(parameterized.TestCase):

  def test_design_doc_example(self):
    # T = 100, sorted counts [50, 30, 10, 5, 3, 2],
    # cum_before = [0, 50, 80, 90, 95, 98]:
    # 0 < 33.3 -> head; 50 < 66.7 -> mid; 80, 90, 95, 98 -> tail.
    result = cohorts.popularity_cohorts(np.array([50, 30, 10, 5, 3, 2]))
    np.testing.assert_array_equal(result, [HEAD, MID, TAIL, TAIL, TAIL, TAIL])
    self.assertEqual(result.dtype, np.int8)

  def test_unsorted_counts_follow_their_items(self):
    # Same counts shuffled: item 3 holds 50, item 0 holds 30.
    counts = np.array([30, 3, 10, 50, 2, 5])
    np.testing.assert_array_equal(cohorts.popularity_cohorts(counts),
                                  [MID, TAIL, TAIL, HEAD, TAIL, TAIL])

  def test_equal_counts_lower_index_first(self):
    # T = 60, every count 10: cum_before = [0, 10, 20, 30, 40, 50];
    # < 20 -> head {0, 1}; < 40 -> mid {2, 3}; tail {4, 5}.
    np.testing.assert_array_equal(cohorts.popularity_cohorts([10] * 6),
                                  [HEAD, HEAD, MID, MID, TAIL, TAIL])

  def test_dominant_item_leaves_mid_empty(self):
    # Sorted: item 4 (70), item 2 (20), items 1, 3 (5), item 0 (0); T = 100,
    # cum_before = [0, 70, 90, 95, 100]: only item 4 is below 33.3, and
    # nothing else is below 66.7, so mid is empty.
    np.testing.assert_array_equal(cohorts.popularity_cohorts([0, 5, 20, 5, 70]),
                                  [TAIL, TAIL, TAIL, TAIL, HEAD])

  def test_zero_count_items_are_tail(self):
    # T = 4, thresholds (0.5, 0.99): cum_before of item 2 (count 1) is 3,
    # which is < 3.96, so it is mid; both zero-count items are tail.
    np.testing.assert_array_equal(
        cohorts.popularity_cohorts([3, 0, 1, 0], thresholds=(0.5, 0.99)),
        [HEAD, TAIL, MID, TAIL])
    np.testing.assert_array_equal(cohorts.popularity_cohorts([0, 0, 0]),
                                  [TAIL, TAIL, TAIL])

  def test_custom_thresholds_and_float_counts(self):
    # T = 10, thresholds (0.1, 0.5): cum_before [0, 4, 7, 9] for sorted
    # [4, 3, 2, 1]: 0 < 1 -> head; 4 < 5 -> mid; 7, 9 -> tail.
    np.testing.assert_array_equal(
        cohorts.popularity_cohorts([1.0, 2.0, 3.0, 4.0], thresholds=(0.1, 0.5)),
        [TAIL, TAIL, MID, HEAD])

  @parameterized.parameters([(0.6, 0.4)], [(0.5, 0.5)], [(0.0, 0.5)],
                            [(0.3, 1.0)], [(0.3,)], [(0.1, 0.2, 0.3)])
  def test_bad_thresholds_raise(self, thresholds):
    with self.assertRaisesRegex(ValueError, "thresholds"):
      cohorts.popularity_cohorts([3, 2, 1], thresholds=thresholds)

  def test_bad_counts_raise(self):
    with self.assertRaisesRegex(ValueError, "non-negative"):
      cohorts.popularity_cohorts([3, -1, 1])
    with self.assertRaisesRegex(ValueError, "1-D"):
      cohorts.popularity_cohorts([[3, 1]])


class BalanceTest(parameterized.TestCase):

  def test_equal_values_give_one(self):
    self.assertAlmostEqual(cohorts.balance([0.2, 0.2, 0.2]), 1.0, delta=1e-6)
    # All zero: x = 1e-7 everywhere, Gini 0, balance 1.
    self.assertAlmostEqual(cohorts.balance([0.0, 0.0, 0.0]), 1.0, delta=1e-6)

  def test_all_in_one_cohort_gives_one_third(self):
    # x = [e, e, 0.5]: G = (2 * 0.5 - 2e) / (3 * 0.5) ~ 2/3.
    self.assertAlmostEqual(cohorts.balance([0.0, 0.5, 0.0]), 1.0 / 3.0,
                           delta=1e-6)

  def test_hand_computed_gini(self):
    # Sorted [0.1, 0.2, 0.3], weights 2i - n - 1 = [-2, 0, 2]:
    # G = (-0.2 + 0.6) / (3 * 0.6) = 2/9, balance = 7/9.
    self.assertAlmostEqual(cohorts.gini([0.3, 0.1, 0.2]), 2.0 / 9.0,
                           delta=1e-6)
    self.assertAlmostEqual(cohorts.balance([0.1, 0.2, 0.3]), 7.0 / 9.0,
                           delta=1e-6)

  def test_balance_bounds_on_random_values(self):
    rng = np.random.default_rng(0)
    for values in rng.uniform(size=(200, 3)):
      b = cohorts.balance(values)
      self.assertBetween(b, 1.0 / 3.0 - 1e-9, 1.0 + 1e-9)
