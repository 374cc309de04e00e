"""Helpers for string ids: conversion and a deterministic sort order."""

from typing import Any

import numpy as np


def to_str_ids(values: Any) -> np.ndarray:
  """Converts ids to a 1-D numpy array of str.

  Integers become their decimal string ("42"); bytes are decoded as UTF-8.
  Floats are accepted only when they hold whole numbers.

  Args:
    values: An array-like of ids (str, bytes, integers or whole floats).

  Returns:
    A 1-D numpy unicode array.
  """
  arr = np.asarray(values)
  if arr.ndim != 1:
    raise ValueError("ids must be 1-D, got shape %s" % (arr.shape,))
  if arr.dtype.kind == "U":
    return arr
  if arr.size == 0:
    return np.asarray([], dtype=str)
  if arr.dtype.kind in "iub":
    return arr.astype(np.int64).astype(str)
  if arr.dtype.kind == "f":
    if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
      raise ValueError("float ids must be whole numbers")
    return arr.astype(np.int64).astype(str)
  if arr.dtype.kind == "S":
    return np.char.decode(arr, "utf-8")
  out = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr]
  return np.asarray(out, dtype=str)


def _all_integers(ids: np.ndarray) -> bool:
  """Whether every id is a decimal integer, optionally with a leading '-'."""
  if ids.size == 0:
    return False
  negative = np.char.startswith(ids, "-")
  body = np.where(negative, np.char.replace(ids, "-", "", count=1), ids)
  return bool(np.all(np.char.isdigit(body)))


def sort_unique_ids(ids: np.ndarray) -> np.ndarray:
  """Sorted unique ids: numeric order if all are integers, else lexicographic.

  Integer ids that differ only in leading zeros ("7", "07") are ordered by
  value, then lexicographically.

  Args:
    ids: A 1-D numpy str array.

  Returns:
    The unique ids in the canonical order.
  """
  uniq = np.unique(to_str_ids(ids))  # Lexicographic.
  if not _all_integers(uniq):
    return uniq
  try:
    values = uniq.astype(np.int64)
  except (OverflowError, ValueError):
    return np.asarray(sorted(uniq, key=int), dtype=str)
  return uniq[np.argsort(values, kind="stable")]
