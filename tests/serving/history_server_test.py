"""The REST server on a history-tower export, and request robustness.

The export is the stand-in history tower of `history_export_test` (no
training, seconds); `history_experiment_test` serves a trained one.
"""

import http.client
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.serving import history_export_test as hist
from tests.serving import server_test
from tfrs_negsamp.serving import export
from trainers.serving import server

PREDICT = server_test.PREDICT
_call = server_test._call  # pylint: disable=protected-access


def _export_stand_in(path, use_user_id):
  tf.keras.utils.set_random_seed(3)
  users = ["u%d" % i for i in range(10)]
  tower = hist.MeanHistoryTower(hist.NUM_ITEMS, 8,
                                users=users if use_user_id else None)
  wrapper = export.HistoryQueryModel(tower, hist.ITEM_IDS, hist.L,
                                     use_user_id=use_user_id)
  items = np.random.default_rng(1).normal(
      size=(hist.NUM_ITEMS, 8)).astype(np.float32)
  index = export.build_index(wrapper, hist.ITEM_IDS, items, kind="scann",
                             k=10)
  export.export(index, path, users[:1], metadata={"index": "scann"})
  return path


@pytest.fixture(scope="module")
def history_server(tmp_path_factory):
  """Servers on two stand-in exports: history only, history + user_id."""
  root = tmp_path_factory.mktemp("history_serving")
  servers = {}
  for use_user_id in (False, True):
    path = _export_stand_in(str(root / str(use_user_id)), use_user_id)
    predictor = server.SavedModelPredictor(path)
    servers[use_user_id] = server.ModelServer(
        predictor, port=0, max_instances=8, max_history=20,
        threads=1).start()
    servers[use_user_id].path = path
  yield servers
  for srv in servers.values():
    srv.stop()


def _direct(path, **inputs):
  loaded = tf.saved_model.load(path)
  out = loaded.signatures["serving_default"](
      **{k: tf.constant(v) for k, v in inputs.items()})
  return out["item_ids"].numpy().astype(str), out["scores"].numpy()


def test_history_request_matches_the_savedmodel(history_server):
  srv = history_server[False]
  assert srv.predictor.inputs == ("history",)
  histories = [["i3", "i7", "i11"], ["i0", "i59", "i1", "i2", "i5"], ["i9"]]
  padded = [[""] * (5 - len(h)) + h for h in histories]
  ids, scores = _direct(srv.path, history=padded)
  status, _, body = _call(srv, "POST", PREDICT, {
      "instances": [{"history": h} for h in histories]})
  assert status == 200, body
  got = np.array([p["scores"] for p in body["predictions"]])
  np.testing.assert_allclose(got, scores, atol=1e-5)
  server_test._assert_same_ids_up_to_ties(  # pylint: disable=protected-access
      [p["item_ids"] for p in body["predictions"]], ids, scores)
  # Columnar, shorthand and k; unknown ids and "" are ignored.
  status, _, body = _call(srv, "POST", PREDICT, {
      "inputs": {"history": [["i3", "nope", "i7", "", "i11"]]}, "k": 4})
  assert status == 200, body
  assert body["outputs"]["item_ids"][0] == ids[0, :4].tolist()
  status, _, body = _call(srv, "POST", PREDICT, {"instances": [["i9"]]})
  assert body["predictions"][0]["item_ids"] == ids[2].tolist()


def test_an_unseen_user_gets_recommendations_from_the_history(
    history_server):
  srv = history_server[True]
  assert srv.predictor.inputs == ("history", "user_id")
  _, _, a = _call(srv, "POST", PREDICT, {"instances": [
      {"history": ["i1", "i2"], "user_id": "never-seen"},
      {"history": ["i40", "i41"], "user_id": "never-seen"},
      {"history": ["i40", "i41"]}]})
  first, second, third = [p["item_ids"] for p in a["predictions"]]
  assert first != second  # the history, not the (unknown) user, decides
  assert second == third  # a missing user_id is an unknown user
  _, _, meta = _call(srv, "GET", "/v1/models/default/metadata")
  assert set(meta["metadata"]["signature_def"]["inputs"]) == {
      "history", "user_id"}
  assert meta["metadata"]["export"]["history_length"] == hist.L


def test_history_items_are_excluded_unless_kept(history_server):
  srv = history_server[False]
  recent = [["i3", "i7", "i11", "i15"], ["i9", "i2", "i30", "i31"]]
  assert len(recent[0]) == hist.L
  loaded = tf.saved_model.load(srv.path)
  plain = loaded.signatures["keep_history_items"](
      history=tf.constant(recent))["item_ids"].numpy().astype(str).tolist()
  # Two items of each plain top-10 go first in the history: the query (the
  # last L items) is unchanged, so they are the first items to be left out.
  older = [[i for i in row if i not in r][:2] for row, r in zip(plain,
                                                                recent)]
  histories = [o + r for o, r in zip(older, recent)]
  status, _, body = _call(srv, "POST", PREDICT, {"instances": histories})
  assert status == 200, body
  assert "warnings" not in body
  for history, row, top in zip(histories, body["predictions"], plain):
    got = row["item_ids"]
    assert len(got) == 10 and not set(history) & set(got)
    # The plain list without the history items, in order, then more.
    rest_of_plain = [i for i in top if i not in history]
    assert len(rest_of_plain) <= 8
    assert got[:len(rest_of_plain)] == rest_of_plain
  status, _, body = _call(srv, "POST", PREDICT, {
      "instances": histories, "keep_history_items": True})
  assert status == 200, body
  assert [p["item_ids"] for p in body["predictions"]] == plain


def test_unknown_history_ids_are_named(history_server):
  srv = history_server[False]
  status, _, body = _call(srv, "POST", PREDICT, {"instances": [
      ["i3", "zz", "", "i7", "zz"], ["i9"]], "k": 4})
  assert status == 200, body
  assert body["warnings"] == [
      "instances[0].history: unknown item ids ignored: 'zz'"]
  # The unknown id changes nothing: the same answer as without it.
  _, _, clean = _call(srv, "POST", PREDICT, {"instances": [["i3", "i7"]],
                                             "k": 4})
  assert body["predictions"][0] == clean["predictions"][0]
  status, _, body = _call(srv, "POST", PREDICT, {"inputs": {"history": [
      ["i1"], ["zz", "nope", ""]]}})
  assert status == 400, body
  assert body == {"error": "inputs.history[1] has no item id of the catalog:"
                           " 'zz', 'nope' are unknown; send ids of the "
                           "export's catalog"}
  # An empty history is a cold start, not an unknown id.
  status, _, body = _call(srv, "POST", PREDICT, {"instances": [[], [""]]})
  assert status == 200 and "warnings" not in body, body


@pytest.mark.parametrize("body,words", [
    ({"instances": [{"history": "i1"}]}, "instances[0].history must be a "
     "list"),
    ({"instances": [{"history": [1, 2]}]}, "instances[0].history[0] must "
     "be an item id string"),
    ({"instances": [{"history": ["i1"] * 21}]}, "instances[0].history is "
     "too long: 21 items > 20"),
    ({"instances": [{"history": ["i1"], "user_id": "u1"}]},
     "unknown input 'user_id'"),
    ({"instances": ["u1"]}, "instances[0] must be an object with 'history'"),
    ({"inputs": {"user_id": ["u1"]}}, "unknown input 'user_id'"),
    ({"instances": [{"history": ["\ud800"]}]}, "not valid Unicode"),
    ({"instances": [["i1"]] * 9}, "too many users"),
])
def test_malformed_history_requests_are_400(history_server, body, words):
  srv = history_server[False]
  status, headers, answer = _call(srv, "POST", PREDICT, body)
  assert status == 400, answer
  assert words in answer["error"], answer
  assert headers["Content-Type"].startswith("application/json")


def _raw(srv, method, path, body=None, headers=None):
  """(status, headers, raw body bytes) of one request."""
  conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
  try:
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    return response.status, dict(response.getheaders()), response.read()
  finally:
    conn.close()


def test_lone_surrogate_user_id_is_400_not_500(served):
  # A JSON escape of a lone surrogate: valid JSON, not encodable text.
  status, _, body = _raw(served, "POST", PREDICT,
                         b'{"instances": ["\\ud800"]}')
  assert status == 400
  assert "instances[0] is not valid Unicode text" in json.loads(body)[
      "error"]
  status, _, body = _raw(served, "POST", PREDICT,
                         b'{"instances": ["1"], "\\udc00": 1}')
  assert status == 400 and "unknown field" in json.loads(body)["error"]


@pytest.mark.parametrize("path", ["/healthz", "/v1/models/default",
                                  "/v1/models/default/metadata"])
def test_head_answers_like_get_without_a_body(served, path):
  get_status, get_headers, _ = _raw(served, "GET", path)
  status, headers, body = _raw(served, "HEAD", path)
  assert (status, body) == (get_status, b"") and status == 200
  assert headers["Content-Type"] == get_headers["Content-Type"]


def test_head_on_predict_is_405(served):
  status, headers, _ = _raw(served, "HEAD", PREDICT)
  assert status == 405 and headers["Allow"] == "POST"


@pytest.mark.parametrize("content_type,status", [
    ("application/json", 200),
    ("application/json; charset=utf-8", 200),
    (None, 200),
    ("text/plain", 415),
    ("application/x-www-form-urlencoded", 415),
    ("application/json; charset=iso-8859-1", 415),
])
def test_content_type(served, content_type, status):
  headers = {"Content-Type": content_type} if content_type else {}
  good = json.dumps({"instances": [{"user_id": "1"}], "k": 3}).encode()
  got, response_headers, body = _raw(served, "POST", PREDICT, good, headers)
  assert got == status, body
  assert response_headers["Content-Type"].startswith("application/json")
  if status == 415:
    assert "Content-Type" in json.loads(body)["error"]


def test_user_id_export_metadata_and_older_exports(tiny_export, tmp_path):
  with open(os.path.join(tiny_export.path, export.METADATA_FILE)) as f:
    meta = json.load(f)
  assert meta["query_input"] == "user_id" and meta["inputs"] == ["user_id"]
  assert meta["format"] == export.FORMAT_VERSION
  # An export of an older format (no count output) is refused by name.
  old = tmp_path / "old"
  shutil.copytree(tiny_export.path, old)
  older = dict(meta)
  del older["format"], older["inputs"], older["query_input"]
  (old / export.METADATA_FILE).write_text(json.dumps(older))
  with pytest.raises(ValueError, match="has format 1 \\(none recorded\\) "
                     "but this version serves format 2"):
    server.SavedModelPredictor(str(old))
  # Metadata that contradicts the signature is refused at start-up.
  meta["inputs"] = ["history"]
  (old / export.METADATA_FILE).write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="takes \\['user_id'\\] but"):
    server.SavedModelPredictor(str(old))
