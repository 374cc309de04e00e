"""One training run end to end: data, model, `model.fit`, evaluation, export.

Trainers and benchmarks call `run()` (or its pieces) with an
`ExperimentConfig`, so every program trains and measures the same way.
"""

import contextlib
import dataclasses
import difflib
import functools
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from trainers.pipeline import cluster
from tfrs_negsamp import data as data_lib
from tfrs_negsamp import distribute
from tfrs_negsamp import losses
from tfrs_negsamp import masking
from tfrs_negsamp import optimizers as optimizers_lib
from tfrs_negsamp import protocol
from tfrs_negsamp import samplers as samplers_lib
from tfrs_negsamp.data import sequences
from tfrs_negsamp.data.interactions import DUPLICATE_POLICIES
from tfrs_negsamp.data import tf_dataset
from tfrs_negsamp.models import features as features_lib
from tfrs_negsamp.models import query_towers
from tfrs_negsamp.models import towers
from tfrs_negsamp.models import two_tower
from tfrs_negsamp.serving import export as export_lib

BASELINES = ("popularity_baseline", "ease_baseline")
# Samplers trained with the CML hinge (Tran et al.'s metric learning); the
# program chooses the task's loss from the sampler name, every other sampler
# trains the sampled softmax.
TRIPLET_SAMPLERS = ("two_stage_triplet",)
EVAL_SPLITS = ("test", "validation")
STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
_STRATEGIES: Dict[Any, tf.distribute.Strategy] = {}


class ConfigError(ValueError):
  """A setting (flag) that cannot work; the message names it."""


def _is_number(value: Any) -> bool:
  return (isinstance(value, (int, float, np.integer, np.floating))
          and not isinstance(value, bool))


def _finite(value: Any) -> bool:
  return _is_number(value) and math.isfinite(float(value))


def _declared_options() -> Dict[str, List[type]]:
  """{option: the options dataclasses of the samplers that declare it}."""
  declared: Dict[str, List[type]] = {}
  for sampler in samplers_lib.available_samplers():
    options_cls = samplers_lib.sampler_options(sampler)
    for name in samplers_lib.option_names(sampler):
      if options_cls not in declared.setdefault(name, []):
        declared[name].append(options_cls)
  return declared


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
  index: str = "scann"
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
      raise ValueError("unknown sampler %r; valid samplers: %s"
                       % (self.sampler, ", ".join(sorted(valid))))
    self._validate_data_source()
    if self.eval_split not in EVAL_SPLITS:
      raise ValueError("unknown eval_split %r (--eval_split); valid: %s"
                       % (self.eval_split, ", ".join(EVAL_SPLITS)))
    if self.num_validation < 0:
      raise ValueError("--num_validation must be >= 0, got %r"
                       % self.num_validation)
    if self.eval_split == "validation" and self.num_validation == 0:
      raise ValueError("--eval_split=validation needs --num_validation >= 1")
    if not _finite(self.ease_lambda) or self.ease_lambda < 0:
      raise ValueError("--ease_lambda must be >= 0 (0: chosen on "
                       "validation), got %r" % self.ease_lambda)
    if self.strategy not in STRATEGIES:
      raise ValueError("unknown strategy %r; valid: %s"
                       % (self.strategy, ", ".join(STRATEGIES)))
    query_towers.uses_history(self.query_tower)  # ValueError if unknown
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
                 "cpu_replicas", "backup_freq", "ps_min_shard_bytes"):
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
      for key, flag in (("num_users", "synthetic_users"),
                        ("num_items", "synthetic_items"),
                        ("interactions_per_user",
                         "synthetic_interactions")):
        value = self.synthetic.get(key)
        if value is not None and (not _finite(value) or value < 1):
          raise ConfigError("--%s must be >= 1, got %r" % (flag, value))

  def _validate_sampler_options(self) -> None:
    """Checks each option with the dataclasses of the samplers declaring it.

    The flags are shared by every sampler, so an option of another sampler
    is checked too (a bad flag is an error whichever sampler runs) and then
    dropped by `create_model`; an option no sampler declares is an error.
    The run's own sampler's options are then built together, for the checks
    that involve several of them (xir's `num_resampled`).
    """
    declared = _declared_options()
    own_names = sampler_option_names(self.sampler)
    own = (samplers_lib.sampler_options(self.sampler)
           if self.sampler not in BASELINES else None)
    for name, value in self.sampler_options.items():
      if name not in declared:
        close = difflib.get_close_matches(name, list(declared), n=1)
        raise ConfigError(
            "unknown sampler option %r%s; --sampler=%s takes: %s"
            % (name, " (did you mean %r?)" % close[0] if close else "",
               self.sampler, ", ".join(sorted(own_names)) or "none"))
      for options_cls in ([own] if name in own_names else declared[name]):
        try:
          samplers_lib.check_option(options_cls, name, value)
        except ValueError as e:
          raise ConfigError("--%s" % e) from None
    if own is not None:
      try:
        samplers_lib.build_options(self.sampler, sampler_options_for(
            self.sampler, self.sampler_options))
      except ValueError as e:
        raise ConfigError("--%s" % e) from None


def check_dataset(config: ExperimentConfig, dataset: data_lib.Dataset,
                  num_replicas: int = 1) -> None:
  """Checks that `dataset` can be trained and evaluated with `config`.

  Run after loading and before building the model: the batch fits the
  training split and splits evenly over the replicas, and the evaluated
  split has users that the model knows (a temporal split may hold out only
  users absent from training).

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
    if query_towers.uses_history(config.query_tower):
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


def split_kwargs(config: ExperimentConfig) -> Dict[str, Any]:
  """Arguments of the split function that `config.num_validation` implies."""
  if config.split == "leave_last_out":
    return {"num_validation": config.num_validation}
  # temporal: the split's own validation fraction, or none.
  return {} if config.num_validation else {"validation_fraction": 0.0}


def load_data(config: ExperimentConfig) -> data_lib.Dataset:
  dataset = data_lib.load_dataset(config.dataset, data_path=config.data_path,
                                  split=config.split, seed=config.seed,
                                  split_kwargs=split_kwargs(config),
                                  duplicates=config.duplicates,
                                  **config.synthetic)
  dropped = dataset.load_report.get("duplicate_rows_dropped", 0)
  if dropped and config.verbose:
    print("%s: dropped %d repeated (user, item) rows (--duplicates=%s)"
          % (dataset.name, dropped, config.duplicates), file=sys.stderr,
          flush=True)
  return dataset


def make_strategy(name: str, cpu_replicas: int = 2
                  ) -> tf.distribute.Strategy:
  """`default`, `mirrored` or `multi_worker`.

  `mirrored` runs over the GPUs, or over `cpu_replicas` logical CPUs when
  there is none; `multi_worker` is `MultiWorkerMirroredStrategy` over the
  cluster of `TF_CONFIG` (validated first, `cluster.ClusterError`). The CPU
  split and the collective set-up must happen before TensorFlow initialises
  its devices: call this first thing in a program.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "multi_worker":
    return _multi_worker_strategy()
  if name == "parameter_server":
    raise ValueError("the parameter_server strategy is built by "
                     "parameter_server.run (its tasks are not all trainers)")
  if name != "mirrored":
    raise ValueError("unknown strategy %r; valid: %s"
                     % (name, ", ".join(STRATEGIES)))
  if tf.config.list_physical_devices("GPU"):
    return _STRATEGIES.setdefault(("mirrored", "gpu"),
                                  tf.distribute.MirroredStrategy())
  cpus = tf.config.list_physical_devices("CPU")
  # Read the configuration, not `list_logical_devices`, which would
  # initialise the runtime and freeze the split.
  configured = tf.config.get_logical_device_configuration(cpus[0])
  if configured is None:
    # A RuntimeError means TensorFlow initialised its devices already: the
    # device count below says whether they fit.
    with contextlib.suppress(RuntimeError):
      tf.config.set_logical_device_configuration(
          cpus[0], [tf.config.LogicalDeviceConfiguration()] * cpu_replicas)
  logical = tf.config.list_logical_devices("CPU")
  if len(logical) < cpu_replicas:
    raise RuntimeError(
        "cannot split the CPU into %d logical devices after TensorFlow "
        "initialised them (%d exist); create the strategy first." %
        (cpu_replicas, len(logical)))
  key = ("mirrored", cpu_replicas)
  if key not in _STRATEGIES:
    # One strategy per device set and process: two MirroredStrategy objects
    # over the same devices hand out clashing collective instance keys.
    _STRATEGIES[key] = tf.distribute.MirroredStrategy(
        ["/cpu:%d" % i for i in range(cpu_replicas)])
  return _STRATEGIES[key]


def _multi_worker_strategy() -> tf.distribute.Strategy:
  """One `MultiWorkerMirroredStrategy` per process, from `TF_CONFIG`."""
  cluster.read_tf_config()  # a clear error before TensorFlow's own parsing
  key = ("multi_worker",)
  if key not in _STRATEGIES:
    # RING collectives run on any device; NCCL would need GPUs on every
    # worker. AUTO picks NCCL for GPU workers and RING otherwise.
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation
        .AUTO)
    _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy(
        communication_options=options)
  return _STRATEGIES[key]


def _cluster_of(strategy: tf.distribute.Strategy) -> Optional[Dict[str, Any]]:
  """The strategy's cluster as a `TF_CONFIG` dict, None for one process."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not getattr(resolver, "task_type", None):
    return None
  return {"cluster": resolver.cluster_spec().as_dict(),
          "task": {"type": resolver.task_type,
                   "index": resolver.task_id or 0}}


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this process writes outputs (always, but in a multi-worker job)."""
  return cluster.is_chief(_cluster_of(strategy))


def num_workers(strategy: tf.distribute.Strategy) -> int:
  config = _cluster_of(strategy)
  return cluster.num_workers(config) if config else 1


def train_dataset(dataset: data_lib.Dataset, config: ExperimentConfig,
                  shuffle: bool = True, start_step: int = 0,
                  epochs: Optional[int] = None) -> tf.data.Dataset:
  """The training pipeline: `epochs` epochs of global batches from `start_step`.

  `epochs` defaults to `config.epochs`; one dataset holds them all (`fit`
  gets `steps_per_epoch=train_steps_per_epoch(...)` and one iterator). Epoch
  `e` visits the rows in a stateless permutation seeded by `(seed, e)` and
  global step `t` takes a fixed slice of it (`tf_dataset.epoch_batches`), so
  a run restored from a backup at step `t` (`start_step`) reads exactly the
  batches an uninterrupted run reads from step `t` on.

  Every worker builds the same pipeline (same seed, same order); tf.distribute
  splits each global batch into one contiguous block per replica (replica
  `r` gets rows `[r B/R, (r+1) B/R)`) and, across workers, keeps only the
  blocks of this worker's replicas (`AutoShardPolicy.DATA`). So every example
  is seen once per epoch across workers, and the gathered global batch is the
  same as under `MirroredStrategy` with as many replicas.

  History towers get next-item examples (`sequences.next_item_dataset`:
  `user_id`, `item_id` = target, `history` `[B, max_history]`).
  """
  epochs = config.epochs if epochs is None else epochs
  if query_towers.uses_history(config.query_tower):
    ds = sequences.next_item_dataset(
        dataset.train, dataset.catalog, config.max_history,
        batch_size=config.batch_size, shuffle=shuffle, seed=config.seed,
        drop_remainder=True, epochs=epochs, start_step=start_step)
    return _shard_by_data(ds).prefetch(tf.data.AUTOTUNE)
  ds = tf_dataset.training_batches(
      dataset.train, config.batch_size, epochs, seed=config.seed,
      shuffle=shuffle, start_step=start_step)
  return _shard_by_data(ds).prefetch(tf.data.AUTOTUNE)


def train_steps_per_epoch(dataset: data_lib.Dataset,
                          config: ExperimentConfig) -> int:
  """`S = n // B`: n training rows (history towers: next-item examples)."""
  if query_towers.uses_history(config.query_tower):
    n = sequences.user_sequences(dataset.train,
                                 dataset.catalog).example_positions.size
  else:
    n = dataset.train.num_rows
  return n // config.batch_size


def backup_position(backup_dir: str, steps_per_epoch: int) -> int:
  """The global step `fit` resumes at from `backup_dir` (0: no backup).

  Reads the counters `BackupAndRestore` saves (`ckpt_saved_epoch` `e`,
  `ckpt_saved_batch` `j`: the last finished step) and continues where Keras
  does: `e S + j + 1` (`(e + 1) S` after an epoch-end save).
  """
  latest = tf.train.latest_checkpoint(os.path.join(backup_dir, "chief"))
  if latest is None:
    return 0
  reader = tf.train.load_checkpoint(latest)
  epoch, batch = (int(reader.get_tensor(
      "%s/.ATTRIBUTES/VARIABLE_VALUE" % name))
                  for name in ("ckpt_saved_epoch", "ckpt_saved_batch"))
  if epoch < 0:
    return 0
  if batch < 0:
    return (epoch + 1) * steps_per_epoch
  return epoch * steps_per_epoch + batch + 1


class ExactResume(tf.keras.callbacks.Callback):
  """Checks a restored backup against the input position; restores metrics.

  Goes right after `BackupAndRestore`. The restored optimizer step must be
  `start_step`, the step the input pipeline was built from (else the backup
  came from other flags). When resuming inside an epoch, `fit` resets the
  metrics at the epoch's start: their partial-epoch state is put back from
  the backup, so the epoch's mean covers all its steps, as without a
  restart. The metrics accumulate on replica 0 only (`TwoTowerModel`), so
  the saved (summed) value goes back to replica 0 and zeros elsewhere:
  bit-identical for any replica count.
  """

  def __init__(self, start_step: int, steps_per_epoch: int,
               backup_dir: str):
    super().__init__()
    self.start_step = start_step
    self.steps_per_epoch = steps_per_epoch
    self.backup_dir = backup_dir
    self._metric_state = None

  def on_train_begin(self, logs=None):
    restored = int(self.model.optimizer.iterations.numpy())
    if self.start_step and restored != self.start_step:
      raise ValueError(
          "the backup in %s is at optimizer step %d, but its epoch/batch "
          "counters give step %d with %d steps per epoch: it was written "
          "with other flags; remove it or use the original flags."
          % (self.backup_dir, restored, self.start_step,
             self.steps_per_epoch))
    if self.start_step % self.steps_per_epoch:
      reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(
          os.path.join(self.backup_dir, "chief")))
      self._metric_state = [(v, _saved_value(reader, m, v))
                            for m in self.model.metrics
                            for v in m.variables]

  def on_epoch_begin(self, epoch, logs=None):
    if self._metric_state is None:
      return
    state, self._metric_state = self._metric_state, None
    strategy = self.model.distribute_strategy
    if strategy.num_replicas_in_sync == 1:
      for variable, value in state:
        variable.assign(value)
      return

    def put_back():
      context = tf.distribute.get_replica_context()
      first = tf.equal(context.replica_id_in_sync_group, 0)
      for variable, value in state:
        variable.assign(tf.where(first, value, tf.zeros_like(value)))

    strategy.run(put_back)


def _saved_value(reader, metric, variable) -> tf.Tensor:
  """`variable` of `metric` as saved in the backup (summed over replicas).

  Read from the file: the restored variable holds the sum split evenly
  across the replicas, which need not add up to it bit for bit.
  """
  key = "model/%s/%s/.ATTRIBUTES/VARIABLE_VALUE" % (
      metric.name, variable.name.split(":")[0].split("/")[-1])
  if reader.has_tensor(key):
    return tf.constant(reader.get_tensor(key), variable.dtype)
  return tf.convert_to_tensor(variable.read_value())


def _shard_by_data(ds: tf.data.Dataset) -> tf.data.Dataset:
  # The rows come from memory, not files: shard the (re)batched elements.
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = (
      tf.data.experimental.AutoShardPolicy.DATA)
  return ds.with_options(options)


def build_model(dataset: data_lib.Dataset, config: ExperimentConfig,
                global_batch_size: int) -> two_tower.TwoTowerModel:
  """Towers, sampler and model (call inside the strategy's scope)."""
  catalog = dataset.catalog
  table = None
  if config.item_features:
    table = features_lib.build_feature_table(catalog.titles, catalog.genres)
  item_model = towers.ItemTower(catalog.num_items, config.embedding_dim,
                                feature_table=table,
                                hidden=config.item_hidden,
                                normalize=config.normalize)
  query_model = query_towers.create_query_tower(
      config.query_tower, dataset.users, item_model, config.embedding_dim,
      hidden=config.query_hidden, normalize=config.normalize,
      max_history=config.max_history,
      share_item_embeddings=config.share_item_embeddings,
      history_user_id=config.history_user_id, num_blocks=config.num_blocks,
      num_heads=config.num_heads, dropout=config.dropout, seed=config.seed)
  counts = np.concatenate([[0], dataset.item_counts]).astype(np.float64)
  context = samplers_lib.SamplerContext(
      item_counts=counts, item_model=item_model,
      global_batch_size=global_batch_size, seed=config.seed,
      # Only the options the sampler declares; those that resample by score
      # (BIR/XIR) take the task's temperature.
      options=sampler_options_for(config.sampler, dict(
          config.sampler_options,
          temperature=config.temperature if config.normalize else None)))
  sampler = samplers_lib.create_sampler(config.sampler, context)
  task_loss = (losses.CMLTripletLoss(margin=sampler.margin)
               if config.sampler in TRIPLET_SAMPLERS else losses.SOFTMAX)
  model = two_tower.TwoTowerModel(
      query_model, item_model, catalog.item_ids, sampler, loss=task_loss,
      temperature=config.temperature if config.normalize else None,
      consumed_items=(consumed_items(dataset) if config.mask_history
                      else None))
  if query_towers.uses_history(config.query_tower):
    model.history_source = functools.partial(
        _evaluation_histories, dataset, config.max_history)
  return model


def consumed_items(dataset: data_lib.Dataset) -> masking.ConsumedItems:
  """The training (user, item) pairs of `dataset` as a membership table.

  Users: `dataset.users`; items: model indices (catalog position + 1).
  Only the training split: validation and test items stay possible
  negatives, as they are unknown at training time.
  """
  train = dataset.train
  item_index = dataset.catalog.index_of(train.item_ids) + 1
  return masking.ConsumedItems.from_pairs(
      dataset.users, train.user_ids, item_index, dataset.catalog.num_items,
      name="consumed_items")


def _evaluation_histories(dataset: data_lib.Dataset, max_history: int,
                          user_ids: np.ndarray, split: str) -> np.ndarray:
  return sequences.evaluation_histories(dataset, user_ids, split=split,
                                        max_history=max_history)


class StepTimer(tf.keras.callbacks.Callback):
  """Wall time per training step (median after the first `skip` steps)."""

  def __init__(self, skip: int = 5):
    super().__init__()
    self.skip = skip
    self.durations: List[float] = []
    self._last = None
    self.start = self.end = None
    self.steps = 0

  def on_train_begin(self, logs=None):
    self.start = time.perf_counter()

  def on_epoch_begin(self, epoch, logs=None):
    self._last = time.perf_counter()

  def on_train_batch_end(self, batch, logs=None):
    now = time.perf_counter()
    self.steps += 1
    if self.steps > self.skip:
      self.durations.append(now - self._last)
    self._last = now

  def on_train_end(self, logs=None):
    self.end = time.perf_counter()

  @property
  def step_seconds(self) -> float:
    return float(np.median(self.durations)) if self.durations else float("nan")


class ResumeReporter(tf.keras.callbacks.Callback):
  """Says whether training starts fresh or resumes (after BackupAndRestore)."""

  def __init__(self):
    super().__init__()
    self.resumed_from_step = 0

  def on_train_begin(self, logs=None):
    self.resumed_from_step = int(self.model.optimizer.iterations.numpy())
    if self.resumed_from_step:
      print("Resumed from backup at step %d." % self.resumed_from_step,
            flush=True)
    else:
      print("Starting training at step 0.", flush=True)


def train(model: two_tower.TwoTowerModel, dataset: data_lib.Dataset,
          config: ExperimentConfig, strategy: tf.distribute.Strategy,
          extra_callbacks: Sequence[tf.keras.callbacks.Callback] = ()
          ) -> Dict[str, Any]:
  """`model.fit` on the training split; returns timing statistics."""
  global_batch = config.batch_size
  if dataset.train.num_rows < global_batch:
    raise ValueError("the training split has %d rows, fewer than one batch "
                     "of %d." % (dataset.train.num_rows, global_batch))
  replicas = strategy.num_replicas_in_sync
  if global_batch % replicas:
    raise ValueError("batch_size %d is not divisible by the %d replicas."
                     % (global_batch, replicas))
  steps_per_epoch = train_steps_per_epoch(dataset, config)
  start_step = (backup_position(config.backup_dir, steps_per_epoch)
                if config.backup_dir else 0)
  if start_step > config.epochs * steps_per_epoch:
    raise ValueError(
        "the backup in %s is at step %d, past the %d steps of --epochs=%d; "
        "remove it or use the original flags."
        % (config.backup_dir, start_step, config.epochs * steps_per_epoch,
           config.epochs))
  train_ds = train_dataset(dataset, config, start_step=start_step)
  model.local_batch_size = global_batch // replicas
  timer = StepTimer()
  resume = ResumeReporter()
  callbacks = []
  if config.backup_dir:
    callbacks.append(tf.keras.callbacks.BackupAndRestore(
        config.backup_dir, save_freq=config.backup_freq,
        delete_checkpoint=True))
    callbacks.append(ExactResume(start_step, steps_per_epoch,
                                 config.backup_dir))
  callbacks += [resume, timer] + list(extra_callbacks)
  with distribute.GatherLog() as gathers:
    history = model.fit(train_ds, epochs=config.epochs,
                        steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                        verbose=config.verbose)
  steps = timer.steps
  seconds = timer.end - timer.start
  return {
      "train_seconds": seconds,
      "steps": steps,
      "resumed_from_step": resume.resumed_from_step,
      "step_seconds": timer.step_seconds,
      "examples_per_second": (steps * global_batch / seconds
                              if seconds > 0 else float("nan")),
      # Bytes of the samplers' and the model's all-gathers per step (the
      # gathered results, R x the local blocks), from the traced step.
      "gathered_bytes_per_step": gathers.bytes_per_step(
          strategy.num_replicas_in_sync // num_workers(strategy)),
      "final_loss_per_example": float(
          history.history["loss_per_example"][-1])
          if history.history.get("loss_per_example") else float("nan"),
  }


def create_model(dataset: data_lib.Dataset, config: ExperimentConfig,
                         strategy: tf.distribute.Strategy):
  """Builds, compiles and builds the variables of a model in `strategy`."""
  tf.keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    model = build_model(dataset, config, config.batch_size)
    model.compile(optimizer=optimizers_lib.make_optimizer(
        config.optimizer, config.learning_rate))
    # Create every variable (sampler state included) before fit, so that
    # BackupAndRestore can restore it: one forward pass, no state update.
    first = next(iter(strategy.experimental_distribute_dataset(
        train_dataset(dataset, config, shuffle=False))))
    strategy.run(lambda x: model.compute_loss(x, training=False),
                 args=(first,))
    model.loss_per_example.reset_state()
    # Keras's BackupAndRestore still warns that the model is "unbuilt" (a
    # tfrs.Model has no `call`); its variables exist, so it does restore
    # them. Marking it built would break `tf.keras` SavedModel export.
  return model


def export_model(model: two_tower.TwoTowerModel, dataset: data_lib.Dataset,
                 path: str, kind: str = "scann", k: int = 100,
                 scann_overrides: Optional[Dict[str, int]] = None,
                 history_length: Optional[int] = None,
                 use_user_id: Optional[bool] = None) -> str:
  """Exports `model`'s query tower and a top-k index over the catalog.

  A history tower (its `uses_history` attribute, or `history_length`
  given) is wrapped in `export.HistoryQueryModel`, so the signature takes
  item id strings, compacted to `history_length` (default: the tower's
  `history_length`, the L it was trained with); `use_user_id` (default: the
  tower's `use_user_id`, else False) adds the `user_id` input.

  Raises:
    ValueError: a history tower without a known history length.
  """
  k = min(k, dataset.catalog.num_items)
  query_model = model.query_model
  if history_length is None:
    history_length = getattr(query_model, "history_length", None)
  if getattr(query_model, "uses_history", False) and not history_length:
    raise ValueError("cannot export a history tower without its history "
                     "length: pass history_length (the training L).")
  if history_length:
    if use_user_id is None:
      use_user_id = bool(getattr(query_model, "use_user_id", False))
    query_model = export_lib.HistoryQueryModel(
        query_model, dataset.catalog.item_ids, int(history_length),
        use_user_id=use_user_id)
  index = export_lib.build_index(query_model, dataset.catalog.item_ids,
                                 model.catalog_embeddings(), kind=kind, k=k,
                                 scann_overrides=scann_overrides)
  metadata = {"index": kind, "dataset": dataset.name,
              "num_items": dataset.catalog.num_items}
  if kind == "scann":
    metadata["scann"] = export_lib.scann_parameters(
        dataset.catalog.num_items, k, scann_overrides)
  return export_lib.export(index, path, dataset.users[:1], metadata=metadata)


def _jsonable(value):
  if isinstance(value, (np.floating, np.integer)):
    return value.item()
  if isinstance(value, tuple):
    return list(value)
  return value


def evaluate_baseline(config: ExperimentConfig, dataset: data_lib.Dataset,
                      sets: protocol.EvaluationSets, progress: bool = True
                      ) -> Dict[str, Any]:
  """Metrics of a model-free baseline in `BASELINES` on `sets`."""
  if config.sampler == "popularity_baseline":
    return protocol.evaluate_popularity(sets, progress=progress)
  return protocol.evaluate_ease(dataset, sets, config.ease_lambda,
                                progress=progress)


class PhaseClock:
  """Wall time per phase of a run and the process's peak memory.

  `lap(name)` charges the time since the previous lap to `name`;
  `report()` gives `{"phase_seconds": {name: s}, "wall_seconds": total,
  "peak_memory_bytes": the peak resident set size so far}`.
  """

  def __init__(self):
    self.start = self.last = time.perf_counter()
    self.phases: Dict[str, float] = {}

  def lap(self, name: str) -> None:
    now = time.perf_counter()
    self.phases[name] = self.phases.get(name, 0.0) + now - self.last
    self.last = now

  def report(self) -> Dict[str, Any]:
    import resource  # pylint: disable=g-import-not-at-top
    # Linux reports ru_maxrss in KiB.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"phase_seconds": dict(self.phases),
            "wall_seconds": self.last - self.start,
            "peak_memory_bytes": int(peak)}


def run(config: ExperimentConfig,
        strategy: Optional[tf.distribute.Strategy] = None,
        dataset: Optional[data_lib.Dataset] = None) -> Dict[str, Any]:
  """Trains (or ranks by popularity), evaluates, exports; returns metrics.

  In a multi-worker job every worker trains; only the chief evaluates and
  writes `metrics.json` and the export (the other workers export to a
  temporary folder that is removed, since a save may need every worker).
  """
  config.validate()
  if config.strategy == "parameter_server":
    from trainers.pipeline import parameter_server  # pylint: disable=g-import-not-at-top
    return parameter_server.run(config, dataset=dataset)
  clock = PhaseClock()
  if strategy is None:
    strategy = make_strategy(config.strategy, config.cpu_replicas)
  if dataset is None:
    dataset = load_data(config)
  check_dataset(config, dataset, strategy.num_replicas_in_sync)
  chief = is_chief(strategy)
  progress = config.verbose > 0
  sets = protocol.evaluation_sets(dataset, config.eval_split)
  clock.lap("data")
  if config.sampler in BASELINES:
    stats = {"train_seconds": 0.0, "examples_per_second": float("nan"),
             "step_seconds": float("nan"), "steps": 0}
    metrics = evaluate_baseline(config, dataset, sets, progress=progress)
    clock.lap("evaluation")
  else:
    model = create_model(dataset, config, strategy)
    clock.lap("build")
    stats = train(model, dataset, config, strategy)
    clock.lap("training")
    stats["optimizer_steps"] = int(model.optimizer.iterations.numpy())
    estimator = getattr(model.sampler, "frequency", None)
    if estimator is not None and hasattr(estimator, "step"):
      stats["estimator_step"] = int(estimator.step.numpy())
    metrics = (protocol.evaluate_model(model, sets, progress=progress)
               if chief else {})
    clock.lap("evaluation")
    if config.export_dir:
      with cluster.chief_path(config.export_dir, chief) as export_dir:
        export_model(model, dataset, export_dir, config.index,
                     config.top_k, config.scann_overrides,
                     history_length=(
                         config.max_history if query_towers.uses_history(
                             config.query_tower) else None))
      clock.lap("export")
  metrics.update(stats)
  metrics.update(clock.report())
  metrics["eval_split"] = config.eval_split
  metrics["dataset_summary"] = dataset.summary()
  metrics["strategy"] = config.strategy
  metrics["num_replicas"] = strategy.num_replicas_in_sync
  metrics["num_workers"] = num_workers(strategy)
  metrics["flags"] = {k: _jsonable(v)
                      for k, v in dataclasses.asdict(config).items()}
  if config.output_dir and chief:
    os.makedirs(config.output_dir, exist_ok=True)
    with open(os.path.join(config.output_dir, "metrics.json"), "w") as f:
      json.dump(metrics, f, indent=2, sort_keys=True, default=_jsonable)
  if chief:
    print("%s: %s" % (config.sampler, protocol.summarize(metrics)),
          file=sys.stderr, flush=True)
    print("wall time %.1f s (%s); peak memory %.2f GiB" % (
        metrics["wall_seconds"], ", ".join(
            "%s %.1f s" % kv for kv in metrics["phase_seconds"].items()),
        metrics["peak_memory_bytes"] / 2.0**30), file=sys.stderr, flush=True)
  else:
    print("%s: trained %d steps; the chief evaluates and writes the outputs."
          % (config.sampler, stats["steps"]), file=sys.stderr, flush=True)
  return metrics
