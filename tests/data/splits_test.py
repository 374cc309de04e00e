"""Tests of leave-last-out and temporal splits."""

import numpy as np
import pytest

from tfrs_negsamp.data import errors
from tfrs_negsamp.data import interactions as lib
from tfrs_negsamp.data import movielens
from tfrs_negsamp.data import splits


def _rows(inter):
  return sorted(zip(inter.user_ids.tolist(), inter.item_ids.tolist(),
                    inter.timestamps.tolist()))


def _tiny():
  # User "a": a tie at t=30 between x3 (row 2) and x4 (row 5): x4 is later.
  # User "b": 3 rows. User "c": a single row (stays in train).
  inter = lib.Interactions(
      user_ids=["a", "b", "a", "b", "a", "a", "c", "b"],
      item_ids=["x1", "y1", "x3", "y2", "x2", "x4", "z1", "y3"],
      timestamps=[10, 5, 30, 6, 20, 30, 1, 7], source="tiny table")
  catalog = lib.Catalog(np.array(["x1", "x2", "x3", "x4", "y1", "y2", "y3",
                                  "z1"]))
  return inter, catalog


def test_leave_last_out_exact_rows():
  inter, catalog = _tiny()
  dataset = splits.leave_last_out(inter, catalog)
  assert _rows(dataset.test) == [("a", "x4", 30), ("b", "y3", 7)]
  assert _rows(dataset.train) == [
      ("a", "x1", 10), ("a", "x2", 20), ("a", "x3", 30), ("b", "y1", 5),
      ("b", "y2", 6), ("c", "z1", 1)]
  assert dataset.validation.num_rows == 0
  assert dataset.all_interactions is inter
  assert dataset.name == "tiny table"
  # Splits keep the original row order.
  np.testing.assert_array_equal(dataset.test.item_ids, ["x4", "y3"])


def test_leave_last_out_with_validation():
  inter, catalog = _tiny()
  dataset = splits.leave_last_out(inter, catalog, num_validation=1)
  assert _rows(dataset.test) == [("a", "x4", 30), ("b", "y3", 7)]
  assert _rows(dataset.validation) == [("a", "x3", 30), ("b", "y2", 6)]
  assert _rows(dataset.train) == [
      ("a", "x1", 10), ("a", "x2", 20), ("b", "y1", 5), ("c", "z1", 1)]


def test_validation_needs_three_rows():
  inter = lib.Interactions(["u", "u", "v", "v", "v"],
                           ["1", "2", "1", "2", "3"], [1, 2, 1, 2, 3], "t")
  dataset = splits.leave_last_out(inter, lib.Catalog(inter.items),
                                  num_validation=1)
  assert _rows(dataset.test) == [("v", "3", 3)]
  assert _rows(dataset.validation) == [("v", "2", 2)]
  assert _rows(dataset.train) == [("u", "1", 1), ("u", "2", 2),
                                  ("v", "1", 1)]


def test_leave_last_out_fails_when_no_user_qualifies():
  inter = lib.Interactions(["u", "v"], ["1", "1"], [1, 2], "two users")
  with pytest.raises(errors.DataError,
                     match="two users.*every user has fewer than 2"):
    splits.leave_last_out(inter, lib.Catalog(inter.items))
  with pytest.raises(errors.DataError, match="fewer than 3"):
    splits.leave_last_out(
        lib.Interactions(["u", "u"], ["1", "2"], [1, 2], "pair"),
        lib.Catalog(np.array(["1", "2"])), num_validation=1)


def test_temporal_split_exact_rows():
  inter = lib.Interactions(
      user_ids=list("abcdefghij"), item_ids=[str(i) for i in range(10)],
      timestamps=[9, 0, 8, 1, 7, 2, 6, 3, 5, 4], source="t")
  dataset = splits.temporal_split(inter, lib.Catalog(inter.items),
                                  test_fraction=0.2, validation_fraction=0.1)
  assert sorted(dataset.test.timestamps.tolist()) == [8, 9]
  assert dataset.validation.timestamps.tolist() == [7]
  assert sorted(dataset.train.timestamps.tolist()) == list(range(7))
  np.testing.assert_array_equal(dataset.test.user_ids, ["a", "c"])


def test_temporal_split_ties_follow_row_order():
  inter = lib.Interactions(list("abcd"), list("wxyz"), [5, 5, 5, 5], "t")
  dataset = splits.temporal_split(inter, lib.Catalog(inter.items),
                                  test_fraction=0.25, validation_fraction=0)
  np.testing.assert_array_equal(dataset.test.user_ids, ["d"])
  assert dataset.validation.num_rows == 0


@pytest.mark.parametrize("kwargs", [
    dict(test_fraction=0.0), dict(test_fraction=1.0),
    dict(validation_fraction=-0.1),
    dict(test_fraction=0.5, validation_fraction=0.5)])
def test_temporal_split_validates_fractions(kwargs):
  inter, catalog = _tiny()
  with pytest.raises(ValueError):
    splits.temporal_split(inter, catalog, **kwargs)


def test_split_dispatch():
  inter, catalog = _tiny()
  assert splits.split(inter, catalog).test.num_rows == 2
  assert splits.split(inter, catalog, method="temporal",
                      test_fraction=0.25).test.num_rows == 2
  with pytest.raises(ValueError, match="leave_last_out, temporal"):
    splits.split(inter, catalog, method="random")


def test_ml100k_leave_last_out(ml100k_path):
  inter, catalog = movielens.load_movielens_100k(ml100k_path)
  dataset = splits.leave_last_out(inter, catalog, num_validation=1)
  assert dataset.test.num_rows == 943
  assert dataset.validation.num_rows == 943
  assert dataset.train.num_rows == 100000 - 2 * 943
  assert dataset.users.size == 943
  # Each test row is its user's latest, and no row is in two splits.
  latest = {}
  for u, t in zip(inter.user_ids.tolist(), inter.timestamps.tolist()):
    latest[u] = max(latest.get(u, t), t)
  for u, t in zip(dataset.test.user_ids.tolist(),
                  dataset.test.timestamps.tolist()):
    assert t == latest[u]
  train = set(_rows(dataset.train))
  assert not train & set(_rows(dataset.test))
  assert not train & set(_rows(dataset.validation))
  summary = dataset.summary()
  assert summary["test_rows"] == 943 and summary["items"] == 1682
  assert summary["test_reconsumption"] == 0.0  # ML-100K has no repeats.


def test_temporal_split_keeps_one_row_per_positive_fraction():
  inter, catalog = _tiny()
  dataset = splits.temporal_split(inter, catalog)  # 5% of 8 rows each.
  assert dataset.test.timestamps.tolist() == [30]
  assert dataset.validation.timestamps.tolist() == [30]
  assert dataset.train.num_rows == 6
  with pytest.raises(errors.DataError, match="tiny table: 8 rows"):
    splits.temporal_split(inter, catalog, test_fraction=0.5,
                          validation_fraction=0.45)
