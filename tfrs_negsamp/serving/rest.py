"""Request handling of the REST server, in the TF Serving shape, without I/O.

Pure functions from an HTTP method, a path and a body to a batch of user ids
and a `k`, and from the model's `[B, k_index]` outputs back to a JSON body.
`server.py` wires them to sockets; nothing here imports TensorFlow, so the
rules are unit-tested without a socket or a model.

Routes (`<name>` is the served model's name, `default` unless set):

    GET  /v1/models/<name>            status, as TF Serving answers it
    GET  /v1/models/<name>/metadata   signature, index k and export metadata
    POST /v1/models/<name>:predict    top-k items for a batch of users
    GET  /healthz                     liveness: {"status": "ok"}

A predict body takes the row ("instances") or the columnar ("inputs") form of
TF Serving, with an optional `k` (1 <= k <= the index's k, default the
index's k):

    {"instances": [{"user_id": "42"}, {"user_id": "7"}], "k": 10}
    {"instances": ["42", "7"]}                  # single-input shorthand
    {"inputs": {"user_id": ["42", "7"]}, "k": 10}
    {"inputs": ["42", "7"]}                     # single-input shorthand

and is answered, like TF Serving, in the same form it was asked:

    {"predictions": [{"item_ids": [...], "scores": [...]}, ...]}   # rows
    {"outputs": {"item_ids": [[...], ...], "scores": [[...], ...]}}  # columns

Every problem raises `RestError` with a 4xx status and a message naming the
problem; the server answers it as `{"error": message}`.
"""

import dataclasses
import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

DEFAULT_MODEL_NAME = "default"
INPUT_NAME = "user_id"
OUTPUT_NAMES = ("item_ids", "scores")
SIGNATURE_NAME = "serving_default"
HEALTH_PATH = "/healthz"

# Route kinds returned by `route`.
HEALTH = "health"
STATUS = "status"
METADATA = "metadata"
PREDICT = "predict"

_ALLOWED = {HEALTH: ("GET",), STATUS: ("GET",), METADATA: ("GET",),
            PREDICT: ("POST",)}
_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?P<rest>/metadata|:[^/]*)?/?$")
_TOP_LEVEL_KEYS = ("instances", "inputs", "k", "signature_name")
_EXAMPLE = '{"instances": [{"user_id": "42"}]}'


class RestError(Exception):
  """A request the server refuses: an HTTP status and a message."""

  def __init__(self, status: int, message: str,
               headers: Optional[Mapping[str, str]] = None):
    super().__init__(message)
    self.status = status
    self.message = message
    self.headers = dict(headers or {})


@dataclasses.dataclass(frozen=True)
class PredictRequest:
  """A parsed predict request: one model call over `user_ids`.

  Attributes:
    user_ids: the users, in request order (one model call for all of them).
    k: how many items to return per user (<= the index's k).
    columnar: whether the request used "inputs" (answered with "outputs").
  """
  user_ids: Tuple[str, ...]
  k: int
  columnar: bool = False


def error_body(message: str) -> Dict[str, str]:
  return {"error": message}


def route(method: str, path: str, model_name: str) -> str:
  """The route kind (`HEALTH`, `STATUS`, `METADATA`, `PREDICT`) of a request.

  Raises:
    RestError: 404 for an unknown path, model name or verb, 405 (with an
      `Allow` header) for a method the route does not take.
  """
  if path in (HEALTH_PATH, HEALTH_PATH + "/"):
    kind = HEALTH
  else:
    match = _MODEL_PATH.match(path)
    if not match:
      raise RestError(404, "unknown path %r; routes: GET /v1/models/%s, GET "
                      "/v1/models/%s/metadata, POST /v1/models/%s:predict, "
                      "GET %s" % (path, model_name, model_name, model_name,
                                  HEALTH_PATH))
    name, rest = match.group("name"), match.group("rest") or ""
    if name != model_name:
      raise RestError(404, "unknown model %r: this server serves %r"
                      % (name, model_name))
    if rest == ":predict":
      kind = PREDICT
    elif rest == "/metadata":
      kind = METADATA
    elif not rest:
      kind = STATUS
    else:
      raise RestError(404, "unsupported verb %r: this model answers "
                      ":predict only" % rest)
  allowed = _ALLOWED[kind]
  if method.upper() not in allowed:
    raise RestError(405, "method %s not allowed on %s; use %s"
                    % (method.upper(), path, " or ".join(allowed)),
                    headers={"Allow": ", ".join(allowed)})
  return kind


def _type_name(value: Any) -> str:
  if value is None:
    return "null"
  if isinstance(value, bool):
    return "boolean"
  if isinstance(value, (int, float)):
    return "number %s" % json.dumps(value)
  if isinstance(value, str):
    return "string"
  if isinstance(value, list):
    return "list"
  if isinstance(value, dict):
    return "object"
  return type(value).__name__


def _user_id(value: Any, where: str) -> str:
  if not isinstance(value, str):
    raise RestError(400, "%s must be a string such as \"42\", got %s"
                    % (where, _type_name(value)))
  return value


def _instances(value: Any) -> List[str]:
  if not isinstance(value, list):
    raise RestError(400, "'instances' must be a list such as %s, got %s"
                    % (_EXAMPLE, _type_name(value)))
  if not value:
    raise RestError(400, "'instances' is empty: send at least one instance, "
                    "e.g. %s" % _EXAMPLE)
  users = []
  for i, instance in enumerate(value):
    if isinstance(instance, dict):
      unknown = sorted(set(instance) - {INPUT_NAME})
      if unknown:
        raise RestError(400, "instances[%d] has unknown input %r; the model "
                        "takes only %r" % (i, unknown[0], INPUT_NAME))
      if INPUT_NAME not in instance:
        raise RestError(400, "instances[%d] is missing %r, e.g. %s"
                        % (i, INPUT_NAME, _EXAMPLE))
      users.append(_user_id(instance[INPUT_NAME],
                            "instances[%d].%s" % (i, INPUT_NAME)))
    else:
      users.append(_user_id(instance, "instances[%d] (an object with %r or "
                            "a user id string)" % (i, INPUT_NAME)))
  return users


def _inputs(value: Any) -> List[str]:
  if isinstance(value, dict):
    unknown = sorted(set(value) - {INPUT_NAME})
    if unknown:
      raise RestError(400, "'inputs' has unknown input %r; the model takes "
                      "only %r" % (unknown[0], INPUT_NAME))
    if INPUT_NAME not in value:
      raise RestError(400, "'inputs' is missing %r, e.g. "
                      "{\"inputs\": {\"user_id\": [\"42\"]}}" % INPUT_NAME)
    column, where = value[INPUT_NAME], "inputs.%s" % INPUT_NAME
  else:
    column, where = value, "inputs"
  if not isinstance(column, list):
    raise RestError(400, "%s must be a list of user id strings (rank 1), "
                    "got %s" % (where, _type_name(column)))
  if not column:
    raise RestError(400, "%s is empty: send at least one user id" % where)
  return [_user_id(v, "%s[%d]" % (where, i)) for i, v in enumerate(column)]


def parse_predict(body: bytes, index_k: int,
                  max_instances: Optional[int] = None) -> PredictRequest:
  """Validates a predict body; returns the users and `k` of one model call.

  Args:
    body: the raw request body (UTF-8 JSON).
    index_k: the k of the exported index (the most a request may ask for).
    max_instances: the most users one request may hold (None: no limit).

  Returns:
    A `PredictRequest`.

  Raises:
    RestError: 400 naming the first problem found.
  """
  if not body or not body.strip():
    raise RestError(400, "empty request body: send JSON such as %s"
                    % _EXAMPLE)
  try:
    text = body.decode("utf-8")
  except UnicodeDecodeError as e:
    raise RestError(400, "request body is not UTF-8: %s" % e) from e
  try:
    request = json.loads(text)
  except ValueError as e:
    raise RestError(400, "malformed JSON: %s" % e) from e
  except RecursionError as e:
    raise RestError(400, "malformed JSON: nested too deeply") from e
  if not isinstance(request, dict):
    raise RestError(400, "the request must be a JSON object with "
                    "'instances' or 'inputs', got %s" % _type_name(request))
  unknown = sorted(set(request) - set(_TOP_LEVEL_KEYS))
  if unknown:
    raise RestError(400, "unknown field %r; valid fields: %s"
                    % (unknown[0], ", ".join(_TOP_LEVEL_KEYS)))
  signature = request.get("signature_name", SIGNATURE_NAME)
  if signature != SIGNATURE_NAME:
    raise RestError(400, "unknown signature_name %r: the model has %r only"
                    % (signature, SIGNATURE_NAME))
  has_rows, has_columns = "instances" in request, "inputs" in request
  if has_rows == has_columns:
    raise RestError(400, "send exactly one of 'instances' or 'inputs' "
                    "(got %s), e.g. %s"
                    % ("both" if has_rows else "neither", _EXAMPLE))
  users = (_instances(request["instances"]) if has_rows
           else _inputs(request["inputs"]))
  if max_instances is not None and len(users) > max_instances:
    raise RestError(400, "too many users in one request: %d > %d (the "
                    "server's --max_instances); split the request"
                    % (len(users), max_instances))
  k = request.get("k", index_k)
  if isinstance(k, bool) or not isinstance(k, int):
    raise RestError(400, "'k' must be an integer, got %s" % _type_name(k))
  if not 1 <= k <= index_k:
    raise RestError(400, "'k' must be in [1, %d] (the index's k), got %d"
                    % (index_k, k))
  return PredictRequest(user_ids=tuple(users), k=k, columnar=has_columns)


def _texts(values: Sequence[Any]) -> List[str]:
  return [v.decode("utf-8") if isinstance(v, bytes) else str(v)
          for v in values]


def format_predict(request: PredictRequest, scores: Sequence[Sequence[float]],
                   item_ids: Sequence[Sequence[Any]]) -> Dict[str, Any]:
  """The response body for `request` from the model's `[B, k_index]` outputs.

  Args:
    request: the parsed request (its `k` slices the outputs).
    scores: `[B, k_index]` float scores (array or nested lists).
    item_ids: `[B, k_index]` ids, bytes or strings.

  Returns:
    `{"predictions": [...]}` for an "instances" request, `{"outputs": {...}}`
    for an "inputs" request.

  Raises:
    ValueError: the outputs do not have one row per requested user.
  """
  if len(scores) != len(request.user_ids) or len(item_ids) != len(scores):
    raise ValueError("the model returned %d/%d rows for %d users"
                     % (len(scores), len(item_ids), len(request.user_ids)))
  k = request.k
  ids = [_texts(row[:k]) for row in item_ids]
  values = [[float(s) for s in row[:k]] for row in scores]
  if request.columnar:
    return {"outputs": {"item_ids": ids, "scores": values}}
  return {"predictions": [{"item_ids": i, "scores": s}
                          for i, s in zip(ids, values)]}


def status_body(version: str = "1") -> Dict[str, Any]:
  """`GET /v1/models/<name>`: the TF Serving model status of a loaded model."""
  return {"model_version_status": [{
      "version": version, "state": "AVAILABLE",
      "status": {"error_code": "OK", "error_message": ""}}]}


def metadata_body(model_name: str, index_k: int,
                  export_metadata: Optional[Mapping[str, Any]] = None,
                  version: str = "1") -> Dict[str, Any]:
  """`GET /v1/models/<name>/metadata`: signature and export metadata."""
  return {
      "model_spec": {"name": model_name, "version": version,
                     "signature_name": SIGNATURE_NAME},
      "metadata": {
          "signature_def": {
              "inputs": {INPUT_NAME: {"dtype": "DT_STRING", "shape": [-1]}},
              "outputs": {
                  "item_ids": {"dtype": "DT_STRING",
                               "shape": [-1, index_k]},
                  "scores": {"dtype": "DT_FLOAT", "shape": [-1, index_k]}},
          },
          "index_k": index_k,
          "export": dict(export_metadata or {}),
      },
  }


def health_body(model_name: str) -> Dict[str, str]:
  return {"status": "ok", "model": model_name}
