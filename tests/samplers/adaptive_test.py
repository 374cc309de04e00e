"""ANS / AMNS pools as in the reference code: the user's own items excluded.

The reference pool (apple/ml-negative-sampling, `sampler.py`) is the batch
positives minus the row's user's own items, drawn without replacement;
`num_adaptive_samples` of them (the top by score) are kept.
"""

import numpy as np
import tensorflow as tf

from tfrs_negsamp import masking
from tfrs_negsamp.samplers import adaptive
from tfrs_negsamp.samplers import adaptive_mixed
from tfrs_negsamp.samplers import base
from tfrs_negsamp.tasks import retrieval

COUNTS = np.array([0, 40, 35, 30, 25, 20, 12, 8, 5, 3, 0], np.float64)
N = len(COUNTS) - 1
# Eight rows; row 1 and row 5 share positive 2; rows 0 and 1 belong to users
# who consumed several of the batch's items.
IDS = np.array([1, 2, 3, 4, 5, 2, 6, 7], np.int64)
HISTORY = np.array([[1, 3, 4, 9, -1],
                    [2, 5, 6, 7, 8],
                    [3, -1, -1, -1, -1],
                    [4, 1, 2, 3, 5],  # every other item but 6 and 7
                    [5, -1, -1, -1, -1],
                    [2, -1, -1, -1, -1],
                    [6, 1, -1, -1, -1],
                    [7, -1, -1, -1, -1]], np.int64)


def old_batch_pool_mask(num_queries, num_columns, pool_size, seed):
  """The package's previous pool (before the reference exclusion)."""
  keys = tf.random.stateless_uniform([num_queries, num_columns], seed)
  diag = tf.cast(tf.eye(num_queries, num_columns), tf.bool)
  keys = tf.where(diag, -1.0, keys)
  k = tf.minimum(pool_size, num_columns - 1)
  kth = tf.reduce_min(tf.math.top_k(keys, k=tf.maximum(k, 1)).values, axis=1,
                      keepdims=True)
  return tf.logical_or(diag, tf.logical_and(keys >= kth, k > 0))


def embeddings(rows, dim=3, seed=0):
  rng = np.random.RandomState(seed)
  return (rng.normal(size=(rows, dim)).astype(np.float32),
          rng.normal(size=(rows, dim)).astype(np.float32))


class AdaptivePoolTest(tf.test.TestCase):

  def test_pool_excludes_the_users_items_and_the_positive(self):
    q, c = embeddings(8)
    consumed = masking.history_consumed(tf.constant(HISTORY))
    sampler = adaptive.AdaptiveSampler(pool_size=3, num_hard_negatives=2)
    tf.random.set_seed(1)
    for _ in range(20):
      group = sampler(tf.constant(q), tf.constant(c), tf.constant(IDS),
                      training=True, consumed=consumed)[0]
      mask = group.score_mask.numpy()
      for i in range(8):
        self.assertTrue(mask[i, i])
        allowed = [j for j in range(8) if j != i and IDS[j] != IDS[i]
                   and IDS[j] not in HISTORY[i]]
        pool = [j for j in range(8) if mask[i, j] and j != i]
        self.assertContainsSubset(pool, allowed)
        self.assertLen(pool, min(3, len(allowed)))
      # Row 3 may only pool columns 6 and 7; row 1 only 0, 2 and 3.
      self.assertAllEqual(np.flatnonzero(mask[3]), [3, 6, 7])
      self.assertAllEqual(np.flatnonzero(mask[1]), [0, 1, 2, 3])

  def test_selected_negatives_are_never_consumed(self):
    q, c = embeddings(8, seed=1)
    consumed = masking.history_consumed(tf.constant(HISTORY))
    sampler = adaptive.AdaptiveSampler(pool_size=4, num_hard_negatives=2)
    task = retrieval.Retrieval()
    tf.random.set_seed(2)
    s = q @ c.T
    for _ in range(10):
      group = sampler(tf.constant(q), tf.constant(c), tf.constant(IDS),
                      training=True, consumed=consumed)[0]
      logits, labels = task.group_logits(tf.constant(q), tf.constant(c),
                                         tf.constant(IDS), group)
      logits, labels = logits.numpy(), labels.numpy()
      for i in range(8):
        kept = logits[i][(logits[i] > -1e30) & (labels[i] == 0)]
        allowed = [j for j in range(8) if j != i and IDS[j] != IDS[i]
                   and IDS[j] not in HISTORY[i]]
        for value in kept:  # every kept negative is an allowed column
          self.assertTrue(np.any(np.isclose(s[i, allowed], value,
                                            atol=1e-5)))

  def test_pool_is_uniform_over_the_allowed_columns(self):
    # Row 0 (P = 1) may pool columns 1, 4, 5, 6, 7 (ids 2, 5, 2, 6, 7):
    # each column with probability 1/5, so item 2 with 2/5 (its copies).
    q, c = embeddings(8)
    consumed = masking.history_consumed(tf.constant(HISTORY))
    tf.random.set_seed(3)
    draws = 4000
    allowed = adaptive.own_items_allowed(tf.constant(IDS), tf.constant(IDS),
                                         consumed)
    draw = tf.function(lambda: tf.map_fn(
        lambda i: adaptive.batch_pool_mask(8, 8, 1, tf.stack([3, i]),
                                           allowed=allowed)[0],
        tf.range(draws), fn_output_signature=tf.bool))
    counts = draw().numpy().sum(axis=0).astype(np.float64)
    self.assertEqual(counts[0], draws)  # the diagonal
    counts[0] = 0
    expected = np.zeros(8)
    expected[[1, 4, 5, 6, 7]] = draws / 5
    self.assertEqual(counts[[2, 3]].sum(), 0)
    chi2 = np.sum((counts[[1, 4, 5, 6, 7]] - expected[[1, 4, 5, 6, 7]]) ** 2
                  / expected[[1, 4, 5, 6, 7]])
    self.assertLess(chi2, 18.47)  # df = 4, p = 0.001

  def test_without_masking_or_duplicates_the_pool_is_unchanged(self):
    # Distinct ids and no `consumed`: exactly the previous pool (same
    # seed), so runs with masking off reproduce the earlier numbers.
    ids = tf.constant(np.arange(1, 9), tf.int64)
    for pool in (1, 3, 7, 20):
      old = old_batch_pool_mask(8, 8, pool, [4, pool]).numpy()
      new = adaptive.batch_pool_mask(
          8, 8, pool, [4, pool],
          allowed=adaptive.own_items_allowed(ids, ids)).numpy()
      self.assertAllEqual(new, old)

  def test_defaults_pool_and_k(self):
    context = base.SamplerContext(item_counts=COUNTS)
    ans = base.create_sampler("adaptive", context)
    self.assertEqual((ans.pool_size, ans.num_hard_negatives), (100, 20))
    amns = base.create_sampler("adaptive_mixed", context)
    # AMNS is warmed up by default (4 epochs of in-batch + log Q).
    # 178 interactions, a global batch of 128: 2 calls an epoch.
    self.assertEqual(amns.warmup_steps, 4 * 2)
    amns = amns.sampler
    self.assertEqual((amns.pool_size, amns.num_uniform,
                      amns.num_hard_negatives), (10, 100, 20))


class AdaptiveMixedPoolTest(tf.test.TestCase):

  def test_consumed_items_never_pooled_in_batch_or_uniform(self):
    q, c = embeddings(8, seed=2)
    table = np.random.RandomState(5).normal(size=(N + 1, 3)).astype(
        np.float32)
    consumed = masking.history_consumed(tf.constant(HISTORY))
    sampler = adaptive_mixed.AdaptiveMixedSampler(
        COUNTS, pool_size=2, num_uniform=6, num_hard_negatives=3,
        item_model=lambda i: tf.gather(table, i))
    tf.random.set_seed(6)
    for _ in range(20):
      group = sampler(tf.constant(q), tf.constant(c), tf.constant(IDS),
                      training=True, consumed=consumed)[0]
      mask = group.score_mask.numpy()
      extra = group.extra_ids.numpy()
      all_ids = np.concatenate([IDS, extra])
      for i in range(8):
        self.assertTrue(mask[i, i])
        for j in np.flatnonzero(mask[i]):
          if j != i:
            self.assertNotIn(all_ids[j], HISTORY[i])
            if j < 8:
              self.assertNotEqual(all_ids[j], IDS[i])
        # Every unconsumed uniform column stays in the pool.
        free = [8 + m for m in range(6) if extra[m] not in HISTORY[i]]
        self.assertTrue(mask[i, free].all())
        pool = [j for j in range(8) if mask[i, j] and j != i]
        allowed = [j for j in range(8) if j != i and IDS[j] != IDS[i]
                   and IDS[j] not in HISTORY[i]]
        self.assertLen(pool, min(2, len(allowed)))

  def test_without_consumed_uniform_columns_are_all_kept(self):
    q, c = embeddings(8, seed=3)
    table = np.zeros((N + 1, 3), np.float32)
    sampler = adaptive_mixed.AdaptiveMixedSampler(
        COUNTS, pool_size=2, num_uniform=4,
        item_model=lambda i: tf.gather(table, i))
    group = sampler(tf.constant(q), tf.constant(c), tf.constant(IDS))[0]
    self.assertTrue(group.score_mask.numpy()[:, 8:].all())


if __name__ == "__main__":
  tf.test.main()
