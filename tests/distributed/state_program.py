r"""Worker program of the multi-worker tests: train, then dump the state.

  python -m tests.distributed.state_program --strategy=multi_worker \
      --samplers=cross_batch,xir --out=DIR

Run once per worker (by `trainers.launch_local --program=...`) or once with
`--strategy=mirrored` (two logical CPUs in one process) as the reference.
For every sampler it builds the same small model as `trainers.train` would
(`assembly.create_model`), trains it with `model.fit` for `--epochs`, and
writes `DIR/<sampler>.<task>.npz`: every sampler variable, every trainable
weight, and the rows (`user|item`) each of this process's replicas takes in
every step of one epoch of the same distributed pipeline that `fit` uses.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS


def define_flags():
  # Only when run as a program: the tests import this module's constants,
  # and absl flags are global to the pytest process.
  flags.DEFINE_string("strategy", "multi_worker", "multi_worker or mirrored.")
  flags.DEFINE_list("samplers", ["cross_batch", "xir"], "Samplers to train.")
  flags.DEFINE_string("out", None, "Output folder.")
  flags.DEFINE_integer("epochs", 1, "Training epochs.")
  flags.mark_flag_as_required("out")

BATCH = 32
OPTIONS = {"memory_size": 80, "num_resampled": 16, "cache_size": 24,
           "num_buckets": 512}


def _config(sampler):
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  return configuration.ExperimentConfig(
      sampler=sampler, strategy=FLAGS.strategy, batch_size=BATCH,
      epochs=FLAGS.epochs, embedding_dim=16, verbose=0, seed=3,
      sampler_options=dict(OPTIONS),
      synthetic={"num_users": 120, "num_items": 70,
                 "interactions_per_user": 6})


def _replica_rows(strategy, dataset, config):
  """Rows per local replica per step, in the order `fit` sees them."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  dist = strategy.experimental_distribute_dataset(
      inputs.train_dataset(dataset, config))
  steps = []
  for batch in dist:
    users = strategy.experimental_local_results(batch["user_id"])
    items = strategy.experimental_local_results(batch["item_id"])
    steps.append([[b"%s|%s" % (u, i) for u, i in zip(us.numpy(), it.numpy())]
                  for us, it in zip(users, items)])
  return np.array(steps, dtype=object)  # [steps, local replicas, rows]


def check_replicas_agree(strategy, variables):
  """Every variable holds the same value on this process's replicas.

  The cross-worker comparison is the test's; this one fails the program
  (non-zero exit) when two local replicas of one process disagree.
  Sync-on-read variables (metric totals) differ per replica by design and
  are skipped.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  for v in variables:
    if v.synchronization == tf.VariableSynchronization.ON_READ:
      continue
    values = [np.asarray(x) for x in strategy.experimental_local_results(v)]
    for r, value in enumerate(values[1:], 1):
      assert np.array_equal(value, values[0]), (
          "%s: replica %d differs from replica 0" % (v.name, r))


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import cluster  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import fitting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  strategy = strategies.make_strategy(FLAGS.strategy, 2)
  task = ("mirrored" if FLAGS.strategy == "mirrored" else
          "worker%d" % cluster.read_tf_config()["task"]["index"])
  os.makedirs(FLAGS.out, exist_ok=True)
  for sampler in FLAGS.samplers:
    config = _config(sampler)
    dataset = inputs.load_data(config)
    model = assembly.create_model(dataset, config, strategy)
    stats = fitting.train(model, dataset, config, strategy)
    check_replicas_agree(strategy, model.sampler.weights)
    state = {"sampler/" + v.name: v.numpy() for v in model.sampler.weights}
    weights = {"weight/%d" % i: v.numpy()
               for i, v in enumerate(model.trainable_weights)}
    np.savez(os.path.join(FLAGS.out, "%s.%s.npz" % (sampler, task)),
             rows=_replica_rows(strategy, dataset, config),
             steps=stats["steps"],
             train_rows=np.array([b"%s|%s" % (u.encode(), i.encode())
                                  for u, i in zip(dataset.train.user_ids,
                                                  dataset.train.item_ids)],
                                 dtype=object),
             **state, **weights)
    print("%s %s: %d steps" % (task, sampler, stats["steps"]), flush=True)


if __name__ == "__main__":
  define_flags()
  app.run(main)
