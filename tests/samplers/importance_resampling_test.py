"""Shared resampling mechanics: draw law, split independence, count trick."""

from unittest import mock

import numpy as np
import tensorflow as tf

from tests.samplers import goodness_of_fit as gof
from tfrs_negsamp.samplers import importance_resampling as ir


def empirical(indices: np.ndarray, num_cols: int) -> np.ndarray:
  return np.stack([np.bincount(row, minlength=num_cols) for row in indices])


def check_law(test, counts, probs, tv_tol):
  """Chi-square (alpha = 1e-3) and total-variation checks, per row."""
  n = counts.sum(axis=1, keepdims=True)
  for row in range(counts.shape[0]):
    support = probs[row] > 0
    test.assertAllEqual(counts[row][~support], np.zeros((~support).sum()))
    expected = n[row] * probs[row][support]
    chi2 = np.sum((counts[row][support] - expected) ** 2 / expected)
    test.assertLess(chi2, gof.chi2_quantile(int(support.sum()) - 1),
                    msg="row %d" % row)
    tv = 0.5 * np.abs(counts[row] / n[row] - probs[row]).sum()
    test.assertLess(tv, tv_tol, msg="row %d" % row)


def softmax_masked(logits, valid):
  z = np.where(valid, logits, -np.inf)
  z = np.exp(z - z.max(axis=1, keepdims=True))
  return z / z.sum(axis=1, keepdims=True)


def np_counts(logits, valid, uniforms):
  """NumPy counts of the inverse-CDF draws of the docstring, in float32.

  The prefix sums are `ir.prefix_sums` (tested on their own), for the same
  rounding.
  """
  masked = np.where(valid, logits, np.float32(-np.inf))
  row_max = masked.max(axis=1, keepdims=True)
  row_max = np.where(np.isfinite(row_max), row_max, np.float32(0))
  cdf = ir.prefix_sums(np.exp(masked - row_max)).numpy()
  total = cdf[:, -1:]
  targets = np.minimum(uniforms * total, np.nextafter(total, np.float32(0)))
  counts = np.zeros(logits.shape, np.float32)
  for r in range(len(cdf)):
    if total[r, 0] > 0:
      idx = np.searchsorted(cdf[r], targets[r], side="right")
      counts[r] = np.bincount(idx, minlength=logits.shape[1])
  return counts


def systematic_uniforms(rows, k, seed):
  """Stratified `(m + v) / K`, one `v` per row: uniform marginals and the
  expected counts of iid draws, but not their joint law."""
  v = np.random.RandomState(seed).rand(rows, 1)
  return ((np.arange(k)[None, :] + v) / k).astype(np.float32)


class ResampleTest(tf.test.TestCase):

  def test_draws_follow_the_softmax_of_the_valid_columns(self):
    # n = 20000 draws per row over <= 5 valid columns. E[TV] <=
    # 0.5 * sqrt((m - 1) / n) = 0.0071 for m = 5; 0.025 is 3.5x that bound,
    # so a correct sampler essentially never fails (and the seed is fixed).
    logits = np.array([[0.0, 1.0, 2.0, -1.0, 0.5],
                       [3.0, -2.0, 0.0, 0.0, 1.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0]], np.float32)
    valid = np.array([[1, 1, 1, 1, 1], [1, 0, 1, 1, 1], [0, 1, 0, 1, 1]],
                     bool)
    indices, drawn = ir.resample_with_replacement(
        logits, valid, 20000, tf.constant([7, 1], tf.int64))
    self.assertTrue(np.all(drawn.numpy()))
    counts = empirical(indices.numpy(), 5)
    check_law(self, counts, softmax_masked(logits, valid), tv_tol=0.025)

  def test_a_row_without_valid_columns_draws_nothing(self):
    logits = tf.zeros([2, 3])
    valid = tf.constant([[False] * 3, [True, False, False]])
    indices, drawn = ir.resample_with_replacement(
        logits, valid, 4, tf.constant([0, 0], tf.int64))
    self.assertAllEqual(drawn.numpy(), [[False] * 4, [True] * 4])
    self.assertAllEqual(indices.numpy()[1], [0] * 4)
    counts = ir.draw_counts(indices, drawn, 3)
    self.assertAllEqual(counts.numpy(), [[0, 0, 0], [4, 0, 0]])

  def test_draws_of_a_row_do_not_depend_on_the_batch_split(self):
    # Rows 2..3 of a 4-row global batch draw the same as in the full batch.
    rng = np.random.RandomState(0)
    logits = rng.randn(4, 6).astype(np.float32)
    valid = rng.rand(4, 6) > 0.2
    seed = ir.step_seed(3, tf.constant(5, tf.int64), ir.STREAM_BATCH)
    full, _ = ir.resample_with_replacement(logits, valid, 9, seed)
    part, _ = ir.resample_with_replacement(logits[2:], valid[2:], 9, seed,
                                           row_start=2, num_rows=4)
    self.assertAllEqual(part, full[2:])
    other, _ = ir.resample_with_replacement(
        logits, valid, 9,
        ir.step_seed(3, tf.constant(6, tf.int64), ir.STREAM_BATCH))
    self.assertNotAllEqual(other, full)

  def test_prefix_sums_are_monotone_flat_at_zeros_and_row_local(self):
    # Non-negative rows with zeros: the blocked sums are within float32
    # rounding of the exact sums, never decrease along a row, stay equal
    # across a zero entry, and a row's sums do not depend on the rows
    # computed with it (any split of the batch gives the same bits).
    rs = np.random.RandomState(2)
    for n in (1, 5, 32, 33, 300, 1024):
      x = (rs.exponential(size=(600, n)) * (rs.rand(600, n) > 0.3)
           * np.exp(rs.normal(scale=6.0, size=(600, 1)))).astype(np.float32)
      got = ir.prefix_sums(x).numpy()
      exact = np.cumsum(x.astype(np.float64), axis=1)
      self.assertAllClose(got, exact, rtol=1e-5, atol=0)
      self.assertTrue(np.all(np.diff(got, axis=1) >= 0), msg="n=%d" % n)
      zero = x[:, 1:] == 0
      self.assertAllEqual(got[:, 1:][zero], got[:, :-1][zero])
      for start, rows in ((0, 1), (3, 17), (100, 256), (599, 1)):
        self.assertAllEqual(ir.prefix_sums(x[start:start + rows]),
                            got[start:start + rows],
                            msg="n=%d rows %d:%d" % (n, start, start + rows))

  def test_sorted_uniforms_are_the_order_statistics_of_iid_uniforms(self):
    # Rows of K = 3 sorted uniforms: sorted, in [0, 1], and the joint law
    # of iid U[0, 1): the numbers of a row's values in the 4 quarters of
    # [0, 1) are Multinomial(3, 1/4 each). Stratified uniforms (the same
    # marginals) are rejected by the same test, and a row does not depend
    # on the rows around it.
    seed = tf.constant([3, 9], tf.int64)
    u = ir.sorted_uniforms(3, seed, num_rows=20000).numpy()
    self.assertTrue(np.all(np.diff(u, axis=1) >= 0))
    self.assertTrue(np.all((u >= 0) & (u <= 1)))
    quarters = lambda x: np.stack(  # noqa: E731
        [np.bincount(np.minimum(r * 4, 3).astype(int), minlength=4)
         for r in x])
    gof.check_fit(self, quarters(u), [0.25] * 4, 3, msg="sorted uniforms")
    stat, df = gof.outcome_chi2(
        quarters(systematic_uniforms(20000, 3, 0)), [0.25] * 4, 3)
    self.assertGreater(stat, gof.chi2_quantile(df))
    part = ir.sorted_uniforms(3, seed, row_start=7, num_rows=20000, batch=5)
    self.assertAllEqual(part, u[7:12])

  def test_counts_follow_the_multinomial_of_the_valid_softmax(self):
    # Many rows with the same logits, each with its own uniforms: the count
    # vectors are Multinomial(K, softmax over the valid columns), tested on
    # whole outcomes (exact multinomial probabilities, chi-square at 1e-3),
    # for both counting paths (K > C / 2: ranks of the CDF; K <= C / 2:
    # counted draws). The same counts are rejected against a law with
    # 0.03 of mass moved, and systematic draws with the right means fail.
    rows = 20000
    for logits, valid, k in (
        ([0.0, np.log(0.6), np.log(0.4)], [True, True, True], 4),
        ([1.0, 9.0, 0.5, 0.0, -0.5, 2.0], [True, False, True, True, True,
                                            False], 2)):
      logits = np.asarray(logits, np.float32)
      valid = np.asarray(valid)
      probs = softmax_masked(logits[None], valid[None])[0]
      tile = lambda x: tf.constant(np.tile(x, (rows, 1)))  # noqa: E731
      counts = ir.resample_counts(tile(logits), tile(valid), k,
                                  tf.constant([5, k], tf.int64)).numpy()
      path = "columns" if 2 * k > len(logits) else "draws"
      gof.check_fit(self, counts, probs, k, wrong_probs=gof.perturbed(probs),
                    msg="counted by " + path)
      systematic = np_counts(np.tile(logits, (rows, 1)),
                             np.tile(valid, (rows, 1)),
                             systematic_uniforms(rows, k, 1))
      stat, df = gof.outcome_chi2(systematic, probs, k)
      self.assertGreater(stat, gof.chi2_quantile(df), msg=path)

  def test_poisson_counts_keep_columns_independently_with_the_right_law(
      self):
    # Many rows with the same logits: column j is kept with probability
    # min(1, K w_j), independently of the others (chi-square over the 2^C
    # keep patterns against the product law), a kept column weighs
    # max(1, K w_j), so the mean weight is K w_j (the multinomial's mean
    # count); invalid columns are never kept; a wrong law is rejected.
    rows, k = 40000, 2
    logits = np.asarray([0.0, np.log(0.5), np.log(2.5), 3.0, -1.0],
                        np.float32)
    valid = np.asarray([True, True, True, False, True])
    probs = softmax_masked(logits[None], valid[None])[0]
    expected = k * probs
    keep = np.minimum(1.0, expected)
    tile = lambda x: tf.constant(np.tile(x, (rows, 1)))  # noqa: E731
    weights = ir.poisson_counts(tile(logits), tile(valid), k,
                                tf.constant([4, 2], tf.int64)).numpy()
    kept = weights > 0
    self.assertFalse(kept[:, ~valid].any())
    self.assertAllClose(weights[kept], np.broadcast_to(
        np.maximum(expected, 1.0), weights.shape)[kept])
    self.assertAllClose(weights.mean(0), expected, atol=0.02)

    def pattern_chi2(law):
      codes = kept[:, valid].astype(int) @ (1 << np.arange(valid.sum()))
      observed = np.bincount(codes, minlength=1 << valid.sum())
      bits = (np.arange(1 << valid.sum())[:, None]
              >> np.arange(valid.sum())) & 1
      p = np.prod(np.where(bits == 1, law, 1 - law), axis=1)
      support = p > 0
      self.assertEqual(observed[~support].sum(), 0)
      e = rows * p[support]
      return np.sum((observed[support] - e) ** 2 / e), support.sum() - 1

    stat, df = pattern_chi2(keep[valid])
    self.assertLess(stat, gof.chi2_quantile(df))
    wrong = keep[valid].copy()
    wrong[wrong < 1] += 0.03
    stat, df = pattern_chi2(np.minimum(wrong, 1.0))
    self.assertGreater(stat, gof.chi2_quantile(df))

  def test_poisson_counts_of_a_row_do_not_depend_on_the_batch_split(self):
    rng = np.random.RandomState(1)
    logits = rng.randn(4, 6).astype(np.float32)
    valid = rng.rand(4, 6) > 0.2
    valid[3] = False  # no valid column: keeps nothing
    seed = ir.step_seed(3, tf.constant(5, tf.int64), ir.STREAM_BATCH)
    full = ir.poisson_counts(logits, valid, 3, seed)
    part = ir.poisson_counts(logits[2:], valid[2:], 3, seed, row_start=2,
                             num_rows=4)
    self.assertAllEqual(part, full[2:])
    self.assertAllEqual(full[3], np.zeros(6))
    self.assertAllEqual(
        ir.column_weights("poisson", logits, valid, 3, seed), full)
    self.assertAllEqual(
        ir.column_weights("multinomial", logits, valid, 3, seed),
        ir.resample_counts(logits, valid, 3, seed))
    with self.assertRaisesRegex(ValueError, "resampling must be one of"):
      ir.column_weights("stratified", logits, valid, 3, seed)

  def test_counts_are_those_of_the_draws_for_any_path_and_blocks(self):
    # Both counting paths, any number of row blocks, the listed draws of
    # resample_with_replacement and a NumPy reference of the inverse-CDF
    # rule give the same counts from the same sorted uniforms.
    rs = np.random.RandomState(5)
    seed = tf.constant([7, 11], tf.int64)
    for rows, cols, k in ((9, 7, 5), (64, 33, 40), (5, 1, 3), (12, 20, 3)):
      logits = rs.normal(scale=8.0, size=(rows, cols)).astype(np.float32)
      valid = rs.rand(rows, cols) > 0.4
      valid[1] = False  # a row without any valid column
      uniforms = ir.sorted_uniforms(k, seed, row_start=2,
                                    num_rows=rows + 4, batch=rows).numpy()
      want = np_counts(logits, valid, uniforms)
      self.assertAllEqual(want.sum(axis=1),
                          np.where(valid.any(axis=1), k, 0))
      lv = (tf.constant(logits), tf.constant(valid))
      for blocks in (1, 2, 3):
        with mock.patch.object(ir, "ROW_BLOCKS", blocks), \
            mock.patch.object(ir, "MIN_BLOCK_ENTRIES", 0):
          got = tf.function(lambda l, v: ir.resample_counts(
              l, v, k, seed, row_start=2, num_rows=rows + 4))(*lv)
          indices, drawn = tf.function(
              lambda l, v: ir.resample_with_replacement(
                  l, v, k, seed, row_start=2, num_rows=rows + 4))(*lv)
        self.assertAllEqual(got, want, msg="blocks=%d" % blocks)
        self.assertAllEqual(ir.draw_counts(indices, drawn, cols), want)
      tu = tf.constant(uniforms)
      self.assertAllEqual(ir._counts_by_columns(*lv, tu), want)
      self.assertAllEqual(ir._counts_by_draws(*lv, tu), want)

  def test_count_offsets_are_the_count_trick(self):
    indices = tf.constant([[1, 1, 2], [0, 0, 0]], tf.int64)
    drawn = tf.constant([[True, True, True], [True, True, False]])
    counts = ir.draw_counts(indices, drawn, 3)
    self.assertAllEqual(counts, [[0, 2, 1], [2, 0, 0]])
    offset, mask = ir.count_offsets(
        counts, keep=tf.cast(tf.eye(2, 3), tf.bool))
    self.assertAllClose(offset, [[0, np.log(2), 0], [np.log(2), 0, 0]])
    self.assertAllEqual(mask, [[True, True, True], [True, True, False]])
    # sum over draws of exp(s) == sum_j exp(s_j + log n_j) on kept columns.
    s = np.array([0.3, -1.0, 2.0])
    explicit = np.log(np.exp(s[1]) * 2 + np.exp(s[2]))
    trick = np.log(np.sum(np.exp(s + offset.numpy()[0])[[1, 2]]))
    self.assertAllClose(trick, explicit)

  def test_step_seed_streams_differ_and_are_validated(self):
    step = tf.constant(4, tf.int64)
    seeds = {tuple(ir.step_seed(1, step, s).numpy())
             for s in range(ir.NUM_STREAMS)}
    self.assertLen(seeds, ir.NUM_STREAMS)
    with self.assertRaisesRegex(ValueError, "stream must be in"):
      ir.step_seed(1, step, ir.NUM_STREAMS)

  def test_encode_unique_equals_encoding_every_id(self):
    table = tf.Variable(np.arange(12, dtype=np.float32).reshape(4, 3))
    calls = []

    def item_model(ids):
      calls.append(int(tf.size(ids)))
      return tf.square(tf.gather(table, ids))

    ids = tf.constant([3, 1, 3, 3, 0], tf.int64)
    with tf.GradientTape(persistent=True) as tape:
      once = ir.encode_unique(item_model, ids)
      every = tf.square(tf.gather(table, ids))
      loss_once = tf.reduce_sum(once * [[1.], [2.], [3.], [4.], [5.]])
      loss_every = tf.reduce_sum(every * [[1.], [2.], [3.], [4.], [5.]])
    self.assertEqual(calls, [3])
    self.assertAllClose(once, every)
    self.assertAllClose(tf.convert_to_tensor(tape.gradient(loss_once, table)),
                        tf.convert_to_tensor(tape.gradient(loss_every,
                                                           table)))


if __name__ == "__main__":
  tf.test.main()
