r"""Times full-corpus evaluation (`evaluate_full_corpus`) on random embeddings.

  nice -n 5 python -m trainers.bench_eval --sizes=50000x50000,6040x3706

For each `USERSxITEMS` size: random float32 embeddings (d = --dim), one test
target per user and --seen training items per user (excluded), the
`DotProductScores` callback; prints the best of --repeats wall times of
`evaluate_full_corpus`, and the matmul alone (the floor: 2 U N d FLOP) for
scale, as wall and process CPU seconds (CPU time is the steadier number on a
shared machine; on an idle one wall ~ CPU / cores). A benchmark, not a
test: nothing is asserted.
"""

import os
import time

from trainers import console

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402
import numpy as np  # noqa: E402

from tfrs_negsamp.evaluation import full_corpus  # noqa: E402
from tfrs_negsamp.evaluation.sparse_sets import SparseSets  # noqa: E402

flags.DEFINE_list("sizes", ["50000x50000", "6040x3706"],
                  "USERSxITEMS problem sizes.")
flags.DEFINE_integer("dim", 64, "Embedding dimension d.")
flags.DEFINE_integer("seen", 25, "Excluded (seen) items per user.")
flags.DEFINE_integer("repeats", 2, "Timed repetitions (best kept).")
flags.DEFINE_integer("chunk_size", 1024, "evaluate_full_corpus chunk_size.")
flags.DEFINE_integer("seed", 0, "Seed of the random problem.")
FLAGS = flags.FLAGS


def problem(num_users, num_items, dim, seen, seed=0):
  """Random embeddings, 1 target and `seen` excluded items per user."""
  rng = np.random.default_rng(seed)
  users = rng.standard_normal((num_users, dim), np.float32)
  items = rng.standard_normal((num_items, dim), np.float32)
  targets = SparseSets(np.arange(num_users + 1),
                       rng.integers(0, num_items, num_users))
  seen = min(seen, num_items)
  seen_sets = SparseSets.from_pairs(
      np.repeat(np.arange(num_users), seen),
      rng.integers(0, num_items, num_users * seen), num_users)
  counts = rng.zipf(1.5, num_items).astype(np.float64)
  return users, items, targets, seen_sets, counts


def best_time(fn, repeats):
  """Best wall and best process CPU seconds of `repeats` calls; result."""
  wall, cpu = [], []
  for _ in range(repeats):
    start, start_cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
  return min(wall), min(cpu), result


def main(argv):
  del argv
  print("threads: %d (EVAL_THREADS=%s), cpus: %d" % (
      full_corpus.num_threads(), os.environ.get("EVAL_THREADS", "-"),
      os.cpu_count()))
  for size in FLAGS.sizes:
    num_users, num_items = (int(x) for x in size.lower().split("x"))
    users, items, targets, seen, counts = problem(
        num_users, num_items, FLAGS.dim, FLAGS.seen, FLAGS.seed)
    score_fn = full_corpus.DotProductScores(users, items)
    step = FLAGS.chunk_size

    def matmul_only():
      for start in range(0, num_users, step):
        score_fn(np.arange(start, min(start + step, num_users)))

    def evaluate():
      return full_corpus.evaluate_full_corpus(
          score_fn, np.arange(num_users), targets, seen, counts,
          chunk_size=step, progress=False)

    t_mm, cpu_mm, _ = best_time(matmul_only, FLAGS.repeats)
    t_eval, cpu_eval, metrics = best_time(evaluate, FLAGS.repeats)
    flop = 2.0 * num_users * num_items * FLAGS.dim
    print("%6d users x %6d items, d=%d: evaluate %.3f s wall, %.3f s CPU; "
          "matmul alone %.3f s wall, %.3f s CPU (%.1f GFLOP/s wall); "
          "evaluate / matmul: %.2f wall, %.2f CPU  recall@10=%.5f" % (
              num_users, num_items, FLAGS.dim, t_eval, cpu_eval, t_mm,
              cpu_mm, flop / t_mm / 1e9, t_eval / t_mm, cpu_eval / cpu_mm,
              metrics["recall@10"]), flush=True)


if __name__ == "__main__":
  common.run(main)
