"""Embedding tables sharded over parameter servers.

`tf.distribute.ParameterServerStrategy(variable_partitioner=p)` asks `p` how
many shards every variable created in its scope gets, from the variable's
shape and dtype only. `TablePartitioner` shards the id tables of the towers
(the Keras `Embedding` layers named in `table_layers`: the item tower's
`item_embedding`, the query tower's `user_embedding`, and the separate
tables of the history towers; a history tower that shares the item table
reads the item tower's) and leaves every other variable whole: dense
layers, feature tables and sampler state are each placed on one parameter
server, round robin, as TF decides.

The partitioner learns a variable's name from a variable creator that
`TablePartitioner.scope()` installs; build the model inside both:

    partitioner = sharding.TablePartitioner(num_shards=2)
    strategy = tf.distribute.ParameterServerStrategy(
        resolver, variable_partitioner=partitioner)
    with strategy.scope(), partitioner.scope():
      model = ...          # and create its variables (a first call)

A table of `rows x dim` values of `itemsize` bytes gets

    shards = min(num_shards, rows, max(1, rows * dim * itemsize //
                                          min_shard_bytes)),

so that no shard is smaller than `min_shard_bytes` (unless the table is).
TF splits the rows into contiguous ranges, the first `rows mod shards`
shards one row longer (`ShardedVariable`); an embedding lookup reads every
shard's rows on its own parameter server and a gradient updates only the
shards of the rows it touches.

A `ShardedVariable` is saved in a checkpoint as one tensor (each shard a
slice of it), and so are the Keras optimizer's slots of a sharded table, so
a checkpoint restores into any shard count (`restore_sharded`).
"""

import contextlib
import re
import threading
from typing import Dict, Iterator, List, Sequence

import numpy as np
import tensorflow as tf

# The `Embedding` layers whose tables are sharded (`towers.QueryTower`,
# `towers.ItemTower`, `history.HistoryQueryTower`).
TABLE_LAYERS = ("item_embedding", "user_embedding", "history_item_embedding",
                "history_user_embedding")
# TF's `MinSizePartitioner` default.
DEFAULT_MIN_SHARD_BYTES = 256 << 10


class TablePartitioner:
  """A `variable_partitioner` that shards the towers' id tables only.

  Args:
    num_shards: shards per table (at most; typically one per parameter
      server).
    min_shard_bytes: the smallest shard worth a split.
    table_layers: names of the `Embedding` layers whose `embeddings` are
      sharded.

  Raises:
    ValueError: for `num_shards < 1` or `min_shard_bytes < 1`.
  """

  def __init__(self, num_shards: int,
               min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES,
               table_layers: Sequence[str] = TABLE_LAYERS) -> None:
    if int(num_shards) < 1:
      raise ValueError("num_shards must be >= 1, got %r." % (num_shards,))
    if int(min_shard_bytes) < 1:
      raise ValueError("min_shard_bytes must be >= 1, got %r."
                       % (min_shard_bytes,))
    self.num_shards = int(num_shards)
    self.min_shard_bytes = int(min_shard_bytes)
    self.table_layers = tuple(table_layers)
    self._local = threading.local()

  def is_table(self, name: str) -> bool:
    """Whether the variable `name` (`.../<layer>/embeddings`) is a table."""
    parts = name.split(":")[0].split("/")
    return (len(parts) >= 2 and parts[-1] == "embeddings"
            and parts[-2] in self.table_layers)

  def shards_for(self, shape: tf.TensorShape, dtype: tf.DType) -> int:
    """The shard count of a table of `shape` and `dtype` (see the module)."""
    shape = tf.TensorShape(shape)
    rows = int(shape[0])
    size = shape.num_elements() * tf.as_dtype(dtype).size
    return max(1, min(self.num_shards, rows, size // self.min_shard_bytes))

  def __call__(self, shape, dtype, axis: int = 0) -> List[int]:
    """`[shards, 1, ...]` for a table, `[1, ...]` for any other variable."""
    del axis  # tables are split along their rows
    shape = tf.TensorShape(shape)
    ones = [1] * shape.rank
    if not ones or not self.is_table(getattr(self._local, "name", "")):
      return ones
    return [self.shards_for(shape, dtype)] + ones[1:]

  @contextlib.contextmanager
  def scope(self) -> Iterator[None]:
    """Records the full name of each variable created inside, for `__call__`.

    Enter it inside `strategy.scope()`, so that its creator runs before the
    strategy's.
    """

    def creator(next_creator, **kwargs):
      scope = tf.get_current_name_scope()
      name = kwargs.get("name") or ""
      self._local.name = "%s/%s" % (scope, name) if scope else name
      try:
        return next_creator(**kwargs)
      finally:
        self._local.name = ""

    with tf.variable_creator_scope(creator):
      yield


@contextlib.contextmanager
def slots_on_their_devices(optimizer: tf.keras.optimizers.Optimizer
                           ) -> Iterator[None]:
  """Inside: the optimizer computes each slot's initial value where it lives.

  Keras's optimizer computes a slot's zeros eagerly on the current device,
  then creates the variable colocated with its model variable: under
  `ParameterServerStrategy` every slot of every table shard would be
  allocated on the coordinator and sent whole to its parameter server, which
  briefly holds it twice. Here each slot's zeros are computed on its model
  variable's device. Wrap `optimizer.build`.
  """
  build_slot = optimizer.add_variable_from_reference

  def on_its_device(model_variable, variable_name, shape=None,
                    initial_value=None):
    with tf.device(model_variable.device):
      return build_slot(model_variable, variable_name, shape=shape,
                        initial_value=initial_value)

  optimizer.add_variable_from_reference = on_its_device
  try:
    yield
  finally:
    del optimizer.add_variable_from_reference


def is_sharded(variable) -> bool:
  """Whether `variable` is a `ShardedVariable`."""
  return isinstance(variable,
                    tf.__internal__.distribute.ShardedVariable)


def num_shards(variable) -> int:
  """The shards of `variable` (1 for an ordinary variable)."""
  return len(variable.variables) if is_sharded(variable) else 1


def table_shards(model: tf.keras.Model,
                 table_layers: Sequence[str] = TABLE_LAYERS
                 ) -> Dict[str, int]:
  """`{layer name: shards}` of the id tables of `model` (each table once).

  A table shared by two towers (a history tower reading the item table)
  is listed once, under its layer's name.
  """
  out = {}
  seen = set()
  for layer in model.submodules:
    if (not isinstance(layer, tf.keras.layers.Embedding)
        or layer.name not in table_layers or id(layer) in seen
        or not layer.built):
      continue
    seen.add(id(layer))
    out[layer.name] = num_shards(layer.embeddings)
  return out


def table_values(model: tf.keras.Model,
                 table_layers: Sequence[str] = TABLE_LAYERS
                 ) -> Dict[str, np.ndarray]:
  """`{layer name: [rows, dim] values}` of the id tables (shards joined)."""
  out = {}
  for layer in model.submodules:
    if (isinstance(layer, tf.keras.layers.Embedding)
        and layer.name in table_layers and layer.built):
      out[layer.name] = np.asarray(tf.convert_to_tensor(layer.embeddings))
  return out


class RestoreError(ValueError):
  """A checkpoint that cannot be restored into this model (names why)."""


def restore_sharded(checkpoint: tf.train.Checkpoint, path: str,
                    model: tf.keras.Model,
                    optimizer: tf.keras.optimizers.Optimizer) -> None:
  """Restores `path` into `checkpoint`, whatever the shard counts.

  The optimizer's slots are created first (`optimizer.build`): restored
  later (deferred restoration), Keras's optimizer in TF 2.20 silently keeps
  zeros for every slot as soon as one model variable is sharded, even into
  the same shard count (tf-keras#838). Every value of the checkpoint must
  then find its variable (`assert_consumed`), so a slot left behind is an
  error, not a silent reset.

  Args:
    checkpoint: a `tf.train.Checkpoint` over `model` and `optimizer` (and
      any other state), created in the strategy's scope.
    path: the checkpoint prefix.
    model: the model, with every variable created (a first call done).
    optimizer: its optimizer.

  Raises:
    RestoreError: naming what did not match.
  """
  with model.distribute_strategy.scope(), slots_on_their_devices(optimizer):
    optimizer.build(model.trainable_variables)
  try:
    checkpoint.restore(path).assert_consumed()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    raise RestoreError("cannot restore %s into this model (was it written "
                       "with other flags?): %s" % (path, _reason(e))
                       ) from None


def _reason(error: Exception) -> str:
  """The line of a restore error that says what did not fit.

  A graph execution error (a sliced restore into a `ShardedVariable`)
  carries the Python stack of the op in its message; its last line is the
  kernel's reason.
  """
  text = getattr(error, "message", None) or str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if isinstance(error, tf.errors.OpError) and lines:
    # Several root errors end on "N derived errors ignored."; the first
    # root error, "(0) INVALID_ARGUMENT: ...", is the reason.
    roots = [line for line in lines if re.match(r"\(\d+\) \w+: ", line)]
    text = roots[0].split(": ", 1)[1] if roots else lines[-1]
    relayed = [line for line in lines if 'grpc_message:"' in line]
    if relayed:
      text = relayed[0]
    # A parameter server's error, relayed by gRPC: its own message.
    if 'grpc_message:"' in text:
      text = text.split('grpc_message:"', 1)[1].split("\\n", 1)[0]
  return " ".join(text.split())[:400]
