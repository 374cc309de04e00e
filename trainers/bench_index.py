r"""Benchmarks the retrieval index: ScaNN vs exact brute force.

  python -m trainers.bench_index --output_dir=runs/bench_index

In one run, on synthetic clustered tables of 100K and 1M unit vectors (d=64)
and on a two-tower model trained here for 2 epochs on MovieLens 100K
(`--ml100k_path`, empty to skip), measures recall@10 of ScaNN against exact
search, queries per second of the TFRS BruteForce and ScaNN layers at batch 1
and 256, and index build time, for the serving ScaNN setting
(`export.scann_parameters`, or `--scann_*` overrides) and a few numbers of
leaves searched (`--search_multipliers`). Writes results.md, results.csv and
recall_vs_qps.png to --output_dir. Each measurement is bounded by a query
count and `--max_seconds`; the default run takes a few minutes on 2 cores.
See `trainers/serving/index_benchmark.py` for what is timed.
"""

import math
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from trainers import console  # noqa: E402

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402

_DEFAULT_ML100K = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
    "shared", "data", "movielens-100k")

flags.DEFINE_string("output_dir", None,
                    "Where results.md, results.csv and the plot go.")
flags.DEFINE_list("sizes", ["100000", "1000000"],
                  "Synthetic item-table sizes.")
flags.DEFINE_integer("dim", 64, "Synthetic embedding dimension.")
flags.DEFINE_integer("num_queries", 1000,
                     "Synthetic queries (recall is averaged over them).")
flags.DEFINE_integer("k", 10, "k of recall@k and of every search.")
flags.DEFINE_string("ml100k_path", _DEFAULT_ML100K,
                    "MovieLens 100K folder for the trained-model table "
                    "(empty: skip it).")
flags.DEFINE_integer("ml100k_epochs", 2, "Epochs of the trained model.")
flags.DEFINE_list("search_multipliers", ["0.25", "0.5", "1.5", "2"],
                  "ScaNN variants search this many times the serving "
                  "setting's leaves.")
flags.DEFINE_integer("scann_leaves", 0, "ScaNN leaves (0: derived).")
flags.DEFINE_integer("scann_leaves_to_search", 0,
                     "ScaNN leaves searched (0: derived).")
flags.DEFINE_integer("scann_reorder", 0,
                     "ScaNN re-scored candidates (0: derived).")
flags.DEFINE_integer("batch1_queries", 500,
                     "Most queries timed at batch 1 per measurement.")
flags.DEFINE_integer("batch256_queries", 1024,
                     "Most queries timed at batch 256 per measurement.")
flags.DEFINE_float("max_seconds", 8.0, "Time budget of one QPS measurement.")
flags.DEFINE_integer("seed", 0, "Seed of the synthetic tables and training.")
flags.mark_flag_as_required("output_dir")
FLAGS = flags.FLAGS


def _header(tables, load_note):
  import platform  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  versions = ", ".join("%s %s" % (p, metadata.version(p)) for p in (
      "tensorflow", "tensorflow-recommenders", "scann"))
  lines = [
      "# Retrieval index benchmark: ScaNN vs exact brute force", "",
      "Run %s on %s (%d cores, 1-minute load average %s), %s."
      % (time.strftime("%Y-%m-%d %H:%M"), platform.machine(),
         os.cpu_count(), load_note, versions), "",
      "Command: `python -m trainers.bench_index %s`"
      % " ".join(_command_flags()), "",
      "Tables:", ""]
  lines += ["- **%s**: %s" % (t.name, t.description) for t in tables]
  lines += [
      "", "Recall@%d is against the exact top-%d (NumPy, chunked matmul). "
      "QPS: queries per second through a `tf.function` (as in the "
      "SavedModel), after one warm-up call, the median of 3 timed rounds; "
      "\"tfrs ... layer\" rows time the "
      "TFRS layers that `--index` exports; \"scann op, same index\" rows "
      "call the ScaNN layer's own searcher with another number of leaves "
      "searched (L), so they share its build. Speed-ups are against the "
      "brute-force row of the same table." % (FLAGS.k, FLAGS.k), ""]
  return "\n".join(lines) + "\n"


def _command_flags():
  defaults = {"output_dir"}
  out = ["--output_dir=%s" % FLAGS.output_dir]
  for name in ("sizes", "num_queries", "ml100k_epochs", "search_multipliers",
               "scann_leaves", "scann_leaves_to_search", "scann_reorder",
               "batch1_queries", "batch256_queries", "max_seconds"):
    if name not in defaults and FLAGS[name].present:
      value = FLAGS[name].value
      out.append("--%s=%s" % (name, ",".join(value)
                              if isinstance(value, list) else value))
  return out


def main(argv):
  del argv
  import time  # pylint: disable=g-import-not-at-top
  try:
    sizes = [int(s) for s in FLAGS.sizes]
    multipliers = [float(m) for m in FLAGS.search_multipliers]
  except ValueError as e:
    raise common.UsageError("--sizes and --search_multipliers take numbers: "
                            "%s" % e) from e
  if any(size < 1 for size in sizes):
    raise common.UsageError("--sizes must be >= 1 each, got %s"
                            % ",".join(FLAGS.sizes))
  if any(not math.isfinite(m) or m <= 0 for m in multipliers):
    raise common.UsageError("--search_multipliers must be finite numbers > "
                            "0, got %s" % ",".join(FLAGS.search_multipliers))
  common.check_finite("max_seconds", FLAGS.max_seconds, positive=True)
  for name in ("dim", "num_queries", "k", "ml100k_epochs", "batch1_queries",
               "batch256_queries"):
    if FLAGS[name].value < 1:
      raise common.UsageError("--%s must be >= 1, got %d"
                              % (name, FLAGS[name].value))
  for name in ("scann_leaves", "scann_leaves_to_search", "scann_reorder"):
    if FLAGS[name].value < 0:
      raise common.UsageError("--%s must be >= 0 (0: derived), got %d"
                              % (name, FLAGS[name].value))
  if os.path.exists(FLAGS.output_dir) and not os.path.isdir(
      FLAGS.output_dir):
    raise common.UsageError("--output_dir=%s is an existing file, not a "
                            "folder" % FLAGS.output_dir)
  if FLAGS.ml100k_path and not os.path.exists(
      os.path.join(FLAGS.ml100k_path, "u.data")):
    raise common.UsageError("no MovieLens 100K (u.data) at --ml100k_path=%s; "
                         "pass --ml100k_path= to skip that table"
                         % FLAGS.ml100k_path)
  # pylint: disable-next=g-import-not-at-top
  from trainers.serving import index_benchmark as bench
  overrides = {"num_leaves": FLAGS.scann_leaves,
               "num_leaves_to_search": FLAGS.scann_leaves_to_search,
               "num_reordering_candidates": FLAGS.scann_reorder}
  load = "%.2f" % os.getloadavg()[0]  # other work on a shared machine
  begin = time.perf_counter()
  rows, tables = [], []

  def run(table):
    tables.append(table)
    rows.extend(bench.benchmark_table(
        table, k=FLAGS.k, scann_overrides=overrides,
        search_multipliers=multipliers,
        batch1_queries=FLAGS.batch1_queries,
        batch256_queries=FLAGS.batch256_queries,
        max_seconds=FLAGS.max_seconds, log=_log))
    table.items = table.queries = None  # frees the large tables early

  for size in sizes:
    run(bench.clustered_table(size, FLAGS.dim, FLAGS.num_queries,
                              seed=FLAGS.seed))
  if FLAGS.ml100k_path:
    run(bench.trained_table(FLAGS.ml100k_path, epochs=FLAGS.ml100k_epochs,
                            seed=FLAGS.seed, log=_log))
  load += " before the run, %.2f after" % os.getloadavg()[0]
  paths = bench.write_results(rows, FLAGS.output_dir,
                              header=_header(tables, load), k=FLAGS.k)
  print(bench.markdown_table(rows, FLAGS.k))
  _log("done in %.0f s; wrote %s" % (time.perf_counter() - begin,
                                     ", ".join(paths)))


def _log(line):
  print(line, flush=True)


if __name__ == "__main__":
  common.run(main)
