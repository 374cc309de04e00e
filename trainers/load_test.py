r"""Bounded load test of a running `trainers.serve` server (loopback only).

  python -m trainers.serve --model_dir=/tmp/run/export --port=8501 &
  python -m trainers.load_test --url=http://127.0.0.1:8501 \
      --num_requests=1000 --concurrency=16 --output=/tmp/load/result.json

Sends N predict requests from C threads (one keep-alive connection each) and
prints throughput, p50/p90/p99 latency and the error count; `--output` also
writes the result as JSON and a markdown table (same name, `.md`). Only
127.0.0.0/8, [::1] and localhost are accepted as targets; the run stops after
N requests or `--time_limit` seconds. Exits with status 1 if any request
failed.
"""

from trainers import console

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402

flags.DEFINE_string("url", "http://127.0.0.1:8501",
                    "Server URL (loopback addresses only).")
flags.DEFINE_string("model_name", "default", "The <name> of the model route.")
flags.DEFINE_integer("num_requests", 1000, "Requests to send (N).")
flags.DEFINE_integer("concurrency", 16, "Concurrent connections (C).")
flags.DEFINE_integer("batch_size", 1, "Users per request.")
flags.DEFINE_integer("k", 10, "k of every request.")
flags.DEFINE_list("user_ids", [],
                  "Users to cycle through (default: --num_user_ids numbers "
                  "from --first_user_id).")
flags.DEFINE_integer("num_user_ids", 1000, "How many default users.")
flags.DEFINE_integer("first_user_id", 0,
                     "First default user (MovieLens ids start at 1).")
flags.DEFINE_float("time_limit", 120.0,
                   "No request starts after this many seconds.")
flags.DEFINE_float("timeout", 30.0, "Socket timeout of one request (s).")
flags.DEFINE_string("output", None,
                    "If set, write the result as JSON here (and .md).")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  # pylint: disable-next=g-import-not-at-top
  from trainers.serving import load_test
  common.check_finite("time_limit", FLAGS.time_limit, positive=True)
  common.check_finite("timeout", FLAGS.timeout, positive=True)
  users = FLAGS.user_ids or [
      str(FLAGS.first_user_id + i) for i in range(FLAGS.num_user_ids)]
  try:
    result = load_test.run_load_test(
        FLAGS.url, model_name=FLAGS.model_name,
        num_requests=FLAGS.num_requests, concurrency=FLAGS.concurrency,
        batch_size=FLAGS.batch_size, k=FLAGS.k, user_ids=users,
        time_limit_s=FLAGS.time_limit, timeout_s=FLAGS.timeout)
  except ValueError as e:
    raise common.UsageError(str(e)) from e
  print(result.to_markdown())
  print(result.summary(), flush=True)
  if FLAGS.output:
    for path in load_test.write_result(result, FLAGS.output):
      print("wrote %s" % path)
  return 1 if result.errors else 0


if __name__ == "__main__":
  common.run(main)
