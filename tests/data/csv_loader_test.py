"""Tests of the CSV loader and its error messages."""

import numpy as np
import pytest

from tfrs_negsamp.data import csv_loader
from tfrs_negsamp.data import errors
from tfrs_negsamp.data import splits


def _write(tmp_path, text, name="log.csv"):
  path = tmp_path / name
  path.write_text(text, encoding="utf-8")
  return str(path)


def test_loads_extra_columns_in_any_order(tmp_path):
  path = _write(tmp_path,
                "rating,timestamp,item_id,note,user_id\n"
                "5,100,i2,hello,u1\n"
                "3,90,i10,,u2\n"
                "\n"
                "4,120.0,i2,x,u2\n")
  inter, catalog = csv_loader.load_csv(path)
  np.testing.assert_array_equal(inter.user_ids, ["u1", "u2", "u2"])
  np.testing.assert_array_equal(inter.item_ids, ["i2", "i10", "i2"])
  np.testing.assert_array_equal(inter.timestamps, [100, 90, 120])
  assert inter.source == path
  np.testing.assert_array_equal(catalog.item_ids, ["i10", "i2"])
  assert catalog.titles is None


def test_integer_ids_are_sorted_numerically(tmp_path):
  path = _write(tmp_path, "user_id,item_id,timestamp\n1,10,1\n1,9,2\n2,100,3\n")
  _, catalog = csv_loader.load_csv(path)
  np.testing.assert_array_equal(catalog.item_ids, ["9", "10", "100"])


@pytest.mark.parametrize("text, expected", [
    ("user,item_id,time\n1,2,3\n",
     r"line 1: the header is missing column\(s\) user_id, timestamp "
     r"\(found: 'user', 'item_id', 'time'\)"),
    ("user_id,item_id,timestamp\n1,2,3\n1,2,yesterday\n",
     r"line 3: timestamp is not a number: 'yesterday'"),
    ("", r"the file is empty"),
    ("user_id,item_id,timestamp\n1,2,3\n1,2\n",
     r"line 3: too few fields: expected at least 3 .*found 2"),
    ("user_id,item_id,timestamp\n", r"no data rows"),
    ("user_id,item_id,timestamp\n\n\n", r"no data rows"),
    ("timestamp,user_id,item_id\n3,1,\n", r"line 2: empty item_id"),
    ("timestamp,user_id,item_id\n3,1,2\n4, ,2\n", r"line 3: empty user_id"),
])
def test_malformed_files_raise_data_error(tmp_path, text, expected):
  path = _write(tmp_path, text, name="broken_file.csv")
  with pytest.raises(errors.DataError, match=expected) as info:
    csv_loader.load_csv(path)
  assert "broken_file.csv" in str(info.value)


def test_missing_file(tmp_path):
  with pytest.raises(errors.DataError, match="nope.csv: file not found"):
    csv_loader.load_csv(str(tmp_path / "nope.csv"))


def test_every_user_with_one_interaction_fails_at_split(tmp_path):
  path = _write(tmp_path, "user_id,item_id,timestamp\n1,a,1\n2,a,2\n3,b,3\n",
                name="singletons.csv")
  inter, catalog = csv_loader.load_csv(path)
  with pytest.raises(errors.DataError) as info:
    splits.leave_last_out(inter, catalog)
  message = str(info.value)
  assert "singletons.csv" in message
  assert "every user has fewer than 2 interactions" in message
