"""One training run end to end: data, model, `model.fit`, evaluation, export.

Trainers and benchmarks call `run()` (or its pieces) with an
`ExperimentConfig`, so every program trains and measures the same way.
"""

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrs_negsamp import cluster
from tfrs_negsamp import data as data_lib
from tfrs_negsamp import distribute
from tfrs_negsamp import masking
from tfrs_negsamp import optimizers as optimizers_lib
from tfrs_negsamp import protocol
from tfrs_negsamp import samplers as samplers_lib
from tfrs_negsamp.data import sequences
from tfrs_negsamp.models import features as features_lib
from tfrs_negsamp.models import query_towers
from tfrs_negsamp.models import towers
from tfrs_negsamp.models import two_tower
from tfrs_negsamp.serving import export as export_lib

BASELINES = ("popularity_baseline", "ease_baseline")
EVAL_SPLITS = ("test", "validation")
STRATEGIES = ("default", "mirrored", "multi_worker")
_STRATEGIES: Dict[Any, tf.distribute.Strategy] = {}


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
  output_dir: Optional[str] = None
  export_dir: Optional[str] = None
  index: str = "scann"
  top_k: int = 100
  # ScaNN overrides (keys of export.SCANN_PARAMETERS; missing/0: derived).
  scann_overrides: Dict[str, int] = dataclasses.field(default_factory=dict)
  backup_dir: Optional[str] = None
  backup_freq: int = 50
  verbose: int = 1
  sampler_options: Dict[str, Any] = dataclasses.field(default_factory=dict)
  # ease_baseline: the L2 weight lambda (0: chosen on the validation split
  # from `ease.lambda_grid`).
  ease_lambda: float = 0.0
  synthetic: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def validate(self) -> None:
    valid = samplers_lib.available_samplers() + list(BASELINES)
    if self.sampler not in valid:
      raise ValueError("unknown sampler %r; valid samplers: %s"
                       % (self.sampler, ", ".join(sorted(valid))))
    if self.eval_split not in EVAL_SPLITS:
      raise ValueError("unknown eval_split %r; valid: %s"
                       % (self.eval_split, ", ".join(EVAL_SPLITS)))
    if self.num_validation < 0:
      raise ValueError("num_validation must be >= 0, got %r."
                       % self.num_validation)
    if self.eval_split == "validation" and self.num_validation == 0:
      raise ValueError("eval_split=validation needs num_validation >= 1.")
    if self.ease_lambda < 0:
      raise ValueError("ease_lambda must be >= 0 (0: chosen on validation)"
                       ", got %r." % self.ease_lambda)
    if self.strategy not in STRATEGIES:
      raise ValueError("unknown strategy %r; valid: %s"
                       % (self.strategy, ", ".join(STRATEGIES)))
    query_towers.uses_history(self.query_tower)  # ValueError if unknown
    for name in ("max_history", "num_blocks", "num_heads"):
      if getattr(self, name) < 1:
        raise ValueError("%s must be >= 1, got %r."
                         % (name, getattr(self, name)))
    if not 0 <= self.dropout < 1:
      raise ValueError("dropout must be in [0, 1), got %r." % self.dropout)
    for name in ("batch_size", "epochs", "embedding_dim", "top_k",
                 "cpu_replicas", "backup_freq"):
      if getattr(self, name) < 1:
        raise ValueError("%s must be >= 1, got %r."
                         % (name, getattr(self, name)))
    if self.learning_rate <= 0 or self.temperature <= 0:
      raise ValueError("learning_rate and temperature must be > 0.")
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


def split_kwargs(config: ExperimentConfig) -> Dict[str, Any]:
  """Arguments of the split function that `config.num_validation` implies."""
  if config.split == "leave_last_out":
    return {"num_validation": config.num_validation}
  # temporal: the split's own validation fraction, or none.
  return {} if config.num_validation else {"validation_fraction": 0.0}


def load_data(config: ExperimentConfig) -> data_lib.Dataset:
  return data_lib.load_dataset(config.dataset, data_path=config.data_path,
                               split=config.split, seed=config.seed,
                               split_kwargs=split_kwargs(config),
                               **config.synthetic)


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
                  shuffle: bool = True) -> tf.data.Dataset:
  """The training pipeline: shuffled (seeded), global batches.

  Every worker builds the same pipeline (same seed, same order); tf.distribute
  splits each global batch into one contiguous block per replica (replica
  `r` gets rows `[r B/R, (r+1) B/R)`) and, across workers, keeps only the
  blocks of this worker's replicas (`AutoShardPolicy.DATA`). So every example
  is seen once per epoch across workers, and the gathered global batch is the
  same as under `MirroredStrategy` with as many replicas.

  History towers get next-item examples (`sequences.next_item_dataset`:
  `user_id`, `item_id` = target, `history` `[B, max_history]`).
  """
  if query_towers.uses_history(config.query_tower):
    ds = sequences.next_item_dataset(
        dataset.train, dataset.catalog, config.max_history,
        batch_size=config.batch_size, shuffle=shuffle, seed=config.seed,
        drop_remainder=True)
    return _shard_by_data(ds).prefetch(tf.data.AUTOTUNE)
  ds = data_lib.to_tf_dataset(
      dataset.train, batch_size=config.batch_size, shuffle=shuffle,
      seed=config.seed, drop_remainder=True)
  return _shard_by_data(ds).prefetch(tf.data.AUTOTUNE)


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
      num_heads=config.num_heads, dropout=config.dropout)
  counts = np.concatenate([[0], dataset.item_counts]).astype(np.float64)
  context = samplers_lib.SamplerContext(
      item_counts=counts, item_model=item_model,
      global_batch_size=global_batch_size, seed=config.seed,
      # Samplers that resample by score (BIR/XIR) need the task's scale.
      options=dict(config.sampler_options,
                   temperature=config.temperature if config.normalize
                   else None))
  sampler = samplers_lib.create_sampler(config.sampler, context)
  model = two_tower.TwoTowerModel(
      query_model, item_model, catalog.item_ids, sampler,
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
  train_ds = train_dataset(dataset, config)
  model.local_batch_size = global_batch // replicas
  timer = StepTimer()
  resume = ResumeReporter()
  callbacks = []
  if config.backup_dir:
    callbacks.append(tf.keras.callbacks.BackupAndRestore(
        config.backup_dir, save_freq=config.backup_freq,
        delete_checkpoint=True))
  callbacks += [resume, timer] + list(extra_callbacks)
  with distribute.GatherLog() as gathers:
    history = model.fit(train_ds, epochs=config.epochs, callbacks=callbacks,
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


def run(config: ExperimentConfig,
        strategy: Optional[tf.distribute.Strategy] = None,
        dataset: Optional[data_lib.Dataset] = None) -> Dict[str, Any]:
  """Trains (or ranks by popularity), evaluates, exports; returns metrics.

  In a multi-worker job every worker trains; only the chief evaluates and
  writes `metrics.json` and the export (the other workers export to a
  temporary folder that is removed, since a save may need every worker).
  """
  config.validate()
  if strategy is None:
    strategy = make_strategy(config.strategy, config.cpu_replicas)
  if dataset is None:
    dataset = load_data(config)
  chief = is_chief(strategy)
  progress = config.verbose > 0
  sets = protocol.evaluation_sets(dataset, config.eval_split)
  if config.sampler in BASELINES:
    stats = {"train_seconds": 0.0, "examples_per_second": float("nan"),
             "step_seconds": float("nan"), "steps": 0}
    metrics = evaluate_baseline(config, dataset, sets, progress=progress)
  else:
    model = create_model(dataset, config, strategy)
    stats = train(model, dataset, config, strategy)
    stats["optimizer_steps"] = int(model.optimizer.iterations.numpy())
    estimator = getattr(model.sampler, "frequency", None)
    if estimator is not None and hasattr(estimator, "step"):
      stats["estimator_step"] = int(estimator.step.numpy())
    metrics = (protocol.evaluate_model(model, sets, progress=progress)
               if chief else {})
    if config.export_dir:
      with cluster.chief_path(config.export_dir, chief) as export_dir:
        export_model(model, dataset, export_dir, config.index,
                     config.top_k, config.scann_overrides,
                     history_length=(
                         config.max_history if query_towers.uses_history(
                             config.query_tower) else None))
  metrics.update(stats)
  metrics["eval_split"] = config.eval_split
  metrics["dataset_summary"] = dataset.summary()
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
  else:
    print("%s: trained %d steps; the chief evaluates and writes the outputs."
          % (config.sampler, stats["steps"]), file=sys.stderr, flush=True)
  return metrics
