"""Shared mechanics of the samplers that draw negatives from the catalog.

Every catalog sampler (uniform, popularity, inverse popularity, balanced,
the uniform part of MNS / AMNS, the two-stage pool) draws model item indices
from a fixed proposal `q` over the catalog and embeds them with the item
tower. This module holds that machinery once:

* `catalog_weights(counts, kind, ...)`: unnormalised weights `w [N + 1]`
  over model indices (index 0, the out-of-vocabulary slot, always has weight
  0):

      uniform:    w_j = 1                      for every real item 1..N
      popularity: w_j = count_j^alpha          (count_j > 0; alpha = 0 gives
                                                uniform over seen items)
      inverse:    w_j = 1 / count_j            for count_j > 0, else 0

  and `cohort_weights(counts, pmf)` for the popularity-cohort sampler: one
  row per cohort `a` of the positive, `w_a(j) = pmf[a, c(j)] / |c(j)|`, so a
  draw picks cohort `c` with probability `pmf[a, c]` and then an item
  uniformly inside it.
* `CatalogDistribution`: a Keras layer keeping the normalised CDFs of `R`
  such rows as one non-trainable float64 state `cdf [R * (N + 1)]`
  (`distribute.add_state`: ON_WRITE / ONLY_FIRST_REPLICA, checkpointed,
  identical on every replica). Row `r` is stored as `r + F_r(j)`, so the
  concatenation is sorted and one 1-D `tf.searchsorted` serves every row.
  A draw is `j = searchsorted(cdf, r + u, side="right")` with `u ~ U[0, 1)`:
  `j` is the first index with `F_r(j) > u`, so `P(j) = F_r(j) - F_r(j - 1)
  = q_r(j)`, and zero-weight indices (the OOV slot among them) are never
  drawn. Cost: `O(B K log N)`.
* **Excluding the positive exactly**
  (docs/design/prakash.md#excluding-the-positive): with the positive `p`
  occupying `[F(p - 1), F(p))`, draw `u ~ U[0, 1 - q(p))` and skip its
  interval (`u += q(p)` when
  `u >= F(p - 1)`). This samples `q(j) / (1 - q(p))` for `j != p` in one pass,
  with no rejection loop. If the positive holds all the mass, the draw is
  masked instead.
* `CatalogSampler`: the per-row sampler built on it (per-query path,
  `drop_in_batch=True`): `K` negatives per row, embedded by
  `item_model(ids)` **with gradient** (docs/design/shared.md#gradient-rules),
  the user's training items excluded when a `consumed` test is given (see
  below), and
  an optional log expected count `log(K q_r(j))` (off by default, as in
  Prakash et al.; option `logq`).
* **Excluding the user's items** (`consumed`, `tfrs_negsamp.masking`): a
  draw whose item the row's user consumed is redrawn, at most
  `HISTORY_REDRAWS` times (fixed shapes: every draw is redrawn and kept only
  where needed), as the Deezer sampler rejects the user's items (up to 10
  tries); a draw still consumed after that is masked. Conditional on being
  kept, a draw follows `q_r` restricted to the items the user has not
  consumed (rejection sampling). With `logq`, `log(K q_r(j))` then differs
  from the exact log expected count by a per-row constant.

Randomness: stateless. Every draw takes an explicit seed `[2]`; the
samplers pass `importance_resampling.draw_seed(seed, step, draw)`, a
function of the sampler's `seed`, its step counter `step` (int64 `[]`,
non-trainable, `distribute.add_state`, checkpointed, advanced once per
training call), the replica id (each replica draws its own rows) and the
draw's index within the step (the redraw rounds below are draws 1, 2, ...).
So a run restarted from a checkpoint draws exactly what the uninterrupted
run draws (docs/design/multi_replica.md#d6). Two samplers with the same `seed`
draw the same uniforms at the same step: give samplers combined in one model
(`Compose`) different seeds to keep their draws independent.

Paper's query tower: SASRec (`--query_tower=sasrec`).

References:
  Prakash, Bermperidis, Chennu. Evaluating Performance and Bias of Negative
  Sampling in Large-Scale Sequential Recommendation Models. arXiv 2410.17276,
  2024.
"""

import dataclasses
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp import cohorts as cohorts_lib
from tfrs_negsamp import distribute
from tfrs_negsamp import masking
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import importance_resampling as ir

WEIGHTINGS = ("uniform", "popularity", "inverse")
# PCNS (Prakash et al. 2024), intended rule: 0.8 for the positive's own
# cohort, 0.1 for each other one. Rows: positive cohort; columns: drawn one.
DEFAULT_COHORT_PMF = ((0.8, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.1, 0.8))
# Redraw rounds for a draw the row's user consumed (then it is masked).
HISTORY_REDRAWS = 3


def check_counts(counts) -> np.ndarray:
  counts = np.asarray(counts, np.float64)
  if counts.ndim != 1 or counts.size < 2:
    raise ValueError("item_counts must be 1-D [N + 1] (index 0 = OOV), got "
                     "shape %s." % (counts.shape,))
  if np.any(counts < 0) or not np.all(np.isfinite(counts)):
    raise ValueError("item_counts must be finite and non-negative.")
  return counts


def check_seed(seed) -> int:
  """`seed` as an int >= 0 (the base seed of a sampler's stateless draws)."""
  if (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or
      seed < 0):
    raise ValueError("seed must be an integer >= 0, got %r." % (seed,))
  return int(seed)


def catalog_weights(counts: Sequence[float], kind: str,
                    alpha: float = 1.0) -> np.ndarray:
  """Unnormalised weights `[N + 1]` over model indices (index 0 gets 0).

  Args:
    counts: `[N + 1]` training counts per model index (index 0 = OOV).
    kind: "uniform" (all real items), "popularity" (`count^alpha` over items
      with a count) or "inverse" (`1 / count` over items with a count).
    alpha: popularity exponent.

  Returns:
    float64 `[N + 1]` weights.

  Raises:
    ValueError: unknown kind, bad counts, or no item with positive weight.
  """
  counts = check_counts(counts)
  seen = counts > 0
  if kind == "uniform":
    weights = np.ones_like(counts)
  elif kind == "popularity":
    weights = np.where(seen, np.power(np.where(seen, counts, 1.0), alpha),
                       0.0)
  elif kind == "inverse":
    weights = np.where(seen, 1.0 / np.where(seen, counts, 1.0), 0.0)
  else:
    raise ValueError("unknown weighting %r; valid: %s"
                     % (kind, ", ".join(WEIGHTINGS)))
  weights[0] = 0.0
  if not np.any(weights > 0):
    raise ValueError("no catalog item has a positive %s weight." % kind)
  return weights


def item_cohorts(counts: Sequence[float]) -> np.ndarray:
  """Cohort `[N + 1]` (0 head, 1 mid, 2 tail) of every model index.

  Uses `tfrs_negsamp.cohorts.popularity_cohorts` (equal-mass tertiles of the
  training counts, the cohorts of the evaluation) on the real items; the OOV
  slot is tail.
  """
  counts = check_counts(counts)
  return np.concatenate([[cohorts_lib.TAIL],
                         cohorts_lib.popularity_cohorts(counts[1:])]).astype(
                             np.int32)


def cohort_weights(counts: Sequence[float],
                   pmf: Sequence[Sequence[float]] = DEFAULT_COHORT_PMF
                   ) -> np.ndarray:
  """Weights `[3, N + 1]`: row `a` = proposal when the positive is in `a`.

  `w_a(j) = pmf[a][c(j)] / |c(j)|` for real items `j`, so cohort `c` gets
  mass `pmf[a][c]` and items are uniform inside it. An empty cohort loses
  its mass, which the normalisation spreads over the others in proportion.
  """
  pmf = np.asarray(pmf, np.float64)
  if pmf.shape != (3, 3) or np.any(pmf < 0):
    raise ValueError("pmf must be a non-negative 3x3 table, got %r." % (pmf,))
  cohort = item_cohorts(counts)
  sizes = np.bincount(cohort[1:], minlength=3).astype(np.float64)
  weights = pmf[:, cohort] / np.maximum(sizes[cohort], 1.0)[None, :]
  weights[:, 0] = 0.0
  if np.any(weights.sum(axis=1) <= 0):
    raise ValueError("a cohort row of pmf has no mass on a non-empty cohort.")
  return weights


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class CatalogDistribution(tf.keras.layers.Layer):
  """`R` fixed proposals over model indices, drawn by inverse-CDF search.

  State: `cdf` float64 `[R * (N + 1)]`, non-trainable, ON_WRITE /
  ONLY_FIRST_REPLICA (it never changes after construction, so it is the same
  on every replica). See the module docstring for the layout.

  Args:
    weights: `[N + 1]` or `[R, N + 1]` non-negative weights (index 0 must be
      0); each row is normalised.
  """

  def __init__(self, weights: Sequence[Any], **kwargs) -> None:
    super().__init__(**kwargs)
    w = np.asarray(weights, np.float64)
    if w.ndim == 1:
      w = w[None, :]
    if w.ndim != 2 or w.shape[1] < 2:
      raise ValueError("weights must be [N + 1] or [R, N + 1], got shape %s."
                       % (w.shape,))
    if np.any(w < 0) or not np.all(np.isfinite(w)):
      raise ValueError("weights must be finite and non-negative.")
    if np.any(w[:, 0] != 0):
      raise ValueError("index 0 (OOV) must have weight 0.")
    if np.any(w.sum(axis=1) <= 0):
      raise ValueError("every row of weights needs positive mass.")
    self._weights = w
    self.num_rows, self.size = w.shape  # size = N + 1
    # Rounding can pass 1 before the end of a row: capped, so the rows stay
    # sorted; the end is exactly 1, so that r + u (u < 1) stays in row r.
    cdf = np.minimum(np.cumsum(w / w.sum(axis=1, keepdims=True), axis=1),
                     1.0)
    cdf[:, -1] = 1.0
    self._cdf_init = (cdf + np.arange(self.num_rows)[:, None]).reshape(-1)
    # One row, equal weight on every real item: draws are computed, not
    # searched (`_sample_uniform`).
    self._uniform = bool(self.num_rows == 1 and np.all(w[0, 1:] == w[0, 1]))

  @property
  def num_items(self) -> int:
    return self.size - 1

  def probabilities(self) -> np.ndarray:
    """`[R, N + 1]` normalised proposals (NumPy; for tests and docs)."""
    return self._weights / self._weights.sum(axis=1, keepdims=True)

  def build(self, input_shape=None):
    self.cdf = distribute.add_state(
        self, "cdf", [self._cdf_init.shape[0]], tf.float64,
        tf.keras.initializers.Constant(self._cdf_init))
    super().build(input_shape)

  def _bounds(self, rows: tf.Tensor, ids: tf.Tensor):
    """`(F_r(j - 1), F_r(j))` for ids >= 1, without the row offset."""
    if not self.built:
      self.build()
    base_pos = tf.cast(rows, tf.int64) * self.size
    ids = tf.cast(ids, tf.int64)
    offset = tf.cast(rows, tf.float64)
    hi = tf.gather(self.cdf, base_pos + ids) - offset
    lo = tf.gather(self.cdf, base_pos + tf.maximum(ids - 1, 0)) - offset
    return tf.where(ids > 0, lo, 0.0), tf.where(ids > 0, hi, 0.0)

  def prob(self, ids: tf.Tensor, rows: Optional[tf.Tensor] = None
           ) -> tf.Tensor:
    """`q_r(ids)` (float32, same shape as `ids`); `rows` broadcasts."""
    ids = tf.cast(ids, tf.int64)
    if rows is None:
      rows = tf.zeros_like(ids)
    rows = tf.broadcast_to(tf.cast(rows, tf.int64), tf.shape(ids))
    lo, hi = self._bounds(rows, ids)
    return tf.cast(hi - lo, tf.float32)

  def sample(self, shape, seed: tf.Tensor, rows: Optional[tf.Tensor] = None,
             exclude: Optional[tf.Tensor] = None):
    """Draws ids with replacement.

    Args:
      shape: `[B, K]` (or any shape) of the draw.
      seed: `[2]` int seed of the stateless uniforms (`ir.draw_seed`).
      rows: optional int `[B]` proposal row per leading index (default 0).
      exclude: optional int64 `[B]` id excluded exactly from row `b`'s draws
        (the draw is from `q(j) / (1 - q(exclude_b))`, `j != exclude_b`).

    Returns:
      `(ids int64 shape, valid bool shape)`; `valid` is False only where
      the excluded id held all the mass of its row.
    """
    if not self.built:
      self.build()
    shape = tf.convert_to_tensor(shape, tf.int32)
    u = tf.random.stateless_uniform(shape, seed, dtype=tf.float64)
    if self._uniform:
      return self._sample_uniform(u, exclude)
    ones = tf.ones_like(u)
    lead = shape[0]
    if rows is None:
      rows = tf.zeros([lead], tf.int64)
    rows = tf.cast(rows, tf.int64)
    row_b = tf.reshape(rows, [-1] + [1] * (u.shape.rank - 1)) * tf.cast(
        ones, tf.int64)
    valid = tf.ones_like(u, tf.bool)
    if exclude is not None:
      exclude = tf.cast(exclude, tf.int64)
      lo, hi = self._bounds(rows, exclude)
      width = hi - lo
      shp = [-1] + [1] * (u.shape.rank - 1)
      lo, width = tf.reshape(lo, shp), tf.reshape(width, shp)
      u = u * (1.0 - width)
      u = tf.where(u >= lo, u + width, u)
      valid = tf.logical_and(valid, tf.broadcast_to(width < 1.0, tf.shape(u)))
      u = tf.minimum(u, 1.0 - 1e-12)
    values = tf.cast(row_b, tf.float64) + u
    pos = tf.searchsorted(self.cdf, tf.reshape(values, [-1]), side="right",
                          out_type=tf.int64)
    ids = tf.reshape(pos, tf.shape(u)) - row_b * self.size
    ids = tf.clip_by_value(ids, 1, self.num_items)
    return tf.stop_gradient(ids), valid

  def _sample_uniform(self, u: tf.Tensor, exclude: Optional[tf.Tensor]):
    """`sample` for a uniform proposal, by arithmetic instead of a search.

    With `n` items, `j = 1 + floor(u n)`; excluding `e` (`1 <= e <= n`):
    `j = 1 + floor(u (n - 1))`, plus 1 where `j >= e`. This is the
    inverse-CDF rule of `sample` (the same `u`, the same ids up to the
    rounding of the stored CDF) in `O(1)` per draw.
    """
    n = self.num_items
    if exclude is None:
      ids = tf.cast(tf.floor(u * n), tf.int64) + 1
      return tf.stop_gradient(tf.clip_by_value(ids, 1, n)), tf.ones_like(
          u, tf.bool)
    exclude = tf.reshape(tf.cast(exclude, tf.int64),
                         [-1] + [1] * (u.shape.rank - 1))
    real = tf.logical_and(exclude >= 1, exclude <= n)  # else no mass lost
    size = tf.where(real, tf.cast(n - 1, tf.float64), tf.cast(n, tf.float64))
    ids = tf.cast(tf.floor(u * size), tf.int64) + 1
    ids = tf.where(tf.logical_and(real, ids >= exclude), ids + 1, ids)
    valid = tf.broadcast_to(tf.logical_or(tf.logical_not(real), n > 1),
                            tf.shape(u))
    return tf.stop_gradient(tf.clip_by_value(ids, 1, n)), valid

  def sample_unique(self, num: int, seed: tf.Tensor) -> tf.Tensor:
    """`num` distinct ids of row 0, drawn without replacement.

    Gumbel-top-k over `log q` (`O(N)`): the same law as drawing one id at a
    time from `q` renormalised over the ids not yet drawn
    (docs/design/two_stage.md#stage-1).
    `num` must not exceed the number of ids with positive weight. `seed`:
    `[2]` int seed of the stateless uniforms (`ir.draw_seed`).
    """
    if not self.built:
      self.build()
    cdf = self.cdf[:self.size]
    q = cdf[1:] - cdf[:-1]  # [N], ids 1..N
    log_q = tf.where(q > 0, tf.math.log(tf.maximum(q, 1e-300)),
                     tf.constant(-np.inf, tf.float64))
    gumbel = -tf.math.log(-tf.math.log(tf.random.stateless_uniform(
        tf.shape(q), seed, minval=1e-300, maxval=1.0, dtype=tf.float64)))
    _, idx = tf.math.top_k(log_q + gumbel, k=num)
    return tf.stop_gradient(tf.cast(idx, tf.int64) + 1)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"weights": self._weights.tolist()})
    return config


class _Untracked:
  """Holds the item tower without making it a tracked sublayer.

  The tower belongs to the model; tracking it again under the sampler would
  list its weights twice and give them a second checkpoint path.
  """
  __slots__ = ("fn",)

  def __init__(self, fn):
    self.fn = fn


def get_item_model(layer):
  holder = getattr(layer, "_item_model_ref", None)
  return None if holder is None else holder.fn


def set_item_model(layer, fn) -> None:
  """Stores `fn` on `layer` untracked (see `_Untracked`)."""
  setattr(layer, "_item_model_ref", _Untracked(fn))


def embed(layer, ids: tf.Tensor) -> tf.Tensor:
  """`layer.item_model(ids)`, with gradient; a clear error without one."""
  fn = get_item_model(layer)
  if fn is None:
    raise ValueError("%s needs item_model to embed sampled ids (it is not "
                     "part of the config: pass it again after "
                     "deserialisation)." % type(layer).__name__)
  return fn(ids)


def _collect_ids(candidates) -> np.ndarray:
  """The distinct ids of `candidates`, in first-occurrence order."""
  if isinstance(candidates, tf.data.Dataset):
    chunks = []
    for batch in candidates:
      if not tf.is_tensor(batch):
        raise ValueError(
            "candidates must be a batched dataset of ids (e.g. "
            "movies.batch(128)), got elements of type %s."
            % type(batch).__name__)
      if batch.shape.rank != 1:
        raise ValueError(
            "candidates must be a batched dataset of ids: each batch must "
            "have rank 1 (e.g. movies.batch(128)), got shape %s."
            % (batch.shape,))
      chunks.append(batch.numpy())
    ids = (np.concatenate(chunks) if chunks else np.zeros([0], np.int64))
  else:
    ids = np.asarray(candidates)
    if ids.ndim != 1:
      raise ValueError("candidates must be a 1-D array or a batched dataset "
                       "of ids, got shape %s." % (ids.shape,))
  if ids.size == 0:
    raise ValueError("candidates is empty.")
  if ids.dtype.kind not in "iuSUO":
    raise ValueError("candidates must hold int or string ids, got dtype %s."
                     % ids.dtype)
  _, first = np.unique(ids, return_index=True)
  return ids[np.sort(first)]


class CandidateCatalog(tf.keras.layers.Layer):
  """The candidate ids of a TFRS model, as model indices `1..N`.

  Built like `tfrs.metrics.FactorizedTopK`'s candidates: from a batched
  dataset of candidate ids (e.g. `movies.batch(128)`) and the candidate
  tower. Distinct ids, in first-occurrence order, get the indices `1..N`
  (a `StringLookup` or `IntegerLookup`, index 0 = out of vocabulary), which
  the catalog samplers draw and XIR caches; `embed(indices)` runs the
  candidate tower on the ids of those indices, with gradient. The tower
  belongs to the model and is not tracked again here.

  Args:
    candidates: batched `tf.data.Dataset` of int or string ids (or a 1-D
      array of them).
    candidate_model: callable ids `[n]` -> embeddings `[n, d]`.

  Raises:
    ValueError: for a dataset whose batches are not 1-D ids, or an empty
      one; TypeError: for a non-callable `candidate_model`.
  """

  def __init__(self, candidates, candidate_model, **kwargs) -> None:
    super().__init__(**kwargs)
    if not callable(candidate_model):
      raise TypeError("candidate_model must be callable (ids -> "
                      "embeddings), got %r." % (candidate_model,))
    vocab = _collect_ids(candidates)
    if vocab.dtype.kind in "SUO":
      vocab = np.array([v.decode() if isinstance(v, bytes) else str(v)
                        for v in vocab], dtype=object)
      self._lookup = tf.keras.layers.StringLookup(
          vocabulary=list(vocab), mask_token=None, num_oov_indices=1)
      self._ids = tf.constant(list(vocab), tf.string)
    else:
      vocab = vocab.astype(np.int64)
      self._lookup = tf.keras.layers.IntegerLookup(
          vocabulary=vocab, mask_token=None, num_oov_indices=1,
          oov_token=int(vocab.min()) - 1)
      self._ids = tf.constant(vocab, tf.int64)
    self.vocabulary = vocab
    self.num_items = int(vocab.shape[0])
    self._model_ref = _Untracked(candidate_model)

  @property
  def candidate_model(self):
    return self._model_ref.fn

  def lookup(self, ids: tf.Tensor) -> tf.Tensor:
    """int64 indices `1..N` of `ids` (0 for an id not in `candidates`)."""
    ids = tf.convert_to_tensor(ids)
    if (ids.dtype == tf.string) != (self._ids.dtype == tf.string):
      raise ValueError("candidate_ids are %s but candidates= held %s ids."
                       % (ids.dtype.name, self._ids.dtype.name))
    if ids.dtype != tf.string:
      ids = tf.cast(ids, tf.int64)
    return tf.cast(self._lookup(ids), tf.int64)

  def ids(self, indices: tf.Tensor) -> tf.Tensor:
    """The candidate ids of indices `1..N` (index 0 gives the first id)."""
    return tf.gather(self._ids, tf.maximum(tf.cast(indices, tf.int64) - 1, 0))

  def embed(self, indices: tf.Tensor) -> tf.Tensor:
    """`candidate_model(ids(indices))`, `[...]` -> `[..., d]`."""
    indices = tf.convert_to_tensor(indices)
    flat = self.candidate_model(self.ids(tf.reshape(indices, [-1])))
    return tf.reshape(flat, tf.concat([tf.shape(indices),
                                       tf.shape(flat)[-1:]], axis=0))

  def counts(self, item_counts) -> Optional[np.ndarray]:
    """`[N + 1]` counts per index from per-candidate counts, or None.

    `item_counts` may be a mapping `{id: count}` (missing ids count 0),
    `[N]` counts in the order of the distinct candidates, or `[N + 1]`
    counts per index (index 0 = OOV).
    """
    if item_counts is None:
      return None
    if isinstance(item_counts, dict):
      def key(v):
        return v if self._ids.dtype != tf.string else str(v)
      table = {(k.decode() if isinstance(k, bytes) else key(k)): c
               for k, c in item_counts.items()}
      values = [table.get(key(v) if self._ids.dtype == tf.string
                          else int(v), 0) for v in self.vocabulary]
      return np.concatenate([[0.0], np.asarray(values, np.float64)])
    counts = np.asarray(item_counts, np.float64)
    if counts.ndim == 1 and counts.shape[0] == self.num_items:
      return np.concatenate([[0.0], counts])
    if counts.ndim == 1 and counts.shape[0] == self.num_items + 1:
      return counts
    raise ValueError(
        "item_counts must be a {id: count} mapping, [N] or [N + 1] counts "
        "for the N = %d distinct candidates, got shape %s."
        % (self.num_items, counts.shape))


def attach_candidates(layer, candidates, candidate_model, item_counts,
                      item_model, needs_counts: bool):
  """Sets `layer.candidate_catalog`; returns `(counts [N + 1], item_model)`.

  With `candidates` and `candidate_model` the catalog maps ids to indices
  and `item_model` becomes `catalog.embed`; without them, `item_counts`
  (per model index) is required. Counts absent with candidates: all ones
  (uniform), or a `ValueError` when the sampler `needs_counts`.
  """
  layer.candidate_catalog = None
  if candidates is None and candidate_model is None:
    if item_counts is None:
      raise ValueError("%s needs item_counts, or candidates= and "
                       "candidate_model=." % type(layer).__name__)
    return item_counts, item_model
  if candidates is None or candidate_model is None:
    raise ValueError("%s: pass both candidates= (a batched dataset of "
                     "candidate ids) and candidate_model= (the candidate "
                     "tower)." % type(layer).__name__)
  if item_model is not None:
    raise ValueError("pass item_model= or candidate_model=, not both.")
  layer.candidate_catalog = CandidateCatalog(candidates, candidate_model,
                                             name="candidate_catalog")
  counts = layer.candidate_catalog.counts(item_counts)
  if counts is None:
    if needs_counts:
      raise ValueError("%s needs item_counts (a {id: count} mapping or "
                       "counts per candidate)." % type(layer).__name__)
    counts = np.ones([layer.candidate_catalog.num_items + 1])
    counts[0] = 0.0
  return counts, layer.candidate_catalog.embed


def draw_excluding(draw: Callable[[int], Any],
                   consumed: Optional[masking.Consumed],
                   positive_ids: tf.Tensor,
                   redraws: int = HISTORY_REDRAWS):
  """Per-row draws with the user's consumed items redrawn, then masked.

  Args:
    draw: `(k) -> (ids [B, K] int64, valid [B, K] bool)`, a fresh draw;
      `k` (0 for the first draw, then 1, 2, ... for the redraw rounds)
      is its index within the step, for its seed.
    consumed: `masking.Consumed` of the rows' users, or None (one draw).
    positive_ids: `[B]` the rows' positives (never counted as consumed:
      they are excluded by the draw itself).
    redraws: redraw rounds (a static count).

  Returns:
    `(ids, valid)`; `valid` is False where a draw is still consumed.
  """
  ids, valid = draw(0)
  if consumed is None:
    return ids, valid
  for k in range(redraws):
    bad = masking.negatives_mask(consumed, ids, positive_ids)
    new_ids, new_valid = draw(k + 1)
    ids = tf.where(bad, new_ids, ids)
    valid = tf.where(bad, new_valid, valid)
  bad = masking.negatives_mask(consumed, ids, positive_ids)
  return tf.stop_gradient(ids), tf.logical_and(valid, tf.logical_not(bad))


class CatalogSampler(base.NegativeSampler):
  """Base of the per-row catalog samplers (uniform, popularity, ...).

  Row `i` (positive `p_i`) gets `K` negatives `j ~ q_{r(i)}(j | j != p_i)`
  drawn with replacement, embedded by `item_model` with gradient. Its logits
  over `[positive | K negatives]` (the in-batch columns are dropped):

      z_i0 = <u_i, v_{p_i}> / tau
      z_ik = <u_i, item_model(j_ik)> / tau - [logq] log(K q(j_ik))
      l_i  = -z_i0 + logsumexp_k z_ik

  Subclasses choose the proposal (`_distribution_weights`) and the row of
  each positive (`_rows`). The item tower is not part of the config: it is
  the model's, and the registry factories pass it from the
  `SamplerContext`; a deserialised sampler needs `item_model=` again.

  Args:
    item_counts: `[N + 1]` training counts per model index (0 = OOV).
    num_negatives: `K`, negatives per row.
    logq: subtract `log(K q(j))` (the log expected count) from the negatives
      (and, with `shared`, from the positive too). On by default: the
      studies train uncorrected, but uncorrected popularity-shaped draws
      rank popular items too low (ML-100K, SASRec tower, recall@50:
      popularity 0.325 -> 0.418, balanced 0.332 -> 0.445 with it;
      docs/results/defaults.md). `logq=False` is the studies' rule.
    item_model: callable int64 ids `[...]` -> `[..., d]` embeddings.
    remove_accidental_hits: also mask negatives equal to the positive (they
      are already excluded from the draw; this is a guard).
    candidates: instead of model indices, a batched dataset of the
      candidate ids (int or string, e.g. `movies.batch(128)`), with
      `candidate_model` (the candidate tower); `item_counts` is then
      optional per candidate (see `CandidateCatalog.counts`).
    candidate_model: callable candidate ids -> embeddings.
    seed: base seed of the stateless draws (see the module docstring).
    shared: draw the `K` negatives once per call, shared by every row as
      extra columns (SASRec+'s 3,000 sampled negatives), instead of per
      row; a negative equal to a row's positive is masked there.

  Example: the set-up of the samplers' examples (the TFRS tutorial's shape:
  string titles, a `StringLookup` + `Embedding` candidate tower):

  >>> import tensorflow as tf
  >>> import tfrs_negsamp as tn
  >>> movies = tf.data.Dataset.from_tensor_slices(["a", "b", "c", "d"])
  >>> movie_model = tf.keras.Sequential([
  ...     tf.keras.layers.StringLookup(vocabulary=["a", "b", "c", "d"],
  ...                                  mask_token=None),
  ...     tf.keras.layers.Embedding(5, 2)])
  >>> titles = tf.constant(["a", "c"])   # the batch's candidate ids
  >>> queries = tf.ones([2, 2])          # the batch's query embeddings
  >>> movie_model(titles).shape
  TensorShape([2, 2])
  """

  # Whether the proposal needs counts (False: uniform, counts optional).
  needs_counts = True

  def __init__(self, item_counts: Optional[Sequence[float]] = None,
               num_negatives: int = 32, logq: bool = True,
               item_model: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               remove_accidental_hits: bool = True,
               candidates=None, candidate_model=None, seed: int = 0,
               shared: bool = False, **kwargs) -> None:
    kwargs.pop("frequency", None)
    super().__init__(remove_accidental_hits=remove_accidental_hits, **kwargs)
    self.seed = check_seed(seed)
    self.shared = bool(shared)
    if self.shared and type(self)._rows is not CatalogSampler._rows:
      raise ValueError("%s draws from a proposal per positive: shared=True "
                       "(one draw for every row) does not apply."
                       % type(self).__name__)
    self.step = distribute.add_state(self, "step", [], tf.int64)
    if (isinstance(num_negatives, bool) or
        not isinstance(num_negatives, (int, np.integer)) or
        num_negatives < 1):
      raise ValueError("num_negatives must be an integer >= 1, got %r."
                       % (num_negatives,))
    item_counts, item_model = attach_candidates(
        self, candidates, candidate_model, item_counts, item_model,
        self.needs_counts)
    self._counts = check_counts(item_counts)
    self.num_negatives = int(num_negatives)
    self.logq = bool(logq)
    self.item_model = item_model
    self.distribution = CatalogDistribution(self._distribution_weights(),
                                            name="distribution")

  item_model = property(lambda self: get_item_model(self),
                        lambda self, fn: set_item_model(self, fn))

  def build(self, input_shape=None):
    self.distribution.build()
    super().build(input_shape)

  def _distribution_weights(self) -> np.ndarray:
    raise TypeError("%s must define its proposal." % type(self).__name__)

  def _rows(self, positive_ids: tf.Tensor) -> Optional[tf.Tensor]:
    del positive_ids
    return None

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    del candidate_embeddings, candidate_ids
    batch = tf.shape(query_embeddings)[0]
    rows = self._rows(positive_ids)
    step = self.step.read_value()
    if self.shared:
      return self._shared_sample(positive_ids, step, training)
    ids, valid = draw_excluding(
        lambda k: self.distribution.sample(
            [batch, self.num_negatives], ir.draw_seed(self.seed, step, k),
            rows=rows, exclude=positive_ids),
        consumed, positive_ids)
    if training:
      self.step.assign_add(1)
    log_q = None
    if self.logq:
      row_b = None if rows is None else tf.expand_dims(rows, 1)
      log_q = tf.stop_gradient(tf.math.log(
          float(self.num_negatives) * self.distribution.prob(ids, row_b)))
    # Each distinct drawn item encoded once (sequence rows draw
    # `B L K` ids from one catalog).
    table, index = base.encode_per_query(lambda i: embed(self, i), ids)
    per_query = base.PerQuery(embeddings=None, ids=ids, log_q=log_q,
                              mask=valid, table=table, index=index)
    return [base.CandidateGroup(per_query=per_query, drop_in_batch=True,
                                remove_accidental_hits=(
                                    self.remove_accidental_hits))]

  def _shared_sample(self, positive_ids: tf.Tensor, step: tf.Tensor,
                     training) -> List[base.CandidateGroup]:
    """`K` draws shared by every row: extra columns after the positive.

    The logits of row `i` are `[<u_i, v_{p_i}> | <u_i, e_j>]` over the
    shared draws `j`; the task masks a draw equal to the row's positive
    (an accidental hit) or consumed by the row's user.
    """
    ids, _ = self.distribution.sample(
        [self.num_negatives], ir.draw_seed(self.seed, step, 0))
    if training:
      self.step.assign_add(1)
    log_q = None
    if self.logq:
      k = float(self.num_negatives)
      negatives = tf.math.log(k * self.distribution.prob(ids))
      positives = tf.math.log(k * tf.maximum(
          self.distribution.prob(positive_ids), 1e-30))
      log_q = tf.stop_gradient(tf.concat([
          positives[:, None],
          tf.broadcast_to(negatives[None, :],
                          tf.stack([tf.shape(positives)[0],
                                    tf.shape(negatives)[0]]))], axis=1))
    return [base.CandidateGroup(
        extra_embeddings=embed(self, ids), extra_ids=ids,
        column_log_q=log_q, drop_in_batch=True,
        remove_accidental_hits=self.remove_accidental_hits)]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.pop("frequency", None)
    config.update({"item_counts": self._counts.tolist(),
                   "num_negatives": self.num_negatives, "logq": self.logq,
                   "seed": self.seed, "shared": self.shared})
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


@dataclasses.dataclass(frozen=True)
class PerRowCatalogOptions:
  """Options of every catalog sampler (balanced: a proposal per row)."""
  num_negatives: int = base.option(
      32, low=0, zero_is_default=True,
      help="catalog samplers: negatives per row K",
      tune=base.Tune("int", 8, 256, log=True))
  logq: bool = base.option(
      True, help="subtract the log expected count of the sampled columns "
      "(catalog samplers: on, a departure from the studies, which train "
      "uncorrected; two-stage: the stage-1 pool; mixed: the mixture "
      "correction)")


@dataclasses.dataclass(frozen=True)
class CatalogOptions(PerRowCatalogOptions):
  """Options of the catalog samplers with one proposal (uniform, ...)."""
  shared: bool = base.option(
      False, help="catalog samplers: one draw of K negatives shared by "
      "every row (SASRec+'s sampled softmax) instead of K per row")


def catalog_kwargs(context: base.SamplerContext,
                   options: PerRowCatalogOptions) -> Dict[str, Any]:
  """The arguments every catalog factory passes."""
  kwargs = {"item_counts": context.item_counts,
            "num_negatives": options.num_negatives, "logq": options.logq,
            "item_model": context.item_model, "seed": context.seed}
  if isinstance(options, CatalogOptions):
    kwargs["shared"] = options.shared
  return kwargs
