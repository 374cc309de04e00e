"""The O(rows) pooled draw of the synthetic generator (issue 17).

Above `DENSE_CELLS` users x items the generator draws each user's items by
sampling-importance-resampling (`_sample_items_pooled`); below it the exact
dense draw is unchanged, so the small data sets other tests use keep their
exact content.
"""

from unittest import mock

import numpy as np

from tests.data import synthetic_test
from tfrs_negsamp.data import synthetic

_SMALL = dict(num_users=300, num_items=200, interactions_per_user=20)


def _pooled(**kwargs):
  with mock.patch.object(synthetic, "DENSE_CELLS", 0):
    return synthetic.make_synthetic(**kwargs)


def test_small_sizes_keep_the_dense_draw():
  with mock.patch.object(synthetic, "_sample_items_pooled",
                         side_effect=AssertionError("pooled path used")):
    inter, _ = synthetic.make_synthetic(**_SMALL)
  assert inter.num_rows > 0
  assert 300 * 200 <= synthetic.DENSE_CELLS


def test_large_sizes_use_the_pooled_draw():
  with mock.patch.object(synthetic, "DENSE_CELLS", 300 * 200 - 1), \
      mock.patch.object(synthetic, "_sample_items",
                        side_effect=AssertionError("dense path used")):
    inter, _ = synthetic.make_synthetic(**_SMALL)
  assert inter.num_rows > 0


def test_pooled_is_deterministic():
  a, _ = _pooled(seed=3, **_SMALL)
  b, _ = _pooled(seed=3, **_SMALL)
  np.testing.assert_array_equal(a.user_ids, b.user_ids)
  np.testing.assert_array_equal(a.item_ids, b.item_ids)
  np.testing.assert_array_equal(a.timestamps, b.timestamps)
  c, _ = _pooled(seed=4, **_SMALL)
  assert (a.num_rows != c.num_rows
          or not np.array_equal(a.item_ids, c.item_ids))


def test_pooled_rows_are_distinct_pairs_with_poisson_counts():
  inter, _ = _pooled(seed=1, **_SMALL)
  users = inter.user_ids.astype(np.int64)
  items = inter.item_ids.astype(np.int64)
  assert np.unique(users * 1000 + items).size == inter.num_rows
  # Same counts as the dense draw would request: Poisson(20) clipped to
  # [3, 200], drawn right after the factors and the popularity ranks.
  rng = np.random.default_rng(1)
  synthetic._draw_factors(rng, 300, 200, 16)
  rng.permutation(200)
  expected = np.clip(rng.poisson(20, 300), 3, 200)
  got = np.bincount(users, minlength=300)
  assert np.all(got <= expected)
  assert got.sum() >= 0.98 * expected.sum()
  assert got.min() >= 3


def test_pooled_keeps_preference_and_popularity():
  inter, catalog = _pooled(seed=7, **_SMALL)
  assert synthetic_test.preference_gap(inter, seed=7) > 0.1
  counts = np.sort(inter.item_counts(catalog))[::-1]
  assert counts[:20].sum() / counts.sum() > 0.2  # long tail (uniform: 0.1)
