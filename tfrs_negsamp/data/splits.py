"""Train / validation / test splits of an interaction log."""

from typing import Any, Optional

import numpy as np

from tfrs_negsamp.data.errors import DataError
from tfrs_negsamp.data.interactions import Catalog
from tfrs_negsamp.data.interactions import Dataset
from tfrs_negsamp.data.interactions import Interactions

SPLIT_METHODS = ("leave_last_out", "temporal")


def _make_dataset(interactions: Interactions, catalog: Catalog,
                  name: Optional[str], train: np.ndarray,
                  validation: np.ndarray, test: np.ndarray) -> Dataset:
  """A Dataset from boolean row masks; rows keep their original order."""
  source = interactions.source
  return Dataset(
      name=source if name is None else name,
      catalog=catalog,
      train=interactions.subset(train, source="%s [train]" % source),
      validation=interactions.subset(validation,
                                     source="%s [validation]" % source),
      test=interactions.subset(test, source="%s [test]" % source),
      all_interactions=interactions)


def leave_last_out(interactions: Interactions,
                   catalog: Catalog,
                   num_validation: int = 0,
                   name: Optional[str] = None) -> Dataset:
  """Holds out each user's last interaction (and the ones before it).

  Per user, rows are ordered by timestamp, ties by original row order. The
  last row goes to test and the `num_validation` rows before it to
  validation; the rest to train. Users with fewer than 2 + num_validation
  rows stay entirely in train.

  Args:
    interactions: The log.
    catalog: The item catalog (kept in the Dataset).
    num_validation: Rows per user held out for validation (usually 0 or 1).
    name: The Dataset name (default: the interactions' source).

  Returns:
    The Dataset; each split keeps the original row order.

  Raises:
    DataError: If no user has enough rows to hold any out.
  """
  if num_validation < 0:
    raise ValueError("num_validation must be >= 0, got %r" % num_validation)
  needed = 2 + num_validation
  n = interactions.num_rows
  _, user_codes = np.unique(interactions.user_ids, return_inverse=True)
  order = np.lexsort((np.arange(n), interactions.timestamps, user_codes))
  sorted_users = user_codes[order]
  counts = np.bincount(sorted_users)
  # Position from the end of each user's time-ordered rows (0 = last).
  group_end = np.cumsum(counts)[sorted_users]
  from_end = group_end - 1 - np.arange(n)
  eligible = counts[sorted_users] >= needed
  test_sorted = eligible & (from_end == 0)
  validation_sorted = eligible & (from_end >= 1) & (from_end <= num_validation)
  if not np.any(test_sorted):
    raise DataError(
        "%s: cannot split leave-last-out: every user has fewer than %d "
        "interactions (%d rows, %d users)"
        % (interactions.source or "<unknown>", needed, n, counts.size))
  test = np.zeros(n, bool)
  validation = np.zeros(n, bool)
  test[order[test_sorted]] = True
  validation[order[validation_sorted]] = True
  train = ~(test | validation)
  return _make_dataset(interactions, catalog, name, train, validation, test)


def temporal_split(interactions: Interactions,
                   catalog: Catalog,
                   test_fraction: float = 0.05,
                   validation_fraction: float = 0.05,
                   name: Optional[str] = None) -> Dataset:
  """Global time split: the latest rows are test, the ones before validation.

  Rows are sorted by timestamp (ties by original row order); the last
  round(n * test_fraction) rows go to test, the round(n *
  validation_fraction) before them to validation (each at least one row if
  its fraction is positive), the rest to train. Test users need not occur
  in train.

  Args:
    interactions: The log.
    catalog: The item catalog (kept in the Dataset).
    test_fraction: Fraction of rows in test, in (0, 1).
    validation_fraction: Fraction of rows in validation, in [0, 1).
    name: The Dataset name (default: the interactions' source).

  Returns:
    The Dataset; each split keeps the original row order.

  Raises:
    ValueError: If the fractions are out of range.
    DataError: If train would be empty.
  """
  if not 0 < test_fraction < 1:
    raise ValueError("test_fraction must be in (0, 1), got %r"
                     % test_fraction)
  if not 0 <= validation_fraction < 1:
    raise ValueError("validation_fraction must be in [0, 1), got %r"
                     % validation_fraction)
  if test_fraction + validation_fraction >= 1:
    raise ValueError("test_fraction + validation_fraction must be < 1, got "
                     "%r" % (test_fraction + validation_fraction))
  n = interactions.num_rows
  num_test = max(1, int(round(n * test_fraction)))
  num_validation = (max(1, int(round(n * validation_fraction)))
                    if validation_fraction > 0 else 0)
  num_train = n - num_test - num_validation
  if num_train < 1:
    raise DataError(
        "%s: %d rows are too few for a temporal split with test_fraction=%r "
        "and validation_fraction=%r" % (interactions.source or "<unknown>", n,
                                        test_fraction, validation_fraction))
  order = np.argsort(interactions.timestamps, kind="stable")
  rank = np.empty(n, np.int64)
  rank[order] = np.arange(n)
  train = rank < num_train
  test = rank >= num_train + num_validation
  validation = ~(train | test)
  return _make_dataset(interactions, catalog, name, train, validation, test)


def split(interactions: Interactions,
          catalog: Catalog,
          method: str = "leave_last_out",
          **kwargs: Any) -> Dataset:
  """Splits with `method` in SPLIT_METHODS; kwargs go to that function."""
  if method == "leave_last_out":
    return leave_last_out(interactions, catalog, **kwargs)
  if method == "temporal":
    return temporal_split(interactions, catalog, **kwargs)
  raise ValueError("unknown split method %r; valid methods: %s"
                   % (method, ", ".join(SPLIT_METHODS)))
