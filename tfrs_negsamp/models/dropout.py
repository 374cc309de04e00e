"""Step-seeded dropout: masks that are a function of (seed, step, salt, row).

Keras `Dropout` draws its masks from a stateful generator that is not part
of a checkpoint, so a run restored from a backup draws other masks than the
uninterrupted run. Here every mask is stateless. A layer with base seed `s`,
salt `k` (distinct per dropout site of a model) and step counter `t` (a
checkpointed variable of the model, see `StepSeededDropout`) keeps entry
`(g, j)` of the global batch (`g` the row's global index, `j` its position
within the row) iff

    u[g, j] >= rate,   u = stateless_uniform([G, ...], fold_in([s, t], k)),

and scales the kept entries by `1 / (1 - rate)`, so `E[dropout(x)] = x`.
Each replica draws the whole global batch's `u` (`G = R B` rows for `R`
replicas of `B` rows) and uses rows `r B : (r + 1) B` of replica `r`: the
replicas drop different entries of their own rows, and one device holding
the global batch drops exactly what the replicas drop (as the samplers'
draws, `importance_resampling.resample_with_replacement`). The cost is `R`
times the mask's uniforms per replica.

Inference (`training=False`) and `rate == 0` return the input unchanged.
"""

from typing import Callable, Optional

import tensorflow as tf

from tfrs_negsamp import distribute

StepFn = Callable[[], tf.Tensor]


def dropout_seed(seed: int, step: tf.Tensor, salt: int) -> tf.Tensor:
  """The stateless seed `[2]`: `stateless_fold_in([seed, step], salt)`.

  Args:
    seed: base seed (the model's `seed`).
    step: int scalar, the model's dropout step counter.
    salt: static int, the dropout site (distinct per layer of a model).

  Under `ParameterServerStrategy` the seed is further folded with the
  index of the worker running the step (`distribute.worker_index`): two
  workers may read the same step counter, and their masks stay independent.

  Returns:
    A `[2]` int64 tensor for `tf.random.stateless_*` ops.
  """
  base = tf.stack([tf.constant(seed, tf.int64), tf.cast(step, tf.int64)])
  folded = tf.random.experimental.stateless_fold_in(base, salt)
  worker = distribute.worker_index()
  if worker is None:
    return folded
  return tf.random.experimental.stateless_fold_in(folded, worker)


def global_batch_dropout(x: tf.Tensor, rate: float,
                         seed: tf.Tensor) -> tf.Tensor:
  """Dropout of `x` `[B, ...]` with the global batch's mask rows.

  `keep = u[r B : (r + 1) B] >= rate` with `u` uniform `[R B, ...]` drawn
  from `seed` (`R` replicas in sync, `r` this replica; one device: `R = 1`,
  `r = 0`), and `x * keep / (1 - rate)`. Requires the same `B` on every
  replica (batches with `drop_remainder=True`).

  Args:
    x: a float tensor whose first axis is this replica's batch.
    rate: the drop probability, in `[0, 1)`.
    seed: `[2]` int seed (`dropout_seed`).

  Returns:
    A tensor of `x`'s shape and dtype.
  """
  if not 0.0 <= rate < 1.0:
    raise ValueError("rate must be in [0, 1), got %r." % (rate,))
  if rate == 0.0:
    return tf.identity(x)
  replica_id, num_replicas = distribute.replica_info()
  shape = tf.shape(x)
  batch = shape[0]
  u = tf.random.stateless_uniform(
      tf.concat([[num_replicas * batch], shape[1:]], axis=0), seed,
      dtype=tf.float32)
  if num_replicas > 1:
    u = u[replica_id * batch:(replica_id + 1) * batch]
  scale = tf.cast(1.0 / (1.0 - rate), x.dtype)
  return tf.where(u >= rate, x * scale, tf.zeros_like(x))


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class StepSeededDropout(tf.keras.layers.Layer):
  """Dropout seeded by `(seed, step(), salt)`; see the module docstring.

  The step comes from `step`, a callable returning an int scalar tensor,
  typically the read of a model's non-trainable counter variable (created
  with `distribute.add_state`, so it is in the checkpoint and identical on
  every replica) that the model increments once per training call. Two
  calls at the same step and salt draw the same mask; the owner must move
  the step between training calls (or give each call site its own salt).

  Args:
    rate: the drop probability, in `[0, 1)`.
    seed: base seed.
    salt: this dropout site's index (distinct per layer of a model).
    step: the step counter; required for training calls with `rate > 0`.
      Not serialized (`get_config` drops it; the owner passes it again).
  """

  def __init__(self, rate: float, seed: int = 0, salt: int = 0,
               step: Optional[StepFn] = None, **kwargs) -> None:
    super().__init__(**kwargs)
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
      raise ValueError("rate must be in [0, 1), got %r." % (rate,))
    self.rate = rate
    self.seed = int(seed)
    self.salt = int(salt)
    self._step_fn = step
    self.supports_masking = True

  def call(self, inputs: tf.Tensor, training=None) -> tf.Tensor:
    if self.rate == 0.0 or training is None or (
        not tf.is_tensor(training) and not training):
      return tf.identity(inputs)
    if self._step_fn is None:
      raise ValueError("%s: a training call with rate > 0 needs `step`."
                       % self.name)

    def dropped():
      seed = dropout_seed(self.seed, self._step_fn(), self.salt)
      return global_batch_dropout(inputs, self.rate, seed)

    if not tf.is_tensor(training):
      return dropped()
    return tf.cond(tf.cast(training, tf.bool), dropped,
                   lambda: tf.identity(inputs))

  def compute_output_shape(self, input_shape):
    return input_shape

  def get_config(self):
    config = super().get_config()
    config.update(rate=self.rate, seed=self.seed, salt=self.salt)
    return config


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class StepSeededMultiHeadAttention(tf.keras.layers.MultiHeadAttention):
  """`MultiHeadAttention` whose attention-probability dropout is stateless.

  The attention math is Keras' own; only the dropout of the attention
  probabilities `[B, heads, T, S]` is a `StepSeededDropout(dropout, seed,
  salt, step)` (tf-keras builds it in `_build_attention`, which this class
  extends).

  Args:
    seed: base seed of the dropout.
    salt: the dropout site's index.
    step: the step counter (see `StepSeededDropout`).
    *args, **kwargs: `tf.keras.layers.MultiHeadAttention`'s.
  """

  def __init__(self, *args, seed: int = 0, salt: int = 0,
               step: Optional[StepFn] = None, **kwargs) -> None:
    super().__init__(*args, **kwargs)
    self._dropout_seed = int(seed)
    self._dropout_salt = int(salt)
    self._dropout_step_fn = step

  def _build_attention(self, rank):
    super()._build_attention(rank)
    self._dropout_layer = StepSeededDropout(
        self._dropout, seed=self._dropout_seed, salt=self._dropout_salt,
        step=self._dropout_step_fn, dtype=self._dtype_policy)

  def get_config(self):
    config = super().get_config()
    config.update(seed=self._dropout_seed, salt=self._dropout_salt)
    return config
