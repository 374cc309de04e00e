"""What a run depends on: `ExperimentConfig` (the trainer's flags) and its checks.

`ExperimentConfig.validate` judges every setting that needs no data;
`check_dataset` the ones that need the loaded data and the strategy. Both
raise `ConfigError` naming the flag.
"""

import dataclasses
import difflib
import math
import os
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from tfrs_negsamp import data as data_lib
from tfrs_negsamp import optimizers as optimizers_lib
from tfrs_negsamp import samplers as samplers_lib
from tfrs_negsamp.data import sequences
from tfrs_negsamp.data import synthetic
from tfrs_negsamp.data.interactions import DUPLICATE_POLICIES
from tfrs_negsamp.evaluation import full_corpus
from tfrs_negsamp.models import query_towers
from tfrs_negsamp.serving import export as export_lib
from trainers.pipeline import strategies


BASELINES = ("popularity_baseline", "ease_baseline")
TRAINING_ROWS = ("auto", "sequence", "window")
LOSSES = ("auto", "softmax", "gbce")


def sequence_rows(config: "ExperimentConfig") -> bool:
  """Whether training reads sequence rows (history towers, not window)."""
  return (query_towers.uses_history(config.query_tower)
          and config.training_rows != "window")
EVAL_SPLITS = ("test", "validation")
# {ScaNN parameter (`export.SCANN_PARAMETERS`): the flag that sets it}.
SCANN_FLAGS = {"num_leaves": "scann_leaves",
               "num_leaves_to_search": "scann_leaves_to_search",
               "num_reordering_candidates": "scann_reorder"}


class ConfigError(ValueError):
  """A setting (flag) that cannot work; the message names it."""


def unknown_sampler_message(name: str, valid: List[str]) -> str:
  """"unknown sampler 'x' (did you mean 'y'?); valid samplers: ..."."""
  lowered = {v.lower(): v for v in valid}
  close = ([lowered[name.lower()]] if name.lower() in lowered else
           difflib.get_close_matches(name, valid, n=1, cutoff=0.6))
  return "unknown sampler %r%s; valid samplers: %s" % (
      name, " (did you mean %s?)" % close[0] if close else "",
      ", ".join(sorted(valid)))


def _is_number(value: Any) -> bool:
  return (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, bool))


def _finite(value: Any) -> bool:
  return _is_number(value) and math.isfinite(float(value))


def _declared_options() -> Dict[str, List[str]]:
  """{option: the samplers that declare it}."""
  return {name: sorted(info.defaults)
          for name, info in samplers_lib.option_table().items()}


def sampler_option_names(sampler: str) -> Tuple[str, ...]:
  """The options `sampler` declares (none for a baseline).

  Raises:
    ValueError: for an unknown sampler, listing the valid ones.
  """
  if sampler in BASELINES:
    return ()
  return samplers_lib.option_names(sampler)


def sampler_options_for(sampler: str,
                        options: Dict[str, Any]) -> Dict[str, Any]:
  """The entries of `options` that `sampler` declares.

  The flags are shared by every sampler, so the options of the others are
  dropped here (they were checked by `ExperimentConfig.validate`).
  """
  names = sampler_option_names(sampler)
  return {k: v for k, v in options.items() if k in names}


def check_writable_dir(name: str, path: Optional[str]) -> None:
  """`path` is (or can be created as) a writable folder; ConfigError if not.

  Args:
    name: the flag, for the message.
    path: the folder, None to skip.
  """
  if path is None:
    return
  if not path:
    raise ConfigError("--%s is empty: pass a folder" % name)
  if os.path.exists(path) and not os.path.isdir(path):
    raise ConfigError("--%s=%s is an existing file, not a folder: pass a "
                      "new or existing folder" % (name, path))
  parent = os.path.abspath(path)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise ConfigError("--%s=%s: %s is a file, so the folder cannot be "
                      "created" % (name, path, parent))
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError("--%s=%s: %s is not writable" % (name, path, parent))


@dataclasses.dataclass
class ExperimentConfig:
  """Everything a run depends on (the trainer's flags)."""
  dataset: str = "synthetic"
  data_path: Optional[str] = None
  split: str = "leave_last_out"
  # Rows per user held out for validation under leave_last_out (1: each
  # user's second-to-last); under temporal, 0 drops the validation slice
  # and any other value keeps the split's default validation fraction.
  num_validation: int = 1
  # The split the metrics are computed on: "test" or "validation" (tuning).
  eval_split: str = "test"
  sampler: str = "in_batch_logq"
  batch_size: int = 256
  epochs: int = 5
  learning_rate: float = 0.01
  # adam | lazy_adam (`optimizers.LazyAdam`: sparse rows-only updates of
  # embedding tables, issue 17).
  optimizer: str = "adam"
  embedding_dim: int = 64
  temperature: float = 0.05
  # Mask each row's user's training items among its negatives (issue 14;
  # `masking.ConsumedItems`). False reproduces the unmasked samplers.
  mask_history: bool = True
  normalize: bool = True
  item_features: bool = True
  query_hidden: Tuple[int, ...] = ()
  item_hidden: Tuple[int, ...] = ()
  # Query tower (query_towers.QUERY_TOWERS): id | mean | gru | sasrec; the
  # history towers read the last `max_history` items (issue 13).
  query_tower: str = "id"
  max_history: int = 50
  # History towers: "sequence" (one row per user's last max_history + 1
  # training items, every position a target; SAMPLERS.md 12.1), "window"
  # (one history window per target) or "auto" (sequence).
  training_rows: str = "auto"
  # Sequence rows of users longer than L + 1: "last" or "random" crops.
  sequence_crop: str = "last"
  # Sequence rows: positions per softmax block (its rows and in-batch
  # columns; `tasks.Retrieval(rows_per_block=)`).
  rows_per_block: int = 1024
  # The task's loss: "auto" (the sampler's, from the registry), "softmax"
  # or "gbce" (with the calibration `gbce_t`).
  loss: str = "auto"
  gbce_t: float = 0.75
  share_item_embeddings: bool = True
  history_user_id: bool = False
  num_blocks: int = 2
  num_heads: int = 1
  dropout: float = 0.2
  seed: int = 0
  # default | mirrored (cpu_replicas logical CPUs, or the GPUs) |
  # multi_worker (MultiWorkerMirroredStrategy from TF_CONFIG).
  strategy: str = "default"
  cpu_replicas: int = 2
  # parameter_server (ParameterServerStrategy, cluster from TF_CONFIG;
  # trainers/pipeline/parameter_server.py): shards per id table (0: one per
  # parameter server) and the smallest shard worth a split.
  ps_shards: int = 0
  ps_min_shard_bytes: int = 256 << 10
  output_dir: Optional[str] = None
  export_dir: Optional[str] = None
  # TensorBoard logs (`summaries`): loss, step time and validation metrics
  # per epoch, and the final metrics.
  tensorboard_dir: Optional[str] = None
  index: str = "auto"
  top_k: int = 100
  # ScaNN overrides (keys of export.SCANN_PARAMETERS; missing/0: derived).
  scann_overrides: Dict[str, int] = dataclasses.field(default_factory=dict)
  backup_dir: Optional[str] = None
  backup_freq: int = 50
  verbose: int = 1
  # {option: value}: options of any sampler (the flags are shared); each
  # sampler gets those it declares (`samplers.sampler_options(name)`).
  sampler_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # ease_baseline: the L2 weight lambda (0: chosen on the validation split
  # from `ease.lambda_grid`).
  ease_lambda: float = 0.0
  synthetic: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # Repeated (user, item) rows (`data.DUPLICATE_POLICIES`): keep_first
  # (each pair's earliest row), keep_all (repeat consumption) or error.
  duplicates: str = "keep_first"
  # Keep this fraction of the users (searches on part of a large set).
  user_fraction: float = 1.0
  # Validation during training (`validation.ValidationMonitor`): every
  # `validate_every` epochs (0: none), early stopping after `patience`
  # evaluations without improvement of `monitor` (0: never), a budget of
  # training minutes (0: none); the best weights are kept for the test.
  validate_every: int = 0
  patience: int = 0
  time_budget_minutes: float = 0.0
  monitor: str = "ndcg@10"

  def validate(self) -> None:
    """Checks every setting that needs no data; `ConfigError` naming it.

    `check_dataset` does the checks that need the loaded data and the
    strategy (batch vs rows, replicas, an evaluable split).
    """
    try:
      self._validate()
    except ConfigError:
      raise
    except ValueError as e:
      raise ConfigError(str(e)) from None

  def _validate(self) -> None:
    valid = samplers_lib.available_samplers() + list(BASELINES)
    if self.sampler not in valid:
      raise ValueError(unknown_sampler_message(self.sampler, valid))
    self._validate_data_source()
    if self.eval_split not in EVAL_SPLITS:
      raise ValueError("unknown eval_split %r (--eval_split); valid: %s"
                       % (self.eval_split, ", ".join(EVAL_SPLITS)))
    if not _finite(self.user_fraction) or not 0 < self.user_fraction <= 1:
      raise ValueError("--user_fraction must be in (0, 1], got %r"
                       % self.user_fraction)
    for name in ("validate_every", "patience"):
      if getattr(self, name) < 0:
        raise ValueError("--%s must be >= 0, got %r"
                         % (name, getattr(self, name)))
    if (not _finite(self.time_budget_minutes)
        or self.time_budget_minutes < 0):
      raise ValueError("--time_budget_minutes must be >= 0, got %r"
                       % self.time_budget_minutes)
    if (self.patience or self.time_budget_minutes) and not (
        self.validate_every):
      raise ValueError("--patience and --time_budget_minutes need "
                       "--validate_every >= 1 (they act on the validation "
                       "curve)")
    if self.monitor not in full_corpus.quality_metric_names():
      raise ValueError("unknown --monitor=%s; valid: %s" % (
          self.monitor, ", ".join(full_corpus.quality_metric_names())))
    if self.validate_every:
      if self.num_validation < 1:
        raise ValueError("--validate_every needs a validation split "
                         "(--num_validation >= 1)")
    if self.num_validation < 0:
      raise ValueError("--num_validation must be >= 0, got %r"
                       % self.num_validation)
    if self.eval_split == "validation" and self.num_validation == 0:
      raise ValueError("--eval_split=validation needs --num_validation >= 1")
    if self.split == "temporal" and self.num_validation not in (0, 1):
      raise ValueError("--num_validation=%d: --split=temporal takes 0 (no "
                       "validation slice) or 1 (the split's validation "
                       "fraction)" % self.num_validation)
    if self.verbose not in (0, 1, 2):
      raise ValueError("--verbose must be 0, 1 or 2, got %r" % self.verbose)
    if not _finite(self.ease_lambda) or self.ease_lambda < 0:
      raise ValueError("--ease_lambda must be >= 0 (0: chosen on "
                       "validation), got %r" % self.ease_lambda)
    if self.strategy not in strategies.STRATEGIES:
      raise ValueError("unknown strategy %r; valid: %s"
                       % (self.strategy, ", ".join(strategies.STRATEGIES)))
    query_towers.uses_history(self.query_tower)  # ValueError if unknown
    if self.training_rows not in TRAINING_ROWS:
      raise ValueError("unknown --training_rows=%s; valid: %s"
                       % (self.training_rows, ", ".join(TRAINING_ROWS)))
    if self.sequence_crop not in sequences.CROPS:
      raise ValueError("unknown --sequence_crop=%s; valid: %s"
                       % (self.sequence_crop, ", ".join(sequences.CROPS)))
    if (self.training_rows != "auto" and
        not query_towers.uses_history(self.query_tower)):
      raise ValueError("--training_rows=%s applies to history towers, not "
                       "--query_tower=%s" % (self.training_rows,
                                             self.query_tower))
    if self.loss not in LOSSES:
      raise ValueError("unknown --loss=%s; valid: %s"
                       % (self.loss, ", ".join(LOSSES)))
    if not _finite(self.gbce_t) or not 0 <= self.gbce_t <= 1:
      raise ValueError("--gbce_t must be in [0, 1], got %r" % self.gbce_t)
    if (self.loss != "auto" and self.sampler not in BASELINES and
        samplers_lib.loss_kind(self.sampler) != "softmax"):
      raise ValueError("--loss=%s: --sampler=%s trains its own loss (%s)"
                       % (self.loss, self.sampler,
                          samplers_lib.loss_kind(self.sampler)))
    for name in ("max_history", "num_blocks", "num_heads"):
      if getattr(self, name) < 1:
        raise ValueError("--%s must be >= 1, got %r"
                         % (name, getattr(self, name)))
    if not _finite(self.dropout) or not 0 <= self.dropout < 1:
      raise ValueError("--dropout must be in [0, 1), got %r" % self.dropout)
    if self.ps_shards < 0:
      raise ValueError("--ps_shards must be >= 0 (0: one per parameter "
                       "server), got %r" % self.ps_shards)
    for name in ("batch_size", "epochs", "embedding_dim", "top_k",
                 "cpu_replicas", "backup_freq", "ps_min_shard_bytes",
                 "rows_per_block"):
      if getattr(self, name) < 1:
        raise ValueError("--%s must be >= 1, got %r"
                         % (name, getattr(self, name)))
    for name in ("learning_rate", "temperature"):
      value = getattr(self, name)
      if not _finite(value) or value <= 0:
        raise ValueError("--%s must be a finite number > 0, got %r"
                         % (name, value))
    for name in ("query_hidden", "item_hidden"):
      widths = tuple(getattr(self, name))
      if any(isinstance(w, bool) or not isinstance(w, (int, np.integer))
             or w < 1 for w in widths):
        raise ValueError("--%s must be positive layer widths such as "
                         "128,64, got %s"
                         % (name, ",".join(str(w) for w in widths)))
    self._validate_sampler_options()
    check_writable_dir("output_dir", self.output_dir)
    check_writable_dir("backup_dir", self.backup_dir)
    check_writable_dir("export_dir", self.export_dir)
    check_writable_dir("tensorboard_dir", self.tensorboard_dir)
    if self.optimizer not in optimizers_lib.OPTIMIZERS:
      raise ValueError("unknown optimizer %r; valid: %s"
                       % (self.optimizer,
                          ", ".join(optimizers_lib.OPTIMIZERS)))
    if self.index not in export_lib.INDEX_KINDS:
      raise ValueError("unknown index %r; valid: %s"
                       % (self.index, ", ".join(export_lib.INDEX_KINDS)))
    for name, value in self.scann_overrides.items():
      if name not in export_lib.SCANN_PARAMETERS or (value or 0) < 0:
        raise ValueError(
            "bad ScaNN override %s=%r; valid: %s (>= 0)"
            % (name, value, ", ".join(export_lib.SCANN_PARAMETERS)))


  def _validate_data_source(self) -> None:
    if self.dataset not in data_lib.DATASET_NAMES:
      raise ConfigError("unknown --dataset=%s; valid: %s"
                        % (self.dataset, ", ".join(data_lib.DATASET_NAMES)))
    if self.split not in data_lib.SPLIT_METHODS:
      raise ConfigError("unknown --split=%s; valid: %s"
                        % (self.split, ", ".join(data_lib.SPLIT_METHODS)))
    if self.duplicates not in DUPLICATE_POLICIES:
      raise ConfigError("unknown --duplicates=%s; valid: %s"
                        % (self.duplicates,
                           ", ".join(DUPLICATE_POLICIES)))
    if self.dataset == "csv":
      if not self.data_path:
        raise ConfigError("--dataset=csv needs --data_path=<a CSV file with "
                          "user_id,item_id,timestamp columns>")
      if not os.path.isfile(self.data_path):
        raise ConfigError("--data_path=%s: %s" % (
            self.data_path, "is a folder, not a CSV file"
            if os.path.isdir(self.data_path) else "file not found"))
    elif self.dataset == "movielens" and self.data_path:
      if not os.path.exists(self.data_path):
        raise ConfigError("--data_path=%s: MovieLens folder not found"
                          % self.data_path)
    elif self.dataset == "synthetic":
      if self.data_path:
        raise ConfigError("--data_path applies to --dataset=movielens or "
                          "csv, not synthetic")
      for key, flag, least in (
          ("num_users", "synthetic_users", 1),
          ("num_items", "synthetic_items", synthetic.MIN_ITEMS),
          ("interactions_per_user", "synthetic_interactions", 1)):
        value = self.synthetic.get(key)
        if value is not None and (not _finite(value) or value < least):
          raise ConfigError("--%s must be >= %d, got %r"
                            % (flag, least, value))

  def _validate_sampler_options(self) -> None:
    """Every option given belongs to the run's sampler and is valid.

    An option of another sampler is an error, not a silent no-op (the flags
    are shared by every sampler, and an unset flag is None, so only the
    options given on the command line are here); an option no sampler
    declares gets a "did you mean". The run's sampler's options are then
    built together, for the checks that involve several of them (xir's
    `num_resampled`).
    """
    declared = _declared_options()
    own_names = sampler_option_names(self.sampler)
    for name in self.sampler_options:
      if name in own_names:
        continue
      takes = ("it takes: --%s" % ", --".join(sorted(own_names))
               if own_names else "it takes no sampler option")
      if name in declared:
        raise ConfigError(
            "--%s does not apply to --sampler=%s (an option of %s); %s"
            % (name, self.sampler, ", ".join(sorted(declared[name])), takes))
      close = difflib.get_close_matches(name, list(declared), n=1)
      raise ConfigError("unknown sampler option --%s%s; --sampler=%s: %s"
                        % (name, " (did you mean --%s?)" % close[0]
                           if close else "", self.sampler, takes))
    if self.sampler not in BASELINES:
      try:
        samplers_lib.build_options(self.sampler, self.sampler_options)
      except ValueError as e:
        raise ConfigError("--%s" % e) from None


def check_dataset(config: ExperimentConfig, dataset: data_lib.Dataset,
                  num_replicas: int = 1) -> None:
  """Checks that `dataset` can be trained and evaluated with `config`.

  Run after loading and before building the model: the batch fits the
  training split and splits evenly over the replicas, the evaluated split
  has users that the model knows (a temporal split may hold out only users
  absent from training), and the ScaNN settings of an export fit the
  catalog.

  Raises:
    ConfigError: naming the flag and the numbers.
  """
  train_rows = dataset.train.num_rows
  if config.sampler not in BASELINES:
    if config.batch_size % num_replicas:
      raise ConfigError("--batch_size=%d is not divisible by the %d "
                        "replicas: use a multiple of %d"
                        % (config.batch_size, num_replicas, num_replicas))
    if train_rows < config.batch_size:
      raise ConfigError("--batch_size=%d is larger than the training split "
                        "of %s (%d rows): lower --batch_size"
                        % (config.batch_size, dataset.name, train_rows))
    if sequence_rows(config):
      rows = sequences.sequence_rows(dataset.train, dataset.catalog,
                                     config.max_history).num_rows
      if rows < config.batch_size:
        raise ConfigError(
            "--batch_size=%d is larger than the %d sequence rows (users "
            "with 2 or more training items) of %s: lower --batch_size or "
            "use --training_rows=window" % (config.batch_size, rows,
                                             dataset.name))
    elif query_towers.uses_history(config.query_tower):
      examples = sequences.user_sequences(
          dataset.train, dataset.catalog).example_positions.size
      if examples < config.batch_size:
        raise ConfigError(
            "--batch_size=%d is larger than the %d next-item examples "
            "(training rows with a history) of %s for --query_tower=%s: "
            "lower --batch_size" % (config.batch_size, examples,
                                    dataset.name, config.query_tower))
  if train_rows == 0:
    raise ConfigError("the training split of %s is empty" % dataset.name)
  evaluated = (dataset.test if config.eval_split == "test"
               else dataset.validation)
  if evaluated.num_rows == 0:
    raise ConfigError("the %s split of %s is empty: nothing to evaluate "
                      "(--split=%s)" % (config.eval_split, dataset.name,
                                        config.split))
  check_scann(config, dataset.catalog.num_items, dataset.name)
  users = np.unique(evaluated.user_ids)
  known = np.isin(users, dataset.users)
  if not np.any(known):
    raise ConfigError(
        "none of the %d users of the %s split of %s is in the training "
        "split, so none can be evaluated (--split=%s holds out %s); use "
        "--split=leave_last_out" % (
            users.size, config.eval_split, dataset.name, config.split,
            "the latest rows of all users" if config.split == "temporal"
            else "rows per user"))


def check_scann(config: ExperimentConfig, num_items: int, name: str) -> None:
  """The ScaNN settings of `config`'s export fit a catalog of `num_items`.

  Raises:
    ConfigError: naming the flag (--scann_leaves, ...), the catalog and
      the valid range.
  """
  if not config.export_dir or config.index != "scann" or config.sampler in (
      BASELINES):
    return
  try:
    export_lib.scann_parameters(num_items, min(config.top_k, num_items),
                                config.scann_overrides)
  except ValueError as e:
    message = str(e).rstrip(".")
    parameter = message.split()[0]
    flag = SCANN_FLAGS.get(parameter)
    given = config.scann_overrides.get(parameter)
    raise ConfigError(
        "%s does not fit the catalog of %s (%d items): %s" % (
            "--%s=%s" % (flag, given) if flag and given else
            "the derived ScaNN settings (--scann_leaves, "
            "--scann_leaves_to_search, --scann_reorder)",
            name, num_items, message)) from None
