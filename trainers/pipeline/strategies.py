"""`tf.distribute` strategies by name, and which process writes the outputs."""

import contextlib
from typing import Any, Dict, Optional

import tensorflow as tf

from trainers.pipeline import cluster


STRATEGIES = ("default", "mirrored", "multi_worker", "parameter_server")
_STRATEGIES: Dict[Any, tf.distribute.Strategy] = {}


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
