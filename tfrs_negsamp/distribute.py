"""Cross-replica helpers: gathering candidates and creating replicated state.

Two orders of a gathered tensor are used (SAMPLERS.md, rule D4):

* *replica order*: the concatenation of the replicas' blocks by replica id,
  identical on every replica. Sampler **state** is written in this order, so
  that every replica computes the same new state.
* *local-first order*: the same rows rolled so that this replica's block comes
  first. Logits use it, because `tfrs.tasks.Retrieval` expects row `i`'s
  positive at column `i`.

The gradient of `all_gather` is an all-reduce of the upstream gradient followed
by the local slice (rule D5), so gathered in-batch candidates keep their
gradient and the optimizer's cross-replica sum gives the exact gradient of the
global-batch loss.
"""

import contextlib
import weakref
from typing import List, Optional, Tuple

import tensorflow as tf

_GATHER_LOGS: List["GatherLog"] = []
# {outermost function graph: its worker-index placeholder} (`worker_index`).
_WORKER_INDEX = weakref.WeakKeyDictionary()


class GatherLog:
  """Records the all-gathers of the functions traced while it is active.

  For communication accounting (`trainers/bench_scaling.py`): each gather
  traced in a replica context is logged with the bytes of its gathered
  result (`R x` the local block), each `all_sum` with the bytes of its
  reduced tensor, per traced graph. Tracing happens once per
  `tf.function`, so this costs nothing per step.

    with distribute.GatherLog() as log:
      model.fit(...)
    log.bytes_per_step(local_replicas)
  """

  def __init__(self):
    self.entries: List[Tuple[int, Optional[int]]] = []

  def __enter__(self) -> "GatherLog":
    _GATHER_LOGS.append(self)
    return self

  def __exit__(self, *exc) -> None:
    _GATHER_LOGS.remove(self)

  def bytes_per_step(self, local_replicas: int = 1) -> Optional[int]:
    """Gathered bytes of one step (the first traced graph), or None.

    A graph traces the replica function once per local replica, so its sum
    is divided by `local_replicas`. None if nothing was gathered (one
    replica) or a shape was not static.
    """
    if not self.entries:
      return None
    first = self.entries[0][0]
    sizes = [b for g, b in self.entries if g == first]
    if any(b is None for b in sizes):
      return None
    return sum(sizes) // max(1, local_replicas)


def _log_gather(x: tf.Tensor, num_replicas: int) -> None:
  if not _GATHER_LOGS:
    return
  n = x.shape.num_elements()
  size = None if n is None else n * x.dtype.size * num_replicas
  graph = id(tf.compat.v1.get_default_graph())
  for log in _GATHER_LOGS:
    log.entries.append((graph, size))


_ONE_REPLICA_VIEW: List[bool] = []


@contextlib.contextmanager
def one_replica_view():
  """Inside, `replica_info` is `(0, 1)`: every replica computes alike.

  For work on inputs already gathered and identical on every replica (the
  blocks of sequence rows, `tasks.Retrieval`): samplers then neither gather
  nor order by replica, draw with replica id 0, and every replica computes
  (and writes) the same state, as one device would.
  """
  _ONE_REPLICA_VIEW.append(True)
  try:
    yield
  finally:
    _ONE_REPLICA_VIEW.pop()


def replica_info() -> Tuple[tf.Tensor, int]:
  """Returns (replica id as an int32 tensor, number of replicas in sync)."""
  if _ONE_REPLICA_VIEW:
    return tf.constant(0, tf.int32), 1
  ctx = tf.distribute.get_replica_context()
  if ctx is None:  # cross-replica context: treat as a single replica
    return tf.constant(0, tf.int32), 1
  return (tf.cast(ctx.replica_id_in_sync_group, tf.int32),
          ctx.num_replicas_in_sync)


def is_parameter_server(strategy: Optional[tf.distribute.Strategy] = None
                        ) -> bool:
  """Whether `strategy` (default: the current one) trains asynchronously.

  True for `tf.distribute.ParameterServerStrategy`, whose steps run on the
  workers as the coordinator schedules them, each on one worker's batch,
  with every variable on the parameter servers.
  """
  strategy = strategy or tf.distribute.get_strategy()
  return isinstance(strategy, tf.distribute.ParameterServerStrategy)


def worker_index() -> Optional[tf.Tensor]:
  """The index (int64 scalar) of the worker running this step, or None.

  Only inside a function that a `ParameterServerStrategy` coordinator runs
  on a worker (a training step, a dataset function): the value is bound
  when the worker runs the function, so one trace serves every worker.
  None elsewhere (one device, mirrored strategies, eager code on the
  coordinator), so callers keep their synchronous behaviour there.
  """
  if not (tf.inside_function() and is_parameter_server()):
    return None
  # The value is a placeholder fed when the function is called, which only
  # the function the coordinator calls feeds: inside a `tf.cond` branch or a
  # loop body (graphs of their own) it would stay unfed. So it is created in
  # the outermost function graph, once, and used from inner graphs as an
  # ordinary capture.
  graph = tf.compat.v1.get_default_graph()
  while hasattr(getattr(graph, "outer_graph", None), "outer_graph"):
    graph = graph.outer_graph
  index = _WORKER_INDEX.get(graph)
  if index is None:
    with graph.as_default():
      index = tf.distribute.coordinator.experimental_get_current_worker_index()
    _WORKER_INDEX[graph] = index
  return index


def all_gather_local_first(x: tf.Tensor) -> tf.Tensor:
  """Gathers `x` `[B, ...]` from every replica, local block first `[R*B, ...]`.

  Requires the same `B` on every replica (batch with `drop_remainder=True`).
  With one replica this is the identity.
  """
  replica_id, num_replicas = replica_info()
  if num_replicas == 1:
    return x
  gathered = _gather(x, num_replicas)
  shift = replica_id * tf.shape(x)[0]
  return tf.roll(gathered, shift=-shift, axis=0)


def to_replica_order(local_first: tf.Tensor, local_batch_size) -> tf.Tensor:
  """Undoes the roll of `all_gather_local_first`: replica-id order."""
  replica_id, num_replicas = replica_info()
  if num_replicas == 1:
    return local_first
  return tf.roll(local_first, shift=replica_id * local_batch_size, axis=0)


def to_local_first(replica_order: tf.Tensor, local_batch_size) -> tf.Tensor:
  """The inverse of `to_replica_order`: this replica's block first."""
  replica_id, num_replicas = replica_info()
  if num_replicas == 1:
    return replica_order
  return tf.roll(replica_order, shift=-replica_id * local_batch_size, axis=0)


def all_gather(x: tf.Tensor) -> tf.Tensor:
  """Gathers `x` in replica-id order (identical on every replica)."""
  _, num_replicas = replica_info()
  if num_replicas == 1:
    return x
  return _gather(x, num_replicas)


def all_sum(x: tf.Tensor) -> tf.Tensor:
  """The sum of `x` over replicas (an all-reduce), identical on every one.

  For counts: `R` times less traffic than gathering and summing, and exact
  for integer-valued floats whatever the reduction order.
  """
  _, num_replicas = replica_info()
  if num_replicas == 1:
    return x
  _log_gather(x, 1)
  return tf.distribute.get_replica_context().all_reduce(
      tf.distribute.ReduceOp.SUM, x)


def _gather(x: tf.Tensor, num_replicas: int) -> tf.Tensor:
  """The replica-order all-gather, keeping a static leading dimension."""
  _log_gather(x, num_replicas)
  gathered = tf.distribute.get_replica_context().all_gather(x, axis=0)
  if x.shape.rank and x.shape[0] is not None:
    gathered = tf.ensure_shape(
        gathered, [x.shape[0] * num_replicas] + x.shape[1:].as_list())
  return gathered


def add_state(layer: tf.keras.layers.Layer, name: str, shape, dtype=tf.float32,
              initializer="zeros") -> tf.Variable:
  """Adds a non-trainable, replica-consistent state variable to `layer`.

  ON_WRITE synchronization with ONLY_FIRST_REPLICA aggregation (rule D1): an
  `assign`, `assign_add` or `scatter_update` in replica context writes replica
  0's value to every copy, so state computed from gathered (identical) inputs
  stays identical on every replica. `synchronization=NONE` would be refused by
  tf.distribute (rule D2).
  """
  return layer.add_weight(
      name=name, shape=shape, dtype=dtype, initializer=initializer,
      trainable=False,
      synchronization=tf.VariableSynchronization.ON_WRITE,
      aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
