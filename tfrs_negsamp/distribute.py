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

from typing import Tuple

import tensorflow as tf


def replica_info() -> Tuple[tf.Tensor, int]:
  """Returns (replica id as an int32 tensor, number of replicas in sync)."""
  ctx = tf.distribute.get_replica_context()
  if ctx is None:  # cross-replica context: treat as a single replica
    return tf.constant(0, tf.int32), 1
  return (tf.cast(ctx.replica_id_in_sync_group, tf.int32),
          ctx.num_replicas_in_sync)


def all_gather_local_first(x: tf.Tensor) -> tf.Tensor:
  """Gathers `x` `[B, ...]` from every replica, local block first `[R*B, ...]`.

  Requires the same `B` on every replica (batch with `drop_remainder=True`).
  With one replica this is the identity.
  """
  replica_id, num_replicas = replica_info()
  if num_replicas == 1:
    return x
  gathered = tf.distribute.get_replica_context().all_gather(x, axis=0)
  shift = replica_id * tf.shape(x)[0]
  return tf.roll(gathered, shift=-shift, axis=0)


def to_replica_order(local_first: tf.Tensor, local_batch_size) -> tf.Tensor:
  """Undoes the roll of `all_gather_local_first`: replica-id order."""
  replica_id, num_replicas = replica_info()
  if num_replicas == 1:
    return local_first
  return tf.roll(local_first, shift=replica_id * local_batch_size, axis=0)


def all_gather(x: tf.Tensor) -> tf.Tensor:
  """Gathers `x` in replica-id order (identical on every replica)."""
  _, num_replicas = replica_info()
  if num_replicas == 1:
    return x
  return tf.distribute.get_replica_context().all_gather(x, axis=0)


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
