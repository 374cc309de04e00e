"""Per-row item sets in compressed sparse row (CSR) form, in pure NumPy.

Row `i` holds the items `indices[indptr[i]:indptr[i + 1]]`. The evaluator uses
it for the test targets and the "seen" items of each evaluated user, aligned
with its `users` array.
"""

from typing import List, Sequence, Union

import numpy as np

_IntArray = Union[np.ndarray, Sequence[int]]


def _as_int_vector(values: _IntArray, name: str) -> np.ndarray:
  """Returns `values` as a 1-D int64 array or raises ValueError."""
  array = np.asarray(values)
  if array.ndim != 1:
    raise ValueError(f"{name} must be 1-D, got shape {array.shape}.")
  if array.size == 0:
    return np.zeros(0, np.int64)
  if not np.issubdtype(array.dtype, np.integer):
    raise ValueError(f"{name} must hold integers, got dtype {array.dtype}.")
  return array.astype(np.int64, copy=False)


class SparseSets:
  """Item sets of `num_rows` rows as CSR arrays `(indptr, indices)`.

  Attributes:
    indptr: [num_rows + 1] int64, non-decreasing, `indptr[0] == 0`,
      `indptr[-1] == nnz`.
    indices: [nnz] int64 non-negative item indices (catalog positions).
  """

  def __init__(self, indptr: _IntArray, indices: _IntArray):
    """Wraps CSR arrays, checking their consistency.

    Args:
      indptr: [num_rows + 1] row offsets into `indices`.
      indices: [nnz] item indices, >= 0.

    Raises:
      ValueError: if the arrays are not a valid CSR structure.
    """
    indptr = _as_int_vector(indptr, "indptr")
    indices = _as_int_vector(indices, "indices")
    if indptr.size == 0:
      raise ValueError("indptr must have num_rows + 1 >= 1 entries.")
    if indptr[0] != 0:
      raise ValueError(f"indptr[0] must be 0, got {indptr[0]}.")
    if np.any(np.diff(indptr) < 0):
      raise ValueError("indptr must be non-decreasing.")
    if indptr[-1] != indices.size:
      raise ValueError(
          f"indptr[-1] ({indptr[-1]}) must equal len(indices) "
          f"({indices.size}).")
    if indices.size and indices.min() < 0:
      raise ValueError("indices must be non-negative.")
    # Read-only views: the caller's arrays stay writable.
    self._indptr = indptr.view()
    self._indices = indices.view()
    self._indptr.setflags(write=False)
    self._indices.setflags(write=False)

  @classmethod
  def from_pairs(cls, rows: _IntArray, cols: _IntArray,
                 num_rows: int) -> "SparseSets":
    """Builds sets from `(row, item)` pairs; duplicates are dropped.

    Items of a row come out sorted ascending. Vectorised: one `np.lexsort`.

    Args:
      rows: [nnz] row of each pair, in `[0, num_rows)`.
      cols: [nnz] item of each pair, >= 0.
      num_rows: number of rows (rows without pairs are empty sets).

    Returns:
      The `SparseSets`.

    Raises:
      ValueError: on mismatched lengths or out-of-range rows/items.
    """
    rows = _as_int_vector(rows, "rows")
    cols = _as_int_vector(cols, "cols")
    num_rows = int(num_rows)
    if rows.size != cols.size:
      raise ValueError(
          f"rows and cols must have the same length, got {rows.size} and "
          f"{cols.size}.")
    if num_rows < 0:
      raise ValueError(f"num_rows must be >= 0, got {num_rows}.")
    if rows.size and (rows.min() < 0 or rows.max() >= num_rows):
      raise ValueError(f"rows must lie in [0, {num_rows}).")
    if cols.size and cols.min() < 0:
      raise ValueError("cols must be non-negative.")
    order = np.lexsort((cols, rows))
    rows, cols = rows[order], cols[order]
    keep = np.ones(rows.size, bool)
    keep[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    rows, cols = rows[keep], cols[keep]
    indptr = np.zeros(num_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=num_rows), out=indptr[1:])
    return cls(indptr, cols)

  @classmethod
  def from_lists(cls, sets: Sequence[Sequence[int]]) -> "SparseSets":
    """Builds sets from one sequence of items per row (duplicates dropped)."""
    lengths = [len(s) for s in sets]
    rows = np.repeat(np.arange(len(sets), dtype=np.int64), lengths)
    cols = (np.concatenate([np.asarray(s, np.int64) for s in sets])
            if sum(lengths) else np.zeros(0, np.int64))
    return cls.from_pairs(rows, cols, len(sets))

  @property
  def indptr(self) -> np.ndarray:
    return self._indptr

  @property
  def indices(self) -> np.ndarray:
    return self._indices

  @property
  def num_rows(self) -> int:
    return self._indptr.size - 1

  @property
  def nnz(self) -> int:
    return self._indices.size

  def row_lengths(self) -> np.ndarray:
    """[num_rows] int64 number of items in each row."""
    return np.diff(self._indptr)

  def row_ids(self) -> np.ndarray:
    """[nnz] int64 row of each stored item (`np.repeat` of the row index)."""
    return np.repeat(np.arange(self.num_rows, dtype=np.int64),
                     self.row_lengths())

  def max_index(self) -> int:
    """Largest stored item index, or -1 when empty."""
    return int(self._indices.max()) if self.nnz else -1

  def slice_rows(self, start: int, stop: int) -> "SparseSets":
    """Rows `[start, stop)` as new sets (a view of `indices`)."""
    start, stop, _ = slice(start, stop).indices(self.num_rows)
    stop = max(stop, start)
    lo, hi = self._indptr[start], self._indptr[stop]
    return SparseSets(self._indptr[start:stop + 1] - lo,
                      self._indices[lo:hi])

  def select_rows(self, rows: _IntArray) -> "SparseSets":
    """Rows `rows` (int indices or a [num_rows] bool mask), in that order."""
    rows = np.asarray(rows)
    if rows.dtype == bool:
      if rows.shape != (self.num_rows,):
        raise ValueError(
            f"a boolean row mask must have shape ({self.num_rows},), got "
            f"{rows.shape}.")
      rows = np.flatnonzero(rows)
    rows = _as_int_vector(rows, "rows")
    if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
      raise ValueError(f"rows must lie in [0, {self.num_rows}).")
    lengths = self.row_lengths()[rows]
    indptr = np.zeros(rows.size + 1, np.int64)
    np.cumsum(lengths, out=indptr[1:])
    # Position j of new row i reads old position indptr_old[row_i] + j.
    offsets = (np.arange(indptr[-1], dtype=np.int64)
               - np.repeat(indptr[:-1], lengths)
               + np.repeat(self._indptr[rows], lengths))
    return SparseSets(indptr, self._indices[offsets])

  def canonical(self) -> "SparseSets":
    """Same sets with items sorted ascending and duplicates dropped."""
    return SparseSets.from_pairs(self.row_ids(), self._indices, self.num_rows)

  def to_lists(self) -> List[List[int]]:
    """One Python list of items per row."""
    return [self._indices[a:b].tolist()
            for a, b in zip(self._indptr[:-1], self._indptr[1:])]

  def __len__(self) -> int:
    return self.num_rows

  def __repr__(self) -> str:
    return f"SparseSets(num_rows={self.num_rows}, nnz={self.nnz})"
