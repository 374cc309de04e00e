"""Property-based tests of the CSV and MovieLens loaders (Hypothesis).

Random and mutated files must give either the right interactions or a
`DataError` (the package's own error type), never another exception.
Example counts are bounded so that the module runs in a few seconds.
"""

import csv
import io
import os
import tempfile

from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np

from tfrs_negsamp.data import csv_loader
from tfrs_negsamp.data import errors
from tfrs_negsamp.data import loaders
from tfrs_negsamp.data import movielens

# Derandomized and without an example database: the same examples on every
# machine (CI included), nothing written to the checkout.
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# Id text: any printable Unicode but NUL and the surrogates (not UTF-8).
_ID_CHARS = st.characters(blacklist_categories=("Cs",),
                          blacklist_characters="\x00")
_IDS = st.text(_ID_CHARS, min_size=1, max_size=8).filter(
    lambda s: s.strip())
_TIMES = st.integers(-2**63, 2**63 - 1)


def _write(folder, name, data):
  path = os.path.join(folder, name)
  with open(path, "wb") as f:
    f.write(data)
  return path


def _csv_bytes(rows, header=("user_id", "item_id", "timestamp")):
  buffer = io.StringIO(newline="")
  writer = csv.writer(buffer)
  writer.writerow(header)
  writer.writerows(rows)
  return buffer.getvalue().encode("utf-8")


@SETTINGS
@given(rows=st.lists(st.tuples(_IDS, _IDS, _TIMES), min_size=1,
                     max_size=12),
       extra=st.booleans())
def test_csv_round_trip(rows, extra):
  header = ("timestamp", "note", "item_id", "user_id") if extra else (
      "user_id", "item_id", "timestamp")
  written = [(t, "x, \"y\"", i, u) if extra else (u, i, t)
             for u, i, t in rows]
  with tempfile.TemporaryDirectory() as folder:
    path = _write(folder, "log.csv", _csv_bytes(written, header))
    log, catalog = csv_loader.load_csv(path)
  assert log.user_ids.tolist() == [u.strip() for u, _, _ in rows]
  assert log.item_ids.tolist() == [i.strip() for _, i, _ in rows]
  assert log.timestamps.tolist() == [t for _, _, t in rows]
  assert sorted(catalog.item_ids.tolist()) == sorted(
      {i.strip() for _, i, _ in rows})
  # Line numbers: the header is line 1; a quoted id may span lines.
  assert log.lines[0] >= 2 and np.all(np.diff(log.lines) >= 1)


def _mutate(data: bytes, draw) -> bytes:
  edits = draw(st.lists(st.tuples(
      st.sampled_from(["insert", "delete", "replace", "truncate"]),
      st.integers(0, max(0, len(data))),
      st.binary(min_size=1, max_size=3) | st.sampled_from(
          [b",", b"\n", b"\"", b"\t", b"\xff", b"\x00", b"-", b"9" * 30,
           b"nan", b"\r"])), max_size=4))
  for kind, at, chunk in edits:
    at = min(at, len(data))
    if kind == "insert":
      data = data[:at] + chunk + data[at:]
    elif kind == "delete":
      data = data[:at] + data[at + len(chunk):]
    elif kind == "replace":
      data = data[:at] + chunk + data[at + len(chunk):]
    else:
      data = data[:at]
  return data


@SETTINGS
@given(data=st.data())
def test_mutated_csv_loads_or_raises_data_error(data):
  rows = [("1", "10", 100), ("1", "11", 101), ("2", "10", 102),
          ("2", "12", 103), ("3", "x y", 104)]
  raw = _mutate(_csv_bytes(rows), data.draw)
  with tempfile.TemporaryDirectory() as folder:
    path = _write(folder, "m.csv", raw)
    try:
      log, catalog = csv_loader.load_csv(path)
    except errors.DataError as e:
      assert "m.csv" in str(e) and "\n" not in str(e)
      return
  assert log.num_rows >= 1
  assert log.user_ids.size == log.item_ids.size == log.timestamps.size
  assert all(u.strip() == u and u for u in log.user_ids.tolist())
  catalog.index_of(log.item_ids)  # every item is in the catalog


# MovieLens 100K: u.item with items 1..5 (19 genre flags each).
_U_ITEM = "".join("%d|Movie %d|01-Jan-1995||http://x%s\n" % (i, i, "|0" * 19)
                  for i in range(1, 6))
_TOKENS = (st.integers(-10, 12).map(str)
           | st.integers(-10**30, 10**30).map(str)
           | st.sampled_from(["", " 7", "7 ", "+3", "1_0", "1.5", "abc",
                              "1e3", "0x1", "--1", " ", "9" * 25, "٣"]))
_LINES = st.lists(st.lists(_TOKENS, min_size=1, max_size=6), min_size=0,
                  max_size=8)


def _reference(lines):
  """The expected (table, lines) of u.data `lines`, or None for an error."""
  table, numbers = [], []
  for number, fields in enumerate(lines, start=1):
    text = "\t".join(fields)
    if not text.strip():
      continue
    if len(fields) != 4:
      return None
    try:
      values = [int(f) for f in fields]
    except ValueError:
      return None
    if not all(-2**63 <= v < 2**63 for v in values):
      return None
    table.append(values)
    numbers.append(number)
  if not table or not all(1 <= row[1] <= 5 for row in table):
    return None
  return table, numbers


@SETTINGS
@given(lines=_LINES)
def test_movielens_100k_random_u_data(lines):
  text = "".join("\t".join(fields) + "\n" for fields in lines)
  with tempfile.TemporaryDirectory() as folder:
    _write(folder, "u.item", _U_ITEM.encode("latin-1"))
    _write(folder, "u.data", text.encode("utf-8"))
    expected = _reference(lines)
    try:
      log, _ = movielens.load_movielens_100k(folder)
    except errors.DataError as e:
      assert expected is None, (lines, e)
      assert "u.data" in str(e)
      return
  assert expected is not None, lines
  table, numbers = expected
  assert log.user_ids.tolist() == [str(r[0]) for r in table]
  assert log.item_ids.tolist() == [str(r[1]) for r in table]
  assert log.timestamps.tolist() == [r[3] for r in table]
  assert log.lines.tolist() == numbers


@SETTINGS
@given(data=st.data())
def test_mutated_u_data_loads_or_raises_data_error(data):
  good = b"1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250951\n"
  raw = _mutate(good, data.draw)
  with tempfile.TemporaryDirectory() as folder:
    _write(folder, "u.item", _U_ITEM.encode("latin-1"))
    _write(folder, "u.data", raw)
    try:
      log, catalog = movielens.load_movielens_100k(folder)
    except errors.DataError as e:
      assert "u.data" in str(e) or "u.item" in str(e)
      return
  catalog.index_of(log.item_ids)
  assert log.num_rows == log.lines.size >= 1


@SETTINGS
@given(rows=st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("xyz"),
                               st.integers(0, 5)), min_size=1, max_size=12),
       policy=st.sampled_from(["keep_first", "keep_all", "error"]))
def test_loading_with_any_policy_splits_or_raises_data_error(rows, policy):
  with tempfile.TemporaryDirectory() as folder:
    path = _write(folder, "p.csv", _csv_bytes(rows))
    try:
      dataset = loaders.load_dataset("csv", data_path=path,
                                     duplicates=policy)
    except errors.DataError:
      return
  pairs = [(u, i) for u, i, _ in rows]
  unique = len(set(pairs))
  total = (dataset.train.num_rows + dataset.validation.num_rows +
           dataset.test.num_rows)
  assert total == (len(rows) if policy == "keep_all" else unique)
  if policy == "error":
    assert unique == len(rows)
  if policy != "keep_all":
    train = set(zip(dataset.train.user_ids.tolist(),
                    dataset.train.item_ids.tolist()))
    held = set(zip(dataset.test.user_ids.tolist(),
                   dataset.test.item_ids.tolist()))
    assert not train & held
