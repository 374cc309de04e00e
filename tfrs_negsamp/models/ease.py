"""EASE^R, the closed-form linear item-item model (Steck, WWW 2019).

With the binary user-item matrix X [U, N] of the training split, EASE^R
solves

  min_B ||X - X B||_F^2 + lambda ||B||_F^2   s.t.  diag(B) = 0,

whose solution is, with G = X^T X + lambda I and P = G^-1,

  B_ij = -P_ij / P_jj  (i != j),   B_jj = 0,

i.e. B = I - P diagMat(1 / diag(P)) (each column j divided by P_jj). A
user's scores are x_u B. No negatives are sampled: the model is the "what a
linear item-item model gets" reference next to the two-tower samplers.

Implementation: float32 throughout; G is built in place in one dense
N x N buffer, inverted in place by a Cholesky factorisation (LAPACK
`spotrf` + `spotri`) and turned into B in the same buffer, so one fit holds
one N x N float32 matrix. Choosing lambda keeps the best B seen so far in a
second buffer (two matrices). `check_memory` refuses before allocating when
they would not fit in the available memory.
"""

import contextlib
import math
import os
import sys
import time
from typing import Callable, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import sparse
from scipy.linalg import lapack

# The lambdas `--ease_lambda=0` chooses from (see `lambda_grid`).
LAMBDA_GRID = (10.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
# Overrides the available memory (GB) that `check_memory` compares with.
MEMORY_ENV = "TFRS_NEGSAMP_EASE_MEMORY_GB"
_BLOCK = 1024


class EaseMemoryError(MemoryError):
  """The item-item matrices would not fit in the available memory."""


def interaction_matrix(rows: np.ndarray, cols: np.ndarray, num_rows: int,
                       num_items: int) -> sparse.csr_matrix:
  """The binary [num_rows, num_items] matrix with ones at (rows, cols).

  Repeated pairs count once (EASE^R uses binary implicit feedback).
  """
  x = sparse.csr_matrix(
      (np.ones(len(rows), np.float32), (np.asarray(rows, np.int64),
                                        np.asarray(cols, np.int64))),
      shape=(num_rows, num_items), dtype=np.float32)
  x.sum_duplicates()
  x.data[:] = 1.0
  return x


def matrix_bytes(num_items: int) -> int:
  """Bytes of one N x N float32 matrix."""
  return 4 * int(num_items) ** 2


def available_memory_bytes() -> int:
  """`$TFRS_NEGSAMP_EASE_MEMORY_GB` if set, else MemAvailable (/proc)."""
  override = os.environ.get(MEMORY_ENV)
  if override:
    return int(float(override) * 2**30)
  with contextlib.suppress(OSError):  # no /proc: memory unknown
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  return sys.maxsize  # unknown: do not refuse


def check_memory(num_items: int, copies: int,
                 available: Optional[int] = None) -> int:
  """Raises `EaseMemoryError` when `copies` N x N matrices would not fit.

  Args:
    num_items: N.
    copies: N x N float32 matrices held at once (1 for a fit with a given
      lambda, 2 while choosing lambda).
    available: Bytes available (default: `available_memory_bytes()`).

  Returns:
    The bytes needed.
  """
  needed = copies * matrix_bytes(num_items)
  if available is None:
    available = available_memory_bytes()
  if needed > available:
    raise EaseMemoryError(
        "ease_baseline refuses to start: it needs %d float32 item-item "
        "matrices of %d x %d items, %.2f GB, but only %.2f GB are available "
        "(MemAvailable in /proc/meminfo, or $%s). Free memory, use a "
        "machine with more, give --ease_lambda (one matrix instead of two "
        "while choosing lambda), or set %s=<GB> to override."
        % (copies, num_items, num_items, needed / 2**30, available / 2**30,
           MEMORY_ENV, MEMORY_ENV))
  return needed


def lambda_grid(x: sparse.spmatrix,
                grid: Sequence[float] = LAMBDA_GRID) -> Tuple[float, ...]:
  """The lambdas tried on `x`: `grid`, without the ones that cannot help.

  lambda is a ridge weight added to diag(X^T X), the item counts. Scaling
  the grid by the mean item count was tried and is wrong: on Amazon video
  games (mean count ~10) the validation optimum is >= 400, on ML-100K (mean
  ~58) it is 200, and Steck reports 200-1000 on larger sets. So the
  reference grid is used as is; only values above 10x the largest item
  count (where B ~ X^T X / lambda, a co-occurrence ranking that larger
  lambdas only rescale) are dropped, keeping at least three.
  """
  counts = np.asarray(x.sum(axis=0)).ravel()
  cap = 10.0 * float(counts.max()) if counts.size else math.inf
  kept = [float(g) for g in sorted(grid) if g <= cap]
  return tuple(kept if len(kept) >= 3 else sorted(grid)[:3])


def _gram_into(x: sparse.spmatrix, lam: float, out: np.ndarray) -> None:
  """out <- X^T X + lam I, without a second dense N x N temporary."""
  out.fill(0.0)
  gram = (x.T @ x).tocoo()
  out[gram.row, gram.col] = gram.data
  out[np.diag_indices_from(out)] += np.float32(lam)


def _symmetrize_from_upper(a: np.ndarray) -> None:
  """Copies the upper triangle of `a` to its lower one, block by block."""
  n = a.shape[0]
  for start in range(0, n, _BLOCK):
    stop = min(start + _BLOCK, n)
    a[start:stop, :start] = a[:start, start:stop].T
    block = a[start:stop, start:stop]
    block[...] = np.triu(block) + np.triu(block, 1).T


def _invert_spd_in_place(a: np.ndarray) -> None:
  """a <- a^-1 for a symmetric positive definite C-ordered float32 `a`.

  LAPACK works on the Fortran view `a.T` (the same matrix, a symmetric);
  its lower triangle is the upper triangle of `a`.
  """
  factor, info = lapack.spotrf(a.T, lower=1, overwrite_a=1, clean=0)
  if info != 0:
    raise np.linalg.LinAlgError(
        "Cholesky factorisation of X^T X + lambda I failed (info=%d); "
        "use a larger lambda." % info)
  inverse, info = lapack.spotri(factor, lower=1, overwrite_c=1)
  if info != 0:
    raise np.linalg.LinAlgError("spotri failed (info=%d)." % info)
  if not np.shares_memory(inverse, a):  # LAPACK copied after all
    a[...] = inverse.T
  _symmetrize_from_upper(a)


def fit_into(x: sparse.spmatrix, lam: float, out: np.ndarray) -> np.ndarray:
  """EASE^R weights B for `lam` > 0, written into `out` [N, N] float32."""
  if lam <= 0:
    raise ValueError("lambda must be > 0, got %r." % lam)
  _gram_into(x, lam, out)
  _invert_spd_in_place(out)
  diag = out.diagonal().copy()
  for start in range(0, out.shape[0], _BLOCK):
    out[start:start + _BLOCK] /= -diag  # column j / -P_jj
  np.fill_diagonal(out, 0.0)
  return out


def fit(x: sparse.spmatrix, lam: float, check: bool = True) -> np.ndarray:
  """EASE^R weights B [N, N] float32 of binary `x` [U, N] (see module)."""
  n = x.shape[1]
  if check:
    check_memory(n, copies=1)
  return fit_into(x, lam, np.empty((n, n), np.float32))


def score_fn(x: sparse.spmatrix, b: np.ndarray
             ) -> Callable[[np.ndarray], np.ndarray]:
  """`rows -> x[rows] B`, the scores of a chunk of users."""
  x = sparse.csr_matrix(x)

  def scores(rows: np.ndarray) -> np.ndarray:
    return np.asarray(x[rows] @ b, np.float32)

  # A new array per call: the evaluator may mask it in place, uncopied.
  scores.writable_output = True
  return scores


def select_lambda(x: sparse.spmatrix,
                  objective: Callable[[np.ndarray], float],
                  grid: Sequence[float],
                  progress: bool = True
                  ) -> Tuple[float, np.ndarray, Dict[float, float]]:
  """Chooses lambda in `grid` maximising `objective(B)` (validation).

  Each fit costs one Cholesky of an N x N matrix, so the search walks the
  sorted grid from its middle towards the better neighbour and stops when
  the objective drops (it assumes one peak, as is usual for a ridge
  weight); a grid of up to 3 values is searched exhaustively.

  Args:
    x: The binary training matrix [U, N].
    objective: B -> the validation score (higher is better).
    grid: Candidate lambdas (> 0).
    progress: Print one line per fit to stderr.

  Returns:
    (best lambda, its B, {lambda: objective} of the fits made).
  """
  grid = sorted(set(float(g) for g in grid))
  if not grid:
    raise ValueError("the lambda grid is empty.")
  n = x.shape[1]
  check_memory(n, copies=2 if len(grid) > 1 else 1)
  work = np.empty((n, n), np.float32)
  best = np.empty((n, n), np.float32) if len(grid) > 1 else work
  scores: Dict[float, float] = {}
  chosen = None

  def evaluate(i):
    nonlocal work, best, chosen
    start = time.time()
    fit_into(x, grid[i], work)
    score = float(objective(work))
    if progress:
      print("ease: lambda=%g validation objective=%.5f (%.1fs)"
            % (grid[i], score, time.time() - start), file=sys.stderr,
            flush=True)
    if chosen is None or score > scores[chosen]:  # ties: first one wins
      chosen = grid[i]
      work, best = best, work  # keep this B; fit the next into the other
    scores[grid[i]] = score

  if len(grid) <= 3:
    for i in range(len(grid)):
      evaluate(i)
  else:
    mid = len(grid) // 2
    for i in (mid - 1, mid, mid + 1):
      evaluate(i)
    step = 0
    if scores[grid[mid - 1]] > scores[grid[mid]]:
      step, i = -1, mid - 2
    elif scores[grid[mid + 1]] > scores[grid[mid]]:
      step, i = 1, mid + 2
    while step and 0 <= i < len(grid):
      evaluate(i)
      if scores[grid[i]] <= scores[grid[i - step]]:
        break
      i += step
  return chosen, best, scores
