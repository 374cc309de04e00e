"""The group-threshold top-k and the threaded blocks equal a stable argsort.

Issue 17: `full_corpus._top_k_threshold` (wide rows) and the threaded
`top_k_indices` must return exactly `np.argsort(-s, kind="stable")[:, :k]`,
ties at the cut included, and the evaluation built on them (flat-index
exclusion, `np.isin` hits) the same metrics as a per-user reference.
"""

from unittest import mock

import numpy as np
import tensorflow as tf

from tfrs_negsamp.evaluation import full_corpus
from tfrs_negsamp.evaluation.sparse_sets import SparseSets


def _stable_top_k(scores, k):
  return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _tied_scores(seed, rows, n, levels=4):
  """Integer scores (many ties), some -inf, one all -inf and one flat row."""
  rng = np.random.default_rng(seed)
  scores = rng.integers(0, levels, size=(rows, n)).astype(np.float32)
  scores[rng.random(scores.shape) < 0.2] = -np.inf
  scores[1] = -np.inf
  scores[2] = 3.0
  return scores


class ThresholdTopKTest(tf.test.TestCase):

  def test_threshold_block_equals_stable_argsort(self):
    for seed, (n, k) in enumerate([(400, 5), (1000, 7), (97, 1),
                                   (2000, 25)]):
      scores = _tied_scores(seed, 9, n)
      self.assertGreaterEqual(n, full_corpus.GROUPS_PER_K * k)
      self.assertAllEqual(full_corpus._top_k_threshold(scores, k),
                          _stable_top_k(scores, k), msg=f"n={n} k={k}")

  def test_continuous_scores_and_top_score_ties(self):
    rng = np.random.default_rng(3)
    scores = rng.standard_normal((6, 5000)).astype(np.float32)
    scores[0, [10, 4000, 4999, 2]] = 9.0  # 4-way tie at the top
    scores[1, 4990:] = 8.0  # ties in the tail columns (not in a group)
    for k in (1, 3, 12, 60):
      self.assertAllEqual(full_corpus._top_k_threshold(scores, k),
                          _stable_top_k(scores, k), msg=f"k={k}")

  def test_top_k_indices_paths_and_threads(self):
    scores = _tied_scores(5, 40, 900)
    for threads in (1, 2, 3):
      for k in (1, 5, 11, 200, 899, 900):
        # 6-row blocks: several blocks, both the threshold (k <= 11) and
        # the partition (k = 200, 899) paths.
        with mock.patch.object(full_corpus, "CACHE_ELEMENTS", 6 * 900):
          got = full_corpus.top_k_indices(scores, k, threads=threads)
        self.assertAllEqual(got, _stable_top_k(scores, k),
                            msg=f"threads={threads} k={k}")

  def test_non_contiguous_input(self):
    scores = _tied_scores(6, 30, 800)[:, ::2]  # a strided view
    self.assertFalse(scores.flags.c_contiguous)
    self.assertAllEqual(full_corpus.top_k_indices(scores, 3),
                        _stable_top_k(scores, 3))

  def test_nan_raises_on_every_path(self):
    for n, k in ((900, 2), (900, 300), (900, 900)):
      scores = _tied_scores(7, 4, n)
      scores[3, n - 1] = np.nan  # last column: the threshold path's tail
      with self.assertRaisesRegex(ValueError, "NaN"):
        full_corpus.top_k_indices(scores, k)


class EvaluationWithThresholdPathTest(tf.test.TestCase):

  def test_matches_per_user_reference(self):
    rng = np.random.default_rng(11)
    num_users, num_items, k = 23, 1200, 10
    users = rng.integers(-1, 2, size=(num_users, 3)).astype(np.float32)
    items = rng.integers(-1, 2, size=(num_items, 3)).astype(np.float32)
    targets = [list(rng.choice(num_items, rng.integers(1, 4), replace=False))
               for _ in range(num_users)]
    seen = [list(rng.choice(num_items, rng.integers(0, 300), replace=False))
            for _ in range(num_users)]
    seen[0] = seen[0] + targets[0]  # reconsumed targets stay rankable
    counts = rng.integers(0, 9, size=num_items)
    hr = []
    reconsumed = 0
    for u in range(num_users):
      scores = users[u] @ items.T
      mask = np.isin(np.arange(num_items), seen[u]) & ~np.isin(
          np.arange(num_items), targets[u])
      scores[mask] = -np.inf
      top = np.argsort(-scores, kind="stable")[:k]
      hr.append(float(np.isin(top, targets[u]).any()))
      reconsumed += int(np.isin(targets[u], seen[u]).sum())
    for chunk_size in (1, 5, 1024):
      result = full_corpus.evaluate_full_corpus(
          full_corpus.DotProductScores(users, items), np.arange(num_users),
          SparseSets.from_lists(targets), SparseSets.from_lists(seen),
          counts, ks=(k,), chunk_size=chunk_size, progress=False)
      self.assertAllClose(result["hr@10"], np.mean(hr))
      self.assertAllClose(result["reconsumption_fraction"],
                          reconsumed / sum(len(t) for t in targets))


if __name__ == "__main__":
  tf.test.main()
