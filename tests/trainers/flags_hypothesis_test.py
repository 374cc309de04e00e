"""Property-based tests of the flag validation and the REST parser.

Random command lines give either a valid `ExperimentConfig` (through
`common.training_config`, the trainer's checks) or an error that
`common.error_line` reports as one usage line (exit status 2), never an
internal error; random request bodies, paths and content types give either
a parsed request or a `RestError` with a 4xx status.
"""

import json
import math

from absl import flags
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from trainers import common
from trainers.serving import rest

FLAGS = flags.FLAGS
if "sampler" not in FLAGS:
  common.define_flags()

# Derandomized and without an example database: the same examples on every
# machine (CI included), nothing written to the checkout.
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    database=None,
                    suppress_health_check=[HealthCheck.too_slow])

_FLOAT_FLAGS = ("learning_rate", "temperature", "dropout", "ease_lambda",
                "estimator_alpha", "warmup_epochs", "cache_weight", "cache_decay",
                "alpha", "beta", "margin")
_INT_FLAGS = ("batch_size", "epochs", "embedding_dim", "top_k", "memory_size",
              "num_hashes", "num_buckets", "warmup_steps", "num_resampled",
              "cache_size", "num_negatives", "max_history", "num_heads",
              "num_blocks", "num_validation", "cpu_replicas", "backup_freq",
              "scann_leaves", "refresh_steps", "synthetic_users")
_LIST_FLAGS = ("query_hidden", "item_hidden")
_ENUM_FLAGS = {"sampler": ["in_batch_logq", "cross_batch", "xir", "bogus",
                           "popularity_baseline"],
               "optimizer": ["adam", "lazy_adam", "sgd"],
               "duplicates": ["keep_first", "keep_all", "error", "drop"],
               "split": ["leave_last_out", "temporal", "random"],
               "eval_split": ["test", "validation", "train"],
               "query_tower": ["id", "mean", "gru", "sasrec", "cnn"],
               "dataset": ["synthetic", "csv", "movielens", "tfds"]}

_GARBAGE = st.sampled_from(["", "nan", "inf", "-inf", "abc", "1e400", "0x10",
                            "1,2", " ", "--", "9" * 30, "-0", "1_0",
                            "\u00e9"])
_FLOATS = (st.floats(allow_nan=True, allow_infinity=True).map(repr)
           | st.integers(-5, 5).map(str) | _GARBAGE)
_INTS = st.integers(-2**70, 2**70).map(str) | st.integers(-3, 300).map(
    str) | _GARBAGE
_LISTS = st.lists(st.integers(-2, 300).map(str) | _GARBAGE,
                  max_size=4).map(",".join)


@st.composite
def _argv(draw):
  argv = []
  names = draw(st.lists(st.sampled_from(
      _FLOAT_FLAGS + _INT_FLAGS + _LIST_FLAGS + tuple(_ENUM_FLAGS)),
                        max_size=5, unique=True))
  for name in names:
    if name in _FLOAT_FLAGS:
      value = draw(_FLOATS)
    elif name in _INT_FLAGS:
      value = draw(_INTS)
    elif name in _LIST_FLAGS:
      value = draw(_LISTS)
    else:
      value = draw(st.sampled_from(_ENUM_FLAGS[name]))
    argv.append("--%s=%s" % (name, value))
  return argv


def _config_or_error(argv):
  try:
    FLAGS(["train"] + argv)
    return common.training_config(), None
  except Exception as e:  # pylint: disable=broad-except
    return None, e
  finally:
    FLAGS.unparse_flags()


@SETTINGS
@given(argv=_argv())
def test_random_flags_give_a_valid_config_or_one_usage_line(argv):
  config, error = _config_or_error(argv)
  if error is not None:
    line, code = common.error_line(error)
    assert code == 2, (argv, line)
    assert line.startswith("error: ") and "internal error" not in line
    assert "\n" not in line
    return
  config = config.resolved()  # unset defaults (the tower's rate) filled
  for name in ("learning_rate", "temperature"):
    value = getattr(config, name)
    assert math.isfinite(value) and value > 0, argv
  assert 0 <= config.dropout < 1
  assert config.batch_size >= 1 and config.epochs >= 1
  assert all(w >= 1 for w in config.query_hidden + config.item_hidden)
  for name, value in config.sampler_options.items():
    if isinstance(value, float):
      assert math.isfinite(value), (name, value)
    elif isinstance(value, int) and not isinstance(value, bool):
      assert value >= 0, (name, value)
  if config.dataset == "csv":
    assert config.data_path  # never reached without one
  assert config.duplicates in ("keep_first", "keep_all", "error")


def test_each_bad_float_names_its_flag():
  for name in ("learning_rate", "temperature"):
    for value in ("nan", "inf", "-inf", "0", "-1"):
      _, error = _config_or_error(["--%s=%s" % (name, value)])
      line, code = common.error_line(error)
      assert code == 2 and line.startswith("error: --%s must be a finite "
                                            "number > 0, got " % name), line


# REST: JSON values of any shape, with lone surrogates among the strings.
_TEXT = st.text(st.characters(blacklist_categories=()), max_size=6) | (
    st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
            min_size=1, max_size=2))
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70)
    | st.floats(allow_nan=False) | _TEXT,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["instances", "inputs", "k",
                                       "user_id", "history",
                                       "signature_name", "x"]) | _TEXT,
                      children, max_size=4),
    max_leaves=12)
_BODIES = st.fixed_dictionaries(
    {}, optional={"instances": _JSON, "inputs": _JSON,
                  "k": _JSON | st.integers(-3, 30),
                  "signature_name": st.sampled_from(["serving_default", "x"])})
_INPUTS = st.sampled_from([("user_id",), ("history",),
                           ("history", "user_id")])


def _check_parse(body, inputs):
  try:
    request = rest.parse_predict(body, index_k=20, max_instances=8,
                                 inputs=inputs, max_history=5)
  except rest.RestError as e:
    assert 400 <= e.status < 500 and e.message
    json.dumps(rest.error_body(e.message))  # the error is JSON-encodable
    return
  assert 1 <= request.k <= 20
  assert 1 <= request.size <= 8
  for user in request.user_ids:
    assert isinstance(user, str)
    user.encode("utf-8")
  if "history" in inputs:
    assert request.histories is not None
    for history in request.histories:
      assert len(history) <= 5
      assert all(isinstance(i, str) for i in history)
  else:
    assert request.histories is None


@SETTINGS
@given(body=_BODIES, inputs=_INPUTS)
def test_random_json_bodies_parse_or_4xx(body, inputs):
  _check_parse(json.dumps(body).encode("utf-8"), inputs)


@SETTINGS
@given(value=_JSON, inputs=_INPUTS)
def test_any_json_value_parses_or_4xx(value, inputs):
  _check_parse(json.dumps(value).encode("utf-8"), inputs)


@SETTINGS
@given(raw=st.binary(max_size=64)
       | st.sampled_from([b'{"instances": ["42"]}', b"[[[[[[",
                          b'{"instances": ["\\ud800"]}',
                          b'{"inputs": {"user_id": ["1"]}, "k": 1e400}']),
       cut=st.integers(0, 64), inputs=_INPUTS)
def test_random_and_truncated_bytes_parse_or_4xx(raw, cut, inputs):
  _check_parse(raw, inputs)
  _check_parse(raw[:cut], inputs)


def test_deeply_nested_body_is_400():
  _check_parse(b"[" * 100000 + b"]" * 100000, ("user_id",))


@SETTINGS
@given(method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "get", "X"])
       | st.text(max_size=5),
       path=st.sampled_from(["/healthz", "/v1/models/default",
                             "/v1/models/default:predict",
                             "/v1/models/default/metadata",
                             "/v1/models/other:predict"])
       | st.text(max_size=30).map(lambda s: "/" + s))
def test_random_routes_are_a_kind_or_4xx(method, path):
  try:
    kind = rest.route(method, path, "default")
  except rest.RestError as e:
    assert e.status in (404, 405), e.status
    return
  assert kind in (rest.HEALTH, rest.STATUS, rest.METADATA, rest.PREDICT)


@SETTINGS
@given(value=st.none() | st.text(max_size=40) | st.sampled_from(
    ["application/json", "application/json; charset=latin-1",
     "APPLICATION/JSON;charset=\"UTF-8\"", "text/plain", ";;", "=;="]))
def test_random_content_types_pass_or_415(value):
  try:
    rest.check_content_type(value)
  except rest.RestError as e:
    assert e.status == 415
    return
  assert value is None or not value.strip() or (
      value.split(";")[0].strip().lower() == "application/json")


def test_no_flags_give_the_config_defaults_from_one_place():
  # trainers/pipeline/defaults.py feeds both doors: the flags and
  # ExperimentConfig agree on every setting a user leaves unset.
  import dataclasses  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import defaults  # pylint: disable=g-import-not-at-top
  config, error = _config_or_error([])
  assert error is None, error
  plain = configuration.ExperimentConfig()
  for field in dataclasses.fields(plain):
    if field.name in ("sampler_options", "synthetic", "scann_overrides",
                      "verbose"):
      continue  # what the flags spell out (0 / None: derived) or print
    assert getattr(config, field.name) == getattr(plain, field.name), (
        field.name)
  resolved = config.resolved()
  assert resolved.query_tower == defaults.QUERY_TOWER
  assert resolved.learning_rate == defaults.LEARNING_RATE[
      defaults.QUERY_TOWER]
  assert (resolved.validate_every, resolved.patience) == (
      defaults.VALIDATE_EVERY, defaults.PATIENCE)
