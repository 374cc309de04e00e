"""The REST server on a free loopback port: answers, errors, the CLI."""

import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.serving import conftest
from tfrs_negsamp.serving import export
from trainers.serving import export_files
from trainers.serving import server

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
PREDICT = "/v1/models/default:predict"


def _call(srv, method, path, body=None, headers=None, chunked=False):
  """One request on a new connection: (status, headers, parsed JSON)."""
  conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
  try:
    if isinstance(body, (dict, list)):
      body = json.dumps(body).encode()
    if chunked:
      conn.request(method, path, body=iter([body]), headers=headers or {},
                   encode_chunked=True)
    else:
      conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    return response.status, dict(response.getheaders()), json.loads(data)
  finally:
    conn.close()


def _direct(path, users):
  """Top-k straight from the SavedModel (the reference for the server)."""
  loaded = tf.saved_model.load(path)
  out = loaded.signatures["serving_default"](user_id=tf.constant(users))
  return out["item_ids"].numpy().astype(str), out["scores"].numpy()


def _assert_same_ids_up_to_ties(got, want, scores, tol=1e-5):
  """Same ids at every rank, except among scores tied within `tol`.

  A float near-tie (the query tower's last bits can depend on the batch
  shape) may swap two items or, at rank k, pick either; nothing else may
  differ.
  """
  for row, (g, w, s) in enumerate(zip(got, want, scores)):
    tied = np.abs(s[:, None] - s[None, :]) < tol
    np.fill_diagonal(tied, False)
    at_cut = np.abs(s - s[-1]) < tol
    for pos in range(len(w)):
      if not tied[pos].any():
        assert g[pos] == w[pos], (row, pos, g, w)
      elif not at_cut[pos]:
        group = tied[pos] | (np.arange(len(w)) == pos)
        assert sorted(np.array(g)[group]) == sorted(np.array(w)[group])


def test_predict_matches_the_savedmodel(tiny_export, served):
  users = tiny_export.users + ["never-seen-user"]
  ids, scores = _direct(tiny_export.path, users)
  status, _, body = _call(served, "POST", PREDICT, {
      "instances": [{"user_id": u} for u in users]})
  assert status == 200
  got_scores = np.array([p["scores"] for p in body["predictions"]])
  np.testing.assert_allclose(got_scores, scores, atol=1e-5)
  _assert_same_ids_up_to_ties(
      [p["item_ids"] for p in body["predictions"]], ids, scores)
  # k slices the index's top-k; the columnar form answers in columns.
  status, _, body = _call(served, "POST", PREDICT, {
      "inputs": {"user_id": users[:3]}, "k": 5})
  assert status == 200
  _assert_same_ids_up_to_ties(body["outputs"]["item_ids"], ids[:3, :5],
                              scores[:3, :5])
  assert np.shape(body["outputs"]["scores"]) == (3, 5)


def test_unseen_user_gets_the_oov_answer(tiny_export, served):
  _, _, first = _call(served, "POST", PREDICT, {"instances": ["nobody-1"]})
  _, _, second = _call(served, "POST", PREDICT, {"instances": ["nobody-2"]})
  assert first["predictions"] == second["predictions"]
  assert len(first["predictions"][0]["item_ids"]) == tiny_export.k


def test_status_metadata_and_health(tiny_export, served):
  status, _, body = _call(served, "GET", "/v1/models/default")
  assert status == 200
  assert body["model_version_status"][0]["state"] == "AVAILABLE"
  status, _, body = _call(served, "GET", "/v1/models/default/metadata")
  assert status == 200
  assert body["metadata"]["index_k"] == tiny_export.k
  exported = body["metadata"]["export"]
  assert exported["index"] == "scann"
  assert exported["scann"] == export.scann_parameters(tiny_export.num_items,
                                                      tiny_export.k)
  assert _call(served, "GET", "/healthz")[:3:2] == (200, {
      "status": "ok", "model": "default"})


_GOOD = {"instances": [{"user_id": "1"}], "k": 3}
_BAD_REQUESTS = [
    # (method, path, body, expected status, words of the error)
    ("POST", PREDICT, b'{"instances": [{"user_id": "1"}', 400,
     "malformed JSON"),
    ("POST", PREDICT, b"not json", 400, "malformed JSON"),
    ("POST", PREDICT, b"", 400, "empty request body"),
    ("POST", PREDICT, {"instances": [{"uid": "1"}]}, 400,
     "unknown input 'uid'"),
    ("POST", PREDICT, {"instances": [{}]}, 400, "missing 'user_id'"),
    ("POST", PREDICT, {"inputs": {}}, 400, "missing 'user_id'"),
    ("POST", PREDICT, {"instances": [{"user_id": 1}]}, 400,
     "must be a string"),
    ("POST", PREDICT, {"instances": {"user_id": "1"}}, 400,
     "must be a list"),
    ("POST", PREDICT, {"instances": ["1"], "k": "3"}, 400,
     "'k' must be an integer"),
    ("POST", PREDICT, [1, 2], 400, "must be a JSON object"),
    ("POST", PREDICT, {"instances": []}, 400, "'instances' is empty"),
    ("POST", PREDICT, {"instances": ["1"], "k": 0}, 400,
     "'k' must be in [1, 20]"),
    ("POST", PREDICT, {"instances": ["1"], "k": -1}, 400,
     "'k' must be in [1, 20]"),
    ("POST", PREDICT, {"instances": ["1"], "k": 21}, 400,
     "'k' must be in [1, 20] (the index's k), got 21"),
    ("POST", PREDICT, {"instances": ["1"] * (conftest.MAX_INSTANCES + 1)},
     400, "too many users"),
    ("POST", PREDICT,
     {"instances": ["x" * 100] * 200}, 413, "exceeds the limit of 16384"),
    ("POST", "/v1/models/nope:predict", _GOOD, 404, "unknown model 'nope'"),
    ("GET", "/v1/models/nope", None, 404, "unknown model 'nope'"),
    ("POST", "/v1/models/default:regress", _GOOD, 404, "unsupported verb"),
    ("GET", "/v2/whatever", None, 404, "unknown path"),
    ("GET", PREDICT, None, 405, "method GET not allowed"),
    ("DELETE", "/v1/models/default", None, 405, "method DELETE not allowed"),
]


@pytest.mark.parametrize("method,path,body,status,words", _BAD_REQUESTS,
                         ids=[c[4] for c in _BAD_REQUESTS])
def test_bad_request_then_a_good_one(served, method, path, body, status,
                                     words):
  got, headers, answer = _call(served, method, path, body)
  assert got == status, answer
  assert set(answer) == {"error"}
  assert words in answer["error"]
  assert headers["Content-Type"].startswith("application/json")
  if status == 405:
    assert headers["Allow"] in ("GET, HEAD", "POST")
  got, _, answer = _call(served, "POST", PREDICT, _GOOD)
  assert got == 200
  assert len(answer["predictions"][0]["item_ids"]) == 3


def test_oversized_chunked_body_is_413(served):
  # No Content-Length: the limit applies while the body is read.
  body = json.dumps({"instances": ["x" * 100] * 400}).encode()
  got, _, answer = _call(served, "POST", PREDICT, body, chunked=True)
  assert got == 413
  assert "exceeds the limit" in answer["error"]
  small = json.dumps(_GOOD).encode()
  got, _, answer = _call(served, "POST", PREDICT, small, chunked=True)
  assert got == 200


def test_metadata_file_name_and_format_match_the_exporter():
  assert server.METADATA_FILE == export.METADATA_FILE
  assert export_files.METADATA_FILE == export.METADATA_FILE
  assert export_files.FORMAT_VERSION == export.FORMAT_VERSION
  assert server.KEEP_SIGNATURE == export.KEEP_SIGNATURE


def test_bad_server_arguments(tiny_export, tmp_path):
  with pytest.raises(export_files.ExportError, match="no SavedModel"):
    server.SavedModelPredictor(str(tmp_path))
  with pytest.raises(ValueError, match="max_body_bytes must be >= 1"):
    server.ModelServer(object(), max_body_bytes=0)
  with pytest.raises(ValueError, match="model_name"):
    server.ModelServer(object(), model_name="a:b")


def _ready_line(proc, stdout_path, timeout):
  """The server's "Serving ..." line, waiting at most `timeout` seconds."""
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline and proc.poll() is None:
    with open(stdout_path) as f:
      for line in f:
        if line.startswith("Serving model"):
          return line
    time.sleep(0.2)
  return ""


def test_cli_serves_without_tfrs_and_stops_on_sigterm(tiny_export, tmp_path):
  """`python -m trainers.serve` in a fresh process (TF, ScaNN, aiohttp)."""
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  stdout_path, stderr_path = tmp_path / "out.txt", tmp_path / "err.txt"
  # -X importtime lists every module the server imports (on stderr, to a
  # file: a pipe nobody reads would fill up and block the server).
  with open(stdout_path, "w") as out, open(stderr_path, "w") as err:
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "trainers.serve",
         "--model_dir=%s" % tiny_export.path, "--port=0",
         "--model_name=movies"], cwd=ROOT, env=env, stdout=out, stderr=err,
        text=True)
  try:
    line = _ready_line(proc, stdout_path, timeout=120)
    assert line, stderr_path.read_text()[-3000:]
    port = int(line.rsplit(":", 1)[1].split("/")[0])

    class Port:  # what `_call` needs of a server
      pass

    srv = Port()
    srv.port = port
    got, _, answer = _call(srv, "POST", "/v1/models/movies:predict",
                           {"instances": tiny_export.users[:2], "k": 4})
    assert got == 200
    ids, _ = _direct(tiny_export.path, tiny_export.users[:2])
    assert [p["item_ids"] for p in answer["predictions"]] == (
        ids[:, :4].tolist())
    assert _call(srv, "POST", PREDICT, _GOOD)[0] == 404
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  err = stderr_path.read_text()
  assert proc.returncode == 0, err[-3000:]
  assert "Server stopped." in stdout_path.read_text()
  imported = {l.split("|")[-1].strip() for l in err.splitlines()
              if l.startswith("import time:")}
  assert "scann" in imported and "aiohttp" in imported
  for module in ("tensorflow_recommenders", "trainers.pipeline.experiment",
                 "tfrs_negsamp.models", "tfrs_negsamp.serving.export"):
    assert module not in imported, module


def test_start_and_stop_free_the_port(tiny_export):
  predictor = server.SavedModelPredictor(tiny_export.path)
  srv = server.ModelServer(predictor, port=0).start()
  port = srv.port
  assert _call(srv, "GET", "/healthz")[0] == 200
  srv.stop()
  with pytest.raises(OSError):
    http.client.HTTPConnection("127.0.0.1", port, timeout=5).connect()


class _FixedPredictor:
  """A predictor without a model: the same two items for every user."""
  index_k = 2
  metadata = {"index": "brute_force", "num_items": 2}
  inputs = ("user_id",)

  def predict(self, user_ids, keep_history_items=False):
    del keep_history_items
    n = len(user_ids)
    return {"item_ids": np.array([[b"a", b"b"]] * n),
            "scores": np.array([[1.0, 0.5]] * n, np.float32),
            "count": np.array([2] * n)}


def _wait_for(caplog, logger, timeout=10.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    records = [r for r in caplog.records if r.name == logger]
    if records:
      return records
    time.sleep(0.05)
  return []


def _send(port, data):
  """Sends raw bytes, reads what comes back (if anything), closes."""
  with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
    sock.sendall(data)
    chunks = []  # the server answers 400 and closes the connection
    while True:
      chunk = sock.recv(4096)
      if not chunk:
        return b"".join(chunks)
      chunks.append(chunk)


def test_a_client_gone_mid_body_is_one_log_line(caplog):
  caplog.set_level(logging.INFO)
  with server.ModelServer(_FixedPredictor(), port=0, threads=1).start() as srv:
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
      s.sendall(b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n"
                b"Content-Length: 100\r\n\r\n{\"instances\": [")
      time.sleep(0.3)  # the server is reading the body
    records = _wait_for(caplog, "trainers.serving.server")
    # Still serving.
    assert _call(srv, "POST", PREDICT, {"instances": ["1"]})[0] == 200
  assert len(records) == 1, [r.getMessage() for r in records]
  record = records[0]
  assert record.levelno == logging.WARNING
  assert record.exc_info is None and record.stack_info is None
  assert record.getMessage() == (
      "client 127.0.0.1 disconnected before sending the whole body of POST "
      "/v1/models/default:predict (Content-Length 100); nothing answered")
  assert "Traceback" not in caplog.text


@pytest.mark.parametrize("request_bytes,words", [
    (b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\n"
     b"Content-Length: abc\r\n\r\n{}", "BadHttpMessage: Invalid character "
     "in Content-Length"),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 +
     b"\r\n\r\n", "LineTooLong: Got more than 8190 bytes"),
])
def test_malformed_http_is_one_log_line(caplog, request_bytes, words):
  caplog.set_level(logging.INFO)
  with server.ModelServer(_FixedPredictor(), port=0, threads=1).start() as srv:
    answer = _send(srv.port, request_bytes)
    records = _wait_for(caplog, "aiohttp.server")
  assert answer.startswith(b"HTTP/1.") and b" 400 " in answer.split(
      b"\r\n")[0]
  assert len(records) == 1, [r.getMessage() for r in records]
  record = records[0]
  assert record.levelno == logging.WARNING and record.exc_info is None
  message = record.getMessage()
  assert "\n" not in message and words in message, message
  assert message.startswith("Error handling request from 127.0.0.1: ")
  assert "Traceback" not in caplog.text
