"""Two-stage negative sampling (Tran et al., SIGIR 2019), softmax or CML.

Stage 1 (both rules): one pool of `C` distinct items per step, shared by
every row, drawn without replacement with `P_1(j) ~ count_j^beta`
(Gumbel-top-C over `log P_1`, `O(N)`; `beta = 0`: uniform over the items
seen in training), drawn by each replica (docs/design/two_stage.md#replicas).

Stage 2 has two rules (`rule`):

* "reference" (default), the rule of the reference code
  (deezer/sigir2019-2stagesampling, `SpreadoutSampler`): for the pair
  `(u_i, p_i)` and pool item `c`, the cosine similarity to the **positive
  item** on a stale item table `T`,

      s_ic = <T[p_i], T[c]>,        T[j] = v_j / ||v_j||,

  gives the spread-out weight (inverse density of the cosine of two random
  unit vectors in `R^d`, Wu et al. ICCV 2017)

      w_ic = (1 - s_ic^2)^(1 - (d - 1)/2)   if s_ic > 0,   else 0,

  computed in log space, `log w = (1 - (d-1)/2) log(1 - s^2 + 1e-8)`.
  Row `i` draws `K2` pool items without replacement with `p ~ w_i`
  (Gumbel-top-K2 over `log w_i`); when fewer than `K2` items have positive
  weight (with `K2 = 1`: none), the rest are drawn uniformly from the
  row's zero-weight pool items, as the reference falls back to a uniform
  draw from the pool. `K2 = 1` for `loss="triplet"` (the reference: one
  negative per (user, positive) pair); `K2 = num_hard_negatives` for the
  softmax (a departure: the reference has no softmax variant).
  The user's training items are **excluded before the draw** (zero weight):
  the reference rejects and redraws them up to 10 times; masking is the
  exact, graph-friendly limit of that loop (docs/design/two_stage.md#stage-2).
  Excluded are
  the row's positive and, when the model passes `consumed`
  (`--mask_history`), every item the row's user consumed in training. A row
  whose pool holds no other allowed item gets a masked column (no softmax
  mass, no hinge term), never a consumed item.
  The table `T` `[N + 1, d]` is non-trainable state (`distribute.add_state`,
  identical on every replica), refreshed from the item tower every
  `refresh_steps` training steps (reference: 100 batches): at training
  steps `0, R, 2R, ...` before it is used, so the first step fills it.
  Rows are L2-normalised (the reference normalises its embeddings,
  `activate_l2_norm=True`; the weights assume unit vectors). Only the
  selection uses `T`: the drawn negatives are embedded freshly by the item
  tower, with gradient (the pool once, `C` forwards; rows gather from it).
  Each replica draws its own rows.
  Default pool: the reference draws 2000 of 130,791 items (1.5%); scaled to
  the catalog, `C = min(2000, max(128, round(N * 2000 / 130791)))` (at least
  128 so that small catalogs still offer a choice: 128 of ML-100K's 1,682
  items), capped at the items with positive stage-1 weight.
* "query_score" (the package's first rule; the first mapping of
  docs/design/two_stage.md#softmax-mapping):
  per query keep the `K2` pool items with the highest current model score
  `<u_i, c_j>` (TFRS `HardNegativeMining` via `num_hard_negatives`) after
  accidental hits (and consumed items, with `consumed`) are masked; the
  pool is embedded by the item tower with gradient. Default pool 512.

Loss (`loss`):
* "softmax" (default): over `[positive | negatives]` (the in-batch columns
  are dropped, as in the reference code, which has no in-batch negatives):
  `l_i = -z_i0 + logsumexp_{j in {0} + S_i} z_ij`, with
  `z_ij = <u_i, c_j>/tau` and, with `logq=True`, minus the log inclusion
  probability `log(1 - (1 - P_1(j))^C)` on every column (off by default: the
  paper has no correction and, after the selection, the softmax is no longer
  an unbiased estimate anyway). This loss is a departure from the reference
  (CML hinge).
* "triplet": the CML hinge `[margin + ||u - v_pos||^2 - min_j ||u - c_j||^2]_+`
  summed over the batch (`losses.CMLTripletLoss`). With the reference rule
  the minimum runs over the one drawn negative; with "query_score" over the
  whole pool (the hardest negative). The model's task reads the sampler's
  `loss` and `margin` attributes.

Randomness: stateless (docs/design/multi_replica.md#d6). The pool and the
stage-2 draws
are draws 0 and 1 of `importance_resampling.draw_seed(seed, step, draw)`,
a function of the sampler's `seed`, its step counter and the replica id,
so a run restarted from a checkpoint draws what the uninterrupted run
draws.

State: the popularity CDF `[N + 1]` (constant), the step counter `step`
int64 `[]` (advanced once per training call); with the reference rule also
`item_table` float32 `[N + 1, d]`.

Paper's model: CML (id embeddings; `--query_tower=id`).

References:
  Tran, Hennequin, Royo-Letelier, Moussallam. Improving Collaborative Metric
  Learning with Efficient Negative Sampling. SIGIR 2019 (arXiv 1909.10912).
  Wu, Manmatha, Smola, Krahenbuhl. Sampling Matters in Deep Embedding
  Learning. ICCV 2017.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp import losses
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import importance_resampling as ir
from tfrs_negsamp.samplers import warmup

REFERENCE = "reference"
QUERY_SCORE = "query_score"
RULES = (REFERENCE, QUERY_SCORE)
# The reference script: a 2000-item pool out of 130,791 items.
REFERENCE_POOL = 2000
REFERENCE_CATALOG = 130791
MIN_DEFAULT_POOL = 128
QUERY_SCORE_POOL = 512
REFERENCE_REFRESH_STEPS = 100


def default_pool_size(num_items: int, rule: str = REFERENCE) -> int:
  """The default stage-1 pool `C` for a catalog of `num_items` items.

  Reference rule: the reference fraction 2000 / 130,791 of the catalog,
  at least 128 and at most 2000. Query-score rule: 512.
  """
  if rule == QUERY_SCORE:
    return QUERY_SCORE_POOL
  scaled = int(round(num_items * REFERENCE_POOL / REFERENCE_CATALOG))
  return min(REFERENCE_POOL, max(MIN_DEFAULT_POOL, scaled))


def spread_out_log_weights(similarity: tf.Tensor, dim: int) -> tf.Tensor:
  """`log w = (1 - (d - 1)/2) log(1 - s^2 + 1e-8)` for `s > 0`, else -inf.

  Args:
    similarity: cosine similarities `s` (any shape).
    dim: the embedding dimension `d`.

  Returns:
    float64 log weights, same shape; `-inf` where `s <= 0` (weight 0).
  """
  s = tf.clip_by_value(tf.cast(similarity, tf.float64), -1.0, 1.0)
  exponent = 1.0 - (float(dim) - 1.0) / 2.0
  log_w = exponent * tf.math.log(1.0 - tf.square(s) + 1e-8)
  return tf.where(s > 0, log_w, tf.constant(-np.inf, tf.float64))


def draw_by_weight(log_weights: tf.Tensor, allowed: tf.Tensor,
                   num: int, seed) -> Tuple[tf.Tensor, tf.Tensor]:
  """Per row, `num` columns without replacement, `p ~ exp(log_weights)`.

  Gumbel-top-`num` over `log w` among the allowed columns with finite
  weight: the law of drawing one column at a time from `w` renormalised
  over the columns not yet drawn. When a row has fewer than `num` such
  columns, the rest come uniformly (without replacement) from its allowed
  zero-weight columns (their keys are shifted below every weighted key);
  beyond that, disallowed columns fill the row and are flagged.

  Args:
    log_weights: float64 `[B, C]`, `-inf` = weight 0.
    allowed: bool `[B, C]`, False = never drawn.
    num: draws per row (`<= C`).
    seed: `[2]` int seed of the stateless uniforms (`ir.draw_seed`).

  Returns:
    `(index int32 [B, num], ok bool [B, num])`: the drawn columns, and
    False where a slot could only be filled by a disallowed column.
  """
  log_weights = tf.cast(log_weights, tf.float64)
  allowed = tf.cast(allowed, tf.bool)
  uniform = tf.random.stateless_uniform(tf.shape(log_weights), seed,
                                        minval=1e-300, maxval=1.0,
                                        dtype=tf.float64)
  gumbel = -tf.math.log(-tf.math.log(uniform))
  inf = tf.constant(np.inf, tf.float64)
  weighted = tf.logical_and(allowed, tf.math.is_finite(log_weights))
  fill = tf.logical_and(allowed, tf.logical_not(weighted))
  key_weighted = tf.where(weighted, log_weights + gumbel, -inf)
  lowest = tf.reduce_min(tf.where(weighted, key_weighted, inf), axis=1,
                         keepdims=True)
  top_fill = tf.reduce_max(tf.where(fill, gumbel, -inf), axis=1,
                           keepdims=True)
  shift = tf.where(
      tf.logical_and(tf.math.is_finite(lowest), tf.math.is_finite(top_fill)),
      lowest - 1.0 - top_fill, tf.zeros_like(lowest))
  key = tf.where(weighted, key_weighted,
                 tf.where(fill, gumbel + shift, -inf))
  _, index = tf.math.top_k(key, k=num)
  ok = tf.gather(allowed, index, batch_dims=1)
  return index, ok


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class TwoStageSampler(base.NegativeSampler):
  """Popularity^beta pool, then stage 2 by `rule` (see the module doc).

  The item tower is not part of the config (it is the model's); pass it as
  `item_model=` when deserialising.

  Args:
    item_counts: `[N + 1]` training counts per model index (0 = OOV).
    pool_size: `C`, the stage-1 pool (capped at the items with weight);
      None: `default_pool_size(N, rule)`.
    beta: popularity exponent of stage 1 (1, the reference's). A uniform
      pool (0) is better on ML-100K (recall@50 0.436 against 0.392, SASRec
      tower, `logq` on) and collapses on Amazon Video Games (0.011 against
      0.107 on 30% of its users): tail items with untrained embeddings fill
      the pool (docs/results/defaults.md#samplers).
    num_hard_negatives: `K2`, negatives per row with the softmax loss.
    logq: subtract the log inclusion probability of stage 1. On by
      default (the reference trains uncorrected): ML-100K, SASRec tower,
      recall@50 0.252 -> 0.392 (docs/results/defaults.md#samplers).
    loss: "softmax" or "triplet".
    margin: hinge margin of the triplet loss.
    item_model: callable int64 ids `[...]` -> `[..., d]`.
    remove_accidental_hits: mask negatives equal to the row's positive.
    rule: stage 2, "reference" (spread-out weights of the similarity to the
      positive on a stale table) or "query_score" (top-K2 by query score).
    refresh_steps: reference rule: training steps between refreshes of the
      stale item table.
    candidates: instead of model indices, a batched dataset of the candidate
      ids (int or string), with `candidate_model` (the candidate tower);
      `item_counts` is then per candidate (`catalog.CandidateCatalog`).
    candidate_model: the candidate tower, ids -> embeddings.
    seed: base seed of the stateless draws.

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> sampler = tn.samplers.TwoStageSampler(
  ...     candidates=movies.batch(2), candidate_model=movie_model,
  ...     item_counts=[4, 3, 2, 1], pool_size=3, num_hard_negatives=1,
  ...     rule="query_score")
  >>> loss = tn.tasks.Retrieval(sampler=sampler)(
  ...     queries, movie_model(titles), candidate_ids=titles)
  >>> loss.shape
  TensorShape([])
  """

  def __init__(self, item_counts: Optional[Sequence[float]] = None,
               pool_size: Optional[int] = None,
               beta: float = 1.0, num_hard_negatives: int = 32,
               logq: bool = True, loss: str = losses.SOFTMAX,
               margin: float = 1.0,
               item_model: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               remove_accidental_hits: bool = True, rule: str = REFERENCE,
               refresh_steps: int = REFERENCE_REFRESH_STEPS,
               candidates=None, candidate_model=None, seed: int = 0,
               **kwargs) -> None:
    kwargs.pop("frequency", None)
    super().__init__(remove_accidental_hits=remove_accidental_hits, **kwargs)
    item_counts, item_model = catalog.attach_candidates(
        self, candidates, candidate_model, item_counts, item_model,
        needs_counts=True)
    if loss not in losses.LOSS_TYPES:
      raise ValueError("unknown loss %r; valid: %s"
                       % (loss, ", ".join(losses.LOSS_TYPES)))
    if rule not in RULES:
      raise ValueError("unknown two-stage rule %r; valid: %s"
                       % (rule, ", ".join(RULES)))
    self._counts = catalog.check_counts(item_counts)
    if pool_size is None:
      pool_size = default_pool_size(self._counts.size - 1, rule)
    if int(pool_size) < 1 or int(num_hard_negatives) < 1:
      raise ValueError("pool_size and num_hard_negatives must be >= 1, got "
                       "%r, %r." % (pool_size, num_hard_negatives))
    if int(refresh_steps) < 1:
      raise ValueError("refresh_steps must be >= 1, got %r." % refresh_steps)
    self.rule = rule
    self.seed = catalog.check_seed(seed)
    self.refresh_steps = int(refresh_steps)
    self.beta = float(beta)
    weights = catalog.catalog_weights(self._counts, "popularity", self.beta)
    self.pool_size = int(pool_size)
    self._pool = min(self.pool_size, int(np.sum(weights > 0)))
    self.num_hard_negatives = int(num_hard_negatives)
    self.logq = bool(logq)
    self.loss = loss
    self.margin = float(margin)
    self.item_model = item_model
    self.distribution = catalog.CatalogDistribution(weights, name="stage1")

  item_model = property(lambda self: catalog.get_item_model(self),
                        lambda self, fn: catalog.set_item_model(self, fn))

  @property
  def num_draws(self) -> int:
    """Reference rule: negatives drawn per row (1 for the triplet loss)."""
    k = 1 if self.loss == losses.TRIPLET else self.num_hard_negatives
    return min(k, self._pool)

  @property
  def needs_embedding_dim(self) -> bool:
    return self.rule == REFERENCE

  def build(self, input_shape=None):
    self.distribution.build()
    if self.rule == REFERENCE:
      dim = (tf.TensorShape(input_shape)[-1] if input_shape is not None
             else None)
      if dim is None:
        raise ValueError("TwoStageSampler(rule='reference') needs a known "
                         "embedding dimension, got query shape %s."
                         % (input_shape,))
      self.item_table = distribute.add_state(
          self, "item_table", [self._counts.size, int(dim)], tf.float32)
    self.step = distribute.add_state(self, "step", [], tf.int64)
    super().build(input_shape)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    del candidate_embeddings, candidate_ids
    if self.rule == REFERENCE:
      del query_embeddings
      return self._sample_reference(positive_ids, training, consumed)
    del query_embeddings
    if not self.built:
      self.build()
    pool_ids = self.distribution.sample_unique(
        self._pool, ir.draw_seed(self.seed, self.step.read_value(), 0))
    if training:
      self.step.assign_add(1)
    pool = catalog.embed(self, pool_ids)
    log_q = None
    if self.logq:
      # Columns [positive | pool]: row-dependent first column -> [B, 1 + C].
      ids = tf.concat([
          tf.expand_dims(positive_ids, 1),
          tf.broadcast_to(tf.expand_dims(pool_ids, 0),
                          [tf.shape(positive_ids)[0], self._pool])], axis=1)
      log_q = self._log_inclusion(ids)
    mask = None
    if consumed is not None:
      # Layout [positive | pool]: the positive column is always kept.
      free = tf.logical_not(consumed(pool_ids))
      mask = tf.concat([tf.ones_like(free[:, :1]), free], axis=1)
    hard = (self.num_hard_negatives if self.loss == losses.SOFTMAX else None)
    return [base.CandidateGroup(
        extra_embeddings=pool, extra_ids=pool_ids, column_log_q=log_q,
        score_mask=mask, drop_in_batch=True, num_hard_negatives=hard,
        remove_accidental_hits=self.remove_accidental_hits)]

  def _log_inclusion(self, ids: tf.Tensor) -> tf.Tensor:
    """`log(1 - (1 - P_1(j))^C)`, the log inclusion probability of stage 1."""
    p = tf.cast(self.distribution.prob(ids), tf.float64)
    inclusion = -tf.math.expm1(self._pool * tf.math.log1p(
        -tf.minimum(p, 1.0 - 1e-12)))
    return tf.stop_gradient(tf.cast(tf.math.log(
        tf.maximum(inclusion, 1e-30)), tf.float32))

  def stale_table(self, training: bool) -> tf.Tensor:
    """The stale item table `[N + 1, d]`, refreshed first when due.

    In training, at steps `0, R, 2R, ...` (`R = refresh_steps`) the table
    is recomputed from the item tower (L2-normalised rows, no gradient)
    before it is read; the step counter then advances. Every replica
    computes the same refresh from the same weights and the write keeps
    replica 0's value (ONLY_FIRST_REPLICA), so the table is identical on
    every replica.
    """
    if not training:
      return self.item_table.read_value()
    step = self.step.read_value()
    due = tf.equal(step % self.refresh_steps, 0)

    def refresh():
      ids = tf.range(self._counts.size, dtype=tf.int64)
      fresh = tf.cast(catalog.embed(self, ids), tf.float32)
      return tf.stop_gradient(tf.math.l2_normalize(fresh, axis=-1))

    table = tf.cond(due, refresh, self.item_table.read_value)
    self.item_table.assign(table)
    self.step.assign_add(1)
    return self.item_table.read_value()

  def _sample_reference(self, positive_ids, training, consumed):
    step = self.step.read_value()  # before `stale_table` advances it
    table = self.stale_table(training)
    pool_ids = self.distribution.sample_unique(
        self._pool, ir.draw_seed(self.seed, step, 0))  # [C]
    similarity = tf.matmul(tf.gather(table, positive_ids),
                           tf.gather(table, pool_ids), transpose_b=True)
    log_w = spread_out_log_weights(similarity, int(table.shape[-1]))
    # The user's items are rejected: the positive itself, and with
    # `consumed` every training item of the row's user.
    allowed = tf.not_equal(tf.expand_dims(pool_ids, 0),
                           tf.expand_dims(positive_ids, 1))
    if consumed is not None:
      allowed = tf.logical_and(allowed,
                               tf.logical_not(consumed(pool_ids)))
    index, ok = draw_by_weight(log_w, allowed, self.num_draws,
                               ir.draw_seed(self.seed, step, 1))
    ids = tf.stop_gradient(tf.gather(pool_ids, index))  # [B, K2]
    log_q = None
    positive_log_q = None
    if self.logq:
      positive_log_q = self._log_inclusion(tf.expand_dims(positive_ids, 1))
      log_q = self._log_inclusion(ids)
    # The pool is embedded once (C tower forwards, with gradient) and each
    # row gathers its draws: the same embeddings as item_model(ids).
    pool = catalog.embed(self, pool_ids)
    per_query = base.PerQuery(embeddings=None, ids=ids, log_q=log_q,
                              mask=ok, table=pool, index=index)
    return [base.CandidateGroup(
        per_query=per_query, column_log_q=positive_log_q, drop_in_batch=True,
        remove_accidental_hits=self.remove_accidental_hits)]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.pop("frequency", None)
    config.update({"item_counts": self._counts.tolist(),
                   "pool_size": self.pool_size, "beta": self.beta,
                   "num_hard_negatives": self.num_hard_negatives,
                   "logq": self.logq, "loss": self.loss,
                   "margin": self.margin, "rule": self.rule,
                   "refresh_steps": self.refresh_steps, "seed": self.seed})
    return config

  @classmethod
  def from_config(cls, config):
    return cls(**config)


@dataclasses.dataclass(frozen=True)
class TwoStageBaseOptions:
  """Options both two-stage samplers take."""
  pool_size: int = base.option(
      0, low=0, help="two_stage: stage-1 pool size C (0: 512 for "
      "query_score; for reference 1.5 percent of the catalog, at least 128, "
      "at most 2000)", tune=base.Tune("int", 64, 2048, log=True))
  rule: str = base.option(
      REFERENCE, choices=RULES,
      help="two_stage: stage 2 draws by spread-out weights of the "
      "similarity to the positive on a stale item table (reference) or keeps "
      "the top-K2 by query score")
  refresh_steps: int = base.option(
      REFERENCE_REFRESH_STEPS, low=1,
      help="two_stage (reference rule): training steps between refreshes "
      "of the stale item table")
  beta: float = base.option(
      1.0, help="two_stage: stage-1 popularity exponent beta (1: the "
      "reference code's default; 0: a uniform pool)",
      tune=base.Tune("categorical", choices=(0.0, 0.5, 1.0)))
  logq: bool = base.option(
      True, help="subtract the log inclusion probability of the stage-1 "
      "pool (on: a departure from the reference, which trains uncorrected)")


@dataclasses.dataclass(frozen=True)
class TwoStageOptions(TwoStageBaseOptions, warmup.WarmupOptions):
  """Options of `--sampler=two_stage` (sampled softmax)."""
  num_hard_negatives: int = base.option(
      32, low=0, zero_is_default=True,
      help="two_stage: K2, negatives kept per row",
      tune=base.Tune("int", 4, 64, log=True))


@dataclasses.dataclass(frozen=True)
class TwoStageTripletOptions(TwoStageBaseOptions):
  """Options of `--sampler=two_stage_triplet` (the CML hinge)."""
  margin: float = base.option(
      1.0, low=0, help="two_stage_triplet: hinge margin",
      tune=base.Tune("categorical", choices=(0.25, 0.5, 1.0)))


def _kwargs(context: base.SamplerContext,
            options: TwoStageBaseOptions) -> Dict[str, Any]:
  return {"item_counts": context.item_counts,
          "pool_size": options.pool_size or None,
          "beta": options.beta,
          "logq": options.logq,
          "item_model": context.item_model, "seed": context.seed,
          "rule": options.rule,
          "refresh_steps": options.refresh_steps}


@base.register_sampler("two_stage", options=TwoStageOptions)
def _two_stage(context: base.SamplerContext,
               options: TwoStageOptions) -> TwoStageSampler:
  """Two-stage: popularity pool, then the items nearest the positive (Tran et al. 2019)."""
  return warmup.wrap(TwoStageSampler(
      loss=losses.SOFTMAX, num_hard_negatives=options.num_hard_negatives,
      **_kwargs(context, options)), context, options)


@base.register_sampler(
    "two_stage_triplet", options=TwoStageTripletOptions,
    loss=lambda options: losses.CMLTripletLoss(margin=options.margin))
def _two_stage_triplet(context: base.SamplerContext,
                       options: TwoStageTripletOptions) -> TwoStageSampler:
  """Two-stage negatives with the CML hinge loss (Tran et al. 2019)."""
  return TwoStageSampler(loss=losses.TRIPLET, margin=options.margin,
                         **_kwargs(context, options))
