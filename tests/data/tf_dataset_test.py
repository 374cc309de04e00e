"""Tests of the tf.data conversion."""

import numpy as np
import tensorflow as tf

from tfrs_negsamp.data import interactions as lib
from tfrs_negsamp.data import tf_dataset


def _tiny():
  catalog = lib.Catalog(np.array(["1", "2", "3"]),
                        titles=["One", "Two", "Three"])
  inter = lib.Interactions(["7", "8", "7", "9", "8"],
                           ["2", "3", "1", "2", "1"], [1, 2, 3, 4, 5], "t")
  return inter, catalog


def test_element_spec_and_values():
  inter, catalog = _tiny()
  ds = tf_dataset.to_tf_dataset(inter, catalog, with_features=True)
  assert ds.element_spec == {
      "user_id": tf.TensorSpec([], tf.string),
      "item_id": tf.TensorSpec([], tf.string),
      "item_title": tf.TensorSpec([], tf.string)}
  rows = list(ds.as_numpy_iterator())
  assert rows[0] == {"user_id": b"7", "item_id": b"2", "item_title": b"Two"}
  assert [r["item_title"] for r in rows] == [b"Two", b"Three", b"One",
                                             b"Two", b"One"]


def test_without_features_or_titles():
  inter, _ = _tiny()
  ds = tf_dataset.to_tf_dataset(inter)
  assert set(ds.element_spec) == {"user_id", "item_id"}
  titled = tf_dataset.to_tf_dataset(inter, with_features=True)
  assert {r["item_title"] for r in titled.as_numpy_iterator()} == {b""}


def test_batching_and_drop_remainder():
  inter, _ = _tiny()
  batches = list(tf_dataset.to_tf_dataset(inter, batch_size=2))
  assert [int(b["user_id"].shape[0]) for b in batches] == [2, 2, 1]
  dropped = tf_dataset.to_tf_dataset(inter, batch_size=2,
                                     drop_remainder=True)
  assert dropped.element_spec["item_id"] == tf.TensorSpec([2], tf.string)
  assert len(list(dropped)) == 2


def test_shuffle_is_seeded_and_reshuffles():
  inter = lib.Interactions(np.arange(100), np.arange(100), np.arange(100))
  ds = tf_dataset.to_tf_dataset(inter, shuffle=True, seed=3)
  first = [r["user_id"] for r in ds.as_numpy_iterator()]
  second = [r["user_id"] for r in ds.as_numpy_iterator()]
  again = [r["user_id"] for r in tf_dataset.to_tf_dataset(
      inter, shuffle=True, seed=3).as_numpy_iterator()]
  assert sorted(first) == sorted(inter.user_ids.astype(bytes).tolist())
  assert first == again
  assert first != second


def test_catalog_dataset():
  _, catalog = _tiny()
  ds = tf_dataset.catalog_dataset(catalog)
  assert ds.element_spec == {"item_id": tf.TensorSpec([], tf.string)}
  assert [r["item_id"] for r in ds.as_numpy_iterator()] == [b"1", b"2", b"3"]
  batch = next(iter(tf_dataset.catalog_dataset(catalog, batch_size=8,
                                               with_features=True)))
  assert batch["item_title"].numpy().tolist() == [b"One", b"Two", b"Three"]
