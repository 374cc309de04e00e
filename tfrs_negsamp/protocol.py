"""The evaluation protocol applied to a split `Dataset` (SAMPLERS.md 8).

Evaluated users: test users that have training interactions (the others have
no learned embedding and are skipped, as in the reference evaluators).
Targets: the user's test items. Excluded ("seen"): the user's training and
validation items, never the target itself. Cohorts come from training counts.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional

import numpy as np

from tfrs_negsamp.data import Dataset
from tfrs_negsamp.evaluation import full_corpus
from tfrs_negsamp.evaluation.sparse_sets import SparseSets


@dataclasses.dataclass(frozen=True)
class EvaluationSets:
  user_ids: np.ndarray      # [U] str ids of the evaluated users
  targets: SparseSets       # test items per user (catalog positions)
  seen: SparseSets          # train + validation items per user
  item_counts: np.ndarray   # [N] training counts
  num_skipped_users: int    # test users without training interactions


def evaluation_sets(dataset: Dataset, split: str = "test") -> EvaluationSets:
  """Builds targets and exclusions for `split` ("test" or "validation")."""
  if split not in ("test", "validation"):
    raise ValueError("split must be 'test' or 'validation', got %r." % split)
  evaluated = dataset.test if split == "test" else dataset.validation
  if evaluated.num_rows == 0:
    raise ValueError("the %s split of %r is empty: nothing to evaluate."
                     % (split, dataset.name))
  known = np.isin(evaluated.user_ids, dataset.users)
  user_ids = np.unique(evaluated.user_ids[known])
  skipped = int(np.unique(evaluated.user_ids[~known]).size)

  def sets(rows_of):
    mask = np.isin(rows_of.user_ids, user_ids)
    rows = np.searchsorted(user_ids, rows_of.user_ids[mask])
    cols = dataset.catalog.index_of(rows_of.item_ids[mask])
    return rows, cols

  t_rows, t_cols = sets(evaluated)
  seen_parts = [dataset.train] + (
      [dataset.validation] if split == "test" else [])
  s_rows, s_cols = [], []
  for part in seen_parts:
    if part.num_rows:
      r, c = sets(part)
      s_rows.append(r)
      s_cols.append(c)
  n = user_ids.size
  return EvaluationSets(
      user_ids=user_ids,
      targets=SparseSets.from_pairs(t_rows, t_cols, n),
      seen=SparseSets.from_pairs(np.concatenate(s_rows),
                                 np.concatenate(s_cols), n),
      item_counts=dataset.item_counts,
      num_skipped_users=skipped)


def evaluate_embeddings(user_embeddings: np.ndarray,
                        item_embeddings: np.ndarray,
                        sets: EvaluationSets, progress: bool = True,
                        **kwargs) -> Dict[str, Any]:
  """Full-corpus metrics of dot-product scores `U V^T`."""
  user_embeddings = np.asarray(user_embeddings, np.float32)
  item_embeddings = np.asarray(item_embeddings, np.float32)

  def score_fn(rows: np.ndarray) -> np.ndarray:
    return user_embeddings[rows] @ item_embeddings.T

  return evaluate_scores(score_fn, sets, progress=progress, **kwargs)


def evaluate_scores(score_fn: Callable[[np.ndarray], np.ndarray],
                    sets: EvaluationSets, progress: bool = True,
                    **kwargs) -> Dict[str, Any]:
  metrics = full_corpus.evaluate_full_corpus(
      score_fn, np.arange(sets.user_ids.size), sets.targets, sets.seen,
      sets.item_counts, progress=progress, **kwargs)
  metrics["num_skipped_users"] = sets.num_skipped_users
  return metrics


def evaluate_popularity(sets: EvaluationSets, progress: bool = True,
                        **kwargs) -> Dict[str, Any]:
  """The `popularity_baseline`: every user ranked by training popularity."""
  return evaluate_scores(full_corpus.popularity_scores(sets.item_counts),
                         sets, progress=progress, **kwargs)


def evaluate_model(model, sets: EvaluationSets, progress: bool = True,
                   **kwargs) -> Dict[str, Any]:
  """Full-corpus metrics of a `TwoTowerModel` (uncorrected `<u, v>`)."""
  return evaluate_embeddings(model.query_embeddings(sets.user_ids),
                             model.catalog_embeddings(), sets,
                             progress=progress, **kwargs)


def summarize(metrics: Dict[str, Any],
              keys=("recall@10", "recall@50", "recall@100", "hr@10",
                    "ndcg@10", "balance")) -> str:
  """One line: the headline metrics and the cohort HR@10."""
  parts = ["%s=%.4f" % (k, metrics[k]) for k in keys if k in metrics]
  cohorts: Optional[dict] = metrics.get("cohorts")
  if cohorts:
    parts.append("hr@10 head/mid/tail=%s" % "/".join(
        "%.4f" % cohorts[c]["hr@10"] for c in ("head", "mid", "tail")))
  return "  ".join(parts)
