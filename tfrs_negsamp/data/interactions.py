"""Core containers: item catalog, interaction log and split data set."""

import dataclasses
from typing import Any, Optional, Sequence, Union

import numpy as np

from tfrs_negsamp.data import ids as ids_lib
from tfrs_negsamp.data.errors import DataError


def _show(values: Sequence[str], limit: int = 5) -> str:
  shown = ", ".join(repr(str(v)) for v in values[:limit])
  return shown + (", ..." if len(values) > limit else "")


@dataclasses.dataclass(frozen=True, eq=False)
class Catalog:
  """The candidate items, in a fixed order.

  `item_ids` are unique str ids in the canonical order of
  `ids.sort_unique_ids` (numeric if all ids are integers, else lexicographic);
  ids passed in another order are sorted, and `titles` / `genres` are
  reordered with them. Position i of the catalog is `item_ids[i]`.
  """

  item_ids: np.ndarray
  titles: Optional[list[str]] = None
  genres: Optional[list[list[str]]] = None
  _lookup_ids: np.ndarray = dataclasses.field(
      init=False, repr=False, default=None)
  _lookup_pos: np.ndarray = dataclasses.field(
      init=False, repr=False, default=None)

  def __post_init__(self):
    item_ids = ids_lib.to_str_ids(self.item_ids).copy()
    n = item_ids.size
    for field, values in (("titles", self.titles), ("genres", self.genres)):
      if values is not None and len(values) != n:
        raise ValueError("Catalog %s has %d entries for %d items"
                         % (field, len(values), n))
    lex_order = np.argsort(item_ids, kind="stable")
    lex_ids = item_ids[lex_order]
    dup = lex_ids[1:][lex_ids[1:] == lex_ids[:-1]]
    if dup.size:
      raise ValueError("Catalog item ids are not unique: %s"
                       % _show(np.unique(dup)))
    canonical = ids_lib.sort_unique_ids(item_ids)
    if not np.array_equal(canonical, item_ids):
      # Reorder ids and aligned metadata into the canonical order.
      pos_of = dict(zip(item_ids.tolist(), range(n)))
      order = [pos_of[i] for i in canonical.tolist()]
      item_ids = canonical
      if self.titles is not None:
        object.__setattr__(self, "titles", [self.titles[i] for i in order])
      if self.genres is not None:
        object.__setattr__(self, "genres", [self.genres[i] for i in order])
      lex_order = np.argsort(item_ids, kind="stable")
      lex_ids = item_ids[lex_order]
    if self.titles is not None:
      object.__setattr__(self, "titles", [str(t) for t in self.titles])
    if self.genres is not None:
      object.__setattr__(self, "genres",
                         [[str(g) for g in gs] for gs in self.genres])
    item_ids.setflags(write=False)
    object.__setattr__(self, "item_ids", item_ids)
    object.__setattr__(self, "_lookup_ids", lex_ids)
    object.__setattr__(self, "_lookup_pos", lex_order.astype(np.int64))

  @property
  def num_items(self) -> int:
    return int(self.item_ids.size)

  def index_of(self, item_ids: Any) -> np.ndarray:
    """Maps item id strings to catalog positions 0..N-1.

    Args:
      item_ids: An array-like of item ids.

    Returns:
      An int64 array of positions, same shape as the input.

    Raises:
      KeyError: If an id is not in the catalog (the message names it).
    """
    query = ids_lib.to_str_ids(np.ravel(np.asarray(item_ids)))
    if self.num_items == 0:
      if query.size:
        raise KeyError("item id %r is not in the catalog (empty catalog)"
                       % str(query[0]))
      return np.zeros(np.shape(item_ids), np.int64)
    where = np.searchsorted(self._lookup_ids, query)
    where_clipped = np.minimum(where, self.num_items - 1)
    found = self._lookup_ids[where_clipped] == query
    if not np.all(found):
      missing = np.unique(query[~found])
      raise KeyError("item id %r is not in the catalog (%d unknown ids: %s; "
                     "catalog has %d items)"
                     % (str(missing[0]), missing.size, _show(missing),
                        self.num_items))
    return self._lookup_pos[where_clipped].reshape(np.shape(item_ids))


def _as_int64(values: Any, name: str) -> np.ndarray:
  arr = np.asarray(values)
  if arr.size == 0:
    return np.zeros([0], np.int64)
  if arr.dtype.kind not in "iuf":
    raise ValueError("%s must be numeric, got dtype %s" % (name, arr.dtype))
  return arr.astype(np.int64)


@dataclasses.dataclass(eq=False)
class Interactions:
  """An implicit-feedback log: one (user, item, timestamp) per row.

  Ids are converted to numpy str arrays and timestamps to int64. `lines`
  (optional, int64) holds each row's 1-based line in `source`, so that
  errors found after loading can name it.
  """

  user_ids: np.ndarray
  item_ids: np.ndarray
  timestamps: np.ndarray
  source: str = ""
  lines: Optional[np.ndarray] = None

  def __post_init__(self):
    self.user_ids = ids_lib.to_str_ids(self.user_ids)
    self.item_ids = ids_lib.to_str_ids(self.item_ids)
    self.timestamps = _as_int64(self.timestamps, "timestamps")
    if self.timestamps.ndim != 1:
      raise ValueError("timestamps must be 1-D, got shape %s"
                       % (self.timestamps.shape,))
    lengths = (self.user_ids.size, self.item_ids.size, self.timestamps.size)
    if len(set(lengths)) != 1:
      raise ValueError(
          "Interactions from %s: user_ids, item_ids and timestamps have "
          "different lengths %s" % (self.source or "<unknown>", lengths))
    if self.lines is not None:
      self.lines = np.asarray(self.lines, dtype=np.int64)
      if self.lines.shape != (lengths[0],):
        raise ValueError("Interactions from %s: lines has shape %s for %d "
                         "rows" % (self.source or "<unknown>",
                                   self.lines.shape, lengths[0]))

  def where(self, row: int) -> str:
    """"SOURCE, line L" (or "SOURCE, row R", 1-based) of row `row`."""
    source = self.source or "<unknown>"
    if self.lines is not None:
      return "%s, line %d" % (source, int(self.lines[row]))
    return "%s, row %d" % (source, row + 1)

  @classmethod
  def empty(cls, source: str = "") -> "Interactions":
    """An Interactions with no rows."""
    none = np.asarray([], dtype=str)
    return cls(none, none, np.zeros([0], np.int64), source)

  def __len__(self) -> int:
    return self.num_rows

  @property
  def num_rows(self) -> int:
    return int(self.user_ids.size)

  @property
  def users(self) -> np.ndarray:
    """Sorted unique user ids (canonical order of `ids.sort_unique_ids`)."""
    return ids_lib.sort_unique_ids(self.user_ids)

  @property
  def items(self) -> np.ndarray:
    """Sorted unique item ids (canonical order of `ids.sort_unique_ids`)."""
    return ids_lib.sort_unique_ids(self.item_ids)

  def item_counts(self, catalog: Catalog) -> np.ndarray:
    """Number of rows per catalog position, an int64 array [num_items].

    Raises:
      DataError: If an item id is not in the catalog.
    """
    try:
      positions = catalog.index_of(self.item_ids)
    except KeyError as e:
      raise DataError("Interactions from %s contain items not in the "
                      "catalog: %s" % (self.source or "<unknown>",
                                       e.args[0])) from None
    return np.bincount(positions, minlength=catalog.num_items).astype(
        np.int64)

  def subset(self, mask: Union[np.ndarray, Sequence[int]],
             source: Optional[str] = None) -> "Interactions":
    """The rows selected by a boolean mask or an index array."""
    mask = np.asarray(mask)
    if mask.dtype == bool and mask.shape != (self.num_rows,):
      raise ValueError("mask has shape %s, expected (%d,)"
                       % (mask.shape, self.num_rows))
    if mask.dtype != bool:
      mask = mask.astype(np.int64)
    return Interactions(self.user_ids[mask], self.item_ids[mask],
                        self.timestamps[mask],
                        self.source if source is None else source,
                        None if self.lines is None else self.lines[mask])

  def pair_codes(self) -> np.ndarray:
    """An int64 code per row, equal for rows of the same (user, item)."""
    _, users = np.unique(self.user_ids, return_inverse=True)
    items_all, items = np.unique(self.item_ids, return_inverse=True)
    return users.astype(np.int64) * max(items_all.size, 1) + items


DUPLICATE_POLICIES = ("keep_first", "keep_all", "error")


def apply_duplicates(interactions: Interactions,
                     policy: str = "keep_first") -> tuple[Interactions, int]:
  """Applies a duplicates policy to repeated (user, item) rows.

  `keep_first` keeps, per (user, item) pair, its earliest row by timestamp
  (ties: the first in the file) and drops the others; the kept rows keep
  their order. `keep_all` keeps every row (repeat consumption). `error`
  raises on the first row (in file order) whose pair occurred before.

  Args:
    interactions: The log.
    policy: One of `DUPLICATE_POLICIES`.

  Returns:
    (the log after the policy, number of rows it dropped).

  Raises:
    ValueError: On an unknown policy.
    DataError: Under `error`, naming the duplicate's line and the first
      occurrence's.
  """
  if policy not in DUPLICATE_POLICIES:
    raise ValueError("unknown duplicates policy %r; valid: %s"
                     % (policy, ", ".join(DUPLICATE_POLICIES)))
  n = interactions.num_rows
  if policy == "keep_all" or n < 2:
    return interactions, 0
  codes = interactions.pair_codes()
  rows = np.arange(n)
  if policy == "error":
    order = np.lexsort((rows, codes))  # By pair, then file order.
    repeat = np.zeros(n, bool)
    repeat[1:] = codes[order[1:]] == codes[order[:-1]]
    if not np.any(repeat):
      return interactions, 0
    first_of_group = np.maximum.accumulate(np.where(~repeat, rows, 0))
    dup_rows = order[repeat]
    pick = int(np.argmin(dup_rows))
    dup = int(dup_rows[pick])
    original = int(order[first_of_group[repeat][pick]])
    raise DataError(
        "%s: duplicate interaction (user %r, item %r), first seen at %s; "
        "pass --duplicates=keep_first to keep each pair's earliest row, or "
        "--duplicates=keep_all to keep every row"
        % (interactions.where(dup), str(interactions.user_ids[dup]),
           str(interactions.item_ids[dup]),
           interactions.where(original).rsplit(", ", 1)[-1]))
  order = np.lexsort((rows, interactions.timestamps, codes))
  first = np.ones(n, bool)
  first[1:] = codes[order[1:]] != codes[order[:-1]]
  keep = np.zeros(n, bool)
  keep[order[first]] = True
  dropped = int(n - np.count_nonzero(keep))
  if not dropped:
    return interactions, 0
  return interactions.subset(keep), dropped


def _pair_codes(train: Interactions,
                other: Interactions) -> tuple[np.ndarray, np.ndarray]:
  """Integer codes of (user, item) pairs, consistent across both logs."""
  _, users = np.unique(np.concatenate([train.user_ids, other.user_ids]),
                       return_inverse=True)
  items_all, items = np.unique(
      np.concatenate([train.item_ids, other.item_ids]), return_inverse=True)
  codes = users.astype(np.int64) * max(items_all.size, 1) + items
  return codes[:train.num_rows], codes[train.num_rows:]


@dataclasses.dataclass(eq=False)
class Dataset:
  """A catalog with train / validation / test interactions."""

  name: str
  catalog: Catalog
  train: Interactions
  validation: Interactions
  test: Interactions
  all_interactions: Optional[Interactions] = None
  # What loading did to the log, e.g. {"duplicates": "keep_first",
  # "duplicate_rows_dropped": 3}; part of `summary()`.
  load_report: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def users(self) -> np.ndarray:
    """User vocabulary: sorted unique user ids of the training split."""
    return self.train.users

  @property
  def item_counts(self) -> np.ndarray:
    """Training interactions per catalog position, int64 [num_items]."""
    return self.train.item_counts(self.catalog)

  def summary(self) -> dict[str, Any]:
    """Sizes of the splits and the test re-consumption fraction.

    `test_reconsumption` is the fraction of test rows whose (user, item)
    pair also occurs in train.
    """
    if self.test.num_rows:
      train_codes, test_codes = _pair_codes(self.train, self.test)
      reconsumption = float(np.mean(np.isin(test_codes, train_codes)))
    else:
      reconsumption = 0.0
    return {
        "name": self.name,
        "train_rows": self.train.num_rows,
        "validation_rows": self.validation.num_rows,
        "test_rows": self.test.num_rows,
        "users": int(self.users.size),
        "items": self.catalog.num_items,
        "test_reconsumption": reconsumption,
        **self.load_report,
    }
