r"""Tunes every sampler on the validation split, then reports it on test.

  python -m trainers.tune --dataset=movielens \
      --data_path=../shared/data/movielens-100k --trials=20 --epochs=4 \
      --output_dir=runs/tune_ml100k

  python -m trainers.tune --samplers=in_batch_logq,xir --trials=10 ...

Per sampler: an Optuna TPE study (fixed `--tune_seed`) over the shared
settings (temperature, learning rate, history masking) and the sampler's own
options (the search ranges declared with them, in the sampler's module),
each trial trained with the shared flags and scored on the
validation split (each user's second-to-last interaction, `--objective`).
The best setting is re-trained with `--final_seeds` seeds and evaluated on
test, next to the popularity and EASE^R baselines (and, with `--floor`, the
plain-TFRS floor, the reference of the step ratios).

Writes OUTPUT_DIR/trials.csv and trials.md (every trial), best.json (read
back by `trainers.benchmark --best_settings=OUTPUT_DIR/best.json`),
results.csv and results.md (test mean ± std per sampler) and the plots.
Re-running the command resumes: finished trials (OUTPUT_DIR/optuna.db) and
finished final runs (OUTPUT_DIR/runs) are skipped.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from trainers import common  # noqa: E402

common.define_flags()
flags.DEFINE_list("samplers", [],
                  "Samplers to tune (default: every registered sampler).")
flags.DEFINE_integer("trials", 20, "Trials per sampler (the budget).")
flags.DEFINE_string("objective", "recall@50",
                    "Validation metric maximised (a metrics.json key).")
flags.DEFINE_integer("final_seeds", 3,
                     "Seeds of the test runs of the best settings.")
flags.DEFINE_integer("tune_seed", 0, "Seed of the TPE sampler.")
flags.DEFINE_list("baselines", ["popularity_baseline", "ease_baseline"],
                  "Model-free rows of the results table.")
flags.DEFINE_boolean("floor", False,
                     "Also train the plain-TFRS floor (tfrs.tasks.Retrieval,"
                     " id towers, the shared setting) with the final seeds "
                     "and report every step time as a ratio to it.")
flags.DEFINE_list("data", [],
                  "Transfer study (defaults chosen on several data sets, "
                  "SAMPLERS.md section 13): name:dataset:path[:user_fraction]"
                  " items, e.g. ml100k:movielens:DIR,ml1m:csv:FILE:0.3. Each "
                  "trial trains on every set; per study the setting with "
                  "the largest minimum over the sets of validation metric / "
                  "the study's best on that set is chosen (transfer.md).")
flags.DEFINE_list("towers", [],
                  "With --data: one study per query tower for each sampler "
                  "(labels sampler@tower), to choose the trainer's tower, "
                  "learning rate and temperature.")
flags.DEFINE_enum("search", "all", ["all", "shared", "own"],
                  "With --data: search the shared settings and the sampler's"
                  " own options (all), only the shared ones, or only the "
                  "sampler's own options.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  # Imported after flag parsing so that the CPU split comes first.
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import tuning  # pylint: disable=g-import-not-at-top
  if not FLAGS.output_dir:
    raise common.UsageError("--output_dir is required")
  if FLAGS.trials < 1 or FLAGS.final_seeds < 1:
    raise common.UsageError("--trials and --final_seeds must be >= 1")
  base = common.config_from_flags(export_dir=None, backup_dir=None,
                                  verbose=0, output_dir=None)
  names = FLAGS.samplers or samplers.available_samplers()
  unknown = [s for s in names if s not in samplers.available_samplers()]
  bad_baselines = [b for b in FLAGS.baselines
                   if b not in configuration.BASELINES]
  if unknown or bad_baselines:
    raise common.UsageError(
        "unknown samplers %s; valid: %s; baselines: %s" % (
            ", ".join(unknown + bad_baselines),
            ", ".join(samplers.available_samplers()),
            ", ".join(configuration.BASELINES)))
  strategies.make_strategy(base.strategy, base.cpu_replicas)
  if FLAGS.data:
    return _transfer(base, names)
  if FLAGS.towers or FLAGS.search != "all":
    raise common.UsageError("--towers and --search apply to the transfer "
                            "study: give --data too")
  try:
    tuning.tune(base, names, FLAGS.trials, FLAGS.output_dir,
                final_seeds=FLAGS.final_seeds, objective=FLAGS.objective,
                seed=FLAGS.tune_seed, baselines=FLAGS.baselines,
                floor=FLAGS.floor)
  except ValueError as e:
    raise common.UsageError(str(e)) from e
  for name in ("results.md",):
    with open(os.path.join(FLAGS.output_dir, name)) as f:
      print(f.read())


def _transfer(base, names):
  """`--data`: the transfer study (`trainers.pipeline.transfer`)."""
  from trainers.pipeline import transfer  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.models import query_towers  # pylint: disable=g-import-not-at-top
  for flag in ("dataset", "data_path", "eval_split", "final_seeds",
               "baselines", "floor"):
    if FLAGS[flag].present:
      raise common.UsageError(
          "--%s does not apply to the transfer study (--data sets the data "
          "and evaluates on each validation split; the chosen defaults are "
          "measured on test with trainers.benchmark)" % flag)
  bad = [t for t in FLAGS.towers if t not in query_towers.QUERY_TOWERS]
  if bad:
    raise common.UsageError("--towers: unknown %s; valid: %s" % (
        ", ".join(bad), ", ".join(query_towers.QUERY_TOWERS)))
  try:
    specs = transfer.parse_data_specs(FLAGS.data)
  except ValueError as e:
    raise common.UsageError(str(e)) from e
  labels = ["%s@%s" % (n, t) for n in names for t in FLAGS.towers] or names
  try:
    transfer.transfer(base, specs, labels, FLAGS.trials, FLAGS.output_dir,
                      objective=FLAGS.objective, seed=FLAGS.tune_seed,
                      shared_only=FLAGS.search == "shared",
                      own_only=FLAGS.search == "own")
  except ValueError as e:
    raise common.UsageError(str(e)) from e
  with open(os.path.join(FLAGS.output_dir, "transfer.md")) as f:
    print(f.read())


if __name__ == "__main__":
  common.run(main)
