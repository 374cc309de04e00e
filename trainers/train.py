r"""Trains a two-tower retriever with a negative sampler, evaluates, exports.

  python -m trainers.train --dataset=movielens \
      --data_path=../shared/data/movielens-100k --sampler=in_batch_logq \
      --output_dir=/tmp/run --export_dir=/tmp/run/export

Writes OUTPUT_DIR/metrics.json (full-corpus metrics, cohorts, balance,
timings, flags). `--sampler=popularity_baseline` ranks by training
popularity in the same format, `--sampler=ease_baseline` by EASE^R (lambda
`--ease_lambda`, or chosen on the validation split when 0).
`--sampler=plain_tfrs` trains the floor of the benchmarks instead: the TFRS
tutorial two-tower (`tfrs.tasks.Retrieval`, id embeddings) with the same
data, batch, optimizer, temperature and strategy (no export).
`--eval_split=validation` evaluates each user's held-out second-to-last
interaction (`--num_validation`) instead of the last. `--strategy=mirrored
--cpu_replicas=N` splits the CPU into N logical devices so MirroredStrategy
runs as on N GPUs. `--backup_dir` makes a killed or interrupted (Ctrl-C) run
resume where it stopped (model, optimizer and sampler state).
`--tensorboard_dir` writes TensorBoard logs (loss, step time and validation
metrics per epoch). `--strategy=multi_worker` trains with
MultiWorkerMirroredStrategy over the cluster in `TF_CONFIG` (one process per
worker; `python -m trainers.launch_local --workers=N -- FLAGS` starts them on
this machine); only the chief writes metrics.json and the export.
`--strategy=parameter_server` trains asynchronously with
ParameterServerStrategy, the id tables sharded over the parameter servers
(`--ps_shards`); every task of the cluster in `TF_CONFIG` runs this program
(`launch_local --workers=N --ps=M` starts them here).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from trainers import console  # noqa: E402

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
common.define_flags()


def main(argv):
  if len(argv) > 1:
    raise common.UsageError("unexpected argument(s) %s: flags take the "
                            "form --name=value" % " ".join(argv[1:]))
  # Every flag is checked here, before TensorFlow does any work; the data
  # is checked after loading, before the model is built (`experiment.run`).
  # Errors (flags, data, cluster) are one line, exit status 2 (common.run).
  config = common.training_config()
  if config.strategy == "parameter_server":
    # Every task of the cluster runs this: the chief trains, workers and
    # parameter servers serve (trainers/pipeline/parameter_server.py).
    from trainers.pipeline import experiment  # pylint: disable=g-import-not-at-top
    experiment.run(config)
    return
  # Imported here so that the CPU split of `make_strategy` comes first.
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  strategy = strategies.make_strategy(config.strategy, config.cpu_replicas)
  if config.sampler == common.FLOOR:
    # The TFRS tutorial two-tower with the same settings.
    from trainers.pipeline import benchmarking  # pylint: disable=g-import-not-at-top
    benchmarking.run_floor(config, strategy=strategy)
    return
  from trainers.pipeline import experiment  # pylint: disable=g-import-not-at-top
  experiment.run(config, strategy=strategy)


if __name__ == "__main__":
  common.run(main)
