r"""Times data preparation at scale: synthetic generation and the splits.

  /usr/bin/time -v python -m trainers.bench_data --users=200000 \
      --items=50000 --per_user=25

  /usr/bin/time -v python -m trainers.bench_data --csv=/tmp/big.csv

Prints the wall and CPU seconds of each stage (generate or load, split).
Run under `/usr/bin/time -v` for the peak memory (maximum resident set).
A benchmark, not a test.
"""

import time

from trainers import console

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402

from tfrs_negsamp.data import csv_loader  # noqa: E402
from tfrs_negsamp.data import splits  # noqa: E402
from tfrs_negsamp.data import synthetic  # noqa: E402

flags.DEFINE_integer("users", 200000, "Synthetic users.")
flags.DEFINE_integer("items", 50000, "Synthetic items.")
flags.DEFINE_float("per_user", 25.0, "Synthetic mean interactions per user.")
flags.DEFINE_string("csv", None, "Load this CSV (csv_loader) instead.")
flags.DEFINE_enum("split", "leave_last_out", list(splits.SPLIT_METHODS),
                  "Split method.")
FLAGS = flags.FLAGS


class _Stage:

  def __init__(self, name):
    self.name = name

  def __enter__(self):
    self.wall, self.cpu = time.perf_counter(), time.process_time()
    return self

  def __exit__(self, *exc):
    print("%-10s %.2f s wall, %.2f s CPU" % (
        self.name, time.perf_counter() - self.wall,
        time.process_time() - self.cpu), flush=True)


def main(argv):
  del argv
  with _Stage("total"):
    if FLAGS.csv:
      with _Stage("load csv"):
        interactions, catalog = csv_loader.load_csv(FLAGS.csv)
    else:
      with _Stage("generate"):
        interactions, catalog = synthetic.make_synthetic(
            FLAGS.users, FLAGS.items, FLAGS.per_user)
    with _Stage("split"):
      kwargs = {"num_validation": 1} if FLAGS.split == "leave_last_out" else {}
      dataset = splits.split(interactions, catalog, FLAGS.split, **kwargs)
  print("rows %d: train %d, validation %d, test %d; users %d, items %d" % (
      interactions.num_rows, dataset.train.num_rows,
      dataset.validation.num_rows, dataset.test.num_rows,
      interactions.users.size,
      catalog.num_items))


if __name__ == "__main__":
  common.run(main)
