"""Goodness of fit of drawn counts: a chi-square test on whole outcomes.

A sampler that draws `K` columns with replacement from probabilities `p`
must give count vectors `n` with the multinomial law

    P(n) = K! / prod_j n_j! * prod_j p_j^n_j.

The test bins independent count vectors by their outcome (every `n` with
`sum n = K`), pools the outcomes expected fewer than 5 times into one bin
and compares the observed frequencies with `P(n)` (Pearson's chi-square).
Testing whole outcomes, not each column's mean, also rejects a sampler with
the right means but the wrong joint law (e.g. systematic resampling).
"""

import itertools
import math
from typing import Tuple

import numpy as np

# The standard-normal 0.999 quantile: a correct sampler fails ~1e-3 of runs
# (the tests use fixed seeds, so a given test passes or fails every time).
Z_999 = 3.09


def chi2_quantile(df: int, z: float = Z_999) -> float:
  """Wilson-Hilferty approximation of the chi-square quantile.

  Within 1% of the exact quantile for df >= 2 (e.g. df = 3: 16.25 vs
  16.27 at 0.999).
  """
  h = 2.0 / (9.0 * df)
  return df * (1.0 - h + z * np.sqrt(h)) ** 3


def multinomial_law(probs, num_draws: int
                    ) -> Tuple[np.ndarray, np.ndarray]:
  """Every outcome `n` (`[M, C]` int) of `num_draws` draws and `P(n)`."""
  probs = np.asarray(probs, np.float64)
  probs = probs / probs.sum()
  cols = len(probs)
  outcomes = np.array([c for c in itertools.product(
      range(num_draws + 1), repeat=cols) if sum(c) == num_draws])
  log_p = np.array([
      math.lgamma(num_draws + 1) - sum(math.lgamma(k + 1) for k in n)
      + sum(k * math.log(p) if k else 0.0 for k, p in zip(n, probs))
      if all(p > 0 or k == 0 for k, p in zip(n, probs)) else -np.inf
      for n in outcomes])
  return outcomes, np.exp(log_p)


def outcome_chi2(counts, probs, num_draws: int) -> Tuple[float, int]:
  """Pearson's statistic of count vectors `counts [N, C]` against `probs`.

  Outcomes of probability 0 must never occur (infinite statistic if they
  do); the others expected fewer than 5 times are pooled.

  Returns:
    `(statistic, degrees of freedom)`.
  """
  counts = np.rint(np.asarray(counts)).astype(np.int64)
  if np.any(counts.sum(axis=1) != num_draws):
    return float("inf"), 1
  outcomes, p = multinomial_law(probs, num_draws)
  index = {tuple(o): i for i, o in enumerate(outcomes)}
  observed = np.bincount([index[tuple(c)] for c in counts],
                         minlength=len(outcomes)).astype(np.float64)
  if np.any(observed[p == 0] > 0):
    return float("inf"), 1
  observed, p = observed[p > 0], p[p > 0]
  expected = len(counts) * p
  small = expected < 5
  if small.any():
    observed = np.append(observed[~small], observed[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
  stat = float(np.sum((observed - expected) ** 2 / expected))
  return stat, len(expected) - 1


def check_fit(test, counts, probs, num_draws: int, wrong_probs=None,
              msg: str = "") -> None:
  """Asserts `counts` fit `probs`, and that they do not fit `wrong_probs`.

  The second check shows the test has the power to tell the two laws
  apart with this sample, so a pass of the first is informative.
  """
  stat, df = outcome_chi2(counts, probs, num_draws)
  test.assertLess(stat, chi2_quantile(df), msg="%s: chi2 %.1f, df %d"
                  % (msg, stat, df))
  if wrong_probs is not None:
    stat, df = outcome_chi2(counts, wrong_probs, num_draws)
    test.assertGreater(stat, chi2_quantile(df),
                       msg="%s: the perturbed law is not rejected (chi2 "
                       "%.1f, df %d)" % (msg, stat, df))


def perturbed(probs, shift: float = 0.03) -> np.ndarray:
  """`probs` with `shift` of mass moved from the largest to the smallest
  positive entry (the same support)."""
  probs = np.asarray(probs, np.float64)
  probs = probs / probs.sum()
  out = probs.copy()
  positive = np.flatnonzero(probs > 0)
  hi = positive[np.argmax(probs[positive])]
  lo = positive[np.argmin(probs[positive])]
  out[hi] -= shift
  out[lo] += shift
  return out
