"""Full-corpus top-K evaluation (design doc section 8), in pure NumPy.

A model plugs in through `score_fn(user_rows) -> [b, N] scores` over the whole
catalog; no TensorFlow is imported here. For each evaluated user every item is
scored, the user's seen items are masked to -inf (never the targets), the top
max(K) items are taken with ties broken by lower item index, and HR / Recall /
NDCG at each K are computed overall and per popularity cohort.
"""

import concurrent.futures
import os
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from tfrs_negsamp.evaluation import cohorts as cohorts_lib
from tfrs_negsamp.evaluation import metrics as metrics_lib
from tfrs_negsamp.evaluation.sparse_sets import SparseSets

ScoreFn = Callable[[np.ndarray], np.ndarray]

DEFAULT_KS = (10, 50, 100)


# Rows of a [rows, N] score block processed at once by `top_k_indices`:
# about this many elements (4 MB of float32), so that its passes stay in
# cache (a [1024, 23715] block is about 3.5x slower per row).
CACHE_ELEMENTS = 1 << 20

# Column groups per row of the threshold top-k: G = GROUPS_PER_K * k (see
# `_top_k_threshold`); larger G gives a tighter threshold (fewer candidates)
# for a larger [rows, G] partition.
GROUPS_PER_K = 8

NAN_MESSAGE = "scores contain NaN."


def quality_metric_names(ks: Sequence[int] = DEFAULT_KS,
                         diagnostic_k: Optional[int] = None
                         ) -> Tuple[str, ...]:
  """The metrics of `evaluate_full_corpus` that grow with quality.

  `recall@K`, `hr@K`, `ndcg@K` for every K, then `balance`, `balance_ndcg`
  and `coverage@k` (k = `diagnostic_k`, default as in
  `evaluate_full_corpus`): the keys a tuner may maximise or a log may plot
  (the counts and `median_popularity@k` are not among them).
  """
  ks = metrics_lib.check_ks(ks)
  if diagnostic_k is None:
    diagnostic_k = 10 if 10 in ks else ks[0]
  return tuple(f"{name}@{k}" for name in ("recall", "hr", "ndcg")
               for k in ks) + ("balance", "balance_ndcg",
                               f"coverage@{diagnostic_k}")


def cache_rows(num_items: int) -> int:
  """Rows of a cache-sized [rows, num_items] block (at least 1)."""
  return max(1, CACHE_ELEMENTS // max(int(num_items), 1))


def num_threads() -> int:
  """Threads of the top-k (`EVAL_THREADS`, default: the CPU count, <= 8)."""
  value = os.environ.get("EVAL_THREADS")
  if value:
    return max(1, int(value))
  return max(1, min(os.cpu_count() or 1, 8))


def _top_k_partition(scores: np.ndarray, k: int) -> np.ndarray:
  """`top_k_indices` of a float [b, N] block by `np.partition`, 0 < k < N."""
  rows, n = scores.shape
  if np.isnan(scores.max()):
    raise ValueError(NAN_MESSAGE)
  kth = np.partition(scores, n - k, axis=1)[:, n - k:n - k + 1]
  selected = scores >= kth
  ambiguous = np.flatnonzero(np.count_nonzero(selected, axis=1) > k)
  if ambiguous.size:  # Ties straddle the cut: keep the lowest indices.
    sub_scores, sub_kth = scores[ambiguous], kth[ambiguous]
    above = sub_scores > sub_kth
    ties = sub_scores == sub_kth
    need = k - np.count_nonzero(above, axis=1, keepdims=True)
    selected[ambiguous] = above | (
        ties & (np.cumsum(ties, axis=1, dtype=np.int32) <= need))
  # Row-major flat positions: exactly k per row, ascending within a row.
  candidates = np.flatnonzero(selected).reshape(rows, k) % n
  candidate_scores = np.take_along_axis(scores, candidates, axis=1)
  order = np.argsort(-candidate_scores, axis=1, kind="stable")
  return np.take_along_axis(candidates, order, axis=1)


def _top_k_threshold(scores: np.ndarray, k: int) -> np.ndarray:
  """`top_k_indices` of a C-contiguous float [b, N] block, N >= G.

  With G = GROUPS_PER_K k column groups {j, j + G, j + 2G, ...} (j < G),
  the group maxima m_j are G distinct entries, so t = the k-th largest m_j
  has at least k entries >= t: the row's top k (ties at the cut included)
  are among the candidates {i : s_i >= t}. Costs one strided elementwise
  max, one comparison and one `np.flatnonzero` pass (all SIMD, no sort of
  the row), a partition of [b, G], and a sort of the few candidates by
  (row, -score, index).
  """
  rows, n = scores.shape
  groups = GROUPS_PER_K * k
  per_group = n // groups
  maxima = scores[:, :groups * per_group].reshape(
      rows, per_group, groups).max(axis=1)
  # max propagates NaN: the maxima and the few other columns hold any NaN.
  if (np.isnan(maxima.max())
      or np.isnan(scores[:, groups * per_group:].max(initial=0.0))):
    raise ValueError(NAN_MESSAGE)
  threshold = np.partition(maxima, groups - k, axis=1)[:, groups - k]
  flat = np.flatnonzero(scores >= threshold[:, None])
  row = flat // n
  column = flat - row * n
  values = scores.reshape(-1)[flat]
  # Stable: within (row, score) the ascending flat order keeps lower index.
  order = np.lexsort((-values, row))
  starts = np.zeros(rows + 1, np.int64)
  np.cumsum(np.bincount(row, minlength=rows), out=starts[1:])
  return column[order][starts[:-1, None] + np.arange(k)]


def _top_k_block(scores: np.ndarray, k: int) -> np.ndarray:
  """`top_k_indices` of a float [b, N] block, 0 < k < N."""
  if (scores.shape[1] >= 10 * GROUPS_PER_K * k
      and scores.flags.c_contiguous):
    return _top_k_threshold(scores, k)
  return _top_k_partition(scores, k)


def top_k_indices(scores: np.ndarray, k: int,
                  threads: Optional[int] = None) -> np.ndarray:
  """Indices of the k best scores per row, best first, ties by lower index.

  The order is that of a stable descending sort: the result equals
  `np.argsort(-scores, axis=1, kind="stable")[:, :k]`, but costs O(N) per
  row plus a sort of about k candidates. Wide rows (N >= 80 k) go through
  `_top_k_threshold` (a lower bound t on the k-th largest score from
  column-group maxima, then only the scores >= t are sorted); narrow ones
  through `np.partition` (the k-th largest v; every item > v plus the
  lowest-index items == v). Ties at the cut are resolved exactly either way
  (which `np.argpartition` alone does not do). Rows are processed in
  cache-sized blocks (`cache_rows`), on `threads` threads (default
  `num_threads()`; NumPy releases the GIL in these passes).

  Args:
    scores: [b, N] float scores without NaN.
    k: number of items to keep; clipped to N.
    threads: worker threads (1: none).

  Returns:
    [b, min(k, N)] int64 item indices.

  Raises:
    ValueError: if a score is NaN.
  """
  scores = np.asarray(scores)
  if not np.issubdtype(scores.dtype, np.floating):
    scores = scores.astype(np.float64)
  rows, n = scores.shape
  k = min(int(k), n)
  if k <= 0 or rows == 0:
    return np.zeros((rows, max(k, 0)), np.int64)
  if k == n:
    if np.isnan(scores.max()):
      raise ValueError(NAN_MESSAGE)
    return np.argsort(-scores, axis=1, kind="stable")
  step = cache_rows(n)
  if rows <= step:
    return _top_k_block(scores, k)
  top = np.empty((rows, k), np.int64)

  def block(start):
    top[start:start + step] = _top_k_block(scores[start:start + step], k)

  starts = range(0, rows, step)
  threads = num_threads() if threads is None else max(1, int(threads))
  if threads == 1 or len(starts) == 1:
    for start in starts:
      block(start)
  else:
    list(_executor(threads).map(block, starts))
  return top


_EXECUTORS: Dict[int, concurrent.futures.ThreadPoolExecutor] = {}


def _executor(threads: int) -> concurrent.futures.ThreadPoolExecutor:
  if threads not in _EXECUTORS:
    _EXECUTORS[threads] = concurrent.futures.ThreadPoolExecutor(
        threads, thread_name_prefix="top_k")
  return _EXECUTORS[threads]


def popularity_scores(item_counts: np.ndarray) -> ScoreFn:
  """Score function of the popularity baseline: every user gets the counts.

  Equal counts are then ranked by lower item index (the evaluator's tie
  rule). Scores are float64 so counts above 2**24 stay exact.

  Args:
    item_counts: [N] training interaction counts.

  Returns:
    `score_fn(users [b]) -> [b, N]` (a read-only broadcast view).
  """
  counts = np.asarray(item_counts, np.float64)
  if counts.ndim != 1:
    raise ValueError(f"item_counts must be 1-D, got shape {counts.shape}.")

  def score_fn(users: np.ndarray) -> np.ndarray:
    return np.broadcast_to(counts, (len(users), counts.size))

  return score_fn


class _Progress:
  """One-line progress on stderr, rewritten in place at most 4 times/s."""

  def __init__(self, total: int, enabled: bool, min_interval: float = 0.25):
    self._total = total
    self._enabled = enabled
    self._min_interval = min_interval
    self._start = time.monotonic()
    self._last_time = -float("inf")
    self._last_done = -1

  def update(self, done: int, force: bool = False) -> None:
    if not self._enabled or done == self._last_done:
      return
    now = time.monotonic()
    if not force and now - self._last_time < self._min_interval:
      return
    self._last_time, self._last_done = now, done
    rate = done / max(now - self._start, 1e-9)
    sys.stderr.write(
        f"\revaluate_full_corpus: {done}/{self._total} users "
        f"({100.0 * done / max(self._total, 1):.1f}%), {rate:,.0f} users/s ")
    sys.stderr.flush()

  def close(self, done: int) -> None:
    if self._enabled:
      self.update(done, force=True)
      sys.stderr.write("\n")
      sys.stderr.flush()


def _check_sets(sets: SparseSets, name: str, num_rows: int,
                num_items: int) -> SparseSets:
  if not isinstance(sets, SparseSets):
    raise ValueError(f"{name} must be a SparseSets, got {type(sets).__name__}.")
  if sets.num_rows != num_rows:
    raise ValueError(f"{name} has {sets.num_rows} rows but users has "
                     f"{num_rows}: they must be aligned.")
  if sets.max_index() >= num_items:
    raise ValueError(f"{name} holds item {sets.max_index()}, outside the "
                     f"catalog [0, {num_items}) given by item_counts.")
  return sets.canonical()


class DotProductScores:
  """`score_fn` of dot-product scores `U[rows] V^T`, float32, in one buffer.

  Each call writes its [b, N] scores into a buffer it reuses (no new
  [b, N] allocation per chunk) and returns a view of it, valid until the
  next call. `writable_output = True` tells `evaluate_full_corpus` that it
  may mask that view in place instead of copying it.
  """

  writable_output = True

  def __init__(self, user_embeddings: np.ndarray,
               item_embeddings: np.ndarray):
    self._users = np.asarray(user_embeddings, np.float32)
    self._items_t = np.asarray(item_embeddings, np.float32).T
    self._buffer = np.empty((0, self._items_t.shape[1]), np.float32)

  def __call__(self, rows: np.ndarray) -> np.ndarray:
    b = len(rows)
    if self._buffer.shape[0] < b:
      self._buffer = np.empty((b, self._items_t.shape[1]), np.float32)
    out = self._buffer[:b]
    np.matmul(self._users[rows], self._items_t, out=out)
    return out


def _call_score_fn(score_fn: ScoreFn, users: np.ndarray,
                   num_items: int) -> np.ndarray:
  """Calls `score_fn`, checks the result and returns a writable array.

  A C-contiguous copy, unless `score_fn.writable_output` says the result is
  a buffer the evaluator may modify. NaN is detected by the top-k.
  """
  scores = np.asarray(score_fn(users))
  expected = (len(users), num_items)
  if scores.shape != expected:
    raise ValueError(f"score_fn returned shape {scores.shape} for "
                     f"{len(users)} users; expected {expected} "
                     f"([users, catalog size]).")
  if np.issubdtype(scores.dtype, np.floating):
    if not (getattr(score_fn, "writable_output", False)
            and scores.flags.writeable and scores.flags.c_contiguous):
      scores = np.array(scores, copy=True, order="C")
  elif np.issubdtype(scores.dtype, np.integer) or scores.dtype == bool:
    scores = scores.astype(np.float64)
  else:
    raise ValueError(f"score_fn must return numbers, got dtype "
                     f"{scores.dtype}.")
  return scores


def evaluate_full_corpus(
    score_fn: ScoreFn,
    users: np.ndarray,
    targets: SparseSets,
    seen: Optional[SparseSets],
    item_counts: np.ndarray,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 1024,
    average: str = "user",
    cohort_thresholds: Sequence[float] = cohorts_lib.DEFAULT_THRESHOLDS,
    progress: bool = True,
    exclude_seen: bool = True,
    diagnostic_k: Optional[int] = None,
    truncated_recall: bool = False,
) -> Dict[str, Any]:
  """Ranks the whole catalog for each user and computes top-K metrics.

  Per user q with test items R_q (binary relevance) and ranking top_K:
    HR@K = 1[|top_K intersect R_q| > 0],
    Recall@K = |top_K intersect R_q| / |R_q|,
    NDCG@K = sum_{r<=K} rel_r / log2(r + 1) / IDCG@K,
    IDCG@K = sum_{r=1..min(|R_q|, K)} 1 / log2(r + 1).
  Ties: stable descending sort (lower item index first).
  `average="interaction"` counts every (user, target) pair once instead:
  HR = Recall = 1[rank < K], NDCG = 1/log2(rank + 2) if rank < K (0-based).

  Exclusion (`exclude_seen`, default on): the user's `seen` items get score
  -inf before top-K, except the user's own targets (keep_target).
  `reconsumption_fraction` = fraction of (user, target) pairs whose target is
  also seen.

  Cohorts: `popularity_cohorts(item_counts, cohort_thresholds)`. For cohort c
  the relevant set is R_q intersect c (users with at least one such
  target): DCG counts only hits in c and IDCG uses min(|R_q intersect c|, K).
  A cohort without targets gets 0 for every metric. `balance` =
  1 - Gini(cohort HR@k) and `balance_ndcg` = 1 - Gini(cohort NDCG@k), with
  k = `diagnostic_k`.

  Diagnostics at k = `diagnostic_k`: `coverage@k`, the fraction of catalog
  items in at least one user's top-k, and `median_popularity@k`, the mean
  over users of the median training count of their top-k.

  Users without any target are not scored (counted in
  `num_users_without_targets`). Duplicate items in `targets`/`seen` rows are
  ignored. Peak memory per chunk: the callback's [chunk_size, N] scores, a
  masked copy of them (none for a `DotProductScores` callback, masked in
  place through flat indices), and the top-K's buffers for one cache-sized
  block of rows per thread (`top_k_indices`); hits are found by flat
  index (`np.isin`), with no [chunk_size, N] mask. NaN scores among the
  items left after the exclusion raise ValueError.

  Args:
    score_fn: given user rows [b] (int64 slices of `users`), returns scores
      [b, N] over all catalog items (float; a copy is modified, not this,
      unless `score_fn.writable_output` is True, as for
      `DotProductScores`: then the result is masked in place).
    users: [U] int user row indices to evaluate.
    targets: test items per user, `num_rows == U`, aligned with `users`.
    seen: items to exclude per user (training, plus validation when
      evaluating test), aligned with `users`; None for none.
    item_counts: [N] training counts; N is the catalog size.
    ks: cut-offs, positive ints.
    chunk_size: users scored per `score_fn` call.
    average: "user" (default) or "interaction".
    cohort_thresholds: (t1, t2) with 0 < t1 < t2 < 1.
    progress: print a one-line progress indicator to stderr.
    exclude_seen: mask `seen` items (if False, `seen` only feeds
      `reconsumption_fraction`).
    diagnostic_k: K of `balance`, `coverage@K`, `median_popularity@K`; must
      be in `ks`. Default: 10 if 10 is in `ks`, else the smallest K.
    truncated_recall: Recall@K = hits / min(|R_q|, K) instead of / |R_q|.

  Returns:
    A JSON-serialisable dict: `recall@K`, `hr@K`, `ndcg@K` for every K,
    `balance`, `balance_ndcg`, `coverage@k`, `median_popularity@k`,
    `cohorts` ({"head"|"mid"|"tail": {metrics, "num_items", "num_targets",
    "num_users"}}), `num_users`, `num_users_without_targets`, `num_targets`,
    `reconsumption_fraction`, `averaging`, `exclude_seen`, `ks`,
    `diagnostic_k`, `cohort_thresholds`, `catalog_size`.

  Raises:
    ValueError: on malformed inputs, naming the problem.
  """
  ks = metrics_lib.check_ks(ks)
  if average not in metrics_lib.AVERAGING_UNITS:
    raise ValueError(f"average must be one of "
                     f"{metrics_lib.AVERAGING_UNITS}, got {average!r}.")
  if diagnostic_k is None:
    diagnostic_k = 10 if 10 in ks else ks[0]
  if diagnostic_k not in ks:
    raise ValueError(f"diagnostic_k ({diagnostic_k}) must be one of ks "
                     f"{ks}.")
  if (isinstance(chunk_size, bool)
      or not isinstance(chunk_size, (int, np.integer)) or chunk_size <= 0):
    raise ValueError(f"chunk_size must be a positive int, got "
                     f"{chunk_size!r}.")
  if not callable(score_fn):
    raise ValueError("score_fn must be callable.")
  item_counts = np.asarray(item_counts)
  if item_counts.ndim != 1 or item_counts.size == 0:
    raise ValueError(f"item_counts must be a non-empty 1-D [N] array, got "
                     f"shape {item_counts.shape}.")
  if (not np.issubdtype(item_counts.dtype, np.number)
      or not np.all(np.isfinite(item_counts)) or item_counts.min() < 0):
    raise ValueError("item_counts must hold finite, non-negative numbers.")
  item_cohorts = cohorts_lib.popularity_cohorts(item_counts,
                                                cohort_thresholds)
  thresholds = cohorts_lib.check_thresholds(cohort_thresholds)
  num_items = item_counts.size
  users = np.asarray(users)
  if users.ndim != 1:
    raise ValueError(f"users must be 1-D [U], got shape {users.shape}.")
  if users.size and not np.issubdtype(users.dtype, np.integer):
    raise ValueError(f"users must hold integer row indices, got dtype "
                     f"{users.dtype}.")
  users = users.astype(np.int64)
  targets = _check_sets(targets, "targets", users.size, num_items)
  if seen is not None:
    seen = _check_sets(seen, "seen", users.size, num_items)

  has_targets = targets.row_lengths() > 0
  num_without = int(np.count_nonzero(~has_targets))
  if num_without:
    users = users[has_targets]
    targets = targets.select_rows(has_targets)
    if seen is not None:
      seen = seen.select_rows(has_targets)
  num_users = users.size
  if not num_users:
    raise ValueError("no user to evaluate: users is empty or no user has a "
                     "test target.")

  kmax = ks[-1]
  num_ks = len(ks)
  num_cohorts = len(cohorts_lib.COHORT_NAMES)
  num_relevant = targets.row_lengths()
  hit_counts = np.zeros((num_users, num_ks), np.int64)
  dcg = np.zeros((num_users, num_ks))
  cohort_hits = np.zeros((num_users, num_cohorts, num_ks), np.int64)
  cohort_dcg = np.zeros((num_users, num_cohorts, num_ks))
  cohort_relevant = np.zeros((num_users, num_cohorts), np.int64)
  median_popularity = np.zeros(num_users)
  covered = np.zeros(num_items, bool)
  popularity = item_counts.astype(np.float64)
  num_reconsumed = 0

  bar = _Progress(num_users, progress)
  for start in range(0, num_users, chunk_size):
    stop = min(start + chunk_size, num_users)
    rows = stop - start
    scores = _call_score_fn(score_fn, users[start:stop].copy(), num_items)
    chunk_targets = targets.slice_rows(start, stop)
    t_rows, t_items = chunk_targets.row_ids(), chunk_targets.indices
    # Flat positions r N + i in the C-contiguous [rows, N] chunk.
    t_keys = t_rows * num_items + t_items
    if seen is not None:
      chunk_seen = seen.slice_rows(start, stop)
      s_keys = chunk_seen.row_ids() * num_items + chunk_seen.indices
      reconsumed = np.isin(s_keys, t_keys)
      num_reconsumed += int(np.count_nonzero(reconsumed))
      if exclude_seen and s_keys.size:  # In place; keep_target.
        scores.reshape(-1)[s_keys[~reconsumed]] = -np.inf
    try:
      top = top_k_indices(scores, kmax)
    except ValueError as e:
      raise ValueError("score_fn returned NaN scores.") from e
    hits = np.isin(np.arange(rows)[:, None] * num_items + top, t_keys)
    hit_counts[start:stop], dcg[start:stop] = metrics_lib.hits_and_dcg_at_ks(
        hits, ks)
    top_cohorts = item_cohorts[top]
    for c in range(num_cohorts):
      cohort_hits[start:stop, c], cohort_dcg[start:stop, c] = (
          metrics_lib.hits_and_dcg_at_ks(hits & (top_cohorts == c), ks))
    cohort_relevant[start:stop] = np.bincount(
        t_rows * num_cohorts + item_cohorts[t_items],
        minlength=rows * num_cohorts).reshape(rows, num_cohorts)
    top_diag = top[:, :diagnostic_k]
    covered[top_diag] = True
    median_popularity[start:stop] = np.median(popularity[top_diag], axis=1)
    bar.update(stop)
  bar.close(num_users)

  result: Dict[str, Any] = {
      "averaging": average,
      "exclude_seen": bool(exclude_seen and seen is not None),
      "ks": list(ks),
      "diagnostic_k": int(diagnostic_k),
      "catalog_size": int(num_items),
      "num_users": int(num_users),
      "num_users_without_targets": num_without,
      "num_targets": int(num_relevant.sum()),
      "reconsumption_fraction": float(num_reconsumed / num_relevant.sum()),
  }
  overall = metrics_lib.average_metrics(hit_counts, dcg, num_relevant, ks,
                                        average, truncated_recall)
  for name in ("recall", "hr", "ndcg"):
    for k in ks:
      result[f"{name}@{k}"] = overall[f"{name}@{k}"]

  cohort_results = {}
  for c, name in enumerate(cohorts_lib.COHORT_NAMES):
    entry = metrics_lib.average_metrics(
        cohort_hits[:, c], cohort_dcg[:, c], cohort_relevant[:, c], ks,
        average, truncated_recall)
    entry["num_items"] = int(np.count_nonzero(item_cohorts == c))
    entry["num_targets"] = int(cohort_relevant[:, c].sum())
    entry["num_users"] = int(np.count_nonzero(cohort_relevant[:, c]))
    cohort_results[name] = entry
  names = cohorts_lib.COHORT_NAMES
  result["balance"] = cohorts_lib.balance(
      [cohort_results[n][f"hr@{diagnostic_k}"] for n in names])
  result["balance_ndcg"] = cohorts_lib.balance(
      [cohort_results[n][f"ndcg@{diagnostic_k}"] for n in names])
  result[f"coverage@{diagnostic_k}"] = float(np.mean(covered))
  result[f"median_popularity@{diagnostic_k}"] = float(
      np.mean(median_popularity))
  result["cohort_thresholds"] = list(thresholds)
  result["cohorts"] = cohort_results
  return result
