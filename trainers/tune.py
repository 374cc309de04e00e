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

import logging
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from trainers import console  # noqa: E402

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402

common.define_flags()
flags.DEFINE_list("samplers", [],
                  "Samplers to tune (default: every registered sampler).")
flags.DEFINE_integer("trials", 20, "Trials per sampler (the budget).")
flags.DEFINE_string("objective", "recall@50",
                    "Validation metric maximised: recall@K, hr@K, ndcg@K "
                    "(K = 10, 50, 100), balance, balance_ndcg or "
                    "coverage@10.")
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
common.refuse_flags(
    ("export_dir", "backup_dir", "backup_freq", "tensorboard_dir", "index",
     "top_k", "scann_leaves", "scann_leaves_to_search", "scann_reorder"),
    "its trials and final runs write metrics only (train the chosen "
    "setting with trainers.train for an export)")
common.refuse_flags(("sampler",), "it tunes the samplers of --samplers")
common.refuse_flags(("eval_split",), "trials are scored on the validation "
                    "split and the best settings on test")
common.refuse_flags(("verbose",), "its runs print no progress; it prints "
                    "one line per trial")


def main(argv):
  del argv
  # Imported after flag parsing so that the CPU split comes first.
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import tuning  # pylint: disable=g-import-not-at-top
  if not FLAGS.output_dir:
    raise common.UsageError("--output_dir is required")
  if FLAGS.trials < 1 or FLAGS.final_seeds < 1:
    raise common.UsageError("--trials and --final_seeds must be >= 1")
  try:
    tuning.check_objective(FLAGS.objective)
  except ValueError as e:
    raise common.UsageError(str(e)) from e
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
  if FLAGS.towers and FLAGS["query_tower"].present:
    raise common.UsageError("--query_tower does not apply with --towers "
                            "(each study has its tower)")
  specs = _transfer_specs() if FLAGS.data else None
  if not FLAGS.data and (FLAGS.towers or FLAGS.search != "all"):
    raise common.UsageError("--towers and --search apply to the transfer "
                            "study: give --data too")
  base = common.shared_config_from_flags(
      names + ([] if FLAGS.data else list(FLAGS.baselines)),
      export_dir=None, backup_dir=None, verbose=0, output_dir=None)
  common.check_applies(_runs(base, names), "tuned runs")
  strategies.make_strategy(base.strategy, base.cpu_replicas)
  _quiet_optuna()
  try:
    if FLAGS.data:
      return _transfer(base, names, specs)
    try:
      tuning.tune(base, names, FLAGS.trials, FLAGS.output_dir,
                  final_seeds=FLAGS.final_seeds, objective=FLAGS.objective,
                  seed=FLAGS.tune_seed, baselines=FLAGS.baselines,
                  floor=FLAGS.floor)
    except ValueError as e:
      raise common.UsageError(str(e)) from e
  except KeyboardInterrupt:
    raise KeyboardInterrupt(
        "interrupted; run the same command to resume from %s (finished "
        "trials and runs are kept)" % FLAGS.output_dir) from None
  for name in ("results.md",):
    with open(os.path.join(FLAGS.output_dir, name)) as f:
      print(f.read())


def _runs(base, names):
  """The configurations the tuner runs (for `common.check_applies`)."""
  from trainers.pipeline import benchmarking  # pylint: disable=g-import-not-at-top
  towers = FLAGS.towers or [None]
  variants = [benchmarking.Variant(n, n, {"query_tower": t} if t else {})
              for n in names for t in towers]
  if not FLAGS.data:
    variants += [benchmarking.Variant(b, b, {}) for b in FLAGS.baselines]
    if FLAGS.floor:
      variants.append(benchmarking.Variant(benchmarking.FLOOR,
                                           benchmarking.FLOOR, {}))
  try:
    return [benchmarking.apply_variant(base, v, 0) for v in variants]
  except ValueError as e:
    raise common.UsageError(str(e)) from e


class _OptunaNotes(logging.Filter):
  """Optuna's notes on failed trials as one line each, none for Ctrl-C.

  Optuna logs a failed trial (a setting the sampler rejects, which the
  tuner counts and goes on) with its stack trace, and a Ctrl-C during a
  trial as two warnings: the program's own line says it all.
  """

  def __init__(self):
    super().__init__()
    self._interrupted = False

  def filter(self, record):
    info = record.exc_info
    if info and info[0] is not None and issubclass(info[0],
                                                    KeyboardInterrupt):
      self._interrupted = True
      return False
    if self._interrupted and "failed with value" in record.getMessage():
      return False
    record.exc_info = None
    record.exc_text = None
    return True


def _quiet_optuna() -> None:
  """`_OptunaNotes` on the logger that reports trials (quiet runs only)."""
  if console.is_quiet():
    logging.getLogger("optuna.study._optimize").addFilter(_OptunaNotes())


def _transfer_specs():
  """`--data`: the flags of the transfer study checked, its data parsed."""
  from trainers.pipeline import transfer  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.models import query_towers  # pylint: disable=g-import-not-at-top
  for flag in ("dataset", "data_path", "final_seeds", "baselines", "floor"):
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
    return transfer.parse_data_specs(FLAGS.data)
  except ValueError as e:
    raise common.UsageError(str(e)) from e


def _transfer(base, names, specs):
  """`--data`: the transfer study (`trainers.pipeline.transfer`)."""
  from trainers.pipeline import transfer  # pylint: disable=g-import-not-at-top
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
