"""Tests for tfrs_negsamp.evaluation.full_corpus.evaluate_full_corpus."""

import contextlib
import io
import json
import math
import os
import subprocess
import sys

from absl.testing import parameterized
import numpy as np

from tfrs_negsamp.evaluation import cohorts
from tfrs_negsamp.evaluation import full_corpus
from tfrs_negsamp.evaluation.sparse_sets import SparseSets

D2 = 1.0 / math.log2(3.0)  # Discount of rank 2; rank 1 is 1, rank 3 is 0.5.


def _fixed_scores(matrix):
  """A score_fn returning row `u` of `matrix` for user u."""
  matrix = np.asarray(matrix, np.float32)
  return lambda users: matrix[users]


def _evaluate(scores, targets, seen=None, counts=None, **kwargs):
  scores = np.asarray(scores, np.float32)
  counts = np.ones(scores.shape[1]) if counts is None else counts
  seen = None if seen is None else SparseSets.from_lists(seen)
  kwargs.setdefault("progress", False)
  return full_corpus.evaluate_full_corpus(
      _fixed_scores(scores), np.arange(len(targets)),
      SparseSets.from_lists(targets), seen, counts, **kwargs)


def _reference(scores, targets, seen, counts, ks, average, thresholds,
               exclude_seen=True):
  """Loop-based evaluator (sorted() with key (-score, index))."""
  n = scores.shape[1]
  order = sorted(range(n), key=lambda i: (-counts[i], i))
  total, cum, cohort = float(np.sum(counts)), 0.0, {}
  for i in order:
    cohort[i] = (0 if cum < thresholds[0] * total else
                 1 if cum < thresholds[1] * total else 2)
    if counts[i] == 0:
      cohort[i] = 2
    cum += counts[i]
  # sums[group][metric@k] and the number of users / pairs per group.
  groups = ["all", 0, 1, 2]
  sums = {g: {} for g in groups}
  units = {g: 0 for g in groups}
  for u, target_list in enumerate(targets):
    row = scores[u].astype(np.float64).copy()
    if exclude_seen and seen is not None:
      for i in seen[u]:
        if i not in target_list:
          row[i] = -np.inf
    ranking = sorted(range(n), key=lambda i: (-row[i], i))
    rank = {item: r for r, item in enumerate(ranking)}  # 0-based.
    for g in groups:
      rel = sorted({t for t in target_list if g == "all" or cohort[t] == g})
      if not rel:
        continue
      units[g] += 1 if average == "user" else len(rel)
      for k in ks:
        hit_ranks = [rank[t] for t in rel if rank[t] < k]
        dcg = sum(1.0 / math.log2(r + 2) for r in hit_ranks)
        idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(rel), k)))
        if average == "user":
          values = {"hr": float(bool(hit_ranks)),
                    "recall": len(hit_ranks) / len(rel), "ndcg": dcg / idcg}
        else:
          values = {"hr": len(hit_ranks), "recall": len(hit_ranks),
                    "ndcg": dcg}
        for name, value in values.items():
          key = f"{name}@{k}"
          sums[g][key] = sums[g].get(key, 0.0) + value
  return {g: {key: value / units[g] for key, value in sums[g].items()}
          for g in groups if units[g]}


class HandComputedTest(parameterized.TestCase):
  """2 users, 6 items, explicit scores."""

  # User 0 ranking: items 1, 3, 4, 2, 5, 0; target {4} at rank 3.
  # User 1 ranking: items 0, 1, 2, 3, 4, 5; targets {0, 2} at ranks 1 and 3.
  SCORES = [[0.1, 0.9, 0.3, 0.7, 0.5, 0.2],
            [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]]
  TARGETS = [[4], [0, 2]]

  def test_per_user_metrics(self):
    result = _evaluate(self.SCORES, self.TARGETS, ks=(1, 2, 3))
    # HR: user 0 = [0, 0, 1] at K = 1, 2, 3; user 1 = [1, 1, 1].
    self.assertAlmostEqual(result["hr@1"], 0.5)
    self.assertAlmostEqual(result["hr@2"], 0.5)
    self.assertAlmostEqual(result["hr@3"], 1.0)
    # Recall: user 0 = [0, 0, 1]; user 1 = [1/2, 1/2, 2/2].
    self.assertAlmostEqual(result["recall@1"], 0.25)
    self.assertAlmostEqual(result["recall@2"], 0.25)
    self.assertAlmostEqual(result["recall@3"], 1.0)
    # NDCG: user 0 @3 = 1/log2(4) = 0.5, below 0.
    # User 1: @1 = 1/1; @2 = 1 / (1 + 1/log2(3)); @3 = (1 + 0.5) / (1 + D2).
    self.assertAlmostEqual(result["ndcg@1"], 0.5)
    self.assertAlmostEqual(result["ndcg@2"], 0.5 / (1.0 + D2))
    self.assertAlmostEqual(result["ndcg@3"], (0.5 + 1.5 / (1.0 + D2)) / 2)
    self.assertEqual(result["averaging"], "user")
    self.assertEqual(result["num_users"], 2)
    self.assertEqual(result["num_targets"], 3)
    self.assertEqual(result["reconsumption_fraction"], 0.0)

  def test_per_interaction_differs_in_the_expected_way(self):
    per_user = _evaluate(self.SCORES, self.TARGETS, ks=(1, 2, 3))
    result = _evaluate(self.SCORES, self.TARGETS, ks=(1, 2, 3),
                       average="interaction")
    self.assertEqual(result["averaging"], "interaction")
    # Pairs (0, 4) rank 3, (1, 0) rank 1, (1, 2) rank 3: user 1 counts twice.
    # HR@1: 1 hit out of 3 pairs = 1/3, whereas per user it is
    # mean(0, 1) = 1/2 (user 1 counts as a hit with one target of two).
    self.assertAlmostEqual(result["hr@1"], 1.0 / 3.0)
    self.assertAlmostEqual(result["recall@1"], 1.0 / 3.0)
    self.assertLess(result["hr@1"], per_user["hr@1"])
    self.assertAlmostEqual(result["hr@3"], 1.0)
    # NDCG of a pair = 1/log2(rank + 2): (0.5 + 1 + 0.5) / 3.
    self.assertAlmostEqual(result["ndcg@3"], 2.0 / 3.0)
    self.assertAlmostEqual(result["ndcg@2"], 1.0 / 3.0)

  def test_large_ks_cover_the_whole_catalog(self):
    result = _evaluate(self.SCORES, self.TARGETS)  # ks = (10, 50, 100) > N.
    for k in (10, 50, 100):
      self.assertEqual(result[f"hr@{k}"], 1.0)
      self.assertEqual(result[f"recall@{k}"], 1.0)
    self.assertAlmostEqual(result["ndcg@10"], (0.5 + 1.5 / (1.0 + D2)) / 2)
    self.assertEqual(result["coverage@10"], 1.0)


class ExclusionTest(parameterized.TestCase):

  # Ranking before masking: items 0, 1, 3, 2, ...
  SCORES = [[0.9, 0.8, 0.1, 0.7, 0.0, 0.0]] * 2

  def test_seen_item_is_skipped_and_target_moves_up(self):
    # Target 3 at rank 3; masking seen item 0 moves it to rank 2.
    targets, seen = [[3]], [[0]]
    plain = _evaluate(self.SCORES[:1], targets, seen, ks=(2, 3),
                      exclude_seen=False)
    self.assertEqual(plain["hr@2"], 0.0)
    self.assertAlmostEqual(plain["ndcg@3"], 0.5)  # 1/log2(4).
    self.assertFalse(plain["exclude_seen"])
    masked = _evaluate(self.SCORES[:1], targets, seen, ks=(2, 3))
    self.assertEqual(masked["hr@2"], 1.0)
    self.assertAlmostEqual(masked["ndcg@3"], D2)  # 1/log2(3).
    self.assertTrue(masked["exclude_seen"])

  def test_seen_target_is_kept_and_counted_as_reconsumption(self):
    # User 0: target 1 is also seen; item 0 is masked, target 1 is not, so
    # it moves from rank 2 to rank 1. User 1: target 2 not seen.
    result = _evaluate(self.SCORES, [[1], [2]], [[0, 1], [5]], ks=(1,))
    self.assertEqual(result["hr@1"], 0.5)  # User 0 hits, user 1 does not.
    self.assertAlmostEqual(result["reconsumption_fraction"], 0.5)

  def test_everything_seen_leaves_the_targets_on_top(self):
    scores = [[5.0, 4.0, 3.0, 2.0, 1.0, 0.0]]
    result = _evaluate(scores, [[4, 5]], [[0, 1, 2, 3, 4, 5]], ks=(2,))
    self.assertEqual(result["recall@2"], 1.0)
    self.assertEqual(result["ndcg@2"], 1.0)
    self.assertEqual(result["reconsumption_fraction"], 1.0)


class TiesTest(parameterized.TestCase):

  def test_top_k_indices_breaks_ties_by_lower_index(self):
    scores = np.array([[1, 3, 3, 2, 3, 0],
                       [0, 0, 0, 0, 0, 0]], np.float32)
    # Three items tie at 3 across the k = 2 cut: items 1 and 2 win.
    np.testing.assert_array_equal(full_corpus.top_k_indices(scores, 2),
                                  [[1, 2], [0, 1]])
    np.testing.assert_array_equal(full_corpus.top_k_indices(scores, 4),
                                  [[1, 2, 4, 3], [0, 1, 2, 3]])

  @parameterized.parameters(1, 7, 20, 64, 100)
  def test_top_k_matches_stable_argsort(self, k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=(50, 64)).astype(np.float32)
    scores[rng.uniform(size=scores.shape) < 0.2] = -np.inf
    expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    np.testing.assert_array_equal(full_corpus.top_k_indices(scores, k),
                                  expected)

  def test_equal_scores_rank_lower_index_first(self):
    # All scores equal: ranking is 0, 1, 2, ...; target 2 is at rank 3.
    result = _evaluate(np.zeros((1, 5)), [[2]], ks=(2, 3))
    self.assertEqual(result["hr@2"], 0.0)
    self.assertAlmostEqual(result["ndcg@3"], 0.5)

  def test_popularity_baseline(self):
    # counts [5, 7, 5, 7, 1] -> ranking 1, 3, 0, 2, 4 for every user.
    counts = np.array([5, 7, 5, 7, 1])
    score_fn = full_corpus.popularity_scores(counts)
    np.testing.assert_array_equal(score_fn(np.array([4, 2])),
                                  [counts, counts])
    result = full_corpus.evaluate_full_corpus(
        score_fn, np.array([0, 1]), SparseSets.from_lists([[0], [2]]), None,
        counts, ks=(3,), progress=False)
    # User 0: item 0 at rank 3 (0.5); user 1: item 2 at rank 4 (miss).
    self.assertEqual(result["hr@3"], 0.5)
    self.assertAlmostEqual(result["ndcg@3"], 0.25)
    # Everyone's top 3 is {1, 3, 0}: coverage 3/5, median count 7.
    self.assertAlmostEqual(result["coverage@3"], 0.6)
    self.assertEqual(result["median_popularity@3"], 7.0)


class CohortMetricsTest(parameterized.TestCase):

  def test_per_cohort_hand_example(self):
    # counts [50, 30, 10, 5, 3, 2]: head {0}, mid {1}, tail {2, 3, 4, 5}.
    counts = np.array([50, 30, 10, 5, 3, 2])
    # User A ranking 2, 1, 0, 4, 3, 5; targets {0 (head), 2, 3 (tail)}.
    # User B ranking 0, 2, 3, 4, 5, 1; target {1 (mid)} at rank 6.
    scores = [[0.7, 0.8, 0.9, 0.5, 0.6, 0.4],
              [0.9, 0.1, 0.8, 0.7, 0.6, 0.5]]
    result = _evaluate(scores, [[0, 2, 3], [1]], counts=counts, ks=(3, 6))
    head, mid, tail = (result["cohorts"][n] for n in ("head", "mid", "tail"))
    # Head (user A, R = {0} at rank 3): DCG = 0.5, IDCG = 1.
    self.assertEqual(head["hr@3"], 1.0)
    self.assertEqual(head["recall@3"], 1.0)
    self.assertAlmostEqual(head["ndcg@3"], 0.5)
    # Mid (user B, R = {1} at rank 6): nothing in top 3; NDCG@6 = 1/log2(7).
    self.assertEqual(mid["hr@3"], 0.0)
    self.assertEqual(mid["ndcg@3"], 0.0)
    self.assertAlmostEqual(mid["ndcg@6"], 1.0 / math.log2(7.0))
    # Tail (user A, R = {2, 3} at ranks 1 and 5; head hit at rank 3 not
    # counted): @3 recall 1/2, NDCG = 1 / (1 + D2);
    # @6 recall 1, NDCG = (1 + 1/log2(6)) / (1 + D2).
    self.assertEqual(tail["hr@3"], 1.0)
    self.assertAlmostEqual(tail["recall@3"], 0.5)
    self.assertAlmostEqual(tail["ndcg@3"], 1.0 / (1.0 + D2))
    self.assertAlmostEqual(tail["ndcg@6"],
                           (1.0 + 1.0 / math.log2(6.0)) / (1.0 + D2))
    # Sizes.
    self.assertEqual([head["num_items"], mid["num_items"], tail["num_items"]],
                     [1, 1, 4])
    self.assertEqual(
        [head["num_targets"], mid["num_targets"], tail["num_targets"]],
        [1, 1, 2])
    self.assertEqual([head["num_users"], mid["num_users"], tail["num_users"]],
                     [1, 1, 1])
    # Balance at K = 3 (smallest K): HR [1, 0, 1] -> x sorted [0, 1, 1],
    # G = (0 + 0 + 2) / (3 * 2) = 1/3, balance 2/3.
    self.assertEqual(result["diagnostic_k"], 3)
    self.assertAlmostEqual(result["balance"], 2.0 / 3.0, delta=1e-6)
    # NDCG [0.5, 0, t] sorted [0, 0.5, t]: G = 2t / (3 (0.5 + t)).
    t = 1.0 / (1.0 + D2)
    self.assertAlmostEqual(result["balance_ndcg"],
                           1.0 - 2.0 * t / (3.0 * (0.5 + t)), delta=1e-6)
    # Overall user A @3: ranks 1, 3 of R = {0, 2, 3}: recall 2/3,
    # NDCG = 1.5 / (1 + D2 + 0.5); user B: 0.
    self.assertAlmostEqual(result["recall@3"], 1.0 / 3.0)
    self.assertAlmostEqual(result["ndcg@3"], 1.5 / (1.5 + D2) / 2.0)

  def test_cohort_without_targets_reports_zero(self):
    # counts [50, 30, 10, 5, 3, 2]; the only target is tail item 4.
    result = _evaluate(np.zeros((1, 6)), [[4]],
                       counts=np.array([50, 30, 10, 5, 3, 2]), ks=(10,))
    self.assertEqual(result["cohorts"]["head"]["num_targets"], 0)
    self.assertEqual(result["cohorts"]["head"]["num_users"], 0)
    self.assertEqual(result["cohorts"]["head"]["hr@10"], 0.0)
    self.assertEqual(result["cohorts"]["tail"]["hr@10"], 1.0)
    self.assertAlmostEqual(result["balance"], 1.0 / 3.0, delta=1e-6)


class ReferenceAndChunkingTest(parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(42)
    self.num_users, self.num_items = 37, 25
    # Quantized scores: many ties, also at the top-K cut.
    self.scores = rng.integers(0, 5, size=(self.num_users, self.num_items))
    self.scores = self.scores.astype(np.float32)
    self.targets = [rng.choice(self.num_items, rng.integers(0, 5),
                               replace=False).tolist()
                    for _ in range(self.num_users)]
    self.seen = [rng.choice(self.num_items, rng.integers(0, 8),
                            replace=False).tolist()
                 for _ in range(self.num_users)]
    self.counts = rng.integers(0, 30, size=self.num_items)
    self.counts[:3] = 0

  @parameterized.product(average=["user", "interaction"],
                         exclude_seen=[True, False])
  def test_matches_loop_reference(self, average, exclude_seen):
    ks = (1, 5, 10, 30)
    result = _evaluate(self.scores, self.targets, self.seen, self.counts,
                       ks=ks, average=average, exclude_seen=exclude_seen,
                       chunk_size=8)
    expected = _reference(self.scores, self.targets, self.seen, self.counts,
                          ks, average, (1 / 3, 2 / 3), exclude_seen)
    for key, value in expected["all"].items():
      self.assertAlmostEqual(result[key], value, places=12, msg=key)
    for c, name in enumerate(cohorts.COHORT_NAMES):
      for key, value in expected.get(c, {}).items():
        self.assertAlmostEqual(result["cohorts"][name][key], value,
                               places=12, msg=f"{name} {key}")
    has_targets = sum(1 for t in self.targets if t)
    self.assertEqual(result["num_users"], has_targets)
    self.assertEqual(result["num_users_without_targets"],
                     self.num_users - has_targets)
    reconsumed = sum(len(set(t) & set(s))
                     for t, s in zip(self.targets, self.seen))
    self.assertAlmostEqual(result["reconsumption_fraction"],
                           reconsumed / result["num_targets"])

  def test_chunking_gives_identical_results(self):
    results = [
        _evaluate(self.scores, self.targets, self.seen, self.counts,
                  ks=(1, 5, 10), chunk_size=chunk_size)
        for chunk_size in (1, 3, 16, 1000)]
    for result in results[1:]:
      self.assertEqual(result, results[0])

  def test_score_fn_receives_the_right_users(self):
    users = np.array([7, 3, 11, 0, 5, 9, 2])
    targets = SparseSets.from_lists([[1], [2], [], [0], [4], [3], [1]])
    calls = []

    def score_fn(batch):
      calls.append(np.array(batch))
      return np.tile(np.arange(5, dtype=np.float32), (len(batch), 1))

    full_corpus.evaluate_full_corpus(score_fn, users, targets, None,
                                     np.ones(5), ks=(2,), chunk_size=2,
                                     progress=False)
    # User 11 has no target and is not scored; the rest in order, by 2s.
    self.assertEqual([c.tolist() for c in calls],
                     [[7, 3], [0, 5], [9, 2]])
    self.assertTrue(all(np.issubdtype(c.dtype, np.integer) for c in calls))

  def test_score_fn_output_is_not_modified(self):
    scores = np.array([[3.0, 2.0, 1.0]], np.float32)
    full_corpus.evaluate_full_corpus(
        lambda users: scores, np.array([0]), SparseSets.from_lists([[2]]),
        SparseSets.from_lists([[0]]), np.ones(3), ks=(1,), progress=False)
    np.testing.assert_array_equal(scores, [[3.0, 2.0, 1.0]])


class OutputAndSpeedTest(parameterized.TestCase):

  def test_result_is_json_serialisable_with_all_keys(self):
    rng = np.random.default_rng(0)
    result = _evaluate(rng.normal(size=(4, 120)), [[1], [2, 3], [4], [99]],
                       [[5], [], [6, 7], [1]], rng.integers(0, 9, size=120))
    decoded = json.loads(json.dumps(result))
    self.assertEqual(decoded, result)
    for name in ("recall", "hr", "ndcg"):
      for k in (10, 50, 100):
        self.assertIn(f"{name}@{k}", result)
        for cohort in cohorts.COHORT_NAMES:
          self.assertIn(f"{name}@{k}", result["cohorts"][cohort])
    for key in ("balance", "balance_ndcg", "num_users", "num_targets",
                "reconsumption_fraction", "averaging", "coverage@10",
                "median_popularity@10"):
      self.assertIn(key, result)
    self.assertEqual(
        sum(result["cohorts"][c]["num_items"] for c in cohorts.COHORT_NAMES),
        120)

  def test_progress_line_goes_to_stderr(self):
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
      _evaluate(np.zeros((3, 4)), [[0], [1], [2]], ks=(1,), chunk_size=2,
                progress=True)
    self.assertIn("3/3 users", stderr.getvalue())
    self.assertTrue(stderr.getvalue().endswith("\n"))

  def test_ml100k_size_runs_in_one_pass(self):
    # Speed is measured by `python -m trainers.bench_eval`, not here.
    rng = np.random.default_rng(0)
    num_users, num_items = 943, 1682
    user_emb = rng.normal(size=(num_users, 32)).astype(np.float32)
    item_emb = rng.normal(size=(num_items, 32)).astype(np.float32)
    targets = SparseSets.from_pairs(np.repeat(np.arange(num_users), 10),
                                    rng.integers(0, num_items, 9430),
                                    num_users)
    seen = SparseSets.from_pairs(np.repeat(np.arange(num_users), 90),
                                 rng.integers(0, num_items, 84870),
                                 num_users)
    result = full_corpus.evaluate_full_corpus(
        lambda users: user_emb[users] @ item_emb.T, np.arange(num_users),
        targets, seen, rng.integers(0, 500, num_items), progress=False)
    self.assertEqual(result["num_users"], num_users)

  def test_module_does_not_import_tensorflow(self):
    root = os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))))
    code = ("import sys, tfrs_negsamp.evaluation; "
            "sys.exit('tensorflow' in sys.modules)")
    completed = subprocess.run([sys.executable, "-c", code], cwd=root,
                               check=False)
    self.assertEqual(completed.returncode, 0)


class InputValidationTest(parameterized.TestCase):

  def _call(self, score_fn=None, users=(0, 1), targets=((0,), (1,)),
            seen=None, counts=(1, 1, 1), **kwargs):
    score_fn = score_fn or (lambda u: np.zeros((len(u), 3), np.float32))
    seen = None if seen is None else SparseSets.from_lists(seen)
    return full_corpus.evaluate_full_corpus(
        score_fn, np.array(users), SparseSets.from_lists(targets), seen,
        np.array(counts), progress=False, **kwargs)

  def test_score_fn_wrong_shape(self):
    with self.assertRaisesRegex(ValueError,
                                r"score_fn returned shape \(2, 4\)"):
      self._call(score_fn=lambda u: np.zeros((len(u), 4)))
    with self.assertRaisesRegex(ValueError, "score_fn returned shape"):
      self._call(score_fn=lambda u: np.zeros(3))

  def test_score_fn_nan(self):
    with self.assertRaisesRegex(ValueError, "NaN"):
      self._call(score_fn=lambda u: np.full((len(u), 3), np.nan))

  def test_targets_length_mismatch(self):
    with self.assertRaisesRegex(ValueError,
                                "targets has 3 rows but users has 2"):
      self._call(targets=((0,), (1,), (2,)))

  def test_seen_length_mismatch(self):
    with self.assertRaisesRegex(ValueError, "seen has 1 rows but users has 2"):
      self._call(seen=((0,),))

  def test_item_outside_catalog(self):
    with self.assertRaisesRegex(ValueError, "targets holds item 3, outside"):
      self._call(targets=((0,), (3,)))

  @parameterized.parameters([(0, 10)], [(-5,)], [()])
  def test_ks_not_positive(self, ks):
    with self.assertRaisesRegex(ValueError, "ks must"):
      self._call(ks=ks)

  @parameterized.parameters([(0.7, 0.3)], [(0.0, 0.5)], [(0.5, 1.5)])
  def test_thresholds_not_increasing_in_unit_interval(self, thresholds):
    with self.assertRaisesRegex(ValueError, "thresholds must be increasing"):
      self._call(cohort_thresholds=thresholds)

  def test_other_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "item_counts must hold"):
      self._call(counts=(1, -1, 1))
    with self.assertRaisesRegex(ValueError, "average must be one of"):
      self._call(average="query")
    with self.assertRaisesRegex(ValueError, "chunk_size"):
      self._call(chunk_size=0)
    with self.assertRaisesRegex(ValueError, "diagnostic_k"):
      self._call(ks=(5, 20), diagnostic_k=10)
    with self.assertRaisesRegex(ValueError, "no user to evaluate"):
      self._call(targets=((), ()))
    with self.assertRaisesRegex(ValueError, "users must hold integer"):
      self._call(users=(0.0, 1.0))


class QualityMetricNamesTest(parameterized.TestCase):
  """`quality_metric_names` lists keys the evaluation really returns."""

  @parameterized.parameters(((10, 50, 100), None), ((1, 3), None),
                            ((1, 3), 3))
  def test_every_name_is_a_float_of_the_result(self, ks, diagnostic_k):
    scores = np.arange(12, dtype=np.float32).reshape(3, 4)
    result = _evaluate(scores, [[0], [1, 2], [3]], ks=ks,
                       diagnostic_k=diagnostic_k)
    names = full_corpus.quality_metric_names(ks, diagnostic_k)
    self.assertLen(names, 3 * len(ks) + 3)
    for name in names:
      self.assertIsInstance(result[name], float, name)
    # The rest of the result's top-level numbers are counts or diagnostics.
    others = {k for k, v in result.items() if isinstance(v, float)}
    self.assertEqual(others - set(names),
                     {"reconsumption_fraction",
                      "median_popularity@%d" % (diagnostic_k or ks[0]
                                                if 10 not in ks else 10)})
