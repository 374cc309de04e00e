"""Popularity cohorts of items: head / mid / tail by training count.

Cohorts are equal-interaction-mass tertiles of the TRAINING counts, as in the
Apple evaluator (docs/design/evaluation.md#cohorts). The evaluation reports
metrics per cohort (`evaluation.cohorts`) and the balanced sampler draws per
cohort (`samplers.catalog`), so both read this one definition.
"""

from typing import Sequence, Tuple

import numpy as np

HEAD, MID, TAIL = 0, 1, 2
COHORT_NAMES = ("head", "mid", "tail")
DEFAULT_THRESHOLDS = (1.0 / 3.0, 2.0 / 3.0)


def check_thresholds(thresholds: Sequence[float]) -> Tuple[float, float]:
  """Returns `(t1, t2)` as floats; raises ValueError unless 0 < t1 < t2 < 1."""
  try:
    values = tuple(float(t) for t in thresholds)
  except (TypeError, ValueError):
    raise ValueError(
        f"thresholds must be two numbers, got {thresholds!r}.") from None
  if len(values) != 2:
    raise ValueError(f"thresholds must be two numbers (t1, t2), got "
                     f"{thresholds!r}.")
  t1, t2 = values
  if not 0.0 < t1 < t2 < 1.0:
    raise ValueError(f"thresholds must be increasing in (0, 1): need "
                     f"0 < t1 < t2 < 1, got {thresholds!r}.")
  return t1, t2


def popularity_cohorts(
    counts: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS) -> np.ndarray:
  """Assigns every item to head (0), mid (1) or tail (2) by training count.

  Items are sorted by count, descending (stable: lower index first among
  equal counts). With T = sum(counts) and `cum_before` the running sum of the
  sorted counts BEFORE the item (so the most popular item is always head):

    head if cum_before < t1 * T,  mid if cum_before < t2 * T,  else tail.

  Items with zero training count are tail. A cohort may be empty (e.g. mid
  when one item holds more than t2 of the mass).

  Example: counts [50, 30, 10, 5, 3, 2], T = 100, cum_before
  [0, 50, 80, 90, 95, 98] -> head {0}, mid {1} (50 < 66.7), tail {2..5}.

  Args:
    counts: [N] non-negative training interaction counts per item.
    thresholds: (t1, t2), 0 < t1 < t2 < 1; default (1/3, 2/3).

  Returns:
    [N] int8 cohort ids, names in `COHORT_NAMES`.

  Raises:
    ValueError: on bad counts or thresholds.
  """
  t1, t2 = check_thresholds(thresholds)
  counts = np.asarray(counts)
  if counts.ndim != 1:
    raise ValueError(f"counts must be 1-D [num_items], got shape "
                     f"{counts.shape}.")
  if counts.size and not np.issubdtype(counts.dtype, np.number):
    raise ValueError(f"counts must be numeric, got dtype {counts.dtype}.")
  if counts.size and (not np.all(np.isfinite(counts)) or counts.min() < 0):
    raise ValueError("counts must be finite and non-negative.")
  if np.issubdtype(counts.dtype, np.integer):
    counts = counts.astype(np.int64)
  else:
    counts = counts.astype(np.float64)
  order = np.argsort(-counts, kind="stable")
  sorted_counts = counts[order]
  cum_before = np.cumsum(sorted_counts) - sorted_counts
  total = sorted_counts.sum()
  sorted_cohorts = np.where(cum_before < t1 * total, HEAD,
                            np.where(cum_before < t2 * total, MID, TAIL))
  sorted_cohorts[sorted_counts == 0] = TAIL
  cohorts = np.empty(counts.size, np.int8)
  cohorts[order] = sorted_cohorts
  return cohorts
