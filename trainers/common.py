"""Flags shared by the trainers, their conversion to `ExperimentConfig`,
and the programs' command line (`run`).

Every program starts with `common.run(main)` instead of `app.run(main)`:

- a bad flag, bad data or a missing dependency ends the program with ONE
  line on stderr (`error: ...` naming the flag, or the file, line and
  problem) and exit status 2 (usage and data errors) or 1 (anything else),
  without the module docstring that absl prints on a usage error and
  without a stack trace. `--verbose_errors` or the environment variable
  `TFRS_NEGSAMP_TRACEBACK=1` prints the stack trace before that line;
- `--help` prints the program's docstring and its own flags grouped by
  purpose (`FLAG_GROUPS`) and exits 0; `--helpfull` adds absl's built-in
  flags;
- third-party log lines are dropped and Ctrl-C is one line, exit status
  130 (`trainers.console`; `--tf_logs` shows TensorFlow's logs);
- a flag that the program does not use (`refuse_flags`) is an error.

`check_applies` refuses a flag that the chosen mode ignores (e.g. a history
tower's `--max_history` with `--query_tower=id`).

This module imports only absl (the serving programs use it without TFRS).
"""

import difflib
import math
import os
import sys
import textwrap
import traceback
from typing import (Any, Callable, Dict, Iterable, List, Optional, Sequence,
                    Tuple)

from absl import app
from absl import flags

from trainers import console
from trainers.pipeline import defaults

FLAGS = flags.FLAGS
TRACEBACK_ENV = "TFRS_NEGSAMP_TRACEBACK"
USAGE_EXIT_CODE = 2

flags.DEFINE_boolean("verbose_errors", False,
                     "On an error, show the Python stack trace (also: "
                     "environment variable %s=1)." % TRACEBACK_ENV)
flags.DEFINE_boolean(console.TF_LOGS_FLAG, False,
                     "Show what TensorFlow, absl and ScaNN log (by default "
                     "a run prints only its own lines and real errors; "
                     "also: environment variable %s=1)."
                     % console.TF_LOGS_ENV)


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
  config_error = _error_class("trainers.pipeline.configuration", "ConfigError")
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
  """`FLAGS(argv)`; a bad flag is one line and exit status 2.

  `--help` (`-h`, `--helpshort`, `-?`) and `--helpfull` print `help_text`
  and exit 0 (absl's own help lists no flag of ours and exits 1).
  """
  request = help_request(argv)
  if request:
    sys.stdout.write(help_text(full=request == "full"))
    sys.stdout.flush()
    sys.exit(0)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(e, argv)


def guard(main: Callable[[Sequence[str]], Optional[int]]
          ) -> Callable[[Sequence[str]], Optional[int]]:
  """`main` with every uncaught error turned into one line (see `fail`).

  Before `main`: the flags `refuse_flags` named are refused, and the
  Python loggers quieted again (parsing absl's flags resets them). Ctrl-C
  ends with one line and exit status 130 (`console.interrupted`).
  """

  def guarded(argv):
    try:
      if console.is_quiet():
        console.quiet_python_logs()
      check_refused_flags()
      return main(argv)
    except KeyboardInterrupt as e:
      console.interrupted(e)
    except (SystemExit, GeneratorExit):
      raise
    except BaseException as e:  # pylint: disable=broad-except
      fail(e, argv)

  return guarded


def run(main: Callable[[Sequence[str]], Optional[int]]) -> None:
  """`app.run(main)` with the command line of this module."""
  console.setup("__main__")
  app.run(guard(main), flags_parser=parse_flags)


# Flags this program defines (through `define_flags`) but does not use:
# {flag: why}. Given on the command line, they are an error.
_REFUSED: Dict[str, str] = {}


def refuse_flags(names: Iterable[str], reason: str) -> None:
  """Makes the flags `names` an error in this program (hidden in --help).

  Args:
    names: flags defined by `define_flags` that the program ignores.
    reason: completes "--NAME does not apply to PROGRAM: ", e.g. "it runs
      no export".
  """
  for name in names:
    _REFUSED[name] = reason


def check_refused_flags() -> None:
  """UsageError for the first refused flag given on the command line."""
  for name, reason in _REFUSED.items():
    if name in FLAGS and FLAGS[name].present:
      raise UsageError("--%s does not apply to %s: %s"
                       % (name, program_name(), reason))


def program_name() -> str:
  """`trainers.train` for `python -m trainers.train`."""
  spec = getattr(sys.modules.get("__main__"), "__spec__", None)
  if spec is not None and spec.name:
    return spec.name
  return os.path.splitext(os.path.basename(sys.argv[0] or "program"))[0]


def help_request(argv: Sequence[str]) -> Optional[str]:
  """"short" for --help/-h/--helpshort/-?, "full" for --helpfull, else None.

  Arguments after `--` belong to another program (`trainers.launch_local`).
  """
  for arg in list(argv)[1:]:
    if arg == "--":
      break
    if arg in ("--helpfull", "-helpfull"):
      return "full"
    if arg in ("--help", "-help", "-h", "--h", "-?", "--helpshort",
               "-helpshort"):
      return "short"
  return None


# The shared flags by purpose, in the order --help lists them. The sampler
# options (one flag per option of the registered samplers) get their own
# group; flags a program defines itself come first, under its name.
FLAG_GROUPS = (
    ("Data", ("dataset", "data_path", "synthetic_users", "synthetic_items",
              "synthetic_interactions", "duplicates", "user_fraction",
              "split", "num_validation", "seed")),
    ("Sampler", ("sampler", "mask_history", "ease_lambda", "loss", "gbce_t")),
    ("Model", ("embedding_dim", "temperature", "normalize", "item_features",
               "item_hidden", "query_tower", "query_hidden", "max_history",
               "share_item_embeddings", "history_user_id", "num_blocks",
               "num_heads", "dropout")),
    ("Training", ("batch_size", "epochs", "learning_rate", "optimizer",
                  "training_rows", "sequence_crop", "rows_per_block",
                  "backup_dir", "backup_freq")),
    ("Validation during training", ("validate_every", "patience", "monitor",
                                    "time_budget_minutes")),
    ("Evaluation and outputs", ("eval_split", "output_dir",
                                "tensorboard_dir", "verbose")),
    ("Export (SavedModel with a top-k index)",
     ("export_dir", "index", "top_k", "scann_leaves",
      "scann_leaves_to_search", "scann_reorder")),
    ("Distribution", ("strategy", "cpu_replicas", "ps_shards",
                      "ps_min_shard_bytes")),
    ("Diagnostics", ("verbose_errors", console.TF_LOGS_FLAG)),
)
SAMPLER_OPTIONS_GROUP = "Sampler options (unset: the sampler's default)"
_WIDTH = 80


def help_groups() -> List[Tuple[str, List[Any]]]:
  """[(title, [flags])] of this program, as --help lists them.

  The flags of absl and TensorFlow (`--helpfull` only) come last, titled
  "Built-in flags"; refused flags are left out.
  """
  by_module = FLAGS.flags_by_module_dict()
  main_names, builtin, other = [], [], {}
  main_module = sys.argv[0] if sys.argv else ""
  grouped = {n for _, names in FLAG_GROUPS for n in names}
  options = set(sampler_option_flags()) if "sampler" in FLAGS else set()
  for module, module_flags in by_module.items():
    for flag in module_flags:
      if flag.name in _REFUSED or flag.name in grouped | options:
        continue
      if not module.startswith(("trainers", "tfrs_negsamp")) and (
          module != main_module):
        builtin.append(flag)  # absl's, TensorFlow's
      elif module == main_module:
        main_names.append(flag)
      else:
        other.setdefault(module, []).append(flag)
  groups = []
  if main_names:
    groups.append(("%s" % program_name(), main_names))
  for title, names in FLAG_GROUPS:
    found = [FLAGS[n] for n in names if n in FLAGS and n not in _REFUSED]
    if found:
      groups.append((title, found))
    if title == "Sampler" and options:
      found = [FLAGS[n] for n in sorted(options) if n not in _REFUSED]
      if found:
        groups.append((SAMPLER_OPTIONS_GROUP, found))
  for module, module_flags in sorted(other.items()):
    groups.append((module, module_flags))
  seen, unique = set(), []
  for title, group in groups:
    group = [f for f in group if f.name not in seen]
    seen.update(f.name for f in group)
    if group:
      unique.append((title, group))
  unique.append(("Built-in flags (absl, TensorFlow)",
                 sorted({f.name: f for f in builtin}.values(),
                        key=lambda f: f.name)))
  return unique


def _flag_lines(flag) -> List[str]:
  """--help's lines of one flag: the usage, then its wrapped help."""
  choices = getattr(flag.parser, "enum_values", None)
  if flag.boolean:
    usage = "--[no]%s" % flag.name
  elif choices:
    usage = "--%s=%s" % (flag.name, "|".join(choices))
  else:
    kind = flag.flag_type().replace("comma separated list of strings",
                                    "a,b,...")
    usage = "--%s=<%s>" % (flag.name, kind)
  default = flag.default
  if isinstance(default, bool):
    usage += " (default: %s)" % str(default).lower()
  elif isinstance(default, list):
    usage += " (default: %s)" % (",".join(map(str, default)) or "none")
  elif default not in (None, ""):
    usage += " (default: %s)" % default
  text = flag.help or ""
  if choices and text.startswith("<%s>: " % "|".join(choices)):
    text = text[len("<%s>: " % "|".join(choices)):]  # absl's prefix
  lines = ["  " + usage]
  for paragraph in text.split("\n"):
    indent = " " * (6 + len(paragraph) - len(paragraph.lstrip()))
    lines += textwrap.wrap(paragraph.strip(), _WIDTH, initial_indent=indent,
                           subsequent_indent=indent + "  ") or [""]
  return lines


def help_text(full: bool = False) -> str:
  """The program's docstring and its flags by purpose (`help_groups`)."""
  doc = (getattr(sys.modules.get("__main__"), "__doc__", None) or "").strip()
  lines = [doc, ""] if doc else []
  lines.append("Flags (--helpfull also lists the built-in flags of absl and "
               "TensorFlow):")
  for title, group in help_groups():
    if title.startswith("Built-in") and not full:
      continue
    lines += ["", title + ":"]
    for flag in group:
      lines += _flag_lines(flag)
  return "\n".join(lines) + "\n"


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
  flags.DEFINE_integer("validate_every", None,
                       "Evaluate the validation split every N epochs "
                       "during training (0: never); the test metrics are "
                       "then those of the best validation epoch. Unset: "
                       "%d when the split has a validation slice, else 0."
                       % defaults.VALIDATE_EVERY)
  flags.DEFINE_integer("patience", None,
                       "With --validate_every: stop after N evaluations "
                       "without improvement of --monitor, counted once the "
                       "run beats ranking by popularity on validation (0: "
                       "never; unset: %d)." % defaults.PATIENCE)
  flags.DEFINE_float("time_budget_minutes", 0.0,
                     "With --validate_every: stop training after this many "
                     "minutes of training (0: no budget).")
  flags.DEFINE_string("monitor", defaults.MONITOR,
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
  flags.DEFINE_string("sampler", "in_batch_logq", sampler_help())
  flags.DEFINE_float("ease_lambda", 0.0,
                     "ease_baseline: L2 weight lambda (0: chosen on the "
                     "validation split from 10, 50, ..., 2000).")
  flags.DEFINE_integer("batch_size", defaults.BATCH_SIZE,
                       "Global batch size.")
  flags.DEFINE_integer("epochs", defaults.EPOCHS,
                       "Training epochs (an upper bound when validation "
                       "during training stops early).")
  flags.DEFINE_float("learning_rate", None,
                     "Adam learning rate (unset: the query tower's, %s)."
                     % ", ".join("%s %g" % kv
                                 for kv in defaults.LEARNING_RATE.items()))
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
  flags.DEFINE_enum("query_tower", defaults.QUERY_TOWER,
                    ["id", "mean", "gru", "sasrec"],
                    "Query tower: user id embedding, or a history encoder "
                    "(YouTubeDNN mean, GRU4Rec, SASRec) over the last "
                    "--max_history training items.")
  flags.DEFINE_integer("max_history", defaults.MAX_HISTORY,
                       "History towers: history length L.")
  flags.DEFINE_enum("training_rows", "auto", ["auto", "sequence", "window"],
                    "History towers: sequence rows (each user's last L + 1 "
                    "training items, every position a target, one encoder "
                    "pass per user; auto) or one history window per target "
                    "(window).")
  flags.DEFINE_enum("sequence_crop", "last", ["last", "random"],
                    "Sequence rows of users longer than L + 1: their last "
                    "L + 1 items, or a random crop each epoch.")
  flags.DEFINE_integer("rows_per_block", 1024,
                       "Sequence rows: positions per softmax block (its "
                       "query rows and in-batch columns).")
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
  flags.DEFINE_string("tensorboard_dir", None,
                      "TensorBoard logs: per epoch the loss, the median step "
                      "time and the full-corpus metrics on the validation "
                      "split (one evaluation per epoch; none with "
                      "--num_validation=0), and the final metrics of "
                      "--eval_split.")
  flags.DEFINE_string("export_dir", None,
                      "If set, export a SavedModel with a top-k index.")
  flags.DEFINE_enum("index", "auto", ["auto", "scann", "brute_force"],
                    "Index of the exported SavedModel (auto: exact search up "
                    "to 4096 items, ScaNN above).")
  flags.DEFINE_integer("top_k", 100, "k of the exported index.")
  flags.DEFINE_integer("scann_leaves", 0,
                       "ScaNN partitions (0: ~sqrt of the catalog size).")
  flags.DEFINE_integer("scann_leaves_to_search", 0,
                       "ScaNN partitions searched per query (0: ~15% of "
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
                      "Keras BackupAndRestore folder: a killed or "
                      "interrupted (Ctrl-C) run restarted with the same "
                      "flags resumes from it.")
  flags.DEFINE_integer("backup_freq", 50, "Back up every N steps.")
  flags.DEFINE_integer("verbose", 1,
                       "Progress: 0 none, 1 a progress bar, 2 one line per "
                       "epoch (Keras's verbosity).", lower_bound=0,
                       upper_bound=2)
  define_sampler_flags()
  # Synthetic generator.
  flags.DEFINE_integer("synthetic_users", 2000, "Synthetic: users.")
  flags.DEFINE_integer("synthetic_items", 1000, "Synthetic: items.")
  flags.DEFINE_integer("synthetic_interactions", 40,
                       "Synthetic: mean interactions per user.")


# `--sampler=plain_tfrs`: the plain-TFRS floor of the benchmarks (the TFRS
# tutorial two-tower, `tfrs.tasks.Retrieval`; `benchmarking.FLOOR`).
FLOOR = "plain_tfrs"
# The `--sampler` values that are not registered samplers, and what they do.
OTHER_SAMPLERS = {
    "popularity_baseline": "model-free: ranks by training popularity.",
    "ease_baseline": "model-free: EASE^R item-item regression (Steck "
                     "2019), --ease_lambda.",
    FLOOR: "the TFRS tutorial two-tower (tfrs.tasks.Retrieval, id towers), "
           "the floor of the benchmarks; no export.",
}


def sampler_help() -> str:
  """--sampler's help: every valid name with its one-line summary."""
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  lines = ["Negative sampler, a model-free baseline or the plain-TFRS "
           "floor:"]
  lines += ["  %s: %s" % (name, samplers.sampler_summary(name))
            for name in samplers.available_samplers()]
  lines += ["  %s: %s" % kv for kv in OTHER_SAMPLERS.items()]
  return "\n".join(lines)


def valid_samplers() -> List[str]:
  """Every valid `--sampler` of `trainers.train`, sorted."""
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  return sorted(samplers.available_samplers() + list(OTHER_SAMPLERS))


def check_sampler_flag() -> None:
  """UsageError for an unknown --sampler, with "did you mean"."""
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  if FLAGS.sampler not in valid_samplers():
    raise UsageError(configuration.unknown_sampler_message(
        FLAGS.sampler, valid_samplers()))


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
      rows_per_block=FLAGS.rows_per_block,
      loss=FLAGS.loss, gbce_t=FLAGS.gbce_t,
      share_item_embeddings=FLAGS.share_item_embeddings,
      history_user_id=FLAGS.history_user_id, num_blocks=FLAGS.num_blocks,
      num_heads=FLAGS.num_heads, dropout=FLAGS.dropout,
      strategy=FLAGS.strategy, cpu_replicas=FLAGS.cpu_replicas,
      ps_shards=FLAGS.ps_shards, ps_min_shard_bytes=FLAGS.ps_min_shard_bytes,
      output_dir=FLAGS.output_dir, export_dir=FLAGS.export_dir,
      tensorboard_dir=FLAGS.tensorboard_dir,
      index=FLAGS.index, top_k=FLAGS.top_k, backup_dir=FLAGS.backup_dir,
      scann_overrides={
          name: FLAGS[flag].value
          for name, flag in configuration.SCANN_FLAGS.items()},
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


def training_config():
  """`trainers.train`'s configuration, with every check that needs no data.

  The sampler name (with "did you mean"), the values, the flags the chosen
  mode ignores (`check_applies`) and, for `--sampler=plain_tfrs`, what the
  floor can run (its configuration has `sampler == FLOOR`).
  """
  check_sampler_flag()
  if FLAGS.sampler != FLOOR:
    config = config_from_flags()
    check_applies([config])
    return config
  for name in sampler_options_from_flags():
    raise UsageError("--%s does not apply to --sampler=%s: the floor takes "
                     "no sampler option" % (name, FLOOR))
  config = config_from_flags(sampler="in_batch")
  config.sampler = FLOOR
  check_applies([config])
  from trainers.pipeline import benchmarking  # pylint: disable=g-import-not-at-top
  try:
    benchmarking.check_floor(config)
  except ValueError as e:
    raise UsageError(str(e)) from e
  return config

def shared_config_from_flags(samplers: Sequence[str], **overrides):
  """`config_from_flags` for a program that runs several samplers.

  The base configuration holds every sampler option given on the command
  line (`benchmarking.apply_variant` gives each sampler the ones it
  declares, and checks their values); each must belong to at least one of
  `samplers`.

  Args:
    samplers: the samplers (or baselines, or the floor) the program runs.
    **overrides: as for `config_from_flags`.
  """
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  options = sampler_options_from_flags()
  for name in options:
    takers = [s for s in samplers if s != FLOOR
              and name in configuration.sampler_option_names(s)]
    if not takers:
      owners = sorted(s for s, names in
                      ((s, configuration.sampler_option_names(s))
                       for s in configuration.samplers_lib
                       .available_samplers()) if name in names)
      raise UsageError("--%s is an option of %s, which %s not run here "
                       "(the runs: %s)" % (
                           name, ", ".join(owners) or "no sampler",
                           "is" if len(owners) == 1 else "are",
                           ", ".join(sorted(set(samplers)))))
  overrides.setdefault("sampler", "in_batch")
  config = config_from_flags(sampler_options={}, **overrides)
  config.sampler_options = options
  return config

def _setting(config, name: str) -> str:
  """How `config` sets `name`, as a flag: --name=value, --noname, no --name."""
  if hasattr(config, "resolved"):
    config = config.resolved()  # the effective value of an unset default
  value = getattr(config, name)
  if isinstance(value, bool):
    return "--%s%s" % ("" if value else "no", name)
  if value in (None, ""):
    return "no --%s" % name
  return "--%s=%s" % (name, value)


def _is_baseline(config) -> bool:
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  return config.sampler in configuration.BASELINES


def _uses_history(config) -> bool:
  from tfrs_negsamp.models import query_towers  # pylint: disable=g-import-not-at-top
  return query_towers.uses_history(config.query_tower)


_SCANN = ("scann_leaves", "scann_leaves_to_search", "scann_reorder")
_SYNTHETIC = ("synthetic_users", "synthetic_items", "synthetic_interactions")
# (flags, the runs they apply to, what those are, the setting that decides).
# A flag given on the command line that applies to none of a program's runs
# is an error (`check_applies`). The first rule a flag fails is reported.
APPLIES = (
    (("query_tower", "embedding_dim", "temperature", "normalize",
      "item_features", "item_hidden", "query_hidden", "max_history",
      "share_item_embeddings", "history_user_id", "num_blocks", "num_heads",
      "dropout", "mask_history", "batch_size", "epochs", "learning_rate",
      "optimizer", "backup_dir", "backup_freq", "tensorboard_dir",
      "export_dir", "index", "top_k") + _SCANN + ("strategy", "cpu_replicas"),
     lambda c: not _is_baseline(c),
     "a trained model, not a model-free baseline (no tower, no training, "
     "no export)", "sampler"),
    (("ease_lambda",), lambda c: c.sampler == "ease_baseline",
     "--sampler=ease_baseline", "sampler"),
    (("mask_history", "item_features", "item_hidden", "query_hidden",
      "backup_dir", "backup_freq", "tensorboard_dir", "export_dir", "index",
      "top_k") + _SCANN,
     lambda c: c.sampler != FLOOR,
     "the package's two-tower model, not the plain-TFRS floor (id "
     "embeddings, tfrs.tasks.Retrieval, no backup, no TensorBoard logs, no "
     "export)", "sampler"),
    (("max_history", "share_item_embeddings", "history_user_id"),
     _uses_history, "the history towers (--query_tower=mean, gru or sasrec)",
     "query_tower"),
    (("num_blocks", "num_heads", "dropout"),
     lambda c: c.query_tower == "sasrec", "--query_tower=sasrec",
     "query_tower"),
    (("training_rows",), _uses_history,
     "the history towers (--query_tower=mean, gru or sasrec)",
     "query_tower"),
    (("sequence_crop", "rows_per_block"),
     lambda c: _uses_history(c) and c.training_rows != "window",
     "sequence rows (a history tower, --training_rows=auto or sequence)",
     "training_rows"),
    (("loss", "validate_every"), lambda c: not _is_baseline(c),
     "a trained model, not a model-free baseline", "sampler"),
    (("gbce_t",), lambda c: c.loss == "gbce", "--loss=gbce", "loss"),
    (("patience", "time_budget_minutes", "monitor"),
     lambda c: c.resolved().validate_every > 0,
     "validation during training (--validate_every >= 1)",
     "validate_every"),
    (("ps_shards", "ps_min_shard_bytes"),
     lambda c: c.strategy == "parameter_server",
     "--strategy=parameter_server", "strategy"),
    (("cpu_replicas",), lambda c: c.strategy == "mirrored",
     "--strategy=mirrored", "strategy"),
    (("index", "top_k") + _SCANN, lambda c: bool(c.export_dir),
     "the export (--export_dir)", "export_dir"),
    (_SCANN, lambda c: c.index in ("scann", "auto"),
     "--index=scann (or auto)", "index"),
    (("backup_freq",), lambda c: bool(c.backup_dir), "--backup_dir",
     "backup_dir"),
    (_SYNTHETIC, lambda c: c.dataset == "synthetic", "--dataset=synthetic",
     "dataset"),
    (("temperature",), lambda c: bool(c.normalize),
     "--normalize (unnormalised towers score by raw dot products)",
     "normalize"),
)


def check_applies(configs: Sequence[Any], runs: Optional[str] = None
                  ) -> None:
  """UsageError for a given flag that applies to none of `configs`.

  Args:
    configs: the `ExperimentConfig`s the program will run (one for
      `trainers.train`; a benchmark's variants, a tuner's studies).
    runs: what the runs are called in the message ("variants"); None for
      the one run of `trainers.train`.
  """
  for names, applies, target, decider in APPLIES:
    for name in names:
      if name not in FLAGS or not FLAGS[name].present:
        continue
      if any(applies(c) for c in configs):
        continue
      settings = " / ".join(sorted({_setting(c, decider) for c in configs}))
      raise UsageError("--%s applies only to %s, and %s" % (
          name, target, "this run has " + settings if runs is None else
          "none of the %s does (%s)" % (runs, settings)))
