"""One entry point that loads and splits a named data set."""

import os
from typing import Any, Optional

import numpy as np

from tfrs_negsamp.data import csv_loader
from tfrs_negsamp.data import interactions as interactions_lib
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
                 duplicates: str = "keep_first",
                 user_fraction: float = 1.0,
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
    duplicates: What to do with repeated (user, item) rows, applied after
      loading and before the split (`interactions.apply_duplicates`):
      "keep_first" (default: each pair's earliest row; so a held-out item
      is never also a training row of the same user), "keep_all" (repeat
      consumption) or "error". The Dataset's `summary()` reports the
      policy and the rows dropped.
    user_fraction: Keep this fraction of the users (all their rows; one fixed
      choice per data set, `subsample_users`), for searches on a part of a
      large set. 1 keeps everyone.
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
  if duplicates not in interactions_lib.DUPLICATE_POLICIES:
    raise ValueError("unknown duplicates policy %r; valid: %s"
                     % (duplicates,
                        ", ".join(interactions_lib.DUPLICATE_POLICIES)))
  if not 0 < user_fraction <= 1:
    raise ValueError("user_fraction must be in (0, 1], got %r"
                     % (user_fraction,))
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
  if user_fraction < 1:
    # One subsample per data set, whatever the run's seed.
    interactions = subsample_users(interactions, user_fraction)
    dataset_name += "@%gu" % user_fraction
  interactions, dropped = interactions_lib.apply_duplicates(interactions,
                                                            duplicates)
  # keep_first drops every repeated row; error mode got here without any.
  repeated = (_repeated_rows(interactions) if duplicates == "keep_all"
              else dropped)
  dataset = splits.split(interactions, catalog, method=split,
                         name=dataset_name, **(split_kwargs or {}))
  dataset.load_report = {"duplicates": duplicates,
                         "duplicate_rows": repeated,
                         "duplicate_rows_dropped": dropped}
  return dataset


def subsample_users(interactions: interactions_lib.Interactions,
                    fraction: float, seed: int = 0
                    ) -> interactions_lib.Interactions:
  """The rows of a seeded random `fraction` of the users (at least one).

  The choice depends only on the sorted distinct user ids and the seed, so
  a subsample is the same in every run with the same data and seed.
  """
  users = np.unique(interactions.user_ids)
  keep = max(1, int(round(fraction * users.size)))
  chosen = np.random.RandomState(seed).choice(users.size, keep,
                                              replace=False)
  return interactions.subset(np.isin(interactions.user_ids, users[chosen]),
                             source=interactions.source)


def _repeated_rows(interactions: interactions_lib.Interactions) -> int:
  """Rows whose (user, item) pair occurs on an earlier row."""
  codes = interactions.pair_codes()
  return int(codes.size - np.unique(codes).size)
