"""Loaders for MovieLens 100K / 1M folders and the TFDS MovieLens sets.

Every rating is kept as an implicit interaction (the rating value is
dropped).
"""

import os
from typing import Optional

import numpy as np

from tfrs_negsamp.data.errors import DataError
from tfrs_negsamp.data.interactions import Catalog
from tfrs_negsamp.data.interactions import Interactions

# Genre columns of u.item, used when u.genre is absent.
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
    "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")

_MARKERS = {"100k": "u.data", "1m": "ratings.dat"}
_TFDS_HINT = ("pass a local MovieLens folder (--data_path, containing u.data "
              "or ratings.dat) instead")


def _read_text(path: str) -> str:
  if not os.path.isfile(path):
    raise DataError("%s: file not found" % path)
  with open(path, encoding="latin-1") as f:
    return f.read()


def _clip(value: str, limit: int = 40) -> str:
  return value if len(value) <= limit else value[:limit] + "..."


def _parse_int_table(path: str, text: str, num_fields: int,
                     separator: str) -> tuple[np.ndarray, np.ndarray]:
  """Parses lines of `num_fields` integers into an int64 [n, num_fields].

  Every non-blank line must have exactly `num_fields` fields, each an
  integer in [-2^63, 2^63) (Python `int` syntax, surrounding blanks
  allowed). Returns the table and the 1-based line number of each row.

  Raises:
    DataError: Naming the file, the first bad line and the problem.
  """
  numbers, rows = [], []
  for number, line in enumerate(text.splitlines(), start=1):
    if line.strip():
      numbers.append(number)
      rows.append(line)
  for number, line in zip(numbers, rows):
    if line.count(separator) != num_fields - 1:
      raise DataError("%s, line %d: expected %d %r-separated fields, found %d"
                      % (path, number, num_fields, separator,
                         line.count(separator) + 1))
  if not rows:
    return np.zeros([0, num_fields], np.int64), np.zeros([0], np.int64)
  # Exactly num_fields tokens per row, so token t is on row t // num_fields.
  tokens = separator.join(rows).split(separator)
  try:
    values = np.asarray(tokens, dtype=np.int64)
  except (ValueError, OverflowError):
    for position, token in enumerate(tokens):
      number = numbers[position // num_fields]
      try:
        value = int(token)
      except ValueError:
        raise DataError("%s, line %d: not an integer: %r"
                        % (path, number, _clip(token))) from None
      if not -2**63 <= value < 2**63:
        raise DataError("%s, line %d: integer out of range [-2^63, 2^63): "
                        "%r" % (path, number, _clip(token.strip())))
    raise DataError("%s: cannot parse the file" % path) from None
  return (values.reshape(-1, num_fields),
          np.asarray(numbers, dtype=np.int64))


def _interactions(path: str, parsed: tuple[np.ndarray, np.ndarray],
                  catalog: Catalog) -> Interactions:
  table, lines = parsed
  if table.shape[0] == 0:
    raise DataError("%s: no ratings" % path)
  interactions = Interactions(
      user_ids=table[:, 0].astype(str), item_ids=table[:, 1].astype(str),
      timestamps=table[:, 3], source=path, lines=lines)
  try:
    catalog.index_of(interactions.items)
  except KeyError as e:
    raise DataError("%s rates items missing from the movie list: %s"
                    % (path, e.args[0])) from None
  return interactions


def _read_genre_names(folder: str) -> list[str]:
  path = os.path.join(folder, "u.genre")
  if not os.path.isfile(path):
    return list(ML100K_GENRES)
  pairs = []
  for number, line in enumerate(_read_text(path).splitlines(), start=1):
    if not line.strip():
      continue
    name, _, index = line.rpartition("|")
    try:
      pairs.append((int(index), name))
    except ValueError:
      raise DataError("%s, line %d: expected 'name|index', found %r"
                      % (path, number, line)) from None
  return [name for _, name in sorted(pairs)]


def load_movielens_100k(path: str) -> tuple[Interactions, Catalog]:
  """Reads u.data and u.item (and u.genre if present) of MovieLens 100K.

  Args:
    path: The ml-100k folder.

  Returns:
    (interactions, catalog) with titles and genres.
  """
  genre_names = _read_genre_names(path)
  item_path = os.path.join(path, "u.item")
  ids, titles, genres = [], [], []
  for number, line in enumerate(_read_text(item_path).splitlines(), start=1):
    if not line.strip():
      continue
    fields = line.split("|")
    if len(fields) != 5 + len(genre_names):
      raise DataError("%s, line %d: expected %d '|'-separated fields, found "
                      "%d" % (item_path, number, 5 + len(genre_names),
                              len(fields)))
    ids.append(fields[0].strip())
    titles.append(fields[1])
    genres.append([name for name, flag in zip(genre_names, fields[5:])
                   if flag.strip() == "1"])
  catalog = Catalog(item_ids=np.asarray(ids, dtype=str), titles=titles,
                    genres=genres)
  data_path = os.path.join(path, "u.data")
  table = _parse_int_table(data_path, _read_text(data_path), 4, "\t")
  return _interactions(data_path, table, catalog), catalog


def load_movielens_1m(path: str) -> tuple[Interactions, Catalog]:
  """Reads ratings.dat and movies.dat of MovieLens 1M.

  Args:
    path: The ml-1m folder.

  Returns:
    (interactions, catalog) with titles and genres.
  """
  movies_path = os.path.join(path, "movies.dat")
  ids, titles, genres = [], [], []
  for number, line in enumerate(_read_text(movies_path).splitlines(),
                                start=1):
    if not line.strip():
      continue
    fields = line.split("::")
    if len(fields) != 3:
      raise DataError("%s, line %d: expected 'MovieID::Title::Genres', "
                      "found %r" % (movies_path, number, line))
    ids.append(fields[0].strip())
    titles.append(fields[1])
    genres.append([g for g in fields[2].strip().split("|") if g])
  catalog = Catalog(item_ids=np.asarray(ids, dtype=str), titles=titles,
                    genres=genres)
  ratings_path = os.path.join(path, "ratings.dat")
  table = _parse_int_table(ratings_path, _read_text(ratings_path), 4, "::")
  return _interactions(ratings_path, table, catalog), catalog


def detect_movielens_variant(path: str) -> str:
  """"100k" if the folder has u.data, "1m" if it has ratings.dat."""
  if os.path.isfile(path) and os.path.basename(path) in _MARKERS.values():
    path = os.path.dirname(path)
  if not os.path.isdir(path):
    raise DataError("%s: MovieLens folder not found" % path)
  for variant, marker in _MARKERS.items():
    if os.path.isfile(os.path.join(path, marker)):
      return variant
  raise DataError("%s: not a MovieLens folder (expected u.data for 100K or "
                  "ratings.dat for 1M)" % path)


def _to_str(values: np.ndarray) -> np.ndarray:
  return np.char.decode(np.asarray(values, dtype=bytes), "utf-8")


def load_movielens_tfds(name: str = "movielens/100k-ratings",
                        data_dir: Optional[str] = None,
                        download: bool = True) -> tuple[Interactions,
                                                        Catalog]:
  """Loads a TFDS MovieLens ratings set (e.g. "movielens/1m-ratings").

  Args:
    name: The TFDS name; it must have user_id, movie_id, movie_title,
      movie_genres and timestamp features.
    data_dir: The TFDS data folder (None: the TFDS default).
    download: Whether TFDS may download and prepare the data.

  Returns:
    (interactions, catalog); the catalog holds the rated movies.

  Raises:
    DataError: If TFDS cannot load the data set (e.g. no network).
  """
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    ds, info = tfds.load(name, split="train", data_dir=data_dir,
                         download=download, with_info=True)
  except Exception as e:  # pylint: disable=broad-except
    raise DataError("TFDS could not load %r (%s: %s); %s."
                    % (name, type(e).__name__, str(e).strip()[:500],
                       _TFDS_HINT)) from e
  genre_names = info.features["movie_genres"].feature.names
  columns = {k: [] for k in ("user_id", "movie_id", "timestamp")}
  movies = {}
  ds = ds.map(lambda x: {k: x[k] for k in (
      "user_id", "movie_id", "movie_title", "movie_genres", "timestamp")})
  for batch in tfds.as_numpy(ds.ragged_batch(65536)):
    for key in columns:
      columns[key].append(np.asarray(batch[key]))
    genres = batch["movie_genres"]
    if hasattr(genres, "to_list"):  # A RaggedTensor (or its value).
      genres = genres.to_list()
    batch_movies, first = np.unique(_to_str(batch["movie_id"]),
                                    return_index=True)
    for movie, row in zip(batch_movies.tolist(), first.tolist()):
      if movie not in movies:
        title = _to_str(batch["movie_title"][row:row + 1])[0]
        movies[movie] = (str(title),
                         [genre_names[g] for g in np.ravel(genres[row])])
  if not movies:
    raise DataError("TFDS data set %r has no rows" % name)
  movie_ids = np.asarray(list(movies), dtype=str)
  catalog = Catalog(item_ids=movie_ids,
                    titles=[movies[m][0] for m in movie_ids],
                    genres=[movies[m][1] for m in movie_ids])
  interactions = Interactions(
      user_ids=_to_str(np.concatenate(columns["user_id"])),
      item_ids=_to_str(np.concatenate(columns["movie_id"])),
      timestamps=np.concatenate(columns["timestamp"]),
      source="tfds:%s" % name)
  return interactions, catalog


def load_movielens(path: Optional[str] = None) -> tuple[Interactions,
                                                        Catalog]:
  """Loads MovieLens from a local 100K / 1M folder, or from TFDS if None."""
  if path is None:
    return load_movielens_tfds()
  if os.path.isfile(path):
    path = os.path.dirname(path)
  if detect_movielens_variant(path) == "100k":
    return load_movielens_100k(path)
  return load_movielens_1m(path)
