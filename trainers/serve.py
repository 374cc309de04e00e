r"""Serves an exported SavedModel (query tower + ScaNN) over TF Serving REST.

  python -m trainers.serve --model_dir=/tmp/run/export --port=8501

  curl -s localhost:8501/v1/models/default:predict \
      -H 'Content-Type: application/json' \
      -d '{"instances": [{"user_id": "42"}], "k": 10}'
  # an export of a history tower takes item ids instead (they are left
  # out of the answer unless "keep_history_items": true):
  #   -d '{"instances": [{"history": ["12", "7", "31"]}], "k": 10}'

Routes: POST /v1/models/<name>:predict, GET /v1/models/<name>,
GET /v1/models/<name>/metadata, GET /healthz (see
`trainers/serving/rest.py`). The process imports TensorFlow, ScaNN and
aiohttp, not TFRS or the training code. A folder that is not a whole
export is refused at start-up with the same line as `trainers.query`.
Clients that disconnect mid-body and malformed HTTP are logged on one line
each, without a traceback. `--port=0` picks a free port; the
"Serving ..." line printed once listening names it. SIGINT/SIGTERM stop the
server after the requests in flight.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402  (absl only, no TFRS)

flags.DEFINE_string("model_dir", None, "Exported SavedModel folder.")
flags.DEFINE_string("host", "127.0.0.1",
                    "Address to listen on (0.0.0.0: every interface).")
flags.DEFINE_integer("port", 8501, "Port (0: any free port).")
flags.DEFINE_string("model_name", "default",
                    "The <name> in /v1/models/<name> (TF Serving's default).")
flags.DEFINE_integer("max_body_bytes", 1 << 20,
                     "Larger request bodies are answered 413.")
flags.DEFINE_integer("max_instances", 1024,
                     "Requests with more users are answered 400.")
flags.DEFINE_integer("threads", 4, "Concurrent model calls.")
flags.DEFINE_integer("max_history_items", 1024,
                     "History exports: histories with more item ids are "
                     "answered 400 (the model keeps the last L anyway).")
flags.DEFINE_boolean("access_log", False, "Log one line per request.")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  for name in ("port", "max_body_bytes", "max_instances", "threads",
               "max_history_items"):
    low = 0 if name == "port" else 1
    if FLAGS[name].value < low or (name == "port" and
                                   FLAGS[name].value > 65535):
      raise common.UsageError("--%s must be %s, got %d" % (
          name, "in [0, 65535]" if name == "port" else ">= 1",
          FLAGS[name].value))
  try:
    # pylint: disable-next=g-import-not-at-top
    from trainers.serving import server as server_lib
  except ImportError as e:
    raise common.FatalError("trainers.serve cannot import %s (%s); install "
                            "the serving dependencies"
                            % (e.name or "a module", e)) from e
  if FLAGS.access_log:
    import logging  # pylint: disable=g-import-not-at-top
    logging.basicConfig(level=logging.INFO)
  try:
    predictor = server_lib.SavedModelPredictor(
        FLAGS.model_dir, label="--model_dir=%s" % FLAGS.model_dir)
    server = server_lib.ModelServer(
        predictor, model_name=FLAGS.model_name, host=FLAGS.host,
        port=FLAGS.port, max_body_bytes=FLAGS.max_body_bytes,
        max_instances=FLAGS.max_instances, threads=FLAGS.threads,
        access_log=FLAGS.access_log, max_history=FLAGS.max_history_items)
  except (FileNotFoundError, ValueError) as e:
    raise common.UsageError(str(e)) from e
  except RuntimeError as e:  # e.g. a ScaNN export without scann
    raise common.FatalError(str(e)) from e
  except ImportError as e:  # aiohttp or TensorFlow missing
    raise common.FatalError("trainers.serve cannot import %s (%s); install "
                            "the serving dependencies"
                            % (e.name or "a module", e)) from e

  def ready(s):
    print("Serving model %r (index %s, k=%d, excluding seen items: %s) on "
          "%s/v1/models/%s"
          % (s.model_name, predictor.metadata.get("index", "?"),
             predictor.index_k, predictor.exclusion, s.url, s.model_name),
          flush=True)

  server.serve_forever(on_ready=ready)
  print("Server stopped.", flush=True)


if __name__ == "__main__":
  common.run(main)
