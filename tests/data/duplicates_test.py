"""The duplicates policy: keep_first (default), keep_all, error."""

import csv
import json

import numpy as np
import pytest

from tfrs_negsamp.data import errors
from tfrs_negsamp.data import interactions as interactions_lib
from tfrs_negsamp.data import loaders
from tfrs_negsamp.data import make_synthetic


def _log(rows, lines=None):
  users, items, times = zip(*rows)
  return interactions_lib.Interactions(users, items, np.asarray(times),
                                       source="log.csv", lines=lines)


def test_keep_first_keeps_each_pairs_earliest_row_in_file_order():
  # (1, a) appears at t=5 (row 0) and t=1 (row 2): row 2 is the earliest.
  # (2, a) at t=3 twice (rows 3, 4): the tie goes to the first, row 3.
  log = _log([("1", "a", 5), ("1", "b", 2), ("1", "a", 1), ("2", "a", 3),
              ("2", "a", 3), ("2", "b", 9)])
  kept, dropped = interactions_lib.apply_duplicates(log, "keep_first")
  assert dropped == 2
  np.testing.assert_array_equal(kept.user_ids, ["1", "1", "2", "2"])
  np.testing.assert_array_equal(kept.item_ids, ["b", "a", "a", "b"])
  np.testing.assert_array_equal(kept.timestamps, [2, 1, 3, 9])


def test_keep_all_and_no_duplicates_return_the_log_unchanged():
  log = _log([("1", "a", 5), ("1", "a", 1)])
  same, dropped = interactions_lib.apply_duplicates(log, "keep_all")
  assert same is log and dropped == 0
  unique = _log([("1", "a", 5), ("1", "b", 1), ("2", "a", 1)])
  for policy in ("keep_first", "error"):
    same, dropped = interactions_lib.apply_duplicates(unique, policy)
    assert same is unique and dropped == 0


def test_error_names_the_first_repeat_in_file_order_and_its_original():
  # Rows 0..4 on lines 2..6; (1, b) repeats on line 5 (first on line 3),
  # (1, a) on line 6: line 5 is the first repeat in file order.
  log = _log([("1", "a", 1), ("1", "b", 2), ("2", "a", 3), ("1", "b", 0),
              ("1", "a", 9)], lines=[2, 3, 4, 5, 6])
  with pytest.raises(errors.DataError) as info:
    interactions_lib.apply_duplicates(log, "error")
  assert str(info.value) == (
      "log.csv, line 5: duplicate interaction (user '1', item 'b'), first "
      "seen at line 3; pass --duplicates=keep_first to keep each pair's "
      "earliest row, or --duplicates=keep_all to keep every row")
  no_lines = _log([("1", "a", 1), ("1", "a", 2)])
  with pytest.raises(errors.DataError, match=r"^log.csv, row 2: duplicate "
                     r"interaction \(user '1', item 'a'\), first seen at "
                     r"row 1;"):
    interactions_lib.apply_duplicates(no_lines, "error")


def test_unknown_policy():
  with pytest.raises(ValueError, match="unknown duplicates policy 'drop'"):
    loaders.load_dataset("synthetic", duplicates="drop", num_users=10,
                         num_items=10, interactions_per_user=4)


def _write_csv(path, users, items, times):
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["user_id", "item_id", "timestamp"])
    writer.writerows(zip(users, items, times))
  return str(path)


def _splits(dataset):
  return [(part.user_ids.tolist(), part.item_ids.tolist(),
           part.timestamps.tolist())
          for part in (dataset.train, dataset.validation, dataset.test)]


@pytest.mark.parametrize("layout", ["appended", "interleaved"])
def test_every_row_twice_gives_the_same_split_as_once(tmp_path, layout):
  log, _ = make_synthetic(seed=3, num_users=60, num_items=50,
                          interactions_per_user=8)
  users, items, times = log.user_ids, log.item_ids, log.timestamps
  once = _write_csv(tmp_path / "once.csv", users, items, times)
  if layout == "appended":
    order = np.concatenate([np.arange(log.num_rows)] * 2)
  else:
    order = np.repeat(np.arange(log.num_rows), 2)
  twice = _write_csv(tmp_path / "twice.csv", users[order], items[order],
                     times[order])
  a = loaders.load_dataset("csv", data_path=once)
  b = loaders.load_dataset("csv", data_path=twice)
  assert _splits(a) == _splits(b)
  assert b.summary()["duplicate_rows_dropped"] == log.num_rows
  assert b.summary()["duplicates"] == "keep_first"
  assert a.summary()["duplicate_rows_dropped"] == 0
  # keep_all keeps the copies: each test item is then also a training row
  # of its user (the leak keep_first prevents).
  c = loaders.load_dataset("csv", data_path=twice, duplicates="keep_all")
  assert c.train.num_rows + c.validation.num_rows + c.test.num_rows == (
      2 * log.num_rows)
  assert c.summary()["duplicate_rows"] == log.num_rows
  assert c.summary()["duplicate_rows_dropped"] == 0
  assert c.summary()["test_reconsumption"] == 1.0
  assert b.summary()["test_reconsumption"] == 0.0
  with pytest.raises(errors.DataError,
                     match=r"twice.csv, line %d: duplicate interaction"
                     % (log.num_rows + 2 if layout == "appended" else 3)):
    loaders.load_dataset("csv", data_path=twice, duplicates="error")


def test_held_out_item_is_never_a_training_row_under_keep_first(tmp_path):
  # User 1 consumes item 7 at t=1 and again last, at t=9: under keep_first
  # the repeat is dropped, so the test row is item 8 (t=5), not item 7.
  path = _write_csv(tmp_path / "r.csv", ["1"] * 5, ["7", "6", "8", "5", "7"],
                    [1, 2, 5, 3, 9])
  first = loaders.load_dataset("csv", data_path=path, split_kwargs={
      "num_validation": 0})
  assert first.test.item_ids.tolist() == ["8"]
  assert first.train.item_ids.tolist() == ["7", "6", "5"]
  kept = loaders.load_dataset("csv", data_path=path, duplicates="keep_all",
                              split_kwargs={"num_validation": 0})
  assert kept.test.item_ids.tolist() == ["7"]
  assert "7" in kept.train.item_ids.tolist()


def test_metrics_json_reports_the_dropped_rows(tmp_path):
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import experiment  # pylint: disable=g-import-not-at-top
  path = _write_csv(tmp_path / "d.csv", ["1", "1", "1", "1", "2", "2", "2"],
                    ["1", "2", "1", "3", "1", "2", "3"],
                    [1, 2, 3, 4, 1, 2, 3])
  config = configuration.ExperimentConfig(
      dataset="csv", data_path=path, sampler="popularity_baseline",
      num_validation=0, verbose=0, output_dir=str(tmp_path / "out"))
  experiment.run(config)
  metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert metrics["dataset_summary"]["duplicates"] == "keep_first"
  assert metrics["dataset_summary"]["duplicate_rows_dropped"] == 1
  assert metrics["dataset_summary"]["train_rows"] == 4
  assert metrics["flags"]["duplicates"] == "keep_first"
