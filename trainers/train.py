r"""Trains a two-tower retriever with a negative sampler, evaluates, exports.

  python -m trainers.train --dataset=movielens \
      --data_path=../shared/data/movielens-100k --sampler=in_batch_logq \
      --output_dir=/tmp/run --export_dir=/tmp/run/export

Writes OUTPUT_DIR/metrics.json (full-corpus metrics, cohorts, balance,
timings, flags). `--sampler=popularity_baseline` ranks by training
popularity in the same format, `--sampler=ease_baseline` by EASE^R (lambda
`--ease_lambda`, or chosen on the validation split when 0).
`--eval_split=validation` evaluates each user's held-out second-to-last
interaction (`--num_validation`) instead of the last. `--strategy=mirrored --cpu_replicas=N` splits
the CPU into N logical devices so MirroredStrategy runs as on N GPUs.
`--backup_dir` makes a killed run resume where it stopped (model, optimizer
and sampler state). `--strategy=multi_worker` trains with
MultiWorkerMirroredStrategy over the cluster in `TF_CONFIG` (one process per
worker; `python -m trainers.launch_local --workers=N -- FLAGS` starts them on
this machine); only the chief writes metrics.json and the export.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
common.define_flags()


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = common.config_from_flags()
  # Imported here so that the CPU split of `make_strategy` comes first.
  from tfrs_negsamp import experiment  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.data import DataError  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.cluster import ClusterError  # pylint: disable=g-import-not-at-top
  try:
    strategy = experiment.make_strategy(config.strategy, config.cpu_replicas)
  except ClusterError as e:
    raise app.UsageError(str(e)) from e
  try:
    experiment.run(config, strategy=strategy)
  except DataError as e:
    raise app.UsageError("data error: %s" % e) from e
  except MemoryError as e:  # ease_baseline's refusal (models/ease.py)
    raise app.UsageError(str(e)) from e


if __name__ == "__main__":
  app.run(main)
