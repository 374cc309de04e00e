"""Item-probability sources for the logQ correction.

Every source answers `log_q(ids, num_draws)`: the log of the **expected number
of in-batch columns showing item `id`** in one (global) step, the unit that
docs/design/shared.md#logq-units fixes so that several sources of columns can
be mixed. Within
one source only differences matter (shift invariance), so the constant factor
is harmless there.

* `StaticItemProbability`: fixed per-example frequencies `f_j` from training
  counts; `log_q = log(num_draws * f_j)`, or the inclusion probability
  `log(1 - (1 - f_j)^num_draws)`.
* `StreamingFrequencyEstimator`: the hashed "average gap between sightings"
  sketch of Yi et al. (RecSys 2019); needs no vocabulary and tracks drift.

References:
  Yi, Yang, Hong, Cheng, Heldt, Kumthekar, Zhao, Wei, Chi. Sampling-Bias-
  Corrected Neural Modeling for Large Corpus Item Recommendations. RecSys 2019.
"""

from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute

UPDATE_RULES = ("paper", "first_gap", "debiased")


class FrequencySource(tf.keras.layers.Layer):
  """Base class: `update(ids)` once per training step, `log_q(ids)` any time."""

  def update(self, ids: tf.Tensor, valid: Optional[tf.Tensor] = None
             ) -> None:
    """Records the ids of one global step (no-op for fixed sources).

    `valid` (optional bool, the shape of `ids`): only those ids count
    (padding positions of sequence rows do not).
    """
    del ids, valid

  def log_q(self, ids: tf.Tensor, num_draws) -> tf.Tensor:
    raise TypeError("%s must override log_q()." % type(self).__name__)

  def update_and_log_q(self, ids: tf.Tensor, num_draws,
                       valid: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`update(ids, valid)`, then `log_q(ids, num_draws)` (one step).

    The same values as the two calls; a source may share their work (the
    streaming estimator hashes the ids once).
    """
    self.update(ids, valid)
    return self.log_q(ids, num_draws)

  def call(self, ids: tf.Tensor, num_draws=1) -> tf.Tensor:
    return self.log_q(ids, num_draws)


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class StaticItemProbability(FrequencySource):
  """Fixed probabilities from training counts.

  `f_j = (count_j + smoothing) / sum_k (count_k + smoothing)`, clipped below at
  `min_prob`. Stored as a non-trainable `log_f` `[N]` weight.

  Args:
    counts: `[N]` non-negative counts indexed by item id (dense int ids).
    smoothing: added to every count (keeps unseen items finite).
    inclusion: if True, `log_q = log(1 - (1 - f)^n)` (unique draws) instead
      of the expected count `log(n f)`.
    min_prob: lower clip of `f` (avoids `-log 0`;
      docs/design/bir_xir.md#bir-state).
  """

  def __init__(self, counts: Sequence[float], smoothing: float = 0.0,
               inclusion: bool = False, min_prob: float = 1e-12,
               **kwargs) -> None:
    super().__init__(**kwargs)
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.size == 0:
      raise ValueError("counts must be a non-empty 1-D array, got shape %s."
                       % (counts.shape,))
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
      raise ValueError("counts must be finite and non-negative.")
    if smoothing < 0:
      raise ValueError("smoothing must be >= 0, got %r." % smoothing)
    total = float(np.sum(counts + smoothing))
    if total <= 0:
      raise ValueError("counts are all zero: no probability can be formed "
                       "(use smoothing > 0).")
    self._counts = counts
    self.smoothing = float(smoothing)
    self.inclusion = bool(inclusion)
    self.min_prob = float(min_prob)
    probs = np.maximum((counts + smoothing) / total, min_prob)
    self._log_f_init = np.log(probs).astype(np.float32)

  def build(self, input_shape=None):
    self.log_f = distribute.add_state(
        self, "log_f", [self._log_f_init.shape[0]], tf.float32,
        tf.keras.initializers.Constant(self._log_f_init))
    super().build(input_shape)

  def log_q(self, ids: tf.Tensor, num_draws) -> tf.Tensor:
    if not self.built:
      self.build()
    # Negative keys (padding) read the out-of-vocabulary slot 0.
    log_f = tf.gather(self.log_f, tf.maximum(tf.cast(ids, tf.int64), 0))
    n = tf.cast(num_draws, tf.float32)
    if self.inclusion:
      # 1 - (1 - f)^n, computed stably as -expm1(n * log1p(-f)).
      return tf.math.log(-tf.math.expm1(n * tf.math.log1p(-tf.exp(log_f))))
    return log_f + tf.math.log(n)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"counts": self._counts.tolist(),
                   "smoothing": self.smoothing,
                   "inclusion": self.inclusion,
                   "min_prob": self.min_prob})
    return config


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class StreamingFrequencyEstimator(FrequencySource):
  """Streaming estimate of the probability that an item appears in a step.

  Per hash `k` and bucket `h`, `A[k,h]` is the last step at which the bucket
  was hit and `B[k,h]` the running mean gap between hits. At step `t`, for
  every bucket hit by the step's ids (each at most once per step, from
  pre-step values): `gap = t - A`, then

  * "paper":     `B <- (1 - alpha) B + alpha gap`
  * "first_gap": as "paper", but `B <- gap` on a bucket's first hit
  * "debiased":  `n <- n + 1; B <- B + max(alpha, 1/n) (gap - B)` (exact mean
                 of the first 1/alpha gaps, then the paper's EMA)

  and `A <- t`. `p_hat(y) = clip(1 / max_k B[k, h_k(y)], min_prob, 1)`, and 1
  for never-seen buckets. `1/B` estimates `pi = 1 - (1 - f)^G`, the inclusion
  probability per global step; with `expected_count=True` the estimate is
  turned into the expected count `-log(1 - pi) ~= G f`.

  Variables (non-trainable, ON_WRITE / ONLY_FIRST_REPLICA, stored flat as
  `[m * H]` because mirrored variables only support 1-D-indexed scatters):
  `step` int64 `[]`, `last_step` int64, `avg_gap` float32, `n_updates`
  float32. Callers pass the **global** batch's ids to `update` (the model
  gathers them across replicas), so every replica computes the same state.

  Under asynchronous training (`ParameterServerStrategy`) every worker's
  step is one step of the estimator, with that worker's batch as its ids:
  `step` and `n_updates` advance by increments (`assign_add`,
  `scatter_add`), so they count every worker's step and bucket hits exactly
  once; `last_step` and `avg_gap` are read-modify-write, and when two
  workers update a bucket at the same time the later write wins (one gap
  observation is lost). A gap is at least one step (a concurrent step may
  have moved `last_step` past this step's `t`), so the values stay
  well-formed: `0 <= last_step <= step`, `avg_gap > 0` for every bucket hit.

  Args:
    num_buckets: `H`, buckets per hash; should be >= 10x the distinct items.
    num_hashes: `m`, independent hash functions (max over them is used).
    alpha: EMA rate.
    update_rule: one of "paper", "first_gap", "debiased".
    min_prob: lower clip of `p_hat`.
    seed: hash key.
    hashing: "strong" (keyed `to_hash_bucket_strong` of the id string) or
      "identity" (dense int ids < H, `num_hashes=1`: collision-free).
    expected_count: return `log(-log(1 - p_hat))` instead of `log p_hat`.
  """

  def __init__(self, num_buckets: int = 2**20, num_hashes: int = 2,
               alpha: float = 0.01, update_rule: str = "debiased",
               min_prob: float = 1e-9, seed: int = 0,
               hashing: str = "strong", expected_count: bool = False,
               **kwargs) -> None:
    super().__init__(**kwargs)
    if int(num_buckets) < 1 or int(num_hashes) < 1:
      raise ValueError("num_buckets and num_hashes must be >= 1, got %r, %r."
                       % (num_buckets, num_hashes))
    if not 0.0 < alpha <= 1.0:
      raise ValueError("alpha must be in (0, 1], got %r." % alpha)
    if update_rule not in UPDATE_RULES:
      raise ValueError("unknown update_rule %r; valid: %s"
                       % (update_rule, ", ".join(UPDATE_RULES)))
    if hashing not in ("strong", "identity"):
      raise ValueError("hashing must be 'strong' or 'identity', got %r."
                       % hashing)
    if hashing == "identity" and num_hashes != 1:
      raise ValueError("identity hashing needs num_hashes=1.")
    self.num_buckets = int(num_buckets)
    self.num_hashes = int(num_hashes)
    self.alpha = float(alpha)
    self.update_rule = update_rule
    self.min_prob = float(min_prob)
    self.seed = int(seed)
    self.hashing = hashing
    self.expected_count = bool(expected_count)

  def build(self, input_shape=None):
    size = self.num_hashes * self.num_buckets
    self.step = distribute.add_state(self, "step", [], tf.int64)
    self.last_step = distribute.add_state(self, "last_step", [size], tf.int64)
    self.avg_gap = distribute.add_state(self, "avg_gap", [size], tf.float32)
    self.n_updates = distribute.add_state(self, "n_updates", [size],
                                          tf.float32)
    super().build(input_shape)

  def _flat_buckets(self, ids: tf.Tensor) -> tf.Tensor:
    """`[m, n]` int64 positions `k * H + h_k(id)` in the flat arrays."""
    ids = tf.reshape(ids, [-1])
    if self.hashing == "identity":
      # Negative ids (padding positions of sequence rows) read bucket 0,
      # the out-of-vocabulary slot; their rows carry no loss.
      ids = tf.maximum(tf.cast(ids, tf.int64), 0)
      with tf.control_dependencies([tf.debugging.assert_less(
          ids, tf.constant(self.num_buckets, tf.int64),
          message="identity hashing needs ids < num_buckets")]):
        return tf.expand_dims(tf.identity(ids), 0)
    strings = ids if ids.dtype == tf.string else tf.strings.as_string(ids)
    rows = []
    for k in range(self.num_hashes):
      h = tf.strings.to_hash_bucket_strong(strings, self.num_buckets,
                                           key=[self.seed, k])
      rows.append(h + k * self.num_buckets)
    return tf.stack(rows, axis=0)

  def update(self, ids: tf.Tensor, valid: Optional[tf.Tensor] = None
             ) -> None:
    if not self.built:
      self.build()
    self._update_buckets(self._flat_buckets(ids), valid)

  def update_and_log_q(self, ids: tf.Tensor, num_draws=None,
                       valid: Optional[tf.Tensor] = None) -> tf.Tensor:
    """`update(ids)` then `log_q(ids)`, hashing the ids once.

    Hashing (`as_string` and `to_hash_bucket_strong` per hash) is most of
    the estimator's cost; the bucket positions of the update and of the
    lookup are the same, so they are computed once.
    """
    if not self.built:
      self.build()
    flat = self._flat_buckets(ids)
    self._update_buckets(flat, valid)
    return self._log_q_of(self._probability_of(flat, tf.shape(ids)))

  def _update_buckets(self, flat: tf.Tensor,
                      valid: Optional[tf.Tensor] = None) -> None:
    """The update of `update`, from the `[m, n]` bucket positions."""
    t = self.step + 1
    if valid is not None:
      flat = tf.boolean_mask(flat, tf.reshape(valid, [-1]), axis=1)
    idx, _ = tf.unique(tf.reshape(flat, [-1]))
    last = tf.gather(self.last_step, idx)
    # `t - last >= 1` when steps run one after another; a concurrent step
    # of another worker (asynchronous training) may have written a later
    # `last` meanwhile: its hit and this one are one step apart.
    gap = tf.cast(tf.maximum(t - last, 1), tf.float32)
    b = tf.gather(self.avg_gap, idx)
    if self.update_rule == "debiased":
      n = tf.gather(self.n_updates, idx) + 1.0
      rate = tf.maximum(self.alpha, 1.0 / n)
      new_b = b + rate * (gap - b)
      # An increment, not a write of `n`: the same value here, and under
      # asynchronous training every worker's hit is counted once.
      self.n_updates.scatter_add(tf.IndexedSlices(tf.ones_like(n), idx))
    else:
      new_b = (1.0 - self.alpha) * b + self.alpha * gap
      if self.update_rule == "first_gap":
        new_b = tf.where(tf.equal(last, 0), gap, new_b)
    self.avg_gap.scatter_update(tf.IndexedSlices(new_b, idx))
    self.last_step.scatter_update(
        tf.IndexedSlices(tf.fill(tf.shape(idx), t), idx))
    self.step.assign_add(1)  # `t`, counting every worker's step once

  def probability(self, ids: tf.Tensor) -> tf.Tensor:
    """`p_hat` per id, the same shape as `ids`."""
    if not self.built:
      self.build()
    return self._probability_of(self._flat_buckets(ids), tf.shape(ids))

  def _probability_of(self, flat: tf.Tensor, shape: tf.Tensor) -> tf.Tensor:
    """`probability` from the `[m, n]` bucket positions of the ids."""
    gaps = tf.reduce_max(tf.gather(self.avg_gap, flat), axis=0)
    p = tf.where(gaps > 0.0,
                 tf.clip_by_value(1.0 / tf.maximum(gaps, 1e-30),
                                  self.min_prob, 1.0),
                 tf.ones_like(gaps))
    return tf.reshape(p, shape)

  def log_q(self, ids: tf.Tensor, num_draws=None) -> tf.Tensor:
    del num_draws  # the estimate is already per global step
    return self._log_q_of(self.probability(ids))

  def _log_q_of(self, p: tf.Tensor) -> tf.Tensor:
    """`log_q` from `probability`."""
    if self.expected_count:
      return tf.math.log(-tf.math.log1p(-tf.minimum(p, 1.0 - 1e-6)))
    return tf.math.log(p)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"num_buckets": self.num_buckets,
                   "num_hashes": self.num_hashes, "alpha": self.alpha,
                   "update_rule": self.update_rule,
                   "min_prob": self.min_prob, "seed": self.seed,
                   "hashing": self.hashing,
                   "expected_count": self.expected_count})
    return config


CUSTOM_OBJECTS = {
    "StaticItemProbability": StaticItemProbability,
    "StreamingFrequencyEstimator": StreamingFrequencyEstimator,
}


def dense_id_estimator(num_ids: int, **kwargs
                       ) -> "StreamingFrequencyEstimator":
  """A streaming estimator for dense int ids `0..num_ids - 1` (model item
  indices): one bucket per id (`hashing="identity"`), so no collisions and
  no string hashing; `kwargs` as `StreamingFrequencyEstimator`'s."""
  return StreamingFrequencyEstimator(num_buckets=int(num_ids), num_hashes=1,
                                     hashing="identity", **kwargs)


def auto_num_buckets(num_items: Optional[int]) -> int:
  """A power of two >= 16x the catalog (>= 4096); 2^20 if unknown."""
  if not num_items:
    return 2**20
  return max(4096, 1 << int(np.ceil(np.log2(16 * num_items))))
