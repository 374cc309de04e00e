"""The fast evaluation path equals a straightforward reference (issue 17).

Fast path: `DotProductScores` (one reused buffer, masked in place) and
`top_k_indices` on cache-sized row blocks. Reference: per user, float32
scores, seen items set to -inf except targets, a stable descending argsort.
"""

from unittest import mock

import numpy as np
import tensorflow as tf

from tfrs_negsamp import protocol
from tfrs_negsamp.evaluation import full_corpus
from tfrs_negsamp.evaluation.sparse_sets import SparseSets

KS = (1, 5, 10)


def _problem(seed, num_users=37, num_items=90, dim=4):
  """Integer-valued embeddings (many tied scores), random sets.

  User 0 has seen every item, user 1 every item but its target.
  """
  rng = np.random.default_rng(seed)
  users = rng.integers(-2, 3, size=(num_users, dim)).astype(np.float32)
  items = rng.integers(-2, 3, size=(num_items, dim)).astype(np.float32)
  targets = [list(rng.choice(num_items, rng.integers(1, 4), replace=False))
             for _ in range(num_users)]
  seen = [list(rng.choice(num_items, rng.integers(0, 30), replace=False))
          for _ in range(num_users)]
  seen[0] = list(range(num_items))
  seen[1] = [i for i in range(num_items) if i not in targets[1]]
  counts = rng.integers(0, 50, size=num_items)
  return users, items, targets, seen, counts


def _reference(users, items, targets, seen, ks):
  """Per-user HR / Recall / NDCG averages from a stable argsort."""
  hr, recall, ndcg = ({k: [] for k in ks} for _ in range(3))
  for u in range(len(users)):
    scores = (users[u:u + 1] @ items.T)[0]
    target_set = set(int(t) for t in targets[u])
    for i in seen[u]:
      if int(i) not in target_set:
        scores[i] = -np.inf
    ranking = np.argsort(-scores, kind="stable")
    for k in ks:
      hits = np.array([int(i) in target_set for i in ranking[:k]])
      hr[k].append(float(hits.any()))
      recall[k].append(hits.sum() / len(target_set))
      dcg = np.sum(hits / np.log2(np.arange(2, hits.size + 2)))
      idcg = np.sum(1 / np.log2(np.arange(2, min(len(target_set), k) + 2)))
      ndcg[k].append(dcg / idcg)
  return {f"{name}@{k}": float(np.mean(values[k]))
          for name, values in (("hr", hr), ("recall", recall),
                               ("ndcg", ndcg)) for k in ks}


class TopKIndicesTest(tf.test.TestCase):

  def test_equals_stable_argsort_with_ties_and_inf(self):
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=(50, 300)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[3] = -np.inf  # every item masked
    scores[4, :] = 1.0  # all tied
    # Several cache blocks of 7 rows.
    with mock.patch.object(full_corpus, "CACHE_ELEMENTS", 7 * 300):
      for k in (1, 5, 17, 299, 300, 400):
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        self.assertAllEqual(full_corpus.top_k_indices(scores, k), expected,
                            msg="k=%d" % k)


class DotProductScoresTest(tf.test.TestCase):

  def test_scores_and_buffer_reuse(self):
    users, items, _, _, _ = _problem(0)
    score_fn = full_corpus.DotProductScores(users, items)
    self.assertTrue(score_fn.writable_output)
    first = score_fn(np.arange(10)).copy()
    self.assertAllEqual(first, users[:10] @ items.T)
    second = score_fn(np.array([5, 2]))
    self.assertAllEqual(second, users[[5, 2]] @ items.T)


class FastPathEquivalenceTest(tf.test.TestCase):

  def test_matches_reference_and_copy_path(self):
    for seed in range(3):
      users, items, targets, seen, counts = _problem(seed)
      target_sets = SparseSets.from_lists(targets)
      seen_sets = SparseSets.from_lists(seen)
      expected = _reference(users, items, targets, seen, KS)
      # A plain callable goes through the copying path.
      copy_path = full_corpus.evaluate_full_corpus(
          lambda rows: users[rows] @ items.T, np.arange(len(users)),
          target_sets, seen_sets, counts, ks=KS, progress=False)
      for chunk_size in (1, 6, 1024):
        with mock.patch.object(full_corpus, "CACHE_ELEMENTS", 4 * 90):
          fast = full_corpus.evaluate_full_corpus(
              full_corpus.DotProductScores(users, items),
              np.arange(len(users)), target_sets, seen_sets, counts,
              ks=KS, chunk_size=chunk_size, progress=False)
        self.assertEqual(fast, copy_path)
        for key, value in expected.items():
          self.assertAllClose(fast[key], value, msg=key)

  def test_evaluate_embeddings_uses_fast_path(self):
    users, items, targets, seen, counts = _problem(1)
    sets = protocol.EvaluationSets(
        user_ids=np.arange(len(users)).astype(str),
        targets=SparseSets.from_lists(targets),
        seen=SparseSets.from_lists(seen), item_counts=counts,
        num_skipped_users=0)
    metrics = protocol.evaluate_embeddings(users, items, sets, ks=KS,
                                           progress=False)
    expected = _reference(users, items, targets, seen, KS)
    for key, value in expected.items():
      self.assertAllClose(metrics[key], value, msg=key)

  def test_nan_scores_rejected(self):
    users, items, targets, seen, counts = _problem(2)
    users[3, 0] = np.nan
    with self.assertRaisesRegex(ValueError, "NaN"):
      full_corpus.evaluate_full_corpus(
          full_corpus.DotProductScores(users, items), np.arange(len(users)),
          SparseSets.from_lists(targets), SparseSets.from_lists(seen),
          counts, ks=KS, progress=False)


if __name__ == "__main__":
  tf.test.main()
