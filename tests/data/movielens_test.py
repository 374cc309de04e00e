"""Tests of the MovieLens loaders (local folders and TFDS failure)."""

import functools
import os

import numpy as np
import pytest

from tfrs_negsamp.data import errors
from tfrs_negsamp.data import movielens


@functools.lru_cache(maxsize=1)
def _load_100k(path):
  return movielens.load_movielens_100k(path)


@pytest.fixture
def ml100k(ml100k_path):
  return _load_100k(ml100k_path)


def test_ml100k_counts(ml100k):
  inter, catalog = ml100k
  assert inter.num_rows == 100000
  assert inter.users.size == 943
  assert inter.items.size == 1682
  assert catalog.num_items == 1682
  np.testing.assert_array_equal(catalog.item_ids[:3], ["1", "2", "3"])
  assert catalog.item_ids[-1] == "1682"
  assert inter.timestamps.min() == 874724710
  assert inter.timestamps.max() == 893286638
  assert inter.item_counts(catalog).sum() == 100000


def test_ml100k_titles_and_genres(ml100k):
  _, catalog = ml100k
  first = catalog.index_of(np.array(["1"]))[0]
  assert catalog.titles[first] == "Toy Story (1995)"
  assert {"Animation", "Children's", "Comedy"} <= set(catalog.genres[first])
  assert catalog.titles[catalog.index_of(np.array(["543"]))[0]] == (
      "Misérables, Les (1995)")
  assert catalog.titles[catalog.index_of(np.array(["1633"]))[0]] == (
      "Á köldum klaka (Cold Fever) (1994)")


def test_load_movielens_detects_100k(ml100k_path):
  assert movielens.detect_movielens_variant(ml100k_path) == "100k"
  inter, catalog = movielens.load_movielens(ml100k_path)
  assert inter.num_rows == 100000
  assert inter.source == os.path.join(ml100k_path, "u.data")
  assert catalog.num_items == 1682


def _write(path, text, encoding="latin-1"):
  with open(path, "w", encoding=encoding) as f:
    f.write(text)


def test_ml1m_format(tmp_path):
  _write(tmp_path / "movies.dat",
         "1::Toy Story (1995)::Animation|Children's|Comedy\n"
         "2::Jumanji (1995)::Adventure\n"
         "10::Café (1999)::Drama\n")
  _write(tmp_path / "ratings.dat",
         "1::1::5::978300760\n1::10::3::978302109\n2::2::4::978301968\n")
  assert movielens.detect_movielens_variant(str(tmp_path)) == "1m"
  inter, catalog = movielens.load_movielens(str(tmp_path))
  np.testing.assert_array_equal(catalog.item_ids, ["1", "2", "10"])
  assert catalog.titles[2] == "Café (1999)"
  assert catalog.genres[0] == ["Animation", "Children's", "Comedy"]
  np.testing.assert_array_equal(inter.user_ids, ["1", "1", "2"])
  np.testing.assert_array_equal(inter.item_ids, ["1", "10", "2"])
  np.testing.assert_array_equal(inter.timestamps,
                                [978300760, 978302109, 978301968])


def test_ml1m_bad_line_is_reported(tmp_path):
  _write(tmp_path / "movies.dat", "1::A (1995)::Drama\n")
  _write(tmp_path / "ratings.dat", "1::1::5::978300760\n1::1::5\n")
  with pytest.raises(errors.DataError, match=r"ratings.dat, line 2: expected "
                     r"4"):
    movielens.load_movielens_1m(str(tmp_path))


def test_unknown_folder(tmp_path):
  with pytest.raises(errors.DataError, match="not a MovieLens folder"):
    movielens.load_movielens(str(tmp_path))


def test_tfds_failure_gives_clear_error(tmp_path):
  with pytest.raises(errors.DataError) as info:
    movielens.load_movielens_tfds(data_dir=str(tmp_path / "tfds"),
                                  download=False)
  message = str(info.value)
  assert "TFDS could not load 'movielens/100k-ratings'" in message
  assert "--data_path" in message


class _FakeInfo:
  """The part of tfds.core.DatasetInfo the loader reads."""

  class _Genres:
    names = ["Action", "Comedy", "Drama"]

  features = {"movie_genres": type("Sequence", (), {"feature": _Genres})}


def test_tfds_conversion_with_a_fake_load(monkeypatch):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  rows = [  # user, movie, title, genres, timestamp
      (b"7", b"20", b"Heat (1995)", [0, 2], 50),
      (b"8", b"3", "Café (1990)".encode(), [1], 40),
      (b"7", b"3", "Café (1990)".encode(), [1], 60),
  ]

  def gen():
    for user, movie, title, genres, ts in rows:
      yield {"user_id": user, "movie_id": movie, "movie_title": title,
             "movie_genres": np.asarray(genres, np.int64), "timestamp": ts,
             "user_rating": 3.0}

  spec = {"user_id": tf.TensorSpec([], tf.string),
          "movie_id": tf.TensorSpec([], tf.string),
          "movie_title": tf.TensorSpec([], tf.string),
          "movie_genres": tf.TensorSpec([None], tf.int64),
          "timestamp": tf.TensorSpec([], tf.int64),
          "user_rating": tf.TensorSpec([], tf.float32)}
  calls = []

  def fake_load(name, **kwargs):
    calls.append((name, kwargs))
    return (tf.data.Dataset.from_generator(gen, output_signature=spec),
            _FakeInfo())

  monkeypatch.setattr(tfds, "load", fake_load)
  inter, catalog = movielens.load_movielens_tfds("movielens/1m-ratings")
  assert calls[0][0] == "movielens/1m-ratings"
  assert calls[0][1]["split"] == "train"
  np.testing.assert_array_equal(inter.user_ids, ["7", "8", "7"])
  np.testing.assert_array_equal(inter.item_ids, ["20", "3", "3"])
  np.testing.assert_array_equal(inter.timestamps, [50, 40, 60])
  assert inter.source == "tfds:movielens/1m-ratings"
  np.testing.assert_array_equal(catalog.item_ids, ["3", "20"])
  assert catalog.titles == ["Café (1990)", "Heat (1995)"]
  assert catalog.genres == [["Comedy"], ["Action", "Drama"]]
