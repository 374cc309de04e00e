"""Top-K ranking metrics with binary relevance, on hit arrays (pure NumPy).

A hit array `hits` [b, L] is boolean: `hits[i, r - 1]` is True when the item
at rank r (1-based) of row i's ranking is relevant. `num_relevant` [b] is
|R_q|, the size of row i's relevant set. With `hits_K = sum_{r<=K} hits[r]`:

  HR@K     = 1[hits_K > 0]
  Recall@K = hits_K / |R_q|        (truncated: hits_K / min(|R_q|, K))
  NDCG@K   = DCG@K / IDCG@K,  DCG@K = sum_{r=1..K} hits[r] / log2(r + 1),
             IDCG@K = sum_{r=1..min(|R_q|, K)} 1 / log2(r + 1).

A K larger than L uses all L columns (the whole ranking).
"""

from typing import Dict, Sequence, Tuple

import numpy as np

AVERAGING_UNITS = ("user", "interaction")


def check_ks(ks: Sequence[int]) -> Tuple[int, ...]:
  """Returns `ks` sorted and deduplicated; raises ValueError if invalid."""
  ks = tuple(ks) if not isinstance(ks, (int, np.integer)) else (ks,)
  if not ks:
    raise ValueError("ks must not be empty.")
  for k in ks:
    if (isinstance(k, bool) or not isinstance(k, (int, np.integer))
        or k <= 0):
      raise ValueError(f"ks must be positive integers, got {ks!r}.")
  return tuple(sorted({int(k) for k in ks}))


def dcg_discounts(length: int) -> np.ndarray:
  """[length] float64 discounts 1 / log2(r + 1) for ranks r = 1..length."""
  return 1.0 / np.log2(np.arange(2, length + 2, dtype=np.float64))


def ideal_dcg(num_relevant: np.ndarray, k: int) -> np.ndarray:
  """IDCG@k = sum_{r=1..min(|R_q|, k)} 1 / log2(r + 1), elementwise.

  Args:
    num_relevant: [b] int |R_q| per row.
    k: cut-off.

  Returns:
    [b] float64 (0 for rows with no relevant item).
  """
  table = np.concatenate([[0.0], np.cumsum(dcg_discounts(k))])
  return table[np.minimum(np.asarray(num_relevant, np.int64), k)]


def _check_hits(hits: np.ndarray) -> np.ndarray:
  hits = np.asarray(hits)
  if hits.ndim != 2:
    raise ValueError(f"hits must be 2-D [rows, ranks], got shape "
                     f"{hits.shape}.")
  return hits.astype(bool, copy=False)


def hits_and_dcg_at_ks(hits: np.ndarray,
                       ks: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
  """Number of hits and DCG within the top K, for every K in `ks`.

  Args:
    hits: [b, L] bool, rank r at column r - 1.
    ks: cut-offs.

  Returns:
    `(hit_counts, dcg)`: `hit_counts [b, len(ks)]` int64
    `= sum_{r<=K} hits[r]` and `dcg [b, len(ks)]` float64
    `= sum_{r<=K} hits[r] / log2(r + 1)`.
  """
  hits = _check_hits(hits)
  rows, length = hits.shape
  if length == 0:
    return np.zeros((rows, len(ks)), np.int64), np.zeros((rows, len(ks)))
  columns = np.minimum(np.asarray(ks, np.int64), length) - 1
  cum_hits = np.cumsum(hits, axis=1, dtype=np.int64)
  cum_dcg = np.cumsum(hits * dcg_discounts(length), axis=1)
  return cum_hits[:, columns], cum_dcg[:, columns]


def hit_rate_at_k(hits: np.ndarray, k: int) -> np.ndarray:
  """[b] float64 HR@k = 1[|top_k intersect R_q| > 0]."""
  counts, _ = hits_and_dcg_at_ks(hits, [k])
  return (counts[:, 0] > 0).astype(np.float64)


def recall_at_k(hits: np.ndarray, num_relevant: np.ndarray, k: int,
                truncated: bool = False) -> np.ndarray:
  """[b] float64 Recall@k = hits_k / |R_q| (or / min(|R_q|, k) if truncated).

  Rows with |R_q| = 0 get 0.
  """
  counts, _ = hits_and_dcg_at_ks(hits, [k])
  return _recall(counts[:, 0], np.asarray(num_relevant), k, truncated)


def ndcg_at_k(hits: np.ndarray, num_relevant: np.ndarray,
              k: int) -> np.ndarray:
  """[b] float64 NDCG@k = DCG@k / IDCG@k; rows with |R_q| = 0 get 0."""
  _, dcg = hits_and_dcg_at_ks(hits, [k])
  return _ndcg(dcg[:, 0], np.asarray(num_relevant), k)


def _recall(hit_counts: np.ndarray, num_relevant: np.ndarray, k: int,
            truncated: bool) -> np.ndarray:
  denominator = np.minimum(num_relevant, k) if truncated else num_relevant
  return np.divide(hit_counts, denominator, out=np.zeros(len(hit_counts)),
                   where=denominator > 0)


def _ndcg(dcg: np.ndarray, num_relevant: np.ndarray, k: int) -> np.ndarray:
  idcg = ideal_dcg(num_relevant, k)
  return np.divide(dcg, idcg, out=np.zeros(len(dcg)), where=idcg > 0)


def average_metrics(hit_counts: np.ndarray,
                    dcg: np.ndarray,
                    num_relevant: np.ndarray,
                    ks: Sequence[int],
                    average: str = "user",
                    truncated_recall: bool = False) -> Dict[str, float]:
  """Averages HR, Recall and NDCG at each K over users or interactions.

  Only rows with |R_q| > 0 take part.
  - `average="user"`: mean over rows of the per-row HR@K, Recall@K, NDCG@K.
  - `average="interaction"`: every (row, relevant item) pair counts once:
    HR@K of a pair = 1[rank < K], NDCG@K of a pair = 1/log2(rank + 2) if
    rank < K (0-based rank), Recall@K = HR@K. Hence
    HR@K = sum_rows hits_K / sum_rows |R_q| and
    NDCG@K = sum_rows DCG@K / sum_rows |R_q|.
  With no row taking part every metric is 0.

  Args:
    hit_counts: [b, len(ks)] hits within the top K (`hits_and_dcg_at_ks`).
    dcg: [b, len(ks)] DCG@K.
    num_relevant: [b] |R_q|.
    ks: the cut-offs of the columns.
    average: "user" or "interaction".
    truncated_recall: divide recall by min(|R_q|, K) (user averaging only).

  Returns:
    {"hr@K": ..., "recall@K": ..., "ndcg@K": ...} as Python floats.

  Raises:
    ValueError: on an unknown `average`.
  """
  if average not in AVERAGING_UNITS:
    raise ValueError(f"average must be one of {AVERAGING_UNITS}, got "
                     f"{average!r}.")
  num_relevant = np.asarray(num_relevant, np.int64)
  active = num_relevant > 0
  hit_counts = np.asarray(hit_counts)[active]
  dcg = np.asarray(dcg)[active]
  num_relevant = num_relevant[active]
  total = int(num_relevant.sum())
  result = {}
  for j, k in enumerate(ks):
    if not total:
      hr = recall = ndcg = 0.0
    elif average == "user":
      hr = float(np.mean(hit_counts[:, j] > 0))
      recall = float(np.mean(
          _recall(hit_counts[:, j], num_relevant, k, truncated_recall)))
      ndcg = float(np.mean(_ndcg(dcg[:, j], num_relevant, k)))
    else:
      hr = recall = float(hit_counts[:, j].sum() / total)
      ndcg = float(dcg[:, j].sum() / total)
    result[f"hr@{k}"] = hr
    result[f"recall@{k}"] = recall
    result[f"ndcg@{k}"] = ndcg
  return result
