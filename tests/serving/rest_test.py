"""REST request rules without a socket: routes, parsing, response shapes."""

import json

import numpy as np
import pytest

from trainers.serving import rest


def _parse(body, index_k=20, max_instances=None):
  if not isinstance(body, bytes):
    body = json.dumps(body).encode()
  return rest.parse_predict(body, index_k, max_instances)


def _error(body, **kw):
  with pytest.raises(rest.RestError) as info:
    _parse(body, **kw)
  return info.value


class RouteTest:

  @pytest.mark.parametrize("method,path,kind", [
      ("POST", "/v1/models/default:predict", rest.PREDICT),
      ("post", "/v1/models/default:predict", rest.PREDICT),
      ("GET", "/v1/models/default", rest.STATUS),
      ("GET", "/v1/models/default/", rest.STATUS),
      ("GET", "/v1/models/default/metadata", rest.METADATA),
      ("GET", "/healthz", rest.HEALTH),
  ])
  def test_known_routes(self, method, path, kind):
    assert rest.route(method, path, "default") == kind

  @pytest.mark.parametrize("path,status,message", [
      ("/v1/models/other:predict", 404, "unknown model 'other'"),
      ("/v1/models/other", 404, "unknown model 'other'"),
      ("/v1/models/default:classify", 404, "unsupported verb ':classify'"),
      ("/v1/models/default/versions/1", 404, "unknown path"),
      ("/", 404, "unknown path '/'"),
      ("/v1/models", 404, "unknown path"),
  ])
  def test_unknown_routes_are_404(self, path, status, message):
    with pytest.raises(rest.RestError) as info:
      rest.route("POST" if ":" in path else "GET", path, "default")
    assert info.value.status == status
    assert message in info.value.message

  @pytest.mark.parametrize("method,path,allow", [
      ("GET", "/v1/models/default:predict", "POST"),
      ("PUT", "/v1/models/default:predict", "POST"),
      ("POST", "/v1/models/default", "GET, HEAD"),
      ("DELETE", "/healthz", "GET, HEAD"),
  ])
  def test_wrong_method_is_405_with_allow(self, method, path, allow):
    with pytest.raises(rest.RestError) as info:
      rest.route(method, path, "default")
    assert info.value.status == 405
    assert info.value.headers == {"Allow": allow}
    assert "method %s not allowed" % method in info.value.message

  def test_custom_model_name(self):
    assert rest.route("POST", "/v1/models/movies:predict",
                      "movies") == rest.PREDICT
    with pytest.raises(rest.RestError, match="serves 'movies'"):
      rest.route("POST", "/v1/models/default:predict", "movies")


class ParsePredictTest:

  def test_row_format(self):
    request = _parse({"instances": [{"user_id": "42"}, {"user_id": "7"}],
                      "k": 5})
    assert request == rest.PredictRequest(("42", "7"), 5, columnar=False)

  def test_row_shorthand_and_default_k(self):
    request = _parse({"instances": ["42", ""]})
    assert request.user_ids == ("42", "")
    assert request.k == 20  # the index's k

  def test_columnar_format(self):
    assert _parse({"inputs": {"user_id": ["1", "2"]}, "k": 20}) == (
        rest.PredictRequest(("1", "2"), 20, columnar=True))
    assert _parse({"inputs": ["3"]}).user_ids == ("3",)

  @pytest.mark.parametrize("value,keep", [(True, True), (False, False)])
  def test_keep_history_items(self, value, keep):
    assert _parse({"instances": ["1"], "keep_history_items": value}
                  ).keep_history_items is keep
    assert not _parse({"instances": ["1"]}).keep_history_items

  @pytest.mark.parametrize("value,kind", [
      ("true", "string"), (1, "number 1"), (None, "null"), ([True], "list")])
  def test_keep_history_items_must_be_a_boolean(self, value, kind):
    error = _error({"instances": ["1"], "keep_history_items": value})
    assert error.status == 400
    assert error.message == ("'keep_history_items' must be true or false, "
                             "got %s" % kind)

  def test_signature_name(self):
    body = {"instances": ["1"], "signature_name": "serving_default"}
    assert _parse(body).user_ids == ("1",)
    assert "unknown signature_name 'other'" in _error(
        dict(body, signature_name="other")).message

  @pytest.mark.parametrize("body,message", [
      (b"", "empty request body"),
      (b"  \n", "empty request body"),
      (b'{"instances": [', "malformed JSON"),
      (b"{'instances': []}", "malformed JSON"),
      (b"\xff\xfe", "not UTF-8"),
      (b"[" * 100_000, "nested too deeply"),
      ([{"user_id": "1"}], "must be a JSON object"),
      ("42", "must be a JSON object"),
      ({}, "exactly one of 'instances' or 'inputs' (got neither)"),
      ({"instances": ["1"], "inputs": ["1"]}, "(got both)"),
      ({"instances": ["1"], "user": "1"}, "unknown field 'user'"),
      # Missing user_id.
      ({"instances": [{}]}, "instances[0] is missing 'user_id'"),
      ({"instances": ["1", {"id": "2"}]}, "instances[1] has unknown input "
       "'id'"),
      ({"inputs": {}}, "'inputs' is missing 'user_id'"),
      # Wrong types.
      ({"instances": [{"user_id": 42}]}, "instances[0].user_id must be a "
       "string such as \"42\", got number 42"),
      ({"instances": [{"user_id": None}]}, "got null"),
      ({"instances": [{"user_id": ["1"]}]}, "got list"),
      ({"instances": [7]}, "instances[0] (an object with 'user_id' or a user "
       "id string) must be a string"),
      ({"instances": {"user_id": "1"}}, "'instances' must be a list"),
      ({"instances": "1"}, "'instances' must be a list"),
      ({"inputs": {"user_id": "1"}}, "inputs.user_id must be a list of user "
       "id strings (rank 1), got string"),
      ({"inputs": {"user_id": [1.5]}}, "inputs.user_id[0] must be a string"),
      ({"instances": ["1"], "k": "5"}, "'k' must be an integer, got string"),
      ({"instances": ["1"], "k": 2.0}, "'k' must be an integer, got number"),
      ({"instances": ["1"], "k": True}, "'k' must be an integer, got boolean"),
      ({"instances": ["1"], "k": None}, "'k' must be an integer, got null"),
      # Empty instance lists.
      ({"instances": []}, "'instances' is empty"),
      ({"inputs": {"user_id": []}}, "inputs.user_id is empty"),
      # k out of range.
      ({"instances": ["1"], "k": 0}, "'k' must be in [1, 20] (the index's "
       "k), got 0"),
      ({"instances": ["1"], "k": -3}, "got -3"),
      ({"instances": ["1"], "k": 21}, "'k' must be in [1, 20] (the index's "
       "k), got 21"),
  ])
  def test_bad_bodies_are_400(self, body, message):
    error = _error(body)
    assert error.status == 400
    assert message in error.message, error.message

  def test_too_many_instances(self):
    assert _parse({"instances": ["1"] * 3}, max_instances=3).user_ids
    error = _error({"instances": ["1"] * 4}, max_instances=3)
    assert error.status == 400
    assert "too many users in one request: 4 > 3" in error.message


def _outputs(scores, ids, counts=None, **extra):
  counts = [len(r) for r in ids] if counts is None else counts
  return dict(scores=scores, item_ids=ids, count=counts, **extra)


class FormatTest:

  def test_rows_sliced_to_k_and_decoded(self):
    request = rest.PredictRequest(("a", "b"), k=2)
    scores = np.array([[0.5, 0.25, 0.0], [1.0, 0.5, 0.25]], np.float32)
    ids = np.array([[b"1", b"2", b"3"], [b"4", b"5", b"6"]])
    body = rest.format_predict(request, _outputs(scores, ids))
    assert body == {"predictions": [
        {"item_ids": ["1", "2"], "scores": [0.5, 0.25]},
        {"item_ids": ["4", "5"], "scores": [1.0, 0.5]}]}
    assert json.loads(json.dumps(body)) == body

  def test_columns(self):
    request = rest.PredictRequest(("a",), k=1, columnar=True)
    body = rest.format_predict(request, _outputs([[0.5, 0.1]], [["x", "y"]]))
    assert body == {"outputs": {"item_ids": [["x"]], "scores": [[0.5]]}}

  def test_short_rows_keep_their_count_and_are_named(self):
    # The export pads after `count` with "" and -inf; only real items go
    # out, and a warning says which rows are short and why.
    request = rest.PredictRequest(("a", "b"), k=3)
    inf = float("-inf")
    body = rest.format_predict(
        request, _outputs([[0.5, 0.1, inf], [0.3, inf, inf]],
                          [["x", "y", ""], ["z", "", ""]], counts=[2, 1],
                          excluded=[0, 4]),
        {"num_items": 5, "index": "brute_force"})
    assert body == {
        "predictions": [{"item_ids": ["x", "y"], "scores": [0.5, 0.1]},
                        {"item_ids": ["z"], "scores": [0.3]}],
        "warnings": [
            "instances[0]: only 2 of k=3 items: the index found fewer "
            "candidates",
            "instances[1]: only 1 of k=3 items: the catalog has 5 items and "
            "4 of them are excluded as seen"]}
    json.loads(json.dumps(body, allow_nan=False))

  def test_unknown_users_are_named(self):
    request = rest.PredictRequest(("a", "zz"), k=1, columnar=True)
    body = rest.format_predict(request, _outputs(
        [[0.5], [0.1]], [["x"], ["y"]], known_user=[True, False]))
    assert body["warnings"] == [
        "row 1 of inputs: user 'zz' has no training items in this export: "
        "answered with the list for unknown users"]

  def test_unknown_history_ids_warn_and_all_unknown_is_400(self):
    request = rest.PredictRequest((), k=1, histories=(
        ("i1", "zz", "", "zz"), ()))
    body = rest.format_predict(request, _outputs(
        [[0.5], [0.1]], [["x"], ["y"]],
        unknown_history=[[False, True, False, True], []]))
    assert body["warnings"] == [
        "instances[0].history: unknown item ids ignored: 'zz'"]
    request = rest.PredictRequest((), k=1, columnar=True, histories=(
        ("i1",), tuple("u%d" % i for i in range(7))))
    with pytest.raises(rest.RestError) as info:
      rest.format_predict(request, _outputs(
          [[0.5], [0.1]], [["x"], ["y"]],
          unknown_history=[[False], [True] * 7]))
    assert info.value.status == 400
    assert info.value.message == (
        "inputs.history[1] has no item id of the catalog: 'u0', 'u1', 'u2', "
        "'u3', 'u4' and 2 more are unknown; send ids of the export's "
        "catalog")

  def test_shortfall_reasons(self):
    assert rest.shortfall_reason(10, 0, 8, "brute_force") == (
        "the catalog has 8 items")
    assert rest.shortfall_reason(10, 3, 100, "scann").startswith(
        "the ScaNN leaves searched held fewer candidates after excluding 3 "
        "seen items; an exact index")
    assert rest.shortfall_reason(10, 0, None, None) == (
        "the index found fewer candidates")

  def test_row_count_mismatch(self):
    with pytest.raises(ValueError, match="1/1/1 rows for 2 users"):
      rest.format_predict(rest.PredictRequest(("a", "b"), k=1),
                          _outputs([[0.5]], [["x"]]))

  def test_status_metadata_health_error(self):
    status = rest.status_body()["model_version_status"][0]
    assert status["state"] == "AVAILABLE"
    meta = rest.metadata_body("m", 20, {"index": "scann"})
    assert meta["model_spec"]["name"] == "m"
    assert meta["metadata"]["signature_def"]["outputs"]["item_ids"][
        "shape"] == [-1, 20]
    assert meta["metadata"]["export"] == {"index": "scann"}
    assert rest.health_body("m") == {"status": "ok", "model": "m"}
    assert rest.error_body("boom") == {"error": "boom"}


def _parse_history(body, inputs=("history",), max_history=5, **kw):
  if not isinstance(body, bytes):
    body = json.dumps(body).encode()
  return rest.parse_predict(body, 20, inputs=inputs, max_history=max_history,
                            **kw)


def _history_error(body, **kw):
  with pytest.raises(rest.RestError) as info:
    _parse_history(body, **kw)
  assert info.value.status == 400
  return info.value.message


class HistoryParseTest:

  def test_row_forms(self):
    request = _parse_history({"instances": [{"history": ["12", "7"]},
                                            {"history": []}], "k": 3})
    assert request.histories == (("12", "7"), ())
    assert request.user_ids == () and request.size == 2
    assert request.k == 3 and not request.columnar
    shorthand = _parse_history({"instances": [["12", "7"], ["", "5"]]})
    assert shorthand.histories == (("12", "7"), ("", "5"))

  def test_columnar_forms(self):
    request = _parse_history({"inputs": {"history": [["1"], ["2", "3"]]}})
    assert request.histories == (("1",), ("2", "3")) and request.columnar
    assert _parse_history({"inputs": [["4"]]}).histories == (("4",),)

  def test_user_id_with_a_history_export_that_takes_it(self):
    inputs = ("history", "user_id")
    request = _parse_history({"instances": [
        {"history": ["1"], "user_id": "42"}, {"history": ["2"]}, ["3"]]},
                             inputs=inputs)
    assert request.user_ids == ("42", "", "")  # missing: unknown user
    request = _parse_history({"inputs": {"history": [["1"], ["2"]],
                                         "user_id": ["a", "b"]}},
                             inputs=inputs)
    assert request.user_ids == ("a", "b")
    assert "inputs.user_id has 1 entries but inputs.history has 2" in (
        _history_error({"inputs": {"history": [["1"], ["2"]],
                                   "user_id": ["a"]}}, inputs=inputs))

  @pytest.mark.parametrize("body,message", [
      ({"instances": [{"history": "12"}]}, "instances[0].history must be a "
       "list of item id strings"),
      ({"instances": [{"history": ["12", 7]}]}, "instances[0].history[1] "
       "must be an item id string such as \"12\", got number 7"),
      ({"instances": [{"history": [None]}]}, "got null"),
      ({"instances": [{"history": [["1"]]}]}, "got list"),
      ({"instances": [{"history": ["1"] * 6}]}, "instances[0].history is too "
       "long: 6 items > 5"),
      ({"instances": [{"history": ["1"], "user_id": "42"}]},
       "instances[0] has unknown input 'user_id'; the model takes "
       "'history'"),
      ({"instances": [{"user_id": "42"}]}, "unknown input 'user_id'"),
      ({"instances": [{}]}, "instances[0] is missing 'history'"),
      ({"instances": ["42"]}, "instances[0] must be an object with "
       "'history' or a list of item id strings, got string"),
      ({"instances": [{"history": ["\ud800"]}]}, "instances[0].history[0] "
       "is not valid Unicode text"),
      ({"instances": []}, "'instances' is empty"),
      ({"instances": {"history": ["1"]}}, "'instances' must be a list"),
      ({"inputs": {"history": ["1", "2"]}}, "inputs.history[0] must be a "
       "list of item id strings"),
      ({"inputs": {"history": "1"}}, "inputs.history must be a list of "
       "histories"),
      ({"inputs": {"history": []}}, "inputs.history is empty"),
      ({"inputs": {"user_id": ["1"]}}, "'inputs' has unknown input "
       "'user_id'"),
      ({"inputs": {"history": [["1"]], "user_id": ["1"]}},
       "unknown input 'user_id'"),
      ({"inputs": [["1"] * 6]}, "inputs[0] is too long"),
  ])
  def test_malformed_histories_are_400_naming_the_field(self, body,
                                                         message):
    got = _history_error(body)
    assert message in got, got

  def test_user_id_type_and_too_many(self):
    inputs = ("history", "user_id")
    assert "instances[0].user_id must be a string" in _history_error(
        {"instances": [{"history": ["1"], "user_id": 5}]}, inputs=inputs)
    assert "too many users in one request: 3 > 2" in _history_error(
        {"instances": [["1"]] * 3}, max_instances=2)

  def test_metadata_lists_the_history_input(self):
    meta = rest.metadata_body("m", 20, {}, inputs=("history", "user_id"))
    assert meta["metadata"]["signature_def"]["inputs"] == {
        "history": {"dtype": "DT_STRING", "shape": [-1, -1]},
        "user_id": {"dtype": "DT_STRING", "shape": [-1]}}


class RobustnessTest:

  @pytest.mark.parametrize("body,field", [
      ({"instances": ["\ud800"]}, "instances[0]"),
      ({"instances": [{"user_id": "a\udfffb"}]}, "instances[0].user_id"),
      ({"inputs": {"user_id": ["ok", "\ud800"]}}, "inputs.user_id[1]"),
  ])
  def test_lone_surrogates_are_400(self, body, field):
    error = _error(body)
    assert error.status == 400
    assert "%s is not valid Unicode text" % field in error.message
    json.dumps(rest.error_body(error.message))  # the answer serialises

  def test_surrogate_in_a_field_name_is_400(self):
    error = _error({"instances": ["1"], "\ud800": 1})
    assert error.status == 400 and "unknown field" in error.message
    json.dumps(rest.error_body(error.message))

  @pytest.mark.parametrize("method,path,kind", [
      ("HEAD", "/healthz", rest.HEALTH),
      ("HEAD", "/v1/models/default", rest.STATUS),
      ("head", "/v1/models/default/metadata", rest.METADATA),
  ])
  def test_head_where_get(self, method, path, kind):
    assert rest.route(method, path, "default") == kind

  def test_head_on_predict_is_405(self):
    with pytest.raises(rest.RestError) as info:
      rest.route("HEAD", "/v1/models/default:predict", "default")
    assert info.value.status == 405 and info.value.headers == {
        "Allow": "POST"}

  @pytest.mark.parametrize("value", [
      None, "", "application/json", "Application/JSON",
      "application/json; charset=utf-8", "application/json;charset=UTF8",
      'application/json; charset="utf-8"'])
  def test_json_content_types_are_accepted(self, value):
    rest.check_content_type(value)

  @pytest.mark.parametrize("value,message", [
      ("text/plain", "unsupported Content-Type 'text/plain'"),
      ("application/x-www-form-urlencoded", "Content-Type: application/json"),
      ("multipart/form-data; boundary=x", "unsupported Content-Type"),
      ("application/json; charset=latin-1", "must be UTF-8"),
      ("application/jsonx", "unsupported Content-Type"),
  ])
  def test_other_content_types_are_415(self, value, message):
    with pytest.raises(rest.RestError) as info:
      rest.check_content_type(value)
    assert info.value.status == 415
    assert message in info.value.message
