"""Full-corpus evaluation: top-K metrics, popularity cohorts and balance.

Pure NumPy (no TensorFlow import); a model plugs in through a scoring
callback `score_fn(user_rows [b]) -> scores [b, N]`. See
`evaluate_full_corpus`.
"""

from tfrs_negsamp.evaluation.cohorts import balance
from tfrs_negsamp.evaluation.cohorts import COHORT_NAMES
from tfrs_negsamp.evaluation.cohorts import gini
from tfrs_negsamp.evaluation.cohorts import popularity_cohorts
from tfrs_negsamp.evaluation.full_corpus import DotProductScores
from tfrs_negsamp.evaluation.full_corpus import evaluate_full_corpus
from tfrs_negsamp.evaluation.full_corpus import popularity_scores
from tfrs_negsamp.evaluation.full_corpus import quality_metric_names
from tfrs_negsamp.evaluation.full_corpus import ScoreFn
from tfrs_negsamp.evaluation.full_corpus import top_k_indices
from tfrs_negsamp.evaluation.metrics import average_metrics
from tfrs_negsamp.evaluation.metrics import dcg_discounts
from tfrs_negsamp.evaluation.metrics import hit_rate_at_k
from tfrs_negsamp.evaluation.metrics import hits_and_dcg_at_ks
from tfrs_negsamp.evaluation.metrics import ideal_dcg
from tfrs_negsamp.evaluation.metrics import ndcg_at_k
from tfrs_negsamp.evaluation.metrics import recall_at_k
from tfrs_negsamp.evaluation.sparse_sets import SparseSets

__all__ = [
    "COHORT_NAMES",
    "DotProductScores",
    "ScoreFn",
    "SparseSets",
    "average_metrics",
    "balance",
    "dcg_discounts",
    "evaluate_full_corpus",
    "gini",
    "hit_rate_at_k",
    "hits_and_dcg_at_ks",
    "ideal_dcg",
    "ndcg_at_k",
    "popularity_cohorts",
    "popularity_scores",
    "quality_metric_names",
    "recall_at_k",
    "top_k_indices",
]
