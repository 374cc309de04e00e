"""Fixed-capacity FIFO memories kept in replica-consistent variables.

Shared ring-buffer mechanics for samplers that keep rows of past steps: the
CBNS queue (`cross_batch.py`) and any stale-embedding cache. A `RingBuffer`
owns no layer of its own: it creates its variables on the sampler layer that
holds it (`distribute.add_state`, so ON_WRITE / ONLY_FIRST_REPLICA), which
keeps the sampler's checkpoint flat (`queue_emb`, `queue_ids`, ..., `head`,
`filled`) and lets Keras track the state as the sampler's own weights.

Layout. Every field is an array `[capacity, ...]`. Rows are written in order
at `head, head + 1, ...` modulo `capacity`; `head` is the next slot to write,
which is the oldest slot once the buffer is full; `filled` counts the
written slots (at most `capacity`). Because writing starts at slot 0, the
slots `[0, filled)` are exactly the written ones, and the FIFO order (oldest
first) is `(head - filled + range(filled)) % capacity`.

A write of `n` rows therefore keeps the semantics "the buffer holds the last
`min(capacity, rows written)` rows" for any `n`: when `n > capacity` only the
last `capacity` rows are written, and a write that crosses the end of the
array wraps around. Every row of one write lands on a distinct slot, so one
`scatter_update` per field is enough (mirrored variables support scatters
with `tf.IndexedSlices`, not `scatter_nd_update`).

Distribution. The buffer must be written with identical rows on every
replica (gather them in replica-id order first, SAMPLERS.md D4); then every
replica computes the same slots and the ONLY_FIRST_REPLICA writes keep all
copies identical.

Asynchronous writers (`ParameterServerStrategy`: one copy on a parameter
server, written by every worker's steps as they arrive). A write reads
`head` and `filled` once; two workers that read the same `head` write the
same slots (the later write wins) and advance `head` to the same value, so
rows can be lost but the buffer stays well-formed: `0 <= head < capacity`,
`filled <= capacity`, and every slot below `filled` holds a written row. A
write that read `filled` before another write raised it may lower it again
(the slots above then sit unused until a later write counts them): `filled`
can under-count the written slots, never over-count them.
"""

from typing import Dict, Mapping, NamedTuple, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute


class Field(NamedTuple):
  """One array of a `RingBuffer`.

  Attributes:
    name: variable name on the owning layer.
    shape: shape of one row (`()` for scalars per slot).
    dtype: variable dtype.
    fill: initial value of every slot (e.g. -1 for an id sentinel).
  """
  name: str
  shape: Sequence[int] = ()
  dtype: tf.DType = tf.float32
  fill: float = 0


def check_capacity(capacity, name: str = "capacity") -> int:
  """Returns `capacity` as a positive int, or raises a clear ValueError."""
  if isinstance(capacity, bool) or not isinstance(
      capacity, (int, np.integer)) or int(capacity) < 1:
    raise ValueError("%s must be a positive integer (the number of slots), "
                     "got %r." % (name, capacity))
  return int(capacity)


class RingBuffer:
  """A FIFO of the last `capacity` rows written, one slot per row.

  Creates, on `owner`, one variable per field plus `head` and `filled`
  (int64 scalars, init 0), all non-trainable and replica-consistent.
  Construct it inside `owner.build()` (and inside the strategy scope).

  Args:
    owner: the Keras layer that owns the variables.
    capacity: number of slots.
    fields: the arrays kept per slot.
  """

  def __init__(self, owner: tf.keras.layers.Layer, capacity: int,
               fields: Sequence[Field]) -> None:
    self.capacity = check_capacity(capacity)
    names = [f.name for f in fields]
    if not names or len(set(names)) != len(names):
      raise ValueError("a RingBuffer needs distinct field names, got %s."
                       % names)
    self.fields = tuple(fields)
    self.arrays: Dict[str, tf.Variable] = {}
    for f in self.fields:
      self.arrays[f.name] = distribute.add_state(
          owner, f.name, [self.capacity] + list(f.shape), f.dtype,
          tf.keras.initializers.Constant(f.fill))
    self.head = distribute.add_state(owner, "head", [], tf.int64)
    self.filled = distribute.add_state(owner, "filled", [], tf.int64)

  def read(self) -> Dict[str, tf.Tensor]:
    """A snapshot of every field (`read_value`, under `stop_gradient`).

    Read before `write` in the same step: automatic control dependencies run
    the reads first, and a later in-place scatter copies the buffer rather
    than change the snapshot.
    """
    return {name: tf.stop_gradient(var.read_value())
            for name, var in self.arrays.items()}

  def valid(self) -> tf.Tensor:
    """`[capacity]` bool: True for slots that hold a written row."""
    return tf.range(self.capacity, dtype=tf.int64) < self.filled

  def fifo_order(self) -> tf.Tensor:
    """Slot indices of the written rows, oldest first (`[filled]` int64)."""
    start = (self.head - self.filled) % self.capacity
    return (start + tf.range(self.filled, dtype=tf.int64)) % self.capacity

  def write(self, values: Mapping[str, tf.Tensor]) -> None:
    """Appends `n` rows (`values[name]` is `[n, *shape]`) for every field.

    The oldest rows are overwritten once the buffer is full; `head` and
    `filled` advance by `n` (`filled` saturates at `capacity`).
    """
    if set(values) != set(self.arrays):
      raise ValueError("write needs exactly the fields %s, got %s."
                       % (sorted(self.arrays), sorted(values)))
    first = values[self.fields[0].name]
    n = tf.cast(tf.shape(first)[0], tf.int64)
    kept = tf.minimum(n, self.capacity)
    skip = n - kept  # rows older than the last `capacity` are never stored
    # `head` and `filled` are read once: every slot and counter of this
    # write derives from the same two values, even when other writers
    # update them meanwhile (asynchronous writers, module docstring).
    head = self.head.read_value()
    filled = self.filled.read_value()
    rows = (head + skip + tf.range(kept, dtype=tf.int64)) % self.capacity
    writes = []
    for f in self.fields:
      var = self.arrays[f.name]
      update = tf.cast(tf.stop_gradient(values[f.name])[skip:], var.dtype)
      writes.append(var.scatter_update(tf.IndexedSlices(update, rows)))
    # The rows land before the counters move, so a concurrent reader never
    # sees a counted slot that is not written yet. `max(filled, head + n)`
    # is `filled + n` while the buffer fills (`head == filled`) and
    # `capacity` once full, as a plain count; with concurrent writers
    # (parameter-server training) it never counts a slot no write reached:
    # slots `[0, head)` were written before `head` took its value, and this
    # write reached `[head, head + n)`.
    with tf.control_dependencies(writes):
      self.head.assign((head + n) % self.capacity)
      self.filled.assign(tf.minimum(tf.maximum(filled, head + n),
                                    self.capacity))
