r"""Program of the parameter-server tests: an in-process cluster, then checks.

  python -m tests.distributed.ps_program --out=DIR \
      --checks=tables,first_loss,samplers,restore,export \
      --samplers=cross_batch,xir

Starts 2 workers and 2 parameter servers as gRPC servers on loopback inside
this process (each worker with `inter_op_parallelism_threads` = workers + 1:
on a 2-core machine fewer threads deadlock the in-process workers), runs the
coordinator here, and writes `DIR/<check>.npz` (arrays and JSON strings)
for `parameter_server_test.py` to assert on:

* `tables`: the shard count and the parameter servers of each id table,
  per tower kind and `ps_shards`;
* `first_loss`: the loss of the first asynchronous step and the one-device
  loss of the same weights on the same batch;
* `samplers`: every sampler's state after an epoch on two workers;
* `restore`: tables, optimizer slots and sampler state after a checkpoint
  of 2 shards is restored into 2, 3 and 1 shards, and the refusal of a
  checkpoint of another model;
* `export`: an export built from the sharded tables, and the top-k the
  gathered copy computes (the test queries the export in a fresh process);
* `seeds`: the stateless seeds of steps run on either worker.
"""

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS

WORKERS = 2
PS = 2
BATCH = 32
OPTIONS = {"memory_size": 80, "num_resampled": 16, "cache_size": 24,
           "num_buckets": 512, "num_negatives": 8, "num_uniform": 16,
           "pool_size": 16, "num_hard_negatives": 4,
           "refresh_steps": 5}
SYNTHETIC = {"num_users": 120, "num_items": 70, "interactions_per_user": 6}
EXPORT_USERS = 6


def define_flags():
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_list("checks", ["tables", "first_loss", "samplers", "restore",
                               "export", "seeds"], "Checks to run.")
  flags.DEFINE_list("samplers", ["cross_batch"],
                    "Samplers of the `samplers` check.")
  flags.mark_flag_as_required("out")


def config(sampler="in_batch_logq", **overrides):
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import exporting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  values = dict(sampler=sampler, strategy="parameter_server",
                batch_size=BATCH, epochs=1, embedding_dim=16, verbose=0,
                query_tower="id", validate_every=0,
                seed=3, ps_min_shard_bytes=64, item_features=False,
                sampler_options=dict(OPTIONS), synthetic=dict(SYNTHETIC))
  values.update(overrides)
  return configuration.ExperimentConfig(**values)


def in_process_cluster():
  """A resolver of 2 workers and 2 parameter servers served by this process."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import cluster  # pylint: disable=g-import-not-at-top
  ports = cluster.free_ports(WORKERS + PS)
  spec = tf.train.ClusterSpec({
      "worker": ["127.0.0.1:%d" % p for p in ports[:WORKERS]],
      "ps": ["127.0.0.1:%d" % p for p in ports[WORKERS:]]})
  threads = tf.compat.v1.ConfigProto(
      inter_op_parallelism_threads=WORKERS + 1)
  servers = [tf.distribute.Server(spec, job_name="worker", task_index=i,
                                  config=threads, protocol="grpc")
             for i in range(WORKERS)]
  servers += [tf.distribute.Server(spec, job_name="ps", task_index=i,
                                   protocol="grpc") for i in range(PS)]
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      spec, rpc_layer="grpc")
  return resolver, servers


def build(resolver, cfg, dataset):
  from trainers.pipeline import parameter_server as ps  # pylint: disable=g-import-not-at-top
  strategy, partitioner = ps.make_strategy(resolver, cfg.ps_shards,
                                           cfg.ps_min_shard_bytes)
  return ps.create_model(dataset, cfg, strategy, partitioner)


def _save(name, **arrays):
  import numpy as np  # pylint: disable=g-import-not-at-top
  np.savez(os.path.join(FLAGS.out, name + ".npz"), **arrays)


def check_tables(resolver):
  """Shards and parameter servers of every table, per tower and shards."""
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import exporting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import sharding  # pylint: disable=g-import-not-at-top
  cases = {
      "id_2": config(ps_shards=0),
      "id_3": config(ps_shards=3),
      "mean_shared_2": config(query_tower="mean", max_history=5),
      "mean_separate_2": config(query_tower="mean", max_history=5,
                                share_item_embeddings=False,
                                history_user_id=True),
  }
  out = {}
  for name, cfg in cases.items():
    dataset = inputs.load_data(cfg)
    model = build(resolver, cfg, dataset)
    tables = {}
    for layer in model.submodules:
      if layer.name in sharding.TABLE_LAYERS:
        table = layer.embeddings
        parts = table.variables if sharding.is_sharded(table) else [table]
        tables[layer.name] = {
            "sharded": sharding.is_sharded(table),
            "shards": sharding.num_shards(table),
            "rows": [int(p.shape[0]) for p in parts],
            "devices": sorted({p.device for p in parts}),
            "total_rows": int(table.shape[0])}
    out[name] = {"tables": tables,
                 "table_shards": sharding.table_shards(model)}
  _save("tables", result=json.dumps(out))


def _copy_to_one_device(model, cfg, dataset):
  """The same model in one process (default strategy), every value copied."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import exporting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import parameter_server as ps  # pylint: disable=g-import-not-at-top
  local = assembly.build_model(dataset, cfg, cfg.batch_size)
  local.compute_loss(ps.first_batch(dataset, cfg), training=False)
  local.loss_per_example.reset_state()
  options = tf.train.CheckpointOptions(
      experimental_io_device="/job:chief/replica:0/task:0/device:CPU:0")
  path = tf.train.Checkpoint(model=model).write(
      os.path.join(tempfile.mkdtemp(), "m"), options=options)
  tf.train.Checkpoint(model=local).read(path).expect_partial(
  ).assert_existing_objects_matched()  # all but the optimizer
  return local


def check_first_loss(resolver):
  """First asynchronous step vs one device, same weights and batch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import exporting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import parameter_server as ps  # pylint: disable=g-import-not-at-top
  out = {}
  # The trainer's default tower too: SASRec on sequence rows (dropout off,
  # so that both sides compute the same function).
  for sampler, tower, extra in (("in_batch_logq", "id", {}),
                                ("cross_batch", "mean", {}),
                                ("in_batch_logq", "sasrec", {"dropout": 0.0})):
    cfg = config(sampler, query_tower=tower, max_history=5, **extra)
    dataset = inputs.load_data(cfg)
    model = build(resolver, cfg, dataset)
    batch = ps.first_batch(dataset, cfg)
    with tf.distribute.get_strategy().scope():
      local = _copy_to_one_device(model, cfg, dataset)
      # Per example as the model counts them (rows; with sequence rows, the
      # valid positions).
      local.loss_per_example.reset_state()
      local.compute_loss(batch, training=True)
      one_device = float(local.loss_per_example.result())
    timer = ps.EpochTimer()
    model.fit(tf.keras.utils.experimental.DatasetCreator(
        lambda _: tf.data.Dataset.from_tensors(batch).repeat()),
              epochs=1, steps_per_epoch=1, verbose=0, callbacks=[timer])
    out["%s/%s" % (sampler, tower)] = {
        "parameter_server": timer.epoch_losses[0],
        "one_device": one_device,
        "steps": int(model.optimizer.iterations.numpy())}
  _save("first_loss", result=json.dumps(out))


def check_samplers(resolver, samplers):
  """Every sampler's state after one epoch of asynchronous steps."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import exporting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import parameter_server as ps  # pylint: disable=g-import-not-at-top
  for sampler in samplers:
    cfg = config(sampler, mask_history=False)
    dataset = inputs.load_data(cfg)
    model = build(resolver, cfg, dataset)
    stats = ps.train(model, dataset, cfg, WORKERS)
    state = {"state/%02d/%s" % (i, v.name): np.asarray(v.numpy())
             for i, v in enumerate(model.sampler.non_trainable_weights)}
    _save("sampler_" + sampler,
          steps=int(model.optimizer.iterations.numpy()),
          steps_per_epoch=inputs.train_steps_per_epoch(dataset, cfg),
          loss=stats["final_loss_per_example"],
          num_items=dataset.catalog.num_items, **state)
    print("sampler %s: %d steps, loss %.3f" % (
        sampler, stats["steps"], stats["final_loss_per_example"]),
          flush=True)


def _values(model):
  """Tables, optimizer variables (full values) and sampler state."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import sharding  # pylint: disable=g-import-not-at-top
  out = {"table/" + k: v for k, v in sharding.table_values(model).items()}
  for i, v in enumerate(model.optimizer.variables):
    out["optimizer/%02d" % i] = np.asarray(tf.convert_to_tensor(v))
  for i, v in enumerate(model.sampler.non_trainable_weights):
    out["sampler/%02d/%s" % (i, v.name.split(":")[0].split("/")[-1])] = (
        v.numpy())
  return out


def check_restore(resolver):
  """A 2-shard checkpoint restored into 2, 3 and 1 shards; a refusal."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import exporting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import parameter_server as ps  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import sharding  # pylint: disable=g-import-not-at-top
  backup = tempfile.mkdtemp(prefix="ps_backup_")
  cfg = config("cross_batch", epochs=2, backup_dir=backup, query_hidden=(8,))
  dataset = inputs.load_data(cfg)
  steps = inputs.train_steps_per_epoch(dataset, cfg)
  model = build(resolver, cfg, dataset)
  manager, done = ps.restore_backup(model, backup, steps, cfg.epochs)
  assert done == 0
  model.fit(tf.keras.utils.experimental.DatasetCreator(
      ps.dataset_fn(dataset, cfg, WORKERS)), epochs=1,
            steps_per_epoch=steps, verbose=0,
            callbacks=[ps.EpochCheckpoint(manager)])
  saved = _values(model)
  saved_shards = sharding.table_shards(model)
  out = {"saved_shards": saved_shards, "restored": {}}
  arrays = {}
  for shards in (2, 3, 1):
    restored = build(resolver, dataclasses.replace(cfg, ps_shards=shards),
                     dataset)
    _, epochs_done = ps.restore_backup(restored, backup, steps, cfg.epochs)
    values = _values(restored)
    out["restored"][str(shards)] = {
        "table_shards": sharding.table_shards(restored),
        "epochs_done": epochs_done,
        "iterations": int(restored.optimizer.iterations.numpy()),
        "keys_match": sorted(values) == sorted(saved),
        "unequal": sorted(k for k in saved
                          if k in values and not np.array_equal(
                              values[k], saved[k]))}
  for k, v in saved.items():
    arrays["saved/" + k] = v
  out["iterations"] = int(model.optimizer.iterations.numpy())
  # A checkpoint of another model (other embedding size) is refused.
  other = build(resolver, dataclasses.replace(cfg, embedding_dim=8), dataset)
  try:
    ps.restore_backup(other, backup, steps, cfg.epochs)
    out["refusal"] = None
  except configuration.ConfigError as e:
    out["refusal"] = str(e)
  # And one of other flags (steps per epoch).
  try:
    ps.restore_backup(model, backup, steps + 1, cfg.epochs)
    out["steps_refusal"] = None
  except configuration.ConfigError as e:
    out["steps_refusal"] = str(e)
  _save("restore", result=json.dumps(out), **arrays)


def check_export(resolver):
  """An export from the sharded tables, and the gathered copy's top-k."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import exporting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import parameter_server as ps  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import sharding  # pylint: disable=g-import-not-at-top
  cfg = config("cross_batch")
  dataset = inputs.load_data(cfg)
  model = build(resolver, cfg, dataset)
  ps.train(model, dataset, cfg, WORKERS)
  gathered = ps.gather_towers(model, dataset, cfg, tempfile.mkdtemp())
  path = os.path.join(FLAGS.out, "export")
  exporting.export_model(gathered, dataset, path, "brute_force", 10)
  users = [str(u) for u in dataset.users[:EXPORT_USERS]]
  queries = gathered.query_embeddings(users)
  scores = queries @ gathered.catalog_embeddings().T
  top = dataset.catalog.item_ids[np.argsort(-scores, axis=1)[:, :10]]
  local_tables = sharding.table_values(gathered.local)
  _save("export", users=np.array(users), top=top.astype(str),
        table_shards=json.dumps(sharding.table_shards(model)),
        # The gathered query tower equals the sharded one, in one table.
        user_table_equal=np.array_equal(
            sharding.table_values(model)["user_embedding"],
            local_tables["user_embedding"]),
        queries_equal=np.array_equal(queries,
                                     model.query_embeddings(users)),
        local_tables=sorted(local_tables),
        local_unsharded=all(not sharding.is_sharded(layer.embeddings)
                            for layer in gathered.local.submodules
                            if layer.name in sharding.TABLE_LAYERS
                            and layer.built))


def check_seeds(resolver):
  """Stateless seeds of steps the coordinator runs on either worker."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import parameter_server as ps  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.samplers import importance_resampling as ir  # pylint: disable=g-import-not-at-top
  strategy, _ = ps.make_strategy(resolver)
  coordinator = tf.distribute.experimental.coordinator.ClusterCoordinator(
      strategy)

  @tf.function
  def seeds():
    # Also from a `tf.cond` branch, a graph of its own.
    inner = tf.cond(tf.constant(True),
                    lambda: ir.step_seed(7, tf.constant(5, tf.int64), 1),
                    lambda: tf.zeros([2], tf.int64))
    index = tf.distribute.coordinator.experimental_get_current_worker_index()
    return tf.stack([ir.step_seed(7, tf.constant(5, tf.int64), 1), inner]), (
        index)

  results = [coordinator.schedule(seeds) for _ in range(24)]
  coordinator.join()
  values = [r.fetch() for r in results]
  _save("seeds", seeds=[v[0] for v in values],
        workers=[int(v[1]) for v in values],
        unfolded=ir.step_seed(7, tf.constant(5, tf.int64), 1).numpy())


def main(argv):
  del argv
  os.makedirs(FLAGS.out, exist_ok=True)
  resolver, servers = in_process_cluster()
  checks = {"tables": lambda: check_tables(resolver),
            "first_loss": lambda: check_first_loss(resolver),
            "samplers": lambda: check_samplers(resolver, FLAGS.samplers),
            "restore": lambda: check_restore(resolver),
            "export": lambda: check_export(resolver),
            "seeds": lambda: check_seeds(resolver)}
  for name in FLAGS.checks:
    checks[name]()
    print("check %s done" % name, flush=True)
  del servers
  # The in-process servers cannot be stopped; exit without their teardown.
  os._exit(0)  # pylint: disable=protected-access


if __name__ == "__main__":
  define_flags()
  app.run(main)
