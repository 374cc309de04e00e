"""Tests of load_dataset."""

import os
import subprocess
import sys

import pytest

from tfrs_negsamp import data
from tfrs_negsamp.data import errors
from tfrs_negsamp.data import loaders


def test_synthetic():
  dataset = loaders.load_dataset("synthetic", seed=1, num_users=100,
                                 num_items=50, interactions_per_user=10)
  assert dataset.name == "synthetic"
  assert dataset.test.num_rows == 100
  assert dataset.catalog.num_items == 50


def test_movielens_folder_with_temporal_split(ml100k_path):
  dataset = loaders.load_dataset(
      "movielens", ml100k_path, split="temporal",
      split_kwargs=dict(test_fraction=0.1, validation_fraction=0.1))
  assert dataset.name == "movielens-100k"
  assert dataset.summary()["test_rows"] == 10000
  assert dataset.validation.num_rows == 10000
  assert dataset.train.timestamps.max() <= dataset.test.timestamps.min()


def test_csv(tmp_path):
  path = tmp_path / "log.csv"
  path.write_text("user_id,item_id,timestamp\n1,a,1\n1,b,2\n2,a,3\n")
  dataset = loaders.load_dataset("csv", str(path))
  assert dataset.name == "csv:log.csv"
  assert dataset.test.item_ids.tolist() == ["b"]


def test_bad_arguments(tmp_path):
  with pytest.raises(ValueError, match="synthetic, movielens, csv"):
    loaders.load_dataset("netflix")
  with pytest.raises(ValueError, match="leave_last_out, temporal"):
    loaders.load_dataset("synthetic", split="random")
  with pytest.raises(ValueError, match="num_users"):
    loaders.load_dataset("csv", "x.csv", num_users=3)
  with pytest.raises(ValueError, match="data_path"):
    loaders.load_dataset("csv")
  with pytest.raises(errors.DataError, match="not a MovieLens folder"):
    loaders.load_dataset("movielens", str(tmp_path))


def test_package_exports():
  for name in data.__all__:
    assert getattr(data, name) is not None
  assert issubclass(data.DataError, ValueError)
  assert callable(data.to_tf_dataset) and callable(data.catalog_dataset)


def test_loading_and_splitting_do_not_import_tensorflow():
  code = ("import sys\n"
          "from tfrs_negsamp import data\n"
          "data.load_dataset('synthetic', num_users=20, num_items=10)\n"
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
  subprocess.run([sys.executable, "-c", code], check=True,
                 cwd=os.path.dirname(os.path.dirname(os.path.dirname(
                     os.path.abspath(__file__)))))
