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
  flags.DEFINE_enum("index", "scann", ["scann", "brute_force"],
                    "Index of the exported SavedModel.")
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
  # Sampler options.
  flags.DEFINE_enum("logq", "streaming", ["streaming", "static", "none"],
                    "Source of log Q for samplers that take one.")
  flags.DEFINE_integer("num_buckets", 0,
                       "Streaming estimator buckets (0: 16x catalog).")
  flags.DEFINE_integer("num_hashes", 2, "Streaming estimator hashes.")
  flags.DEFINE_float("estimator_alpha", 0.01, "Streaming estimator rate.")
  flags.DEFINE_enum("estimator_rule", "debiased",
                    ["paper", "first_gap", "debiased"],
                    "Streaming estimator update rule.")
  # Cross-batch negative sampling (CBNS).
  flags.DEFINE_integer("memory_size", 0,
                       "CBNS queue size M (0: 4x the global batch).")
  flags.DEFINE_boolean("cbns_fresh_queue", False,
                       "CBNS diagnostic: re-embed the queue's ids at every "
                       "step (no stale embeddings; not the paper's method).")
  flags.DEFINE_boolean("cbns_fresh_queue_gradient", False,
                       "With --cbns_fresh_queue: keep the gradient of the "
                       "re-embedded queue columns (diagnostic).")
  flags.DEFINE_integer("warmup_steps", 0,
                       "CBNS: steps before the queue is used as negatives.")
  # BIR / XIR importance resampling.
  flags.DEFINE_integer("num_resampled", 0,
                       "BIR/XIR draws per query K (0: the global batch).")
  flags.DEFINE_integer("cache_size", 0,
                       "XIR cache size C (0: the global batch).")
  flags.DEFINE_float("xir_lambda", 0.2,
                     "XIR weight of the cache group (1 - lambda: batch).")
  flags.DEFINE_float("cache_decay", 0.0,
                     "XIR: occurrence counts decay by (1 - decay) per step.")
  # Catalog samplers, MNS / ANS / AMNS and two-stage (issue 6).
  flags.DEFINE_integer("num_negatives", 0,
                       "uniform/popularity/inverse_popularity/balanced: "
                       "negatives per row K (0: 32).")
  flags.DEFINE_float("popularity_alpha", 1.0,
                     "popularity: exponent of the training counts.")
  flags.DEFINE_boolean("catalog_logq", False,
                       "Catalog samplers and two_stage: subtract the log "
                       "expected count (off, as in the studies).")
  flags.DEFINE_integer("num_uniform", 0,
                       "mixed/adaptive_mixed: shared uniform columns B' "
                       "(0: the global batch for mixed, 100 for "
                       "adaptive_mixed).")
  flags.DEFINE_boolean("mixed_logq", None,
                       "MNS mixture correction log(G f + B'/N) (unset: on "
                       "for mixed, off for adaptive_mixed).")
  flags.DEFINE_integer("adaptive_pool", 0,
                       "adaptive/adaptive_mixed: random in-batch pool per "
                       "row (0: 100 for adaptive, 10 for adaptive_mixed).")
  flags.DEFINE_integer("num_hard_negatives", 0,
                       "adaptive/adaptive_mixed/two_stage: negatives kept "
                       "per row (0: 20, 20, 32); for adaptive/adaptive_mixed "
                       "the reference's num_adaptive_samples.")
  flags.DEFINE_integer("two_stage_pool", 0,
                       "two_stage: stage-1 pool size C (0: 512 for "
                       "query_score; for reference 1.5 percent of the "
                       "catalog, at least 128, at most 2000).")
  flags.DEFINE_enum("two_stage_rule", "reference",
                    ["reference", "query_score"],
                    "two_stage: stage 2 draws by spread-out weights of the "
                    "similarity to the positive on a stale item table "
                    "(reference) or keeps the top-K2 by query score.")
  flags.DEFINE_integer("two_stage_refresh", 100,
                       "two_stage (reference rule): training steps between "
                       "refreshes of the stale item table.")
  flags.DEFINE_float("two_stage_beta", 1.0,
                     "two_stage: stage-1 popularity exponent beta (1: the "
                     "reference code's default; 0: a uniform pool, which "
                     "the tuner chose for the softmax in every README "
                     "table).")
  flags.DEFINE_float("cml_margin", 1.0, "two_stage_triplet: hinge margin.")
  # Synthetic generator.
  flags.DEFINE_integer("synthetic_users", 2000, "Synthetic: users.")
  flags.DEFINE_integer("synthetic_items", 1000, "Synthetic: items.")
  flags.DEFINE_integer("synthetic_interactions", 40,
                       "Synthetic: mean interactions per user.")


# `--sampler=plain_tfrs`: the plain-TFRS floor of the benchmarks (the TFRS
# tutorial two-tower, `tfrs.tasks.Retrieval`; `benchmarking.FLOOR`).
FLOOR = "plain_tfrs"

SAMPLER_OPTION_FLAGS = ("logq", "num_buckets", "num_hashes",
                        "estimator_alpha", "estimator_rule", "memory_size",
                        "warmup_steps", "num_resampled", "cache_size",
                        "xir_lambda", "cache_decay", "num_negatives",
                        "popularity_alpha", "catalog_logq", "num_uniform",
                        "mixed_logq", "adaptive_pool", "num_hard_negatives",
                        "two_stage_pool", "two_stage_beta", "cml_margin")
SAMPLER_OPTION_FLAGS += ("two_stage_rule", "two_stage_refresh")
SAMPLER_OPTION_FLAGS += ("cbns_fresh_queue", "cbns_fresh_queue_gradient")


def config_from_flags(**overrides):
  """An `ExperimentConfig` from the parsed flags."""
  from trainers.pipeline import experiment  # pylint: disable=g-import-not-at-top
  config = experiment.ExperimentConfig(
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
      query_tower=FLAGS.query_tower, max_history=FLAGS.max_history,
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
      sampler_options={name: FLAGS[name].value
                       for name in SAMPLER_OPTION_FLAGS},
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
