"""Tests of Catalog, Interactions and Dataset."""

import numpy as np
import pytest

from tfrs_negsamp.data import errors
from tfrs_negsamp.data import ids
from tfrs_negsamp.data import interactions as lib


def test_to_str_ids():
  np.testing.assert_array_equal(ids.to_str_ids([42, 7]), ["42", "7"])
  np.testing.assert_array_equal(ids.to_str_ids([b"a", b"b"]), ["a", "b"])
  np.testing.assert_array_equal(ids.to_str_ids(np.array([3.0])), ["3"])
  with pytest.raises(ValueError):
    ids.to_str_ids([1.5])


def test_sort_unique_ids_numeric_then_lexicographic():
  np.testing.assert_array_equal(
      ids.sort_unique_ids(np.array(["10", "2", "1", "2"])), ["1", "2", "10"])
  np.testing.assert_array_equal(
      ids.sort_unique_ids(np.array(["b", "10", "a", "2"])),
      ["10", "2", "a", "b"])


def test_catalog_sorts_and_keeps_metadata_aligned():
  catalog = lib.Catalog(np.array(["10", "2", "1"]), titles=["ten", "two",
                                                            "one"],
                        genres=[["x"], [], ["y", "z"]])
  np.testing.assert_array_equal(catalog.item_ids, ["1", "2", "10"])
  assert catalog.titles == ["one", "two", "ten"]
  assert catalog.genres == [["y", "z"], [], ["x"]]
  assert catalog.num_items == 3
  np.testing.assert_array_equal(
      catalog.index_of(np.array(["10", "1", "10", "2"])), [2, 0, 2, 1])
  assert catalog.index_of(np.array(["2"])).dtype == np.int64


def test_catalog_errors():
  catalog = lib.Catalog(np.array(["1", "2"]))
  with pytest.raises(KeyError, match="'7'"):
    catalog.index_of(np.array(["1", "7"]))
  with pytest.raises(ValueError, match="not unique"):
    lib.Catalog(np.array(["1", "1"]))
  with pytest.raises(ValueError, match="titles"):
    lib.Catalog(np.array(["1", "2"]), titles=["a"])


def test_interactions_validation_and_accessors():
  inter = lib.Interactions([3, 1, 3], ["b", "a", "a"], [5, 6, 7], "memory")
  assert inter.num_rows == len(inter) == 3
  np.testing.assert_array_equal(inter.user_ids, ["3", "1", "3"])
  np.testing.assert_array_equal(inter.users, ["1", "3"])
  np.testing.assert_array_equal(inter.items, ["a", "b"])
  assert inter.timestamps.dtype == np.int64
  sub = inter.subset(inter.user_ids == "3")
  np.testing.assert_array_equal(sub.item_ids, ["b", "a"])
  assert sub.source == "memory"
  with pytest.raises(ValueError, match="different lengths"):
    lib.Interactions(["1"], ["a", "b"], [1, 2])


def test_item_counts():
  catalog = lib.Catalog(np.array(["a", "b", "c"]))
  inter = lib.Interactions(["1", "2", "1"], ["c", "a", "c"], [1, 2, 3],
                           "memory")
  counts = inter.item_counts(catalog)
  np.testing.assert_array_equal(counts, [1, 0, 2])
  assert counts.dtype == np.int64
  bad = lib.Interactions(["1"], ["zz"], [1], "bad.csv")
  with pytest.raises(errors.DataError, match="bad.csv.*'zz'"):
    bad.item_counts(catalog)


def test_dataset_summary():
  catalog = lib.Catalog(np.array(["a", "b", "c"]))
  train = lib.Interactions(["1", "1", "2"], ["a", "b", "a"], [1, 2, 3])
  test = lib.Interactions(["1", "2"], ["a", "c"], [4, 5])
  dataset = lib.Dataset("tiny", catalog, train, lib.Interactions.empty(),
                        test)
  np.testing.assert_array_equal(dataset.users, ["1", "2"])
  np.testing.assert_array_equal(dataset.item_counts, [2, 1, 0])
  assert dataset.summary() == {
      "name": "tiny", "train_rows": 3, "validation_rows": 0, "test_rows": 2,
      "users": 2, "items": 3, "test_reconsumption": 0.5}
