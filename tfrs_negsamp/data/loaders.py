"""One entry point that loads and splits a named data set."""

import os
from typing import Any, Optional

from tfrs_negsamp.data import csv_loader
from tfrs_negsamp.data import movielens
from tfrs_negsamp.data import splits
from tfrs_negsamp.data import synthetic
from tfrs_negsamp.data.interactions import Dataset

DATASET_NAMES = ("synthetic", "movielens", "csv")


def load_dataset(name: str,
                 data_path: Optional[str] = None,
                 split: str = "leave_last_out",
                 seed: int = 0,
                 split_kwargs: Optional[dict[str, Any]] = None,
                 **synthetic_kwargs: Any) -> Dataset:
  """Loads data set `name` and splits it.

  Args:
    name: "synthetic", "movielens" or "csv".
    data_path: For "csv" the file; for "movielens" a local ml-100k / ml-1m
      folder, or None to load "movielens/100k-ratings" through TFDS. Unused
      for "synthetic".
    split: The split method, see `splits.SPLIT_METHODS`.
    seed: The seed of the synthetic generator (the splits are
      deterministic).
    split_kwargs: Extra arguments of the split function, e.g.
      {"num_validation": 1} or {"test_fraction": 0.1}.
    **synthetic_kwargs: Arguments of `synthetic.make_synthetic`.

  Returns:
    The split Dataset.

  Raises:
    ValueError: On an unknown name or split, or arguments that do not apply.
    DataError: If the data cannot be loaded or split.
  """
  if name not in DATASET_NAMES:
    raise ValueError("unknown data set %r; valid names: %s"
                     % (name, ", ".join(DATASET_NAMES)))
  if split not in splits.SPLIT_METHODS:
    raise ValueError("unknown split method %r; valid methods: %s"
                     % (split, ", ".join(splits.SPLIT_METHODS)))
  if synthetic_kwargs and name != "synthetic":
    raise ValueError("arguments %s apply only to the synthetic data set"
                     % ", ".join(sorted(synthetic_kwargs)))
  if name == "synthetic":
    interactions, catalog = synthetic.make_synthetic(seed=seed,
                                                     **synthetic_kwargs)
    dataset_name = "synthetic"
  elif name == "movielens":
    interactions, catalog = movielens.load_movielens(data_path)
    if data_path is None:
      dataset_name = "movielens-100k"
    else:
      dataset_name = "movielens-" + movielens.detect_movielens_variant(
          data_path)
  else:
    if data_path is None:
      raise ValueError("the csv data set needs data_path (a CSV file)")
    interactions, catalog = csv_loader.load_csv(data_path)
    dataset_name = "csv:" + os.path.basename(data_path)
  return splits.split(interactions, catalog, method=split, name=dataset_name,
                      **(split_kwargs or {}))
