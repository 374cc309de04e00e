"""Data: interaction logs, item catalogs, loaders, splits and tf.data input.

Everything here is pure numpy except `to_tf_dataset`, `catalog_dataset` and
`tutorial_movielens` (module `tf_dataset`), which are imported on first use
so that loading and splitting data does not import TensorFlow.
"""

import importlib
from typing import Any

from tfrs_negsamp.data.csv_loader import load_csv
from tfrs_negsamp.data.errors import DataError
from tfrs_negsamp.data.ids import sort_unique_ids
from tfrs_negsamp.data.ids import to_str_ids
from tfrs_negsamp.data.interactions import Catalog
from tfrs_negsamp.data.interactions import Dataset
from tfrs_negsamp.data.interactions import Interactions
from tfrs_negsamp.data.loaders import DATASET_NAMES
from tfrs_negsamp.data.loaders import load_dataset
from tfrs_negsamp.data.movielens import detect_movielens_variant
from tfrs_negsamp.data.movielens import load_movielens
from tfrs_negsamp.data.movielens import load_movielens_100k
from tfrs_negsamp.data.movielens import load_movielens_1m
from tfrs_negsamp.data.movielens import load_movielens_tfds
from tfrs_negsamp.data.splits import leave_last_out
from tfrs_negsamp.data.splits import split
from tfrs_negsamp.data.splits import SPLIT_METHODS
from tfrs_negsamp.data.splits import temporal_split
from tfrs_negsamp.data.synthetic import make_synthetic
from tfrs_negsamp.data.synthetic import planted_factors

_LAZY = {"to_tf_dataset": "tf_dataset", "catalog_dataset": "tf_dataset",
         "tutorial_movielens": "tf_dataset"}

__all__ = [
    "Catalog", "DATASET_NAMES", "DataError", "Dataset", "Interactions",
    "SPLIT_METHODS", "catalog_dataset", "detect_movielens_variant",
    "leave_last_out", "load_csv", "load_dataset", "load_movielens",
    "load_movielens_100k", "load_movielens_1m", "load_movielens_tfds",
    "make_synthetic", "planted_factors", "sort_unique_ids", "split",
    "temporal_split", "to_str_ids", "to_tf_dataset", "tutorial_movielens",
]


def __getattr__(name: str) -> Any:
  if name in _LAZY:
    module = importlib.import_module("tfrs_negsamp.data." + _LAZY[name])
    return getattr(module, name)
  raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__() -> list[str]:
  return sorted(set(globals()) | set(_LAZY))
