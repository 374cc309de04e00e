"""Popularity cohorts (head / mid / tail), Gini coefficient and balance.

Cohorts are equal-interaction-mass tertiles of the TRAINING counts, as in the
Apple evaluator (docs/design/evaluation.md#cohorts). Balance is 1 - Gini over
the per-cohort HR (or NDCG), so it is 1 when every cohort is served
equally well.
"""

from typing import Sequence

import numpy as np

# The cohorts themselves live in the core (`tfrs_negsamp.cohorts`), shared
# with the samplers; re-exported here as the evaluation's API.
# pylint: disable=unused-import
from tfrs_negsamp.cohorts import (COHORT_NAMES, DEFAULT_THRESHOLDS, HEAD,
                                  MID, TAIL, check_thresholds,
                                  popularity_cohorts)
# pylint: enable=unused-import

GINI_EPSILON = 1e-7


def gini(values: Sequence[float], epsilon: float = GINI_EPSILON) -> float:
  """Gini coefficient of `values + epsilon`.

  With x sorted ascending and n = len(x):
    G = sum_{i=1..n} (2i - n - 1) x_(i) / (n * sum x).
  G = 0 for equal values and (n - 1)/n when one value holds everything.

  Args:
    values: [n] non-negative numbers (n >= 1).
    epsilon: added to every value (avoids 0/0 when all are 0).

  Returns:
    G as a Python float.
  """
  x = np.sort(np.asarray(values, np.float64).ravel() + epsilon)
  if x.size == 0:
    raise ValueError("gini needs at least one value.")
  if np.any(x < 0) or not np.all(np.isfinite(x)):
    raise ValueError(f"gini needs finite non-negative values, got {values!r}.")
  n = x.size
  i = np.arange(1, n + 1)
  return float(np.sum((2 * i - n - 1) * x) / (n * np.sum(x)))


def balance(values: Sequence[float], epsilon: float = GINI_EPSILON) -> float:
  """Balance = 1 - Gini(values); for n = 3 cohorts it lies in [1/3, 1].

  1 means equal metric in every cohort (also when all are 0); 1/3 means all
  hits fall in one cohort.
  """
  return 1.0 - gini(values, epsilon)
