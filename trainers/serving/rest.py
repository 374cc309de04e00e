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

`HEAD` is answered wherever `GET` is (same status and headers, no body). A
predict body must be JSON: `Content-Type: application/json` (a `charset`
parameter other than UTF-8 is refused), or no `Content-Type` at all (what
`requests.post(url, data=...)` sends); any other type is answered 415.

A predict body takes the row ("instances") or the columnar ("inputs") form of
TF Serving, with an optional `k` (1 <= k <= the index's k, default the
index's k):

    {"instances": [{"user_id": "42"}, {"user_id": "7"}], "k": 10}
    {"instances": ["42", "7"]}                  # single-input shorthand
    {"inputs": {"user_id": ["42", "7"]}, "k": 10}
    {"inputs": ["42", "7"]}                     # single-input shorthand

For an export of a history tower (metadata `query_input: "history"`) the
input is `history`, a list of item id strings per user (most recent last;
any length up to the server's limit; "" padding and unknown ids are
ignored by the model, which keeps the last L known ids), plus `user_id`
when the export takes it (optional here: a missing one is "", unknown):

    {"instances": [{"history": ["12", "7", "31"]}, {"history": ["5"]}]}
    {"instances": [["12", "7", "31"], ["5"]]}   # single-input shorthand
    {"inputs": {"history": [["12", "7", "31"], ["5"]]}, "k": 10}
    {"instances": [{"history": ["12"], "user_id": "42"}]}  # with user input

Rows of different lengths are left-padded with "" into one `[B, M]` call.

Seen items are left out of the answers by default: the request's history
for a history export, the user's training items for an id export written
with them (export metadata `exclusion`); `"keep_history_items": true` keeps
them (it changes nothing for an export that excludes nothing).

A request is answered, like TF Serving, in the same form it was asked:

    {"predictions": [{"item_ids": [...], "scores": [...]}, ...]}   # rows
    {"outputs": {"item_ids": [[...], ...], "scores": [[...], ...]}}  # columns

Each list holds only real items: fewer than k when the index found fewer
(or exclusion left fewer), and then the answer has a top-level
`"warnings"` list with one line per such row. The same list names the
unknown item ids of a history (ignored) and, for an export that knows its
training users, the users it does not know (answered with the generic
list). `warnings` is absent when there is nothing to say.

Every problem raises `RestError` with a 4xx status and a message naming the
problem; the server answers it as `{"error": message}`. A history whose ids
are all unknown is a 400 naming them.
"""

import dataclasses
import json
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

DEFAULT_MODEL_NAME = "default"
INPUT_NAME = "user_id"
HISTORY_NAME = "history"
DEFAULT_MAX_HISTORY = 1024
OUTPUT_NAMES = ("item_ids", "scores")
SIGNATURE_NAME = "serving_default"
KEEP_FIELD = "keep_history_items"
HEALTH_PATH = "/healthz"

# Route kinds returned by `route`.
HEALTH = "health"
STATUS = "status"
METADATA = "metadata"
PREDICT = "predict"

_ALLOWED = {HEALTH: ("GET", "HEAD"), STATUS: ("GET", "HEAD"),
            METADATA: ("GET", "HEAD"), PREDICT: ("POST",)}
_MODEL_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)(?P<rest>/metadata|:[^/]*)?/?$")
_TOP_LEVEL_KEYS = ("instances", "inputs", "k", "signature_name",
                   "keep_history_items")
# Unknown ids named in one message at most (then "and N more").
_NAMED = 5
_EXAMPLE = '{"instances": [{"user_id": "42"}]}'
_HISTORY_EXAMPLE = '{"instances": [{"history": ["12", "7"]}]}'
_JSON_TYPE = "application/json"


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
    user_ids: the users, in request order (one model call for all of them);
      for a history export, one per history ("" when not sent) if the
      export takes `user_id`, else empty.
    k: how many items to return per user (<= the index's k).
    columnar: whether the request used "inputs" (answered with "outputs").
    histories: for a history export, each row's item id strings (in
      request order); None for a user id export.
    keep_history_items: whether the seen items stay in the answers.
  """
  user_ids: Tuple[str, ...]
  k: int
  columnar: bool = False
  histories: Optional[Tuple[Tuple[str, ...], ...]] = None
  keep_history_items: bool = False

  @property
  def size(self) -> int:
    """Rows of the model call (users or histories)."""
    return (len(self.histories) if self.histories is not None
            else len(self.user_ids))


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


def check_content_type(value: Optional[str]) -> None:
  """Accepts a JSON content type (or none); raises 415 for any other.

  `application/json` with any parameters but a non-UTF-8 `charset`, or no
  header at all (JSON is then assumed, as TF Serving does).

  Raises:
    RestError: 415 naming the type received.
  """
  if value is None or not value.strip():
    return
  media, *params = value.split(";")
  if media.strip().lower() != _JSON_TYPE:
    raise RestError(415, "unsupported Content-Type %r: send %s (e.g. curl "
                    "-H 'Content-Type: application/json')"
                    % (value, _JSON_TYPE))
  for param in params:
    name, _, charset = param.partition("=")
    if (name.strip().lower() == "charset" and
        charset.strip().strip('"').lower() not in ("utf-8", "utf8")):
      raise RestError(415, "unsupported charset in Content-Type %r: the "
                      "body must be UTF-8" % value)


def _text(value: str, where: str) -> str:
  """`value` if it encodes as UTF-8 (JSON may hold a lone surrogate)."""
  try:
    value.encode("utf-8")
  except UnicodeEncodeError as e:
    raise RestError(400, "%s is not valid Unicode text (%s); send UTF-8 "
                    "strings" % (where, e.reason)) from e
  return value


def _user_id(value: Any, where: str) -> str:
  if not isinstance(value, str):
    raise RestError(400, "%s must be a string such as \"42\", got %s"
                    % (where, _type_name(value)))
  return _text(value, where)


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
    elif isinstance(instance, str):
      users.append(_text(instance, "instances[%d]" % i))
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
  _check_column(column, where, "user id strings (rank 1)", "user id")
  return [_user_id(v, "%s[%d]" % (where, i)) for i, v in enumerate(column)]


def _check_column(column: Any, where: str, kind: str, one: str) -> None:
  """A request column must be a non-empty JSON list (400 otherwise)."""
  if not isinstance(column, list):
    raise RestError(400, "%s must be a list of %s, got %s"
                    % (where, kind, _type_name(column)))
  if not column:
    raise RestError(400, "%s is empty: send at least one %s" % (where, one))


def _history(value: Any, where: str, max_history: int) -> Tuple[str, ...]:
  if not isinstance(value, list):
    raise RestError(400, "%s must be a list of item id strings such as "
                    "[\"12\", \"7\"], got %s" % (where, _type_name(value)))
  if len(value) > max_history:
    raise RestError(400, "%s is too long: %d items > %d (the server's "
                    "--max_history_items); send the most recent ones"
                    % (where, len(value), max_history))
  out = []
  for i, item in enumerate(value):
    if not isinstance(item, str):
      raise RestError(400, "%s[%d] must be an item id string such as "
                      "\"12\", got %s" % (where, i, _type_name(item)))
    out.append(_text(item, "%s[%d]" % (where, i)))
  return tuple(out)


def _check_inputs(names: Sequence[str], inputs: Sequence[str],
                  where: str) -> None:
  unknown = sorted(set(names) - set(inputs))
  if unknown:
    raise RestError(400, "%s has unknown input %r; the model takes %s"
                    % (where, unknown[0], " and ".join(
                        repr(n) for n in inputs)))
  if HISTORY_NAME not in names:
    raise RestError(400, "%s is missing %r, e.g. %s"
                    % (where, HISTORY_NAME, _HISTORY_EXAMPLE))


def _history_instances(value: Any, inputs: Sequence[str], max_history: int
                       ) -> Tuple[List[Tuple[str, ...]], List[str]]:
  if not isinstance(value, list):
    raise RestError(400, "'instances' must be a list such as %s, got %s"
                    % (_HISTORY_EXAMPLE, _type_name(value)))
  if not value:
    raise RestError(400, "'instances' is empty: send at least one instance, "
                    "e.g. %s" % _HISTORY_EXAMPLE)
  histories, users = [], []
  for i, instance in enumerate(value):
    where = "instances[%d]" % i
    if isinstance(instance, dict):
      _check_inputs(list(instance), inputs, where)
      histories.append(_history(instance[HISTORY_NAME],
                                "%s.%s" % (where, HISTORY_NAME), max_history))
      users.append(_user_id(instance[INPUT_NAME],
                            "%s.%s" % (where, INPUT_NAME))
                   if INPUT_NAME in instance else "")
    elif isinstance(instance, list):
      histories.append(_history(instance, where, max_history))
      users.append("")
    else:
      raise RestError(400, "%s must be an object with %r or a list of item "
                      "id strings, got %s"
                      % (where, HISTORY_NAME, _type_name(instance)))
  return histories, users


def _history_inputs(value: Any, inputs: Sequence[str], max_history: int
                    ) -> Tuple[List[Tuple[str, ...]], List[str]]:
  if isinstance(value, dict):
    _check_inputs(list(value), inputs, "'inputs'")
    column, where = value[HISTORY_NAME], "inputs.%s" % HISTORY_NAME
  else:
    column, where = value, "inputs"
  _check_column(column, where,
                "histories (lists of item id strings, rank 2)", "history")
  histories = [_history(row, "%s[%d]" % (where, i), max_history)
               for i, row in enumerate(column)]
  users = [""] * len(histories)
  if isinstance(value, dict) and INPUT_NAME in value:
    users_column = value[INPUT_NAME]
    if not isinstance(users_column, list):
      raise RestError(400, "inputs.%s must be a list of user id strings "
                      "(rank 1), got %s"
                      % (INPUT_NAME, _type_name(users_column)))
    if len(users_column) != len(histories):
      raise RestError(400, "inputs.%s has %d entries but inputs.%s has %d: "
                      "send one user id per history"
                      % (INPUT_NAME, len(users_column), HISTORY_NAME,
                         len(histories)))
    users = [_user_id(v, "inputs.%s[%d]" % (INPUT_NAME, i))
             for i, v in enumerate(users_column)]
  return histories, users


def parse_predict(body: bytes, index_k: int,
                  max_instances: Optional[int] = None,
                  inputs: Sequence[str] = (INPUT_NAME,),
                  max_history: int = DEFAULT_MAX_HISTORY) -> PredictRequest:
  """Validates a predict body; returns the users and `k` of one model call.

  Args:
    body: the raw request body (UTF-8 JSON).
    index_k: the k of the exported index (the most a request may ask for).
    max_instances: the most users one request may hold (None: no limit).
    inputs: the export's input names: `("user_id",)`, or `("history",)` /
      `("history", "user_id")` for a history tower.
    max_history: the most item ids one history may hold.

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
  histories = None
  if HISTORY_NAME in inputs:
    histories, users = (
        _history_instances(request["instances"], inputs, max_history)
        if has_rows else
        _history_inputs(request["inputs"], inputs, max_history))
    if INPUT_NAME not in inputs:
      users = []
  else:
    users = (_instances(request["instances"]) if has_rows
             else _inputs(request["inputs"]))
  rows = len(histories) if histories is not None else len(users)
  if max_instances is not None and rows > max_instances:
    raise RestError(400, "too many users in one request: %d > %d (the "
                    "server's --max_instances); split the request"
                    % (rows, max_instances))
  k = request.get("k", index_k)
  if isinstance(k, bool) or not isinstance(k, int):
    raise RestError(400, "'k' must be an integer, got %s" % _type_name(k))
  if not 1 <= k <= index_k:
    raise RestError(400, "'k' must be in [1, %d] (the index's k), got %d"
                    % (index_k, k))
  keep = request.get(KEEP_FIELD, False)
  if not isinstance(keep, bool):
    raise RestError(400, "%r must be true or false, got %s"
                    % (KEEP_FIELD, _type_name(keep)))
  return PredictRequest(
      user_ids=tuple(users), k=k, columnar=has_columns,
      histories=tuple(histories) if histories is not None else None,
      keep_history_items=keep)


def _texts(values: Sequence[Any]) -> List[str]:
  return [v.decode("utf-8") if isinstance(v, bytes) else str(v)
          for v in values]


def _named(ids: Sequence[str]) -> str:
  """'a', 'b', ... (distinct, in order; at most `_NAMED`, then a count)."""
  distinct = list(dict.fromkeys(ids))
  shown = ", ".join(repr(i) for i in distinct[:_NAMED])
  more = len(distinct) - _NAMED
  return shown + (" and %d more" % more if more > 0 else "")


def shortfall_reason(k: int, excluded: int, num_items: Optional[int],
                     index: Optional[str]) -> str:
  """Why a row has fewer than `k` items (for a warning line).

  Args:
    k: the k asked for.
    excluded: distinct seen items excluded from the row.
    num_items: the catalog size (export metadata), if known.
    index: the index kind (export metadata), if known.
  """
  seen = (" and %d of them are excluded as seen" % excluded if excluded
          else "")
  if num_items is not None and num_items - excluded < k:
    return "the catalog has %d items%s" % (num_items, seen)
  after = " after excluding %d seen items" % excluded if excluded else ""
  if index == "scann":
    return ("the ScaNN leaves searched held fewer candidates%s; an exact "
            "index (--index=brute_force) or more leaves searched "
            "(--scann_leaves_to_search) finds more" % after)
  return "the index found fewer candidates%s" % after


def history_check(history: Sequence[str], unknown: Sequence[bool],
                  where: str) -> Optional[str]:
  """A warning naming a history's unknown ids (None if all are known).

  Args:
    history: the item ids sent ("" is padding).
    unknown: per entry, whether the export does not know it.
    where: how to name the history, e.g. "instances[0].history".

  Raises:
    ValueError: every non-empty id is unknown (the message names them).
  """
  ids = [i for i, u in zip(history, unknown) if u]
  if not ids:
    return None
  if len(ids) == sum(1 for i in history if i != ""):
    raise ValueError("%s has no item id of the catalog: %s %s unknown; send "
                     "ids of the export's catalog"
                     % (where, _named(ids), "is" if len(set(ids)) == 1
                        else "are"))
  return "%s: unknown item ids ignored: %s" % (where, _named(ids))


def _row(request: PredictRequest, i: int) -> str:
  return "row %d of inputs" % i if request.columnar else "instances[%d]" % i


def format_predict(request: PredictRequest, outputs: Mapping[str, Any],
                   export_metadata: Optional[Mapping[str, Any]] = None
                   ) -> Dict[str, Any]:
  """The response body for `request` from the model's outputs.

  Args:
    request: the parsed request (its `k` slices the outputs).
    outputs: the signature's outputs (arrays or nested lists): `scores`
      and `item_ids` `[B, k_index]`, `count` `[B]` (real items per row),
      and when the export has them `excluded` `[B]`, `known_user` `[B]`
      and `unknown_history` (per row, one flag per entry of the request's
      history, in request order).
    export_metadata: the export's metadata (`num_items`, `index`), for the
      reason of a short row.

  Returns:
    `{"predictions": [...]}` for an "instances" request, `{"outputs": {...}}`
    for an "inputs" request; each row holds its first `min(count, k)`
    items. A `"warnings"` list is added when a row is short, a history has
    unknown ids or a user is unknown to an export that knows its users.

  Raises:
    RestError: 400 when a history's ids are all unknown.
    ValueError: the outputs do not have one row per requested user.
  """
  scores, item_ids = outputs["scores"], outputs["item_ids"]
  counts = outputs["count"]
  if not len(scores) == len(item_ids) == len(counts) == request.size:
    raise ValueError("the model returned %d/%d/%d rows for %d users"
                     % (len(scores), len(item_ids), len(counts),
                        request.size))
  meta = export_metadata or {}
  warnings = []
  unknown = outputs.get("unknown_history")
  if unknown is not None and request.histories is not None:
    for i, (history, flags) in enumerate(zip(request.histories, unknown)):
      where = ("inputs.history[%d]" % i if request.columnar
               else "instances[%d].history" % i)
      try:
        note = history_check(history, flags, where)
      except ValueError as e:
        raise RestError(400, str(e)) from e
      if note:
        warnings.append(note)
  known = outputs.get("known_user")
  if known is not None:
    for i, (user, ok) in enumerate(zip(request.user_ids, known)):
      if not ok:
        warnings.append("%s: user %r has no training items in this export: "
                        "answered with the list for unknown users"
                        % (_row(request, i), user))
  excluded = outputs.get("excluded")
  k = request.k
  ids, values = [], []
  for i, (id_row, score_row, count) in enumerate(
      zip(item_ids, scores, counts)):
    n = min(int(count), k)
    ids.append(_texts(id_row[:n]))
    values.append([float(s) for s in score_row[:n]])
    if n < k:
      warnings.append("%s: only %d of k=%d items: %s" % (
          _row(request, i), n, k, shortfall_reason(
              k, int(excluded[i]) if excluded is not None else 0,
              meta.get("num_items"), meta.get("index"))))
  body: Dict[str, Any] = (
      {"outputs": {"item_ids": ids, "scores": values}} if request.columnar
      else {"predictions": [{"item_ids": i, "scores": s}
                            for i, s in zip(ids, values)]})
  if warnings:
    body["warnings"] = warnings
  return body


def status_body(version: str = "1") -> Dict[str, Any]:
  """`GET /v1/models/<name>`: the TF Serving model status of a loaded model."""
  return {"model_version_status": [{
      "version": version, "state": "AVAILABLE",
      "status": {"error_code": "OK", "error_message": ""}}]}


_OUTPUT_SPECS = {
    "item_ids": ("DT_STRING", 2), "scores": ("DT_FLOAT", 2),
    "count": ("DT_INT32", 1), "excluded": ("DT_INT32", 1),
    "unknown_history": ("DT_BOOL", 2), "known_user": ("DT_BOOL", 1)}


def metadata_body(model_name: str, index_k: int,
                  export_metadata: Optional[Mapping[str, Any]] = None,
                  version: str = "1",
                  inputs: Sequence[str] = (INPUT_NAME,)) -> Dict[str, Any]:
  """`GET /v1/models/<name>/metadata`: signature and export metadata."""
  shapes = {INPUT_NAME: [-1], HISTORY_NAME: [-1, -1]}
  export_metadata = dict(export_metadata or {})
  outputs = {}
  for name in export_metadata.get("outputs") or OUTPUT_NAMES:
    if name not in _OUTPUT_SPECS:
      continue
    dtype, rank = _OUTPUT_SPECS[name]
    outputs[name] = {"dtype": dtype, "shape": (
        [-1] if rank == 1 else
        [-1, -1] if name == "unknown_history" else [-1, index_k])}
  return {
      "model_spec": {"name": model_name, "version": version,
                     "signature_name": SIGNATURE_NAME},
      "metadata": {
          "signature_def": {
              "inputs": {name: {"dtype": "DT_STRING", "shape": shapes[name]}
                         for name in inputs},
              "outputs": outputs,
          },
          "index_k": index_k,
          "export": export_metadata,
      },
  }


def health_body(model_name: str) -> Dict[str, str]:
  return {"status": "ok", "model": model_name}
