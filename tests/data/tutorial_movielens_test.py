"""`data.tutorial_movielens`: the TFRS tutorial's datasets from a folder."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfrs_negsamp import data
from tfrs_negsamp.data import errors
from tfrs_negsamp.data import tf_dataset

# A MovieLens 100K folder in miniature: three movies (19 genre flags each),
# four ratings. Movies 1 and 3 share a title, as a few ML-100K movies do.
_FLAGS = "|".join(["0"] * 19)
_ITEMS = ("1|Toy Story (1995)|01-Jan-1995||http://x|%s\n"
          "2|GoldenEye (1995)|01-Jan-1995||http://x|%s\n"
          "3|Toy Story (1995)|01-Jan-1995||http://x|%s\n"
          % (_FLAGS, _FLAGS, _FLAGS))
_RATINGS = "7\t2\t5\t100\n8\t3\t4\t101\n7\t1\t3\t102\n9\t2\t1\t103\n"


def _folder(tmp_path):
  (tmp_path / "u.item").write_text(_ITEMS, encoding="latin-1")
  (tmp_path / "u.data").write_text(_RATINGS)
  return str(tmp_path)


def _all(dataset):
  """Every element of an unbatched dataset, in order, as one batch."""
  batch = next(iter(dataset.batch(1 << 20)))
  if isinstance(batch, dict):
    return {k: v.numpy() for k, v in batch.items()}
  return batch.numpy()


def test_features_are_the_tutorials(tmp_path):
  ratings, movies = data.tutorial_movielens(_folder(tmp_path))
  assert ratings.element_spec == {
      "user_id": tf.TensorSpec([], tf.string),
      "movie_title": tf.TensorSpec([], tf.string)}
  assert movies.element_spec == tf.TensorSpec([], tf.string)
  rows = _all(ratings)
  # One element per rating, in the file's order; titles by movie id.
  assert rows["user_id"].tolist() == [b"7", b"8", b"7", b"9"]
  assert rows["movie_title"].tolist() == [
      b"GoldenEye (1995)", b"Toy Story (1995)", b"Toy Story (1995)",
      b"GoldenEye (1995)"]
  # One title per movie of the list, shared titles included.
  assert _all(movies).tolist() == [b"Toy Story (1995)", b"GoldenEye (1995)",
                                   b"Toy Story (1995)"]


def test_movielens_100k(ml100k_path):
  ratings, movies = data.tutorial_movielens(ml100k_path)
  rows = _all(ratings)
  titles = _all(movies)
  assert rows["user_id"].size == 100000
  assert titles.size == 1682
  # 18 titles are shared by two movie ids: 1664 distinct candidate ids, as
  # the tutorial's `np.unique(movie_titles)` finds in the TFDS set.
  assert np.unique(titles).size == 1664
  assert np.unique(rows["user_id"]).size == 943
  # u.data's first line is "196 242 3 881250949"; movie 242 is Kolya.
  assert rows["user_id"][0] == b"196"
  assert rows["movie_title"][0] == b"Kolya (1996)"
  assert set(rows["movie_title"].tolist()) <= set(titles.tolist())


def test_bad_folder_names_it(tmp_path):
  missing = os.path.join(str(tmp_path), "nowhere")
  with pytest.raises(errors.DataError, match="nowhere"):
    data.tutorial_movielens(missing)
  with pytest.raises(errors.DataError, match="not a MovieLens folder"):
    data.tutorial_movielens(str(tmp_path))
  with pytest.raises(errors.DataError, match="path"):
    data.tutorial_movielens("")


def test_exported_lazily():
  assert data.tutorial_movielens is tf_dataset.tutorial_movielens
  assert "tutorial_movielens" in data.__all__
