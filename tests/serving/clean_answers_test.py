"""Answers hold only real items, say when they are short, leave seen items out.

Stand-in id towers (`stand_ins.py`), exported in seconds: a ScaNN index
that searches 2 of its 10 leaves (so it finds fewer than k items), an exact
index, and an export given training pairs (the user's items are excluded).
Each is checked through the SavedModel signature in a fresh process, the
`trainers.query` program and the REST server.
"""

import json
import os

import numpy as np
import pytest

from tests.serving import server_test
from tests.serving import stand_ins
from tfrs_negsamp.serving import export
from trainers.serving import server

PREDICT = server_test.PREDICT
_call = server_test._call  # pylint: disable=protected-access
NUM_ITEMS = 100
SHORT_K = 100
USERS = ["u0", "u1", "zz"]


def _seen(model):
  """Training pairs: u0 has its 2 best items, u1 its best (so excluding
  them changes the answer); "nope" is not a catalog id (dropped). u2 is in
  the tower's vocabulary with no training item; "zz" is unknown."""
  tower, item_ids, items = model
  best, _ = stand_ins.exact_top(tower, ["u0", "u1"], items, item_ids, 2)
  by_user = {"u0": best[0][:2], "u1": best[1][:1]}
  pairs = ([u for u, ids in by_user.items() for _ in ids] + ["u0"],
           [i for ids in by_user.values() for i in ids] + ["nope"])
  return pairs, by_user


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
  root = tmp_path_factory.mktemp("clean_answers")
  made = {}
  made["short"] = stand_ins.user_export(
      str(root / "short"), stand_ins.user_model(num_items=NUM_ITEMS),
      kind="scann", k=SHORT_K,
      scann_overrides={"num_leaves": 10, "num_leaves_to_search": 2})
  made["auto"] = stand_ins.user_export(
      str(root / "auto"), stand_ins.user_model(seed=1), kind="auto", k=40)
  model = stand_ins.user_model(seed=2)
  pairs, made["seen_by_user"] = _seen(model)
  made["seen"] = stand_ins.user_export(str(root / "seen"), model,
                                       kind="auto", k=10, seen_items=pairs)
  return made


def _meta(path):
  with open(os.path.join(path, export.METADATA_FILE)) as f:
    return json.load(f)


def _check_clean(out, k):
  """No NaN, no padding inside a row, "" / -inf after its count."""
  scores, ids, counts = out["scores"], out["item_ids"], out["count"]
  assert scores.shape == ids.shape == (len(counts), k)
  assert not np.isnan(scores).any()
  for row, count in enumerate(counts):
    assert np.isfinite(scores[row, :count]).all()
    assert (scores[row, count:] == -np.inf).all()
    assert all(i != "" for i in ids[row, :count])
    assert (ids[row, count:] == "").all()
    assert len(set(ids[row, :count])) == count
    assert (np.diff(scores[row, :count]) <= 1e-6).all()  # best first


def test_scann_short_rows_have_a_count_no_padding_id_no_nan(exports):
  path, tower, item_ids, items = exports["short"]
  out = stand_ins.fresh_outputs(path, {"user_id": USERS}, call=True)
  assert out["__inputs__"] == ["user_id"]
  _check_clean(out, SHORT_K)
  counts = out["count"]
  # 2 of 10 leaves searched: about 20 of the 100 items, never k.
  assert (counts > 0).all() and (counts < SHORT_K).all(), counts
  # The scores are the real <u, v> of the items named.
  queries = tower(np.array(USERS)).numpy()
  for row, count in enumerate(counts):
    positions = [list(item_ids).index(i) for i in out["item_ids"][row,
                                                                    :count]]
    np.testing.assert_allclose(out["scores"][row, :count],
                               items[positions] @ queries[row], atol=1e-4)
  assert (out["excluded"] == 0).all()
  # `loaded(user_ids)` gives the same pair.
  scores, ids = out["__call__"]
  np.testing.assert_array_equal(ids, out["item_ids"])
  np.testing.assert_allclose(scores, out["scores"])
  meta = _meta(path)
  assert (meta["index"], meta["index_requested"], meta["k"]) == (
      "scann", "scann", SHORT_K)
  assert meta["scann"]["num_leaves_to_search"] == 2
  assert (meta["exclusion"], meta["signatures"]) == ("none",
                                                     ["serving_default"])


def test_auto_index_is_exact_on_a_tiny_catalog(exports):
  path, tower, item_ids, items = exports["auto"]
  meta = _meta(path)
  assert (meta["index"], meta["index_requested"]) == ("brute_force", "auto")
  assert meta["exact_index_max_items"] == export.EXACT_INDEX_MAX_ITEMS
  assert "scann" not in meta
  out = stand_ins.fresh_outputs(path, {"user_id": USERS})
  _check_clean(out, 40)
  assert (out["count"] == 40).all()  # k = the catalog: every item, in order
  want, _ = stand_ins.exact_top(tower, USERS, items, item_ids, 40)
  assert out["item_ids"].tolist() == want


def test_index_kind_rule():
  limit = export.EXACT_INDEX_MAX_ITEMS
  assert export.resolve_index_kind("auto", limit) == "brute_force"
  assert export.resolve_index_kind("auto", limit + 1) == "scann"
  assert export.resolve_index_kind("scann", 10) == "scann"
  with pytest.raises(ValueError, match="unknown index 'faiss'"):
    export.resolve_index_kind("faiss", 10)


def test_training_items_are_excluded_unless_kept(exports):
  path, tower, item_ids, items = exports["seen"]
  users = ["u0", "u1", "u2", "zz"]
  meta = _meta(path)
  assert meta["exclusion"] == "training_items"
  assert meta["signatures"] == ["keep_history_items", "serving_default"]
  seen = exports["seen_by_user"]
  out = stand_ins.fresh_outputs(path, {"user_id": users})
  _check_clean(out, 10)
  want, want_scores = stand_ins.exact_top(tower, users, items, item_ids, 10,
                                          exclude=seen)
  assert out["item_ids"].tolist() == want
  np.testing.assert_allclose(out["scores"], want_scores, atol=1e-5)
  assert out["count"].tolist() == [10] * 4  # over-fetched: k remain
  assert out["excluded"].tolist() == [2, 1, 0, 0]
  assert out["known_user"].tolist() == [True, True, False, False]
  kept = stand_ins.fresh_outputs(path, {"user_id": users},
                                 signature="keep_history_items")
  plain, _ = stand_ins.exact_top(tower, users, items, item_ids, 10)
  assert kept["item_ids"].tolist() == plain
  assert kept["excluded"].tolist() == [0, 0, 0, 0]
  # The users' best items: first when kept, absent when excluded.
  assert plain[0][:2] == seen["u0"] and plain[1][:1] == seen["u1"]
  assert not set(seen["u0"]) & set(want[0])
  assert not set(seen["u1"]) & set(want[1])


def test_exclusion_can_leave_fewer_than_k(tmp_path):
  # k = N - 1: a user with 2 training items can only get N - 2.
  model = stand_ins.user_model(num_items=12)
  pairs, seen = _seen(model)
  path, tower, item_ids, items = stand_ins.user_export(
      str(tmp_path / "e"), model, kind="brute_force", k=11, seen_items=pairs)
  out = stand_ins.fresh_outputs(path, {"user_id": ["u0", "u1", "u2"]})
  _check_clean(out, 11)
  assert out["count"].tolist() == [10, 11, 11]
  want, _ = stand_ins.exact_top(tower, ["u0"], items, item_ids, 11,
                                exclude=seen)
  assert out["item_ids"][0, :10].tolist() == want[0]


def test_seen_items_arguments():
  users, splits, positions = export.seen_item_table(
      ["b", "a", "b", "a"], ["x", "y", "x", "nope"], ["x", "y", "z"])
  assert users.tolist() == ["a", "b"]
  assert splits.tolist() == [0, 1, 2]  # a: y; b: x (once)
  assert positions.tolist() == [1, 0]
  with pytest.raises(ValueError, match="seen_items is empty"):
    export.seen_item_table([], [], ["x"])
  with pytest.raises(ValueError, match="same length"):
    export.seen_item_table(["a"], ["x", "y"], ["x"])


def _query(path, *argv):
  return stand_ins.program("query", ["--model_dir=%s" % path] + list(argv))


def test_query_answers_every_user_and_says_when_short(exports):
  path = exports["short"][0]
  direct = stand_ins.fresh_outputs(path, {"user_id": USERS})
  out = _query(path, "--user_id=%s" % ",".join(USERS), "--k=50")
  assert out.returncode == 0, out.stderr[-3000:]
  lines = out.stdout.strip().splitlines()
  answers = [json.loads(l) for l in lines if l.startswith("{")]
  assert [a["user_id"] for a in answers] == USERS
  for row, answer in enumerate(answers):
    count = int(direct["count"][row])
    assert answer["count"] == count < 50
    assert answer["item_ids"] == direct["item_ids"][row, :count].tolist()
    assert len(answer["scores"]) == count
    assert answer["warnings"] == ["only %d of k=50 items: the ScaNN leaves "
                                  "searched held fewer candidates; an exact "
                                  "index (--index=brute_force) or more "
                                  "leaves searched (--scann_leaves_to_search"
                                  ") finds more" % count]
  headers = [l for l in lines if l.startswith("top-50 for user")]
  assert len(headers) == 3
  shorts = [l for l in lines if l.strip().startswith("(only ")]
  assert len(shorts) == 3
  items = [l for l in lines if l.strip().split(".")[0].isdigit()]
  assert len(items) == sum(int(c) for c in direct["count"])
  assert "nan" not in out.stdout.lower()
  assert all(l.split()[2] != "score" for l in items)  # no empty item id


def test_query_excludes_training_items_unless_kept(exports):
  path, tower, item_ids, items = exports["seen"]
  out = _query(path, "--user_id=u0,zz", "--k=5")
  assert out.returncode == 0, out.stderr[-3000:]
  assert [l for l in out.stderr.splitlines() if l.startswith("warning")] == [
      "warning: not in this export's training data, answered with the list "
      "for unknown users: 'zz'"]
  answers = [json.loads(l) for l in out.stdout.splitlines()
             if l.startswith("{")]
  want, _ = stand_ins.exact_top(tower, ["u0", "zz"], items, item_ids, 5,
                                exclude=exports["seen_by_user"])
  assert [a["item_ids"] for a in answers] == want
  assert "2 seen items excluded" in out.stdout
  kept = _query(path, "--user_id=u0", "--k=5", "--keep_history_items")
  assert kept.returncode == 0, kept.stderr[-3000:]
  plain, _ = stand_ins.exact_top(tower, ["u0"], items, item_ids, 5)
  assert json.loads(kept.stdout.strip().splitlines()[-1])["item_ids"] == (
      plain[0])


# Bad flags: one line, exit status 2, before TensorFlow is imported.
_BAD_QUERIES = [
    (["--user_id="], "error: --user_id is empty: pass one or more ids, e.g. "
     "--user_id=42,7"),
    (["--user_id=u0,,u1"], "error: --user_id=u0,,u1 has an empty id (entry "
     "2); e.g. --user_id=42,7"),
    (["--k=1000"], "error: --k must be in [1, 100] (the export's k), got "
     "1000"),
    (["--k=101"], "error: --k must be in [1, 100] (the export's k), got 101"),
    (["--k=-1"], "error: --k must be >= 1, got -1"),
    (["--history=i1"], "error: this export takes user ids, not a history: "
     "drop --history and pass --user_id"),
]


@pytest.mark.parametrize("argv,line", _BAD_QUERIES,
                         ids=[" ".join(a) for a, _ in _BAD_QUERIES])
def test_bad_query_flags_are_one_line(exports, argv, line):
  out = _query(exports["short"][0], *argv)
  assert out.returncode == 2, out.stderr
  assert "Traceback" not in out.stderr
  assert [l for l in out.stderr.splitlines() if l.strip()] == [line]
  assert not out.stdout


@pytest.fixture(scope="module")
def servers(exports):
  started = {}
  for name in ("short", "seen"):
    predictor = server.SavedModelPredictor(exports[name][0])
    started[name] = server.ModelServer(predictor, port=0, threads=1).start()
  yield started
  for srv in started.values():
    srv.stop()


def test_rest_short_answers_carry_warnings(exports, servers):
  direct = stand_ins.fresh_outputs(exports["short"][0], {"user_id": USERS})
  status, _, body = _call(servers["short"], "POST", PREDICT,
                          {"instances": USERS, "k": 60})
  assert status == 200, body
  counts = [int(c) for c in direct["count"]]
  assert [p["item_ids"] for p in body["predictions"]] == [
      direct["item_ids"][r, :c].tolist() for r, c in enumerate(counts)]
  assert body["warnings"] == [
      "instances[%d]: only %d of k=60 items: the ScaNN leaves searched held "
      "fewer candidates; an exact index (--index=brute_force) or more "
      "leaves searched (--scann_leaves_to_search) finds more" % (r, c)
      for r, c in enumerate(counts)]
  # A k every row fills: no warnings field at all.
  status, _, body = _call(servers["short"], "POST", PREDICT,
                          {"inputs": {"user_id": USERS}, "k": 3})
  assert status == 200 and "warnings" not in body
  assert [len(r) for r in body["outputs"]["item_ids"]] == [3, 3, 3]


def test_rest_excludes_training_items_unless_kept(exports, servers):
  _, tower, item_ids, items = exports["seen"]
  srv = servers["seen"]
  status, _, body = _call(srv, "POST", PREDICT,
                          {"instances": ["u0", "u1", "zz"], "k": 5})
  assert status == 200, body
  want, _ = stand_ins.exact_top(tower, ["u0", "u1", "zz"], items, item_ids,
                                5, exclude=exports["seen_by_user"])
  assert [p["item_ids"] for p in body["predictions"]] == want
  assert body["warnings"] == [
      "instances[2]: user 'zz' has no training items in this export: "
      "answered with the list for unknown users"]
  status, _, body = _call(srv, "POST", PREDICT, {
      "instances": ["u0", "u1"], "k": 5, "keep_history_items": True})
  plain, _ = stand_ins.exact_top(tower, ["u0", "u1"], items, item_ids, 5)
  assert status == 200 and "warnings" not in body
  assert [p["item_ids"] for p in body["predictions"]] == plain
  status, _, body = _call(srv, "POST", PREDICT, {
      "instances": ["u0"], "keep_history_items": "yes"})
  assert status == 400
  assert body["error"] == ("'keep_history_items' must be true or false, got "
                           "string")
  _, _, meta = _call(srv, "GET", "/v1/models/default/metadata")
  assert set(meta["metadata"]["signature_def"]["outputs"]) == {
      "item_ids", "scores", "count", "excluded", "known_user"}
