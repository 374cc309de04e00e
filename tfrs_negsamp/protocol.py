"""The evaluation protocol applied to a split `Dataset`.

Design: docs/design/evaluation.md#full-corpus.

Evaluated users: test users that have training interactions (the others have
no learned embedding and are skipped, as in the reference evaluators).
Targets: the user's test items. Excluded ("seen"): the user's training and
validation items, never the target itself. Cohorts come from training counts.
"""

import dataclasses
import sys
import time
from typing import Any, Callable, Dict, Optional, Sequence

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
  split: str = "test"       # the evaluated split (history towers' queries)


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
      num_skipped_users=skipped,
      split=split)


def evaluate_embeddings(user_embeddings: np.ndarray,
                        item_embeddings: np.ndarray,
                        sets: EvaluationSets, progress: bool = True,
                        **kwargs) -> Dict[str, Any]:
  """Full-corpus metrics of float32 dot-product scores `U V^T`.

  Scored chunk by chunk (`chunk_size` users, multi-threaded BLAS) into one
  reused buffer, masked in place (`full_corpus.DotProductScores`); top-K
  then runs on cache-sized row blocks (`full_corpus.top_k_indices`).
  """
  return evaluate_scores(
      full_corpus.DotProductScores(user_embeddings, item_embeddings), sets,
      progress=progress, **kwargs)


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


def training_matrix(dataset: Dataset, user_ids: np.ndarray):
  """Binary [len(user_ids), N] matrix of these users' training items."""
  from tfrs_negsamp.models import ease  # pylint: disable=g-import-not-at-top
  train = dataset.train
  user_ids = np.asarray(user_ids)
  mask = np.isin(train.user_ids, user_ids)
  sorter = np.argsort(user_ids)
  rows = sorter[np.searchsorted(user_ids, train.user_ids[mask],
                                sorter=sorter)]
  cols = dataset.catalog.index_of(train.item_ids[mask])
  return ease.interaction_matrix(rows, cols, user_ids.size,
                                 dataset.catalog.num_items)


def evaluate_ease(dataset: Dataset, sets: EvaluationSets,
                  lam: float = 0.0, progress: bool = True,
                  objective: str = "recall@50",
                  grid: Optional[Sequence[float]] = None,
                  **kwargs) -> Dict[str, Any]:
  """The `ease_baseline`: EASE^R (Steck 2019) fitted on the training split.

  B is fitted on the binary training matrix of all training users; a user's
  scores are their training row times B (validation items are excluded from
  the ranking, as for every model, but not used as input). `lam` <= 0
  chooses lambda on the **validation** split (`objective`, from
  `ease.lambda_grid` unless `grid` is given), whatever split `sets` is.

  Returns:
    The metrics of `evaluate_scores`, plus `ease_lambda` (the lambda used),
    `ease_lambda_selected` (whether it was chosen on validation),
    `ease_lambda_at_grid_edge` (the best was the grid's first or last),
    `ease_lambda_scores` ({lambda: validation objective}), `ease_objective`
    and `ease_fit_seconds` (fits and the search included).
  """
  from tfrs_negsamp.models import ease  # pylint: disable=g-import-not-at-top
  start = time.time()
  x = training_matrix(dataset, dataset.users)
  extra: Dict[str, Any] = {}
  if lam and lam > 0:
    weights = ease.fit(x, lam)
    chosen = float(lam)
  else:
    validation = evaluation_sets(dataset, "validation")
    x_val = training_matrix(dataset, validation.user_ids)

    def score_validation(b):
      metrics = evaluate_scores(ease.score_fn(x_val, b), validation,
                                progress=False, **kwargs)
      if objective not in metrics:
        raise ValueError("unknown objective %r; valid: %s" % (
            objective, ", ".join(k for k in metrics if "@" in k)))
      return metrics[objective]

    grid = tuple(grid or ease.lambda_grid(x))
    chosen, weights, scores = ease.select_lambda(
        x, score_validation, grid, progress=progress)
    at_edge = len(grid) > 1 and chosen in (min(grid), max(grid))
    if at_edge and progress:
      print("ease: the chosen lambda=%g is at the edge of the grid %s; "
            "consider --ease_lambda beyond it." % (chosen, list(grid)),
            file=sys.stderr, flush=True)
    extra = {"ease_lambda_scores": {"%g" % k: v for k, v in scores.items()},
             "ease_objective": "validation " + objective,
             "ease_lambda_at_grid_edge": at_edge}
  fit_seconds = time.time() - start
  metrics = evaluate_scores(
      ease.score_fn(training_matrix(dataset, sets.user_ids), weights), sets,
      progress=progress, **kwargs)
  metrics.update(extra, ease_lambda=chosen,
                 ease_lambda_selected=not (lam and lam > 0),
                 ease_fit_seconds=fit_seconds)
  return metrics


def evaluate_model(model, sets: EvaluationSets, progress: bool = True,
                   histories: Optional[np.ndarray] = None,
                   **kwargs) -> Dict[str, Any]:
  """Full-corpus metrics of a `TwoTowerModel` (uncorrected `<u, v>`).

  A history query tower is queried with `histories` (`[U, L]`, aligned with
  `sets.user_ids`) or, when None, the model's evaluation histories of
  `sets.split` (training items, plus validation items on "test").
  """
  if getattr(model, "uses_history", False):
    queries = model.query_embeddings(sets.user_ids, histories=histories,
                                     split=sets.split)
  else:
    queries = model.query_embeddings(sets.user_ids)
  return evaluate_embeddings(queries,
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
