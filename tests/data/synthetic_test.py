"""Tests of the synthetic data generator."""


import numpy as np

from tfrs_negsamp.data import synthetic

_SMALL = dict(num_users=300, num_items=200, interactions_per_user=20)


def test_same_seed_gives_identical_data():
  a, cat_a = synthetic.make_synthetic(seed=3, **_SMALL)
  b, cat_b = synthetic.make_synthetic(seed=3, **_SMALL)
  np.testing.assert_array_equal(a.user_ids, b.user_ids)
  np.testing.assert_array_equal(a.item_ids, b.item_ids)
  np.testing.assert_array_equal(a.timestamps, b.timestamps)
  assert cat_a.titles == cat_b.titles
  assert cat_a.genres == cat_b.genres


def test_different_seed_gives_different_data():
  a, cat_a = synthetic.make_synthetic(seed=1, **_SMALL)
  b, cat_b = synthetic.make_synthetic(seed=2, **_SMALL)
  assert (a.num_rows != b.num_rows
          or not np.array_equal(a.item_ids, b.item_ids))
  assert cat_a.titles != cat_b.titles


def test_ids_catalog_and_timestamps():
  inter, catalog = synthetic.make_synthetic(**_SMALL)
  np.testing.assert_array_equal(catalog.item_ids,
                                np.arange(200).astype(str))
  assert inter.user_ids.dtype.kind == "U"
  assert set(inter.user_ids.tolist()) <= {str(u) for u in range(300)}
  assert inter.timestamps.dtype == np.int64
  assert np.all(np.diff(inter.timestamps) >= 0)  # Rows in time order.
  # Per user: distinct items, strictly increasing timestamps.
  order = np.lexsort((inter.timestamps, inter.user_ids.astype(int)))
  users = inter.user_ids[order]
  same_user = users[1:] == users[:-1]
  assert np.all(np.diff(inter.timestamps[order])[same_user] > 0)
  pairs = np.char.add(np.char.add(inter.user_ids, "/"), inter.item_ids)
  assert np.unique(pairs).size == inter.num_rows
  assert len(catalog.titles) == len(catalog.genres) == 200
  for title, genres in zip(catalog.titles, catalog.genres):
    tokens = title.split()
    assert tokens[0].startswith("c") and len(tokens) == 4
    assert all(t.startswith("w") for t in tokens[1:])
    assert 1 <= len(genres) <= 2
    assert all(g in {"g%d" % i for i in range(10)} for g in genres)


def test_every_user_has_at_least_three_interactions():
  inter, _ = synthetic.make_synthetic(
      num_users=500, num_items=100, interactions_per_user=2, seed=5)
  _, counts = np.unique(inter.user_ids, return_counts=True)
  assert counts.size == 500
  assert counts.min() >= 3


def test_popularity_is_long_tailed():
  inter, catalog = synthetic.make_synthetic()
  counts = np.sort(inter.item_counts(catalog))[::-1]
  top_share = counts[:catalog.num_items // 10].sum() / counts.sum()
  assert top_share > 0.3
  # A uniform-popularity control is much flatter.
  flat, flat_catalog = synthetic.make_synthetic(
      zipf_exponent=0.0, preference_strength=0.0, **_SMALL)
  flat_counts = np.sort(flat.item_counts(flat_catalog))[::-1]
  assert flat_counts[:20].sum() / flat_counts.sum() < 0.15


def preference_gap(inter, seed: int, num_users: int = 300,
                   num_items: int = 200) -> float:
  """Mean planted affinity of the chosen items minus that of random items."""
  user_f, item_f = synthetic.planted_factors(
      num_users=num_users, num_items=num_items, seed=seed)
  users = inter.user_ids.astype(int)
  items = inter.item_ids.astype(int)
  chosen = np.mean(np.sum(user_f[users] * item_f[items], axis=1))
  rng = np.random.default_rng(0)
  random_items = rng.integers(0, num_items, inter.num_rows)
  baseline = np.mean(np.sum(user_f[users] * item_f[random_items], axis=1))
  return chosen - baseline


def test_planted_preference_shows():
  inter, _ = synthetic.make_synthetic(seed=7, **_SMALL)
  assert preference_gap(inter, seed=7) > 0.1


def test_titles_carry_the_cluster_of_the_factors():
  _, catalog = synthetic.make_synthetic(seed=4, **_SMALL)
  _, item_f = synthetic.planted_factors(num_users=300, num_items=200, seed=4)
  clusters = [int(t.split()[0][1:]) for t in catalog.titles]
  np.testing.assert_array_equal(clusters, np.argmax(item_f, axis=1))


def test_defaults_shape():
  inter, catalog = synthetic.make_synthetic()
  assert catalog.num_items == 1000
  assert inter.users.size == 2000
  assert 30 * 2000 < inter.num_rows < 50 * 2000
