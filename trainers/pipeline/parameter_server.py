"""`--strategy=parameter_server`: asynchronous training with sharded tables.

`tf.distribute.ParameterServerStrategy` over a cluster of one `chief` (the
coordinator), `worker`s and parameter servers (`ps`), from `TF_CONFIG`
(`cluster.parse_tf_config(..., parameter_server=True)`):

* every task runs the same program (`python -m trainers.train
  --strategy=parameter_server ...`); workers and parameter servers start a
  `tf.distribute.Server` and serve until they are stopped (`serve`);
* the chief builds the model in the strategy's scope: the towers' id tables
  are `ShardedVariable`s, `--ps_shards` shards each (default: one per
  parameter server, no shard under `--ps_min_shard_bytes`;
  `sharding.TablePartitioner`), every other variable (dense layers, sampler
  state, optimizer slots of unsharded variables) lives whole on one
  parameter server; the optimizer's slots of a table are sharded like it;
* `model.fit` takes a dataset function (`DatasetCreator`) that every worker
  runs: it builds the resumable epoch order of `inputs.train_dataset`
  and keeps batches `w, w + W, w + 2W, ...` for worker `w` of `W`
  (`tf.distribute.coordinator.experimental_get_current_worker_index`),
  repeated, so the workers read disjoint shards of every epoch. A step is
  one worker's batch of `--batch_size` rows, applied to the parameter
  servers as soon as it is done (no global batch, no synchronisation
  between workers). An epoch is `n // batch_size` steps, whichever worker
  runs them;
* a worker that dies is replaced (the launcher or the cluster manager
  restarts it with the same address) and the coordinator re-runs the steps
  it lost; a parameter server or the chief that dies ends the job, which
  resumes from the last epoch's checkpoint in `--backup_dir` (tables,
  optimizer slots and sampler state, restorable into any shard count);
* after training the chief gathers the query tower into one unsharded
  copy and the catalog's item embeddings (`gather_towers`), evaluates and
  exports them exactly as a one-process run does: serving does not know
  how training was sharded.

What changes for the samplers (asynchronous steps on one worker's batch):
the in-batch columns are the `B` candidates of one worker's batch; state
(the CBNS queue, XIR's cache and occurrence counts, the frequency
estimator, step counters) lives on the parameter servers and every worker's
step reads it, then writes it, as it runs, so workers' writes interleave.
Counters advance by atomic increments (each worker's step counted once);
array writes of two concurrent steps can overwrite each other; the state
stays well-formed (docs/guides/distributed.md, parameter servers).
"""

import dataclasses
import hashlib
import json
import logging
import os
import resource
import sys
import tempfile
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from trainers.pipeline import cluster
from trainers.pipeline import assembly
from trainers.pipeline import configuration
from trainers.pipeline import defaults
from trainers.pipeline import experiment
from trainers.pipeline import exporting
from trainers.pipeline import inputs
from tfrs_negsamp import data as data_lib
from tfrs_negsamp import optimizers as optimizers_lib
from tfrs_negsamp import protocol
from tfrs_negsamp import sharding
from tfrs_negsamp.models import query_towers
from tfrs_negsamp.models import two_tower

STRATEGY = "parameter_server"
# Where the checkpoints go inside --backup_dir.
BACKUP_SUBDIR = "parameter_server"
# Per-process peak memory reports inside --output_dir.
MEMORY_SUBDIR = "process_memory"
_REPORT_SECONDS = 0.5


def peak_memory_bytes() -> int:
  """This process's peak resident set size (Linux reports KiB)."""
  return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def task_of(tf_config: Dict[str, Any]) -> Tuple[str, int]:
  """`(job, index)` of this process in a validated `TF_CONFIG`."""
  task = tf_config["task"]
  return task["type"], int(task.get("index", 0))


def check_config(config: configuration.ExperimentConfig) -> None:
  """The settings that `--strategy=parameter_server` cannot run; ConfigError.

  Baselines train nothing (they run in one process).
  """
  if config.sampler in configuration.BASELINES:
    raise configuration.ConfigError(
        "--sampler=%s trains no model: run it without "
        "--strategy=parameter_server" % config.sampler)


def cluster_key(cluster_spec: Dict[str, Any]) -> str:
  """A name of a cluster (its jobs and addresses), for the memory reports."""
  text = json.dumps({job: list(tasks) for job, tasks in sorted(
      cluster_spec.items())}, sort_keys=True)
  return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def write_memory_report(report_dir: str, job: str, index: int,
                        cluster: str) -> None:
  """Writes `{job, index, pid, cluster, peak_memory_bytes}` to `job-i.json`.

  A task replaced in the same cluster (same `cluster` key) keeps the larger
  of its predecessor's peak and its own; a report of another cluster (an
  earlier job writing to the same folder) is replaced. The file is
  replaced atomically (written aside, then renamed).
  """
  path = os.path.join(report_dir, "%s-%d.json" % (job, index))
  peak = peak_memory_bytes()
  if tf.io.gfile.exists(path):
    try:
      with tf.io.gfile.GFile(path) as f:
        report = json.load(f)
      if report.get("cluster") == cluster:
        peak = max(peak, int(report["peak_memory_bytes"]))
    except (ValueError, KeyError):
      pass  # a torn or foreign report: this task's own peak stands
  tf.io.gfile.makedirs(report_dir)
  tmp = "%s.tmp-%d" % (path, os.getpid())
  with tf.io.gfile.GFile(tmp, "w") as f:
    json.dump({"job": job, "index": index, "pid": os.getpid(),
               "cluster": cluster, "peak_memory_bytes": peak}, f)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def read_memory_reports(report_dir: Optional[str],
                        cluster: str) -> Dict[str, int]:
  """`{"ps/0": bytes, "worker/1": bytes, ...}` of the tasks of `cluster`."""
  out = {}
  if not report_dir or not tf.io.gfile.isdir(report_dir):
    return out
  for name in sorted(tf.io.gfile.listdir(report_dir)):
    if not name.endswith(".json"):
      continue
    with tf.io.gfile.GFile(os.path.join(report_dir, name)) as f:
      report = json.load(f)
    if report.get("cluster") == cluster:
      out["%s/%d" % (report["job"], report["index"])] = int(
          report["peak_memory_bytes"])
  return out


def serve(tf_config: Dict[str, Any], output_dir: Optional[str] = None,
          max_seconds: Optional[float] = None) -> None:
  """Runs this worker or parameter server until the process is stopped.

  Starts the task's `tf.distribute.Server` and, with `output_dir`, writes
  the process's peak memory to `output_dir/process_memory/<job>-<i>.json`
  whenever it grows.

  Args:
    tf_config: the validated `TF_CONFIG` of a `worker` or `ps` task.
    output_dir: the run's output folder (None: no report).
    max_seconds: stop after this long (tests); None: serve forever.
  """
  job, index = task_of(tf_config)
  resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  server = tf.distribute.Server(
      resolver.cluster_spec(), job_name=job, task_index=index,
      protocol=resolver.rpc_layer or "grpc", start=True)
  print("%s %d: serving at %s" % (job, index, server.target), flush=True)
  report_dir = (os.path.join(output_dir, MEMORY_SUBDIR) if output_dir
                else None)
  key = cluster_key(tf_config["cluster"])
  reported = -1
  start = time.monotonic()
  while max_seconds is None or time.monotonic() - start < max_seconds:
    peak = peak_memory_bytes()
    if report_dir and peak > reported:
      write_memory_report(report_dir, job, index, key)
      reported = peak
    time.sleep(_REPORT_SECONDS)


def make_strategy(resolver: tf.distribute.cluster_resolver.ClusterResolver,
                  ps_shards: int = 0,
                  min_shard_bytes: int = sharding.DEFAULT_MIN_SHARD_BYTES
                  ) -> Tuple[tf.distribute.Strategy,
                             sharding.TablePartitioner]:
  """The strategy over `resolver`'s cluster and its table partitioner.

  Args:
    resolver: the cluster (chief, workers, ps).
    ps_shards: shards per table; 0: one per parameter server.
    min_shard_bytes: no shard smaller than this (`TablePartitioner`).
  """
  partitioner = sharding.TablePartitioner(
      ps_shards or job_size(resolver, "ps"), min_shard_bytes)
  strategy = tf.distribute.ParameterServerStrategy(
      resolver, variable_partitioner=partitioner)
  return strategy, partitioner


def job_size(resolver: tf.distribute.cluster_resolver.ClusterResolver,
             job: str) -> int:
  """The tasks of `job` ("worker", "ps") in `resolver`'s cluster."""
  return len(resolver.cluster_spec().as_dict().get(job, []))


def first_batch(dataset: data_lib.Dataset,
                config: configuration.ExperimentConfig) -> Dict[str, tf.Tensor]:
  """The first training batch in file order (creates the variables)."""
  return next(iter(inputs.train_dataset(dataset, config, shuffle=False,
                                            epochs=1)))


def create_model(dataset: data_lib.Dataset,
                 config: configuration.ExperimentConfig,
                 strategy: tf.distribute.Strategy,
                 partitioner: sharding.TablePartitioner
                 ) -> two_tower.TwoTowerModel:
  """Builds and compiles the model on the parameter servers, every variable.

  Tracing one forward pass (no state update) creates the towers' tables
  (sharded), the dense layers and the sampler's state, each initialised on
  its parameter server; nothing runs on the coordinator, which would read
  the tables there. The optimizer's slots are created too, so that a
  checkpoint restores into them (`sharding.restore_sharded`).
  """
  tf.keras.utils.set_random_seed(config.seed)
  with strategy.scope(), partitioner.scope():
    model = assembly.build_model(dataset, config, config.batch_size)
    model.compile(optimizer=optimizers_lib.make_optimizer(
        config.optimizer,
        defaults.learning_rate(config.query_tower, config.learning_rate)))
    tf.function(lambda x: model.compute_loss(x, training=False)
                ).get_concrete_function(first_batch(dataset, config))
    with sharding.slots_on_their_devices(model.optimizer):
      model.optimizer.build(model.trainable_variables)
  model.local_batch_size = config.batch_size
  return model


def dataset_fn(dataset: data_lib.Dataset,
               config: configuration.ExperimentConfig, workers: int,
               start_step: int = 0):
  """The `DatasetCreator` function: worker `w` reads batches `w + k W`.

  Every worker builds the resumable order of `inputs.train_dataset`
  (epoch `e` shuffled by `(seed, e)`) from `start_step`, keeps every
  `W`-th batch from its own index on, and repeats that shard forever: the
  coordinator decides how many steps run.
  """

  def fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
    del input_context  # one input pipeline per worker, no replicas split
    worker = tf.distribute.coordinator.experimental_get_current_worker_index()
    ds = inputs.train_dataset(dataset, config, start_step=start_step)
    return ds.shard(workers, worker).repeat()

  return fn


class EpochTimer(tf.keras.callbacks.Callback):
  """Wall time of `fit` and each epoch's mean loss per example.

  Epoch-level hooks only (`ParameterServerStrategy` allows no batch
  hooks). The loss is read from the model's `loss_per_example` metric at
  the epoch's end, when every step of the epoch has run: the mean over all
  its steps (Keras's own epoch logs hold the last finished step's values
  under this strategy, as its warning says).
  """

  def __init__(self):
    super().__init__()
    self.start = self.end = self._epoch_start = None
    self.epoch_losses = []
    self.epoch_seconds = []

  def on_train_begin(self, logs=None):
    self.start = time.perf_counter()

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.epoch_seconds.append(time.perf_counter() - self._epoch_start)
    self.epoch_losses.append(float(self.model.loss_per_example.result()))

  def on_train_end(self, logs=None):
    self.end = time.perf_counter()


class _DropMessage(logging.Filter):
  """Drops the log records that start with `prefix`."""

  def __init__(self, prefix: str):
    super().__init__()
    self.prefix = prefix

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.getMessage()).startswith(self.prefix)


# Keras's warning at every epoch end under ParameterServerStrategy when a
# train step returns more keys than the model's metrics (a tfrs.Model
# returns its losses too): `EpochTimer` reads the exact epoch mean instead.
_PSS_METRICS_WARNING = "Could not get Model metric results"


class EpochCheckpoint(tf.keras.callbacks.Callback):
  """Saves model, optimizer and sampler state after every epoch.

  `ParameterServerStrategy`'s `fit` waits for every scheduled step at the
  end of an epoch, so the checkpoint is a consistent state. Each parameter
  server writes its own variables (a sharded save: `--backup_dir` must be
  on storage every task can write). The checkpoint number is the number of
  finished epochs.
  """

  def __init__(self, manager: tf.train.CheckpointManager):
    super().__init__()
    self.manager = manager

  def on_epoch_end(self, epoch, logs=None):
    self.manager.save(checkpoint_number=epoch + 1)


def backup_checkpoint(model: two_tower.TwoTowerModel,
                      steps_per_epoch: tf.Variable) -> tf.train.Checkpoint:
  return tf.train.Checkpoint(model=model, optimizer=model.optimizer,
                             steps_per_epoch=steps_per_epoch)


def restore_backup(model: two_tower.TwoTowerModel, backup_dir: str,
                   steps_per_epoch: int, epochs: int
                   ) -> Tuple[tf.train.CheckpointManager, int]:
  """The backup's manager and the number of epochs it holds (0: none).

  Restores the latest checkpoint (`sharding.restore_sharded`: any shard
  count) after checking that it was written with as many steps per epoch.

  Raises:
    configuration.ConfigError: a backup of other flags, or past `epochs`.
  """
  with model.distribute_strategy.scope():
    steps = tf.Variable(steps_per_epoch, dtype=tf.int64, trainable=False,
                        name="steps_per_epoch")
  checkpoint = backup_checkpoint(model, steps)
  folder = os.path.join(backup_dir, BACKUP_SUBDIR)
  manager = tf.train.CheckpointManager(checkpoint, folder, max_to_keep=2)
  latest = manager.latest_checkpoint
  if latest is None:
    return manager, 0
  saved = int(tf.train.load_checkpoint(latest).get_tensor(
      "steps_per_epoch/.ATTRIBUTES/VARIABLE_VALUE"))
  done = int(latest.rsplit("-", 1)[1])
  if saved != steps_per_epoch:
    raise configuration.ConfigError(
        "the backup in %s was written with %d steps per epoch, these flags "
        "give %d: remove it or use the original flags (--batch_size, the "
        "data)" % (folder, saved, steps_per_epoch))
  if done > epochs:
    raise configuration.ConfigError(
        "the backup in %s holds %d epochs, past --epochs=%d: remove it or "
        "use the original flags" % (folder, done, epochs))
  try:
    sharding.restore_sharded(checkpoint, latest, model, model.optimizer)
  except sharding.RestoreError as e:
    raise configuration.ConfigError(str(e)) from None
  return manager, done


def train(model: two_tower.TwoTowerModel, dataset: data_lib.Dataset,
          config: configuration.ExperimentConfig, workers: int,
          extra_callbacks=()) -> Dict[str, Any]:
  """`model.fit` over the `workers`; resumes from `config.backup_dir`."""
  steps_per_epoch = inputs.train_steps_per_epoch(dataset, config)
  manager, done = None, 0
  if config.backup_dir:
    manager, done = restore_backup(model, config.backup_dir,
                                   steps_per_epoch, config.epochs)
    if done:
      print("Resumed from backup after epoch %d (optimizer step %d)."
            % (done, int(model.optimizer.iterations.numpy())), flush=True)
  if not done:
    print("Starting training at step 0.", flush=True)
  first_step = int(model.optimizer.iterations.numpy())
  timer = EpochTimer()
  callbacks = [timer] + list(extra_callbacks)
  if manager is not None:
    callbacks.append(EpochCheckpoint(manager))
  creator = tf.keras.utils.experimental.DatasetCreator(dataset_fn(
      dataset, config, workers, start_step=done * steps_per_epoch))
  quiet = _DropMessage(_PSS_METRICS_WARNING)
  logging.getLogger("tensorflow").addFilter(quiet)
  try:
    model.fit(creator, epochs=config.epochs, initial_epoch=done,
              steps_per_epoch=steps_per_epoch, callbacks=callbacks,
              verbose=2 if config.verbose else 0)
  finally:
    logging.getLogger("tensorflow").removeFilter(quiet)
  steps = int(model.optimizer.iterations.numpy()) - first_step
  seconds = (timer.end - timer.start) if timer.start is not None else 0.0
  if manager is not None:  # finished: as Keras's BackupAndRestore
    tf.io.gfile.rmtree(manager.directory)
  losses = timer.epoch_losses or [float("nan")]
  # Steady state: the epochs after the first (which traces the step on
  # every worker), when there are any.
  later = timer.epoch_seconds[1:]
  return {
      "epoch_seconds": timer.epoch_seconds,
      "steady_examples_per_second": (
          steps_per_epoch * config.batch_size / float(np.median(later))
          if later else float("nan")),
      "train_seconds": seconds,
      "steps": steps,
      "resumed_from_epoch": done,
      "examples_per_second": (steps * config.batch_size / seconds
                              if seconds > 0 else float("nan")),
      "step_seconds": seconds / steps if steps else float("nan"),
      "final_loss_per_example": float(losses[-1]),
  }


class GatheredModel:
  """What evaluation and export read of a trained model, on the chief.

  `query_model`: the query tower as one-process variables (its tables are
  ordinary variables again); `catalog_embeddings()`: the item tower's
  `[N, d]` embeddings of the catalog, computed once from the sharded
  tables. The item tower itself is not copied: its table and the
  embeddings are the same size, and the chief holds the embeddings only.
  The interface of `TwoTowerModel` that `protocol.evaluate_model` and
  `exporting.export_model` use.
  """

  def __init__(self, local: two_tower.TwoTowerModel,
               catalog_embeddings: np.ndarray):
    self.local = local
    self.query_model = local.query_model
    self.history_source = local.history_source
    self._catalog_embeddings = catalog_embeddings

  @property
  def uses_history(self) -> bool:
    return self.local.uses_history

  def query_embeddings(self, user_ids, batch_size: int = 4096,
                       histories=None, split: str = "test") -> np.ndarray:
    return self.local.query_embeddings(user_ids, batch_size=batch_size,
                                       histories=histories, split=split)

  def catalog_embeddings(self) -> np.ndarray:
    return self._catalog_embeddings


def catalog_embeddings(model: two_tower.TwoTowerModel,
                       batch_size: int = 4096, wave: int = 16) -> np.ndarray:
  """The item tower's embeddings `[N, d]` of the catalog, computed on workers.

  One scheduled function per `batch_size` items: each worker reads only
  those rows of the sharded tables (the coordinator calling the tower
  itself would fetch whole shards). Batches are scheduled `wave` at a time
  and copied into the result as they are fetched, so the chief holds the
  `[N, d]` result and at most one wave besides.
  """
  strategy = model.distribute_strategy
  coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(
      strategy)
  num_items = int(model.item_lookup.vocabulary_size()) - 1

  @tf.function
  def embed(start):
    index = tf.range(start + 1, tf.minimum(start + batch_size, num_items) + 1,
                     dtype=tf.int64)
    return strategy.run(model.item_model, args=(index,))

  out = None
  starts = list(range(0, num_items, batch_size))
  for first in range(0, len(starts), wave):
    scheduled = [(s, coordinator.schedule(
        embed, args=(tf.constant(s, tf.int64),)))
                 for s in starts[first:first + wave]]
    for start, remote in scheduled:
      rows = remote.fetch()
      if out is None:
        out = np.empty((num_items, rows.shape[1]), rows.dtype)
      out[start:start + rows.shape[0]] = rows
    del scheduled
  return out


def gather_towers(model: two_tower.TwoTowerModel,
                  dataset: data_lib.Dataset,
                  config: configuration.ExperimentConfig,
                  scratch_dir: str) -> GatheredModel:
  """The trained towers, gathered on the chief (`GatheredModel`).

  The query tower is written to a checkpoint through the chief
  (`experimental_io_device`: no file on the parameter servers) and read
  into the same tower built outside the strategy, so its tables are
  ordinary variables. The catalog's embeddings are computed by the item
  tower on the workers (`catalog_embeddings`).

  Args:
    model: the trained model (its variables on the parameter servers).
    dataset: the data it was built from.
    config: its configuration.
    scratch_dir: a folder on the chief, for the checkpoint (removed).
  """
  copy_config = dataclasses.replace(
      config, sampler="in_batch", mask_history=False, sampler_options={},
      strategy="default")
  with tf.distribute.get_strategy().scope():
    local = assembly.build_model(dataset, copy_config,
                                   copy_config.batch_size)
  local.query(first_batch(dataset, config))  # creates its variables
  coordinator = "/job:chief/replica:0/task:0/device:CPU:0"
  options = tf.train.CheckpointOptions(experimental_io_device=coordinator)
  tf.io.gfile.makedirs(scratch_dir)
  try:
    path = tf.train.Checkpoint(query=model.query_model).write(
        os.path.join(scratch_dir, "query"), options=options)
    tf.train.Checkpoint(query=local.query_model).read(path).assert_consumed()
  finally:
    tf.io.gfile.rmtree(scratch_dir)
  return GatheredModel(local, catalog_embeddings(model))


def run(config: configuration.ExperimentConfig,
        tf_config: Optional[Dict[str, Any]] = None,
        resolver=None,
        dataset: Optional[data_lib.Dataset] = None) -> Optional[Dict[str, Any]]:
  """The program of every task of a parameter-server job.

  Workers and parameter servers serve (`serve`, until stopped); the chief
  trains, evaluates, exports and writes `metrics.json` (returned).

  Args:
    config: the run's configuration (`strategy="parameter_server"`).
    tf_config: the cluster (default: `TF_CONFIG`, validated).
    resolver: a cluster resolver for the chief (default: from `TF_CONFIG`;
      tests pass an in-process cluster's).
    dataset: the loaded data (default: loaded from `config`).
  """
  config.validate()
  check_config(config)
  if resolver is None:
    if tf_config is None:
      tf_config = cluster.read_tf_config(parameter_server=True)
    job, _ = task_of(tf_config)
    if job != "chief":
      serve(tf_config, config.output_dir)
      return None
    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
  clock = experiment.PhaseClock()
  strategy, partitioner = make_strategy(
      resolver, config.ps_shards, config.ps_min_shard_bytes)
  if dataset is None:
    dataset = inputs.load_data(config)
  configuration.check_dataset(config, dataset, num_replicas=1)
  progress = config.verbose > 0
  sets = protocol.evaluation_sets(dataset, config.eval_split)
  clock.lap("data")
  model = create_model(dataset, config, strategy, partitioner)
  clock.lap("build")
  workers, ps = job_size(resolver, "worker"), job_size(resolver, "ps")
  stats = train(model, dataset, config, workers)
  clock.lap("training")
  stats["optimizer_steps"] = int(model.optimizer.iterations.numpy())
  tables = sharding.table_shards(model)
  local = gather_towers(model, dataset, config,
                        tempfile.mkdtemp(prefix="tfrs_negsamp_gather_"))
  clock.lap("gather")
  metrics = protocol.evaluate_model(local, sets, progress=progress)
  clock.lap("evaluation")
  if config.export_dir:
    exporting.export_model(
        local, dataset, config.export_dir, config.index, config.top_k,
        config.scann_overrides,
        history_length=(config.max_history if query_towers.uses_history(
            config.query_tower) else None))
    clock.lap("export")
  metrics.update(stats)
  metrics.update(clock.report())
  memory = {"chief/0": metrics["peak_memory_bytes"]}
  if config.output_dir:
    memory.update(read_memory_reports(
        os.path.join(config.output_dir, MEMORY_SUBDIR),
        cluster_key(resolver.cluster_spec().as_dict())))
  metrics.update({
      "strategy": STRATEGY,
      "num_ps": ps,
      "num_workers": workers,
      "num_replicas": workers,
      "table_shards": tables,
      "peak_memory_bytes_per_process": memory,
      "eval_split": config.eval_split,
      "dataset_summary": dataset.summary(),
      "flags": {k: experiment._jsonable(v)  # pylint: disable=protected-access
                for k, v in dataclasses.asdict(config).items()},
  })
  if config.output_dir:
    os.makedirs(config.output_dir, exist_ok=True)
    with open(os.path.join(config.output_dir, "metrics.json"), "w") as f:
      json.dump(metrics, f, indent=2, sort_keys=True,
                default=experiment._jsonable)  # pylint: disable=protected-access
  print("%s: %s" % (config.sampler, protocol.summarize(metrics)),
        file=sys.stderr, flush=True)
  print("parameter servers %d, workers %d, table shards %s; peak memory %s"
        % (metrics["num_ps"], metrics["num_workers"], tables, ", ".join(
            "%s %.2f GiB" % (k, v / 2.0**30) for k, v in memory.items())),
        file=sys.stderr, flush=True)
  return metrics

