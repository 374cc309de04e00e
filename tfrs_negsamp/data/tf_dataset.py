"""tf.data pipelines with TFRS-style string features."""

from typing import Optional, Tuple

import numpy as np
import tensorflow as tf

from tfrs_negsamp.data import movielens
from tfrs_negsamp.data.errors import DataError
from tfrs_negsamp.data.interactions import Catalog
from tfrs_negsamp.data.interactions import Interactions


def _titles(catalog: Optional[Catalog], item_ids: np.ndarray) -> np.ndarray:
  """Titles of `item_ids` ("" if the catalog has none)."""
  if catalog is None or catalog.titles is None:
    return np.full(item_ids.shape, "", dtype=object)
  titles = np.asarray(catalog.titles, dtype=object)
  return titles[catalog.index_of(item_ids)]


def _string_tensor(values: np.ndarray) -> tf.Tensor:
  return tf.constant(np.asarray(values, dtype=object).reshape(-1),
                     dtype=tf.string, shape=[len(values)])


def _finish(ds: tf.data.Dataset, size: int, batch_size: Optional[int],
            shuffle: bool, seed: int, drop_remainder: bool) -> tf.data.Dataset:
  if shuffle and size > 1:
    ds = ds.shuffle(size, seed=seed, reshuffle_each_iteration=True)
  if batch_size is not None:
    if batch_size < 1:
      raise ValueError("batch_size must be >= 1, got %r" % batch_size)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
  return ds


def epoch_batches(num_rows: int, batch_size: int, epochs: int, seed: int = 0,
                  shuffle: bool = True, start_step: int = 0
                  ) -> tf.data.Dataset:
  """Row-index batches `[B]` int64 of `epochs` epochs, from `start_step` on.

  Epoch `e` visits the rows in the order `pi_e = stateless_shuffle(
  range(n), seed=(seed, e))` (the identity when not `shuffle`), cut into
  `S = n // B` batches (the remainder is dropped); global step `t = e S + j`
  gets `pi_e[j B:(j + 1) B]`. Every batch is a pure function of
  `(seed, t)`: no iterator or RNG state, so a run restarted at step `t`
  (`start_step`) sees exactly the batches an uninterrupted run sees from `t`.

  Raises:
    ValueError: If `batch_size` < 1 or > `num_rows`, or `start_step` is
      outside `[0, epochs S]`.
  """
  if batch_size < 1 or batch_size > num_rows:
    raise ValueError("batch_size must be in [1, %d] (the rows), got %r"
                     % (num_rows, batch_size))
  steps = num_rows // batch_size
  if not 0 <= start_step <= epochs * steps:
    raise ValueError("start_step must be in [0, %d], got %r"
                     % (epochs * steps, start_step))
  start_epoch, skip = divmod(start_step, steps)

  def one_epoch(epoch):
    order = tf.range(num_rows, dtype=tf.int64)
    if shuffle:
      order = tf.random.experimental.stateless_shuffle(
          order, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    return tf.data.Dataset.from_tensor_slices(order).batch(
        batch_size, drop_remainder=True)

  ds = tf.data.Dataset.range(start_epoch, epochs).flat_map(one_epoch)
  if skip:
    ds = ds.skip(skip)
  # Known length: `fit` without `steps_per_epoch` stops at the end instead of
  # running into the end of the data.
  return ds.apply(tf.data.experimental.assert_cardinality(
      epochs * steps - start_step))


def training_batches(interactions: Interactions, batch_size: int,
                     epochs: int, seed: int = 0, shuffle: bool = True,
                     start_step: int = 0) -> tf.data.Dataset:
  """`{"user_id", "item_id"}` batches of `epoch_batches` (resumable order)."""
  features = {
      "user_id": _string_tensor(interactions.user_ids),
      "item_id": _string_tensor(interactions.item_ids),
  }
  ds = epoch_batches(interactions.num_rows, batch_size, epochs, seed=seed,
                     shuffle=shuffle, start_step=start_step)
  return ds.map(lambda idx: {k: tf.gather(v, idx)
                             for k, v in features.items()},
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def to_tf_dataset(interactions: Interactions,
                  catalog: Optional[Catalog] = None,
                  batch_size: Optional[int] = None,
                  shuffle: bool = False,
                  seed: int = 0,
                  drop_remainder: bool = False,
                  with_features: bool = False) -> tf.data.Dataset:
  """A dataset of {"user_id", "item_id"[, "item_title"]} tf.string features.

  Args:
    interactions: The rows, in order (unless shuffled).
    catalog: Source of the titles; item ids must be in it if given with
      `with_features`.
    batch_size: Batch size; None yields single rows (scalars).
    shuffle: Whether to shuffle all rows (seeded, reshuffled every epoch).
    seed: The shuffle seed.
    drop_remainder: Whether to drop the last partial batch.
    with_features: Whether to add "item_title" ("" without titles).

  Returns:
    The tf.data.Dataset.
  """
  features = {
      "user_id": _string_tensor(interactions.user_ids),
      "item_id": _string_tensor(interactions.item_ids),
  }
  if with_features:
    features["item_title"] = _string_tensor(
        _titles(catalog, interactions.item_ids))
  ds = tf.data.Dataset.from_tensor_slices(features)
  return _finish(ds, interactions.num_rows, batch_size, shuffle, seed,
                 drop_remainder)


def catalog_dataset(catalog: Catalog,
                    batch_size: Optional[int] = None,
                    with_features: bool = False) -> tf.data.Dataset:
  """All catalog items in catalog order as {"item_id"[, "item_title"]}."""
  features = {"item_id": _string_tensor(catalog.item_ids)}
  if with_features:
    features["item_title"] = _string_tensor(_titles(catalog,
                                                    catalog.item_ids))
  ds = tf.data.Dataset.from_tensor_slices(features)
  return _finish(ds, catalog.num_items, batch_size, False, 0, False)


def tutorial_movielens(path: str) -> Tuple[tf.data.Dataset, tf.data.Dataset]:
  """The TFRS basic-retrieval tutorial's `(ratings, movies)`, from a folder.

  The tutorial loads them from TFDS (`movielens/100k-ratings`, which needs
  network access); this reads a local MovieLens 100K folder (`u.data`,
  `u.item`) or 1M folder (`ratings.dat`, `movies.dat`) instead and gives the
  same features:

      ratings: {"user_id": tf.string [], "movie_title": tf.string []},
               one element per rating, in the file's order;
      movies:  tf.string [] titles, one per movie of the movie list.

  User ids are the file's ids as strings (`"196"`), titles as the movie list
  spells them (`"Kolya (1996)"`), as in the TFDS set. Titles are the
  tutorial's candidate ids; MovieLens 100K has a few titles shared by two
  movie ids, which then count as one candidate, as in the tutorial.

  Args:
    path: the MovieLens folder.

  Returns:
    `(ratings, movies)` unbatched `tf.data.Dataset`s.

  Raises:
    DataError: naming the folder or file and the problem (missing folder,
      not a MovieLens folder, a malformed line).
  """
  if not path:
    raise DataError("tutorial_movielens needs the path of a MovieLens 100K "
                    "or 1M folder")
  interactions, catalog = movielens.load_movielens(path)
  ratings = tf.data.Dataset.from_tensor_slices({
      "user_id": _string_tensor(interactions.user_ids),
      "movie_title": _string_tensor(_titles(catalog,
                                            interactions.item_ids)),
  })
  movies = tf.data.Dataset.from_tensor_slices(
      _string_tensor(np.asarray(catalog.titles, dtype=object)))
  return ratings, movies
