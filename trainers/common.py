"""Flags shared by the trainers, their conversion to `ExperimentConfig`,
and the programs' error handling (`run`).

Every program starts with `common.run(main)` instead of `app.run(main)`:
a bad flag, bad data or a missing dependency ends the program with ONE line
on stderr (`error: ...` naming the flag, or the file, line and problem) and
exit status 2 (usage and data errors) or 1 (anything else), without the
module docstring that absl prints on a usage error and without a stack
trace. `--verbose_errors` or the environment variable
`TFRS_NEGSAMP_TRACEBACK=1` prints the stack trace before that line.

This module imports only absl (the serving programs use it without TFRS).
"""

import math
import os
import sys
import traceback
from typing import Callable, Optional, Sequence, Tuple

from absl import app
from absl import flags

FLAGS = flags.FLAGS
TRACEBACK_ENV = "TFRS_NEGSAMP_TRACEBACK"
USAGE_EXIT_CODE = 2

flags.DEFINE_boolean("verbose_errors", False,
                     "On an error, show the Python stack trace (also: "
                     "environment variable %s=1)." % TRACEBACK_ENV)


class UsageError(app.UsageError):
  """A bad flag or input: one line, exit status 2."""

  def __init__(self, message: str, exitcode: int = USAGE_EXIT_CODE):
    super().__init__(message, exitcode)


class FatalError(Exception):
  """An environment problem (e.g. a missing package): one line, status 1."""

  def __init__(self, message: str, exitcode: int = 1):
    super().__init__(message)
    self.exitcode = exitcode


def _error_class(module: str, name: str):
  """A class of an already imported module (None if not imported)."""
  return getattr(sys.modules.get(module), name, None)


def error_line(error: BaseException) -> Tuple[str, int]:
  """The line printed for an uncaught error, and the exit status."""
  message, code = classify(error)
  if not message.startswith("data error: "):
    message = "error: " + message
  return message, code


def classify(error: BaseException) -> Tuple[str, int]:
  """The one-line message and the exit status of an uncaught error."""
  data_error = _error_class("tfrs_negsamp.data.errors", "DataError")
  config_error = _error_class("trainers.pipeline.experiment", "ConfigError")
  cluster_error = _error_class("trainers.pipeline.cluster", "ClusterError")
  if isinstance(error, (app.UsageError, flags.Error)):
    message, code = str(error), USAGE_EXIT_CODE
  elif data_error is not None and isinstance(error, data_error):
    message, code = "data error: %s" % error, USAGE_EXIT_CODE
  elif any(c is not None and isinstance(error, c)
           for c in (config_error, cluster_error)):
    message, code = str(error), USAGE_EXIT_CODE
  elif isinstance(error, FatalError):
    message, code = str(error), error.exitcode
  elif isinstance(error, MemoryError) and str(error):
    # ease_baseline's refusal (models/ease.py) says which flag to change.
    message, code = str(error), USAGE_EXIT_CODE
  else:
    message = "internal error: %s: %s (rerun with --verbose_errors or %s=1 " \
              "for the stack trace)" % (type(error).__name__, error,
                                        TRACEBACK_ENV)
    code = 1
  return " ".join(message.split()) or type(error).__name__, code


def show_traceback(argv: Optional[Sequence[str]] = None) -> bool:
  """Whether errors show their stack (the flag, or the environment)."""
  if os.environ.get(TRACEBACK_ENV, "").strip().lower() in (
      "1", "true", "yes", "on"):
    return True
  if FLAGS.is_parsed():
    return bool(FLAGS.verbose_errors)
  value = flag_value(list(argv or sys.argv), "verbose_errors")
  return value is not None and value.lower() in ("1", "true") or (
      "--verbose_errors" in (argv or sys.argv))


def fail(error: BaseException, argv: Optional[Sequence[str]] = None) -> None:
  """Prints `error` as one line (after its stack if asked) and exits."""
  if show_traceback(argv):
    traceback.print_exception(type(error), error, error.__traceback__)
  message, code = error_line(error)
  sys.stderr.write(message + "\n")
  sys.stderr.flush()
  sys.exit(code)


def parse_flags(argv: Sequence[str]):
  """`FLAGS(argv)`; a bad flag is one line and exit status 2."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(e, argv)


def guard(main: Callable[[Sequence[str]], Optional[int]]
          ) -> Callable[[Sequence[str]], Optional[int]]:
  """`main` with every uncaught error turned into one line (see `fail`)."""

  def guarded(argv):
    try:
      return main(argv)
    except (SystemExit, KeyboardInterrupt, GeneratorExit):
      raise
    except BaseException as e:  # pylint: disable=broad-except
      fail(e, argv)

  return guarded


def run(main: Callable[[Sequence[str]], Optional[int]]) -> None:
  """`app.run(main)` with the one-line errors of this module."""
  app.run(guard(main), flags_parser=parse_flags)


def flag_value(argv: Sequence[str], name: str) -> Optional[str]:
  """The value of `--name=value` / `--name value` in `argv` (last wins)."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith("--%s=" % name):
      value = arg.split("=", 1)[1]
    elif arg == "--%s" % name and i + 1 < len(argv):
      value = argv[i + 1]
  return value


def parse_widths(name: str, value: str) -> Tuple[int, ...]:
  """Comma-separated positive integers ("" -> ()); UsageError naming --name."""
  widths = []
  for part in (value or "").split(","):
    if not part.strip() and len((value or "").split(",")) == 1:
      continue
    try:
      width = int(part)
    except ValueError:
      width = 0
    if width < 1:
      raise UsageError("--%s=%s: expected comma-separated positive integers "
                       "such as 128,64, and %r is not one"
                       % (name, value, part.strip()))
    widths.append(width)
  return tuple(widths)


def check_finite(name: str, value: float, positive: bool = False) -> None:
  """UsageError naming --name unless `value` is finite (and > 0)."""
  if not math.isfinite(value) or (positive and value <= 0):
    raise UsageError("--%s must be a finite number%s, got %r"
                     % (name, " > 0" if positive else "", value))


def define_flags() -> None:
  """Defines the training flags (once per process)."""
  flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "movielens", "csv"],
                    "Data set: the embedded synthetic generator, MovieLens "
                    "(TFDS, or a local folder with --data_path) or a CSV "
                    "file with user_id,item_id,timestamp columns.")
  flags.DEFINE_string("data_path", None, "Folder (movielens) or file (csv).")
  flags.DEFINE_enum("split", "leave_last_out", ["leave_last_out", "temporal"],
                    "Train/test split.")
  flags.DEFINE_enum("duplicates", "keep_first",
                    ["keep_first", "keep_all", "error"],
                    "Repeated (user, item) rows, handled after loading and "
                    "before the split: keep_first keeps each pair's "
                    "earliest row (so a held-out item is never also a "
                    "training row of its user), keep_all keeps every row "
                    "(repeat consumption), error stops at the first "
                    "repeat. The data summary and metrics.json report the "
                    "rows dropped.")
  flags.DEFINE_integer("validate_every", 0,
                       "Evaluate the validation split every N epochs "
                       "during training (0: never); the test metrics are "
                       "then those of the best validation epoch.")
  flags.DEFINE_integer("patience", 0,
                       "With --validate_every: stop after N evaluations "
                       "without improvement of --monitor (0: never).")
  flags.DEFINE_float("time_budget_minutes", 0.0,
                     "With --validate_every: stop training after this many "
                     "minutes of training (0: no budget).")
  flags.DEFINE_string("monitor", "ndcg@10",
                      "With --validate_every: the validation metric "
                      "monitored (e.g. ndcg@10, recall@10, recall@50).")
  flags.DEFINE_float("user_fraction", 1.0,
                     "Keep this fraction of the users (all their rows; one "
                     "fixed choice per data set), e.g. to search settings "
                     "on part of a large set.")
  flags.DEFINE_integer("num_validation", 1,
                       "Rows per user held out for validation before the "
                       "test row (leave_last_out; 1: the second-to-last). "
                       "temporal: 0 drops the validation slice.")
  flags.DEFINE_enum("eval_split", "test", ["test", "validation"],
                    "Split the metrics are computed on (tuning uses "
                    "validation).")
  flags.DEFINE_string("sampler", "in_batch_logq",
                      "Negative sampler name (see the README), or a "
                      "baseline: popularity_baseline, ease_baseline.")
  flags.DEFINE_float("ease_lambda", 0.0,
                     "ease_baseline: L2 weight lambda (0: chosen on the "
                     "validation split from 10, 50, ..., 2000).")
  flags.DEFINE_integer("batch_size", 256, "Global batch size.")
  flags.DEFINE_integer("epochs", 5, "Training epochs.")
  flags.DEFINE_float("learning_rate", 0.01, "Adam learning rate.")
  flags.DEFINE_enum("optimizer", "adam", ["adam", "lazy_adam"],
                    "adam (Keras; dense updates of embedding tables) or "
                    "lazy_adam (only the rows a batch touches move).")
  flags.DEFINE_integer("embedding_dim", 64, "Embedding dimension.")
  flags.DEFINE_float("temperature", 0.05, "Softmax temperature.")
  flags.DEFINE_boolean("mask_history", True,
                       "Mask each row's user's training items among its "
                       "negatives (false: the unmasked samplers).")
  flags.DEFINE_boolean("normalize", True, "L2-normalise both towers.")
  flags.DEFINE_boolean("item_features", True,
                       "Use item titles/genres in the item tower.")
  flags.DEFINE_string("query_hidden", "", "Query MLP widths, e.g. 128,64.")
  flags.DEFINE_string("item_hidden", "", "Item MLP widths, e.g. 128.")
  flags.DEFINE_enum("query_tower", "id", ["id", "mean", "gru", "sasrec"],
                    "Query tower: user id embedding, or a history encoder "
                    "(YouTubeDNN mean, GRU4Rec, SASRec) over the last "
                    "--max_history training items.")
  flags.DEFINE_integer("max_history", 50, "History towers: history length L.")
  flags.DEFINE_enum("training_rows", "auto", ["auto", "sequence", "window"],
                    "History towers: sequence rows (each user's last L + 1 "
                    "training items, every position a target, one encoder "
                    "pass per user; auto) or one history window per target "
                    "(window).")
  flags.DEFINE_enum("sequence_crop", "last", ["last", "random"],
                    "Sequence rows of users longer than L + 1: their last "
                    "L + 1 items, or a random crop each epoch.")
  flags.DEFINE_enum("loss", "auto", ["auto", "softmax", "gbce"],
                    "The task's loss: the sampler's own (auto), the "
                    "softmax, or gBCE (gSASRec) over the sampler's "
                    "negatives with calibration --gbce_t.")
  flags.DEFINE_float("gbce_t", 0.75, "gBCE calibration t in [0, 1].")
  flags.DEFINE_boolean("share_item_embeddings", True,
                       "History towers read the item tower's id table.")
  flags.DEFINE_boolean("history_user_id", False,
                       "History towers also embed the user id.")
  flags.DEFINE_integer("num_blocks", 2, "sasrec: self-attention blocks.")
  flags.DEFINE_integer("num_heads", 1, "sasrec: attention heads.")
  flags.DEFINE_float("dropout", 0.2, "sasrec: dropout rate.")
  flags.DEFINE_integer("seed", 0, "Seed (data generator, init, shuffling).")
  flags.DEFINE_string("output_dir", None, "Where metrics.json goes.")
  flags.DEFINE_string("export_dir", None,
                      "If set, export a SavedModel with a top-k index.")
  flags.DEFINE_enum("index", "auto", ["auto", "scann", "brute_force"],
                    "Index of the exported SavedModel (auto: exact search up "
                    "to 4096 items, ScaNN above).")
  flags.DEFINE_integer("top_k", 100, "k of the exported index.")
  flags.DEFINE_integer("scann_leaves", 0,
                       "ScaNN partitions (0: ~sqrt of the catalog size).")
  flags.DEFINE_integer("scann_leaves_to_search", 0,
                       "ScaNN partitions searched per query (0: ~10% of "
                       "the leaves, at least 8).")
  flags.DEFINE_integer("scann_reorder", 0,
                       "ScaNN candidates re-scored exactly (0: max(4k, 256)"
                       ", capped by the catalog size).")
  flags.DEFINE_enum("strategy", "default",
                    ["default", "mirrored", "multi_worker",
                     "parameter_server"],
                    "tf.distribute strategy: mirrored over local devices, "
                    "multi_worker (MultiWorkerMirroredStrategy, cluster from "
                    "TF_CONFIG; see trainers/launch_local.py), or "
                    "parameter_server (asynchronous ParameterServerStrategy "
                    "with the id tables sharded over the parameter servers; "
                    "chief, workers and ps from TF_CONFIG, launch_local "
                    "--ps=M).")
  flags.DEFINE_integer("cpu_replicas", 2,
                       "Logical CPU devices for --strategy=mirrored.")
  flags.DEFINE_integer("ps_shards", 0,
                       "parameter_server: shards per id table (0: one per "
                       "parameter server).")
  flags.DEFINE_integer("ps_min_shard_bytes", 256 << 10,
                       "parameter_server: no table shard smaller than this "
                       "(a smaller table gets fewer shards).")
  flags.DEFINE_string("backup_dir", None,
                      "Keras BackupAndRestore folder: a killed run restarted "
                      "with the same flags resumes from it.")
  flags.DEFINE_integer("backup_freq", 50, "Back up every N steps.")
  flags.DEFINE_integer("verbose", 1, "Keras verbosity (0, 1 bar, 2 lines).")
  define_sampler_flags()
  # Synthetic generator.
  flags.DEFINE_integer("synthetic_users", 2000, "Synthetic: users.")
  flags.DEFINE_integer("synthetic_items", 1000, "Synthetic: items.")
  flags.DEFINE_integer("synthetic_interactions", 40,
                       "Synthetic: mean interactions per user.")


# `--sampler=plain_tfrs`: the plain-TFRS floor of the benchmarks (the TFRS
# tutorial two-tower, `tfrs.tasks.Retrieval`; `benchmarking.FLOOR`).
FLOOR = "plain_tfrs"


def sampler_option_flags() -> Tuple[str, ...]:
  """The flags of the samplers' options (one per option name)."""
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  return tuple(sorted(samplers.option_table()))


def define_sampler_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """One flag per option of the registered samplers, derived from them.

  A flag's name is the option's (the sampler's constructor argument), its
  type the option's, its help the option's help line followed by the
  samplers that take it and their defaults. Its default is None: "the
  sampler's own default" (the options dataclass holds it), so that
  `config_from_flags` knows which options were set.
  """
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  for name, info in sorted(samplers.option_table().items()):
    if name in flag_values:
      continue
    takers = ", ".join("%s (%s)" % (s, _default_text(d))
                       for s, d in sorted(info.defaults.items()))
    text = "%s. Samplers (default): %s." % (info.help.rstrip("."), takers)
    if info.kind is bool:
      flags.DEFINE_boolean(name, None, text, flag_values=flag_values)
    elif info.kind is int:
      flags.DEFINE_integer(name, None, text, flag_values=flag_values)
    elif info.kind is float:
      flags.DEFINE_float(name, None, text, flag_values=flag_values)
    elif info.choices:
      flags.DEFINE_enum(name, None, list(info.choices), text,
                        flag_values=flag_values)
    else:
      flags.DEFINE_string(name, None, text, flag_values=flag_values)


def _default_text(value) -> str:
  return str(value).lower() if isinstance(value, bool) else str(value)


def sampler_options_from_flags(flag_values: flags.FlagValues = FLAGS
                               ) -> dict:
  """`{option: value}` of the sampler option flags given on the command
  line (unset flags are None and leave the sampler's default)."""
  return {name: flag_values[name].value for name in sampler_option_flags()
          if name in flag_values and flag_values[name].value is not None}


def config_from_flags(**overrides):
  """An `ExperimentConfig` from the parsed flags."""
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  config = configuration.ExperimentConfig(
      dataset=FLAGS.dataset, data_path=FLAGS.data_path, split=FLAGS.split,
      num_validation=FLAGS.num_validation, eval_split=FLAGS.eval_split,
      ease_lambda=FLAGS.ease_lambda,
      sampler=FLAGS.sampler, batch_size=FLAGS.batch_size,
      epochs=FLAGS.epochs, learning_rate=FLAGS.learning_rate,
      optimizer=FLAGS.optimizer,
      embedding_dim=FLAGS.embedding_dim, temperature=FLAGS.temperature,
      mask_history=FLAGS.mask_history,
      normalize=FLAGS.normalize, item_features=FLAGS.item_features,
      query_hidden=parse_widths("query_hidden", FLAGS.query_hidden),
      item_hidden=parse_widths("item_hidden", FLAGS.item_hidden),
      seed=FLAGS.seed, duplicates=FLAGS.duplicates,
      user_fraction=FLAGS.user_fraction,
      validate_every=FLAGS.validate_every, patience=FLAGS.patience,
      time_budget_minutes=FLAGS.time_budget_minutes, monitor=FLAGS.monitor,
      query_tower=FLAGS.query_tower, max_history=FLAGS.max_history,
      training_rows=FLAGS.training_rows, sequence_crop=FLAGS.sequence_crop,
      loss=FLAGS.loss, gbce_t=FLAGS.gbce_t,
      share_item_embeddings=FLAGS.share_item_embeddings,
      history_user_id=FLAGS.history_user_id, num_blocks=FLAGS.num_blocks,
      num_heads=FLAGS.num_heads, dropout=FLAGS.dropout,
      strategy=FLAGS.strategy, cpu_replicas=FLAGS.cpu_replicas,
      ps_shards=FLAGS.ps_shards, ps_min_shard_bytes=FLAGS.ps_min_shard_bytes,
      output_dir=FLAGS.output_dir, export_dir=FLAGS.export_dir,
      index=FLAGS.index, top_k=FLAGS.top_k, backup_dir=FLAGS.backup_dir,
      scann_overrides={
          "num_leaves": FLAGS.scann_leaves,
          "num_leaves_to_search": FLAGS.scann_leaves_to_search,
          "num_reordering_candidates": FLAGS.scann_reorder},
      backup_freq=FLAGS.backup_freq, verbose=FLAGS.verbose,
      sampler_options=sampler_options_from_flags(),
      synthetic=({"num_users": FLAGS.synthetic_users,
                  "num_items": FLAGS.synthetic_items,
                  "interactions_per_user": FLAGS.synthetic_interactions}
                 if FLAGS.dataset == "synthetic" else {}))
  for key, value in overrides.items():
    setattr(config, key, value)
  try:
    config.validate()
  except ValueError as e:
    raise UsageError(str(e)) from e
  return config
