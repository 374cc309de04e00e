"""XIR: BIR plus a cache of frequently resampled items (Chen et al. 2022).

BIR (`bir.py`) can only draw items that are in the current batch, a bias that
grows as the batch shrinks. XIR keeps a cache of `C` items that resampling
picked often in the past and resamples from it too
(docs/design/bir_xir.md#xir-step; the official code `Cache.update_pool`). Per
step, with `K = num_resampled`:

1. Batch group: BIR's draws, `K_b = K // 2` per row from the `G` in-batch
   columns with `a_ij = stop_gradient(s_ij) - log q_j`.
2. Cache group: `E_c = item_model(cache_ids)` `[C, d]`, recomputed every step
   with gradient; `K_c = K - K_b` draws per row from the `C` cache slots with
   `a_ic = stop_gradient(<u_i, e_c> / tau) - log q(cache_id_c)`. Cache items
   are scored with their global popularity `q`, as if they were a popularity
   sample (a heuristic of the official code). A slot holds one item; an item
   in several slots is drawn in proportion to its number of slots, as in the
   official code.
3. Loss: `lambda * CE(positive, cache draws) + (1 - lambda) * CE(positive,
   batch draws)`, two softmaxes, each through the count trick (`log n` offsets,
   mask where `n = 0`, no logQ in the loss; see `bir.py`). The cache group
   uses `drop_in_batch=True`, so its columns are `[positive | cache slots]`.
4. Cache refresh (training only; it does not change this step's loss):
   `D` = all ids drawn in both groups by all rows of the global batch;
   `(vals, cnts) = unique_with_counts(D)`, computed from the per-column draw
   totals (`G + C` entries, not the `G K` draws; same multiset);
   `occurrence <- (1 - cache_decay) * occurrence` (skipped when 0, the
   official rule), then `occurrence[vals] += cnts`;
   `cache_ids <- C draws with replacement from vals, p ~ occurrence[vals]`.
   An item enters the cache only if it was resampled in this step, and stays
   more likely when its long-run resampling count is high.

State (non-trainable, ON_WRITE / ONLY_FIRST_REPLICA,
docs/design/multi_replica.md#d1), all checkpointed with the model:
* `cache_ids` int64 `[C]`: initialised with `C` ids uniform on `[1, N]` from
  `numpy.random.RandomState(seed)`, as the official code (index 0 is the
  out-of-vocabulary slot); replaced by resampled items after the first step;
* `occurrence` float32 `[N + 1]`, init 1: cumulative (optionally decayed)
  resampling counts per model item index (dense ids);
* `step` int64 `[]`: the stateless-RNG step counter (from `BIRSampler`);
* the frequency source's state.

Distribution (docs/design/bir_xir.md#xir-replicas): each replica's per-column
draw totals are summed over replicas (`distribute.all_sum`), over columns listed
in the
same order on every replica (in-batch columns in replica order, then the
cache slots); `tf.unique` keeps first-occurrence order, and the new cache is
drawn with stateless uniforms seeded by `(seed, step)`. So every replica
computes the same `occurrence` and `cache_ids` (and replica 0's write would
win anyway, D1). Every replica
encodes the identical cache; the optimizer sums the item-tower gradients.
As in BIR, a row's draws depend only on its global index, so the run on two
replicas equals one device on the global batch.

Cost per step: one item-tower pass over the distinct cache ids (`<= C`,
`encode_unique`), `O(B C d)` scoring, `O(B (G + C))` resampling, and a
unique over `G + C` ids.

Paper's towers: MF (id embeddings; `--query_tower=id`).

References:
  Chen, Lian, Li, Wang, Zheng, Chen. Cache-Augmented Inbatch Importance
  Resampling for Training Recommender Retriever. NeurIPS 2022 (arXiv
  2205.14859).
"""

import dataclasses
from typing import Any, Callable, Dict, Optional

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp import masking
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import bir
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import importance_resampling as ir
from tfrs_negsamp.samplers import in_batch
from tfrs_negsamp.samplers import warmup


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class XIRSampler(bir.BIRSampler):
  """BIR's in-batch draws plus draws from a cache of often-resampled items.

  Args:
    num_items: `N`, catalog size; model item indices are `0..N` (0 = OOV).
    item_model: int64 item indices `[n]` -> embeddings `[n, d]` (the item
      tower, with gradient). Not part of `get_config` (it is a model, not
      configuration): a sampler rebuilt by `from_config` has none, and
      `sampler.item_model` must be set before its first call.
    cache_size: `C`, cached items.
    cache_weight: `lambda`, weight of the cache group's cross-entropy
      (`1 - lambda` for the batch group); the official comparison runs use
      0.2 (`--cache_weight`).
    cache_decay: `rho` in `[0, 1)`; `occurrence` is multiplied by `1 - rho`
      every training step (0 = never decays, the official rule).
    num_resampled: `K >= 2`, draws per query, half from the batch and half
      from the cache (`K // 2` and `K - K // 2`); None = the number of
      in-batch candidates `G` (the official `C/2 + C/2` with `C = G`).
    temperature: as `BIRSampler`.
    seed: as `BIRSampler`.
    frequency: as `BIRSampler`.
    remove_accidental_hits: as `BIRSampler`.
    resampling: as `BIRSampler` (both groups; the cache refresh counts the
      weights as draws).
    candidates: instead of `num_items` and `item_model`, a batched dataset
      of the candidate ids (int or string, e.g. `movies.batch(128)`); the
      cache then holds indices of those candidates, encoded by...
    candidate_model: ...the candidate tower (ids -> embeddings).

  Raises:
    ValueError: for invalid hyperparameters.

  Example (`movies`, `movie_model`, `titles`, `queries`: the set-up of
  `catalog.CatalogSampler`'s example):

  >>> sampler = tn.samplers.XIRSampler(candidates=movies.batch(2),
  ...                                  candidate_model=movie_model,
  ...                                  cache_size=3)
  >>> task = tn.tasks.Retrieval(sampler=sampler)
  >>> loss = task(queries, movie_model(titles), candidate_ids=titles)
  >>> sampler.cache_ids.shape, sampler.id_keys(titles).numpy().tolist()
  (TensorShape([3]), [1, 3])
  """

  def __init__(self, num_items: Optional[int] = None,
               item_model: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               cache_size: int = 128, cache_weight: float = 0.2,
               cache_decay: float = 0.0,
               num_resampled: Optional[int] = None,
               temperature: Optional[float] = None, seed: int = 0,
               frequency: Optional[frequency_lib.FrequencySource] = None,
               remove_accidental_hits: bool = True,
               resampling: str = "multinomial",
               candidates=None, candidate_model=None, **kwargs) -> None:
    super().__init__(num_resampled=num_resampled, temperature=temperature,
                     seed=seed, frequency=frequency,
                     remove_accidental_hits=remove_accidental_hits,
                     resampling=resampling, **kwargs)
    if candidates is not None or candidate_model is not None:
      _, item_model = catalog.attach_candidates(
          self, candidates, candidate_model, None, item_model,
          needs_counts=False)
      if num_items is not None and num_items != (
          self.candidate_catalog.num_items):
        raise ValueError("num_items (%r) differs from the %d distinct "
                         "candidates; leave it out with candidates=."
                         % (num_items, self.candidate_catalog.num_items))
      num_items = self.candidate_catalog.num_items
    elif num_items is None:
      raise ValueError("XIRSampler needs num_items (with item_model=), or "
                       "candidates= and candidate_model=.")
    if self.num_resampled is not None and self.num_resampled < 2:
      raise ValueError("num_resampled must be >= 2 for XIR (half of the "
                       "draws go to each group), got %r." % num_resampled)
    self.num_items = bir.check_int(num_items, "num_items")
    self.cache_size = bir.check_int(cache_size, "cache_size")
    if not 0.0 <= float(cache_weight) <= 1.0:
      raise ValueError("cache_weight (lambda) must be in [0, 1], got %r."
                       % (cache_weight,))
    self.cache_weight = float(cache_weight)
    if not 0.0 <= float(cache_decay) < 1.0:
      raise ValueError("cache_decay must be in [0, 1), got %r."
                       % (cache_decay,))
    self.cache_decay = float(cache_decay)
    if item_model is not None and not callable(item_model):
      raise TypeError("item_model must be callable (ids -> embeddings), got "
                      "%r." % (item_model,))
    self.item_model = item_model

  def build(self, input_shape=None):
    initial = np.random.RandomState(self.seed).randint(
        1, self.num_items + 1, size=self.cache_size).astype(np.int64)
    self.cache_ids = distribute.add_state(
        self, "cache_ids", [self.cache_size], tf.int64,
        tf.keras.initializers.Constant(initial))
    self.occurrence = distribute.add_state(
        self, "occurrence", [self.num_items + 1], tf.float32, "ones")
    super().build(input_shape)

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    if self.item_model is None:
      raise ValueError(
          "XIRSampler needs an item_model to encode the cache ids: pass "
          "item_model= or set sampler.item_model before the first call (it "
          "is not part of get_config).")
    step = self.step.read_value()
    cache_ids = self.cache_ids.read_value()
    num_samples = self.num_samples(candidate_ids)
    num_batch = num_samples // 2
    num_cache = num_samples - num_batch

    log_q = self.in_batch_log_q(candidate_ids, training)
    batch_group, batch_counts = self.resample_batch(
        query_embeddings, candidate_embeddings, candidate_ids, positive_ids,
        log_q, num_batch, step, consumed=consumed)

    cache_embeddings = ir.encode_unique(self.item_model, cache_ids)
    logits = self.resampling_scores(query_embeddings, cache_embeddings)
    if self.frequency is not None:
      logits -= tf.stop_gradient(self.frequency.log_q(
          cache_ids, num_draws=tf.size(candidate_ids)))[None, :]
    batch = tf.shape(query_embeddings)[0]
    if self.remove_accidental_hits:
      valid = tf.not_equal(positive_ids[:, None], cache_ids[None, :])
    else:
      valid = tf.ones(tf.shape(logits), tf.bool)
    if consumed is not None:  # consumed cache items are never drawn
      valid = tf.logical_and(valid, tf.logical_not(
          masking.negatives_mask(consumed, cache_ids, positive_ids)
          if not self.remove_accidental_hits else consumed(cache_ids)))
    replica_id, num_replicas = distribute.replica_info()
    counts = ir.column_weights(
        self.resampling, logits, valid, num_cache,
        ir.step_seed(self.seed, step, ir.STREAM_CACHE),
        row_start=replica_id * batch, num_rows=num_replicas * batch)
    # Columns [positive | cache]: the positive is kept with offset 0.
    offset, mask = ir.count_offsets(counts)
    offset = tf.concat([tf.zeros([batch, 1]), offset], axis=1)
    mask = tf.concat([tf.ones([batch, 1], tf.bool), mask], axis=1)
    cache_group = base.CandidateGroup(
        weight=self.cache_weight, extra_embeddings=cache_embeddings,
        extra_ids=cache_ids, logit_offset=offset, score_mask=mask,
        drop_in_batch=True,
        remove_accidental_hits=self.remove_accidental_hits)

    if training:
      # The step's drawn multiset as (id, draws) per column: the in-batch
      # columns in replica order (identical on every replica), then the
      # cache slots. Same multiset as the B x K drawn ids, 256 entries
      # instead of 16384 at B = G = K = C = 128.
      column_draws = tf.concat([
          distribute.to_replica_order(tf.reduce_sum(batch_counts, 0), batch),
          tf.reduce_sum(counts, 0)], axis=0)
      column_ids = tf.concat(
          [distribute.to_replica_order(candidate_ids, batch), cache_ids],
          axis=0)
      if candidate_ids.shape[0] is not None:  # static: G + C columns
        columns = [candidate_ids.shape[0] + self.cache_size]
        column_ids = tf.ensure_shape(column_ids, columns)
        column_draws = tf.ensure_shape(column_draws, columns)
      self.refresh_cache(column_ids, column_draws, step)
      self.step.assign_add(1)
    return [cache_group,
            batch_group._replace(weight=1.0 - self.cache_weight)]

  def refresh_cache(self, ids: tf.Tensor, draws: tf.Tensor,
                    step: tf.Tensor) -> None:
    """Updates `occurrence` and redraws `cache_ids`.

    Design: docs/design/bir_xir.md#xir-cache-refresh.

    The step's drawn multiset `D` is given per column: `ids[m]` was drawn
    `sum over replicas of draws[m]` times (summed here across replicas).

    Args:
      ids: `[M]` int64 column ids, in the same order on every replica.
      draws: `[M]` float32 draws of those columns by this replica's rows.
      step: the step counter's value at the start of the step.
    """
    draws = distribute.all_sum(draws)
    with tf.control_dependencies([tf.debugging.assert_less(
        ids, tf.constant(self.num_items + 1, tf.int64),
        message="XIR: an item index exceeds num_items")]):
      ids = tf.identity(ids)
    # Distinct ids in first-occurrence order, then those drawn at least once.
    vals, segments = tf.unique(ids)
    counts = tf.math.unsorted_segment_sum(draws, segments, tf.size(vals))
    drawn = counts > 0
    vals = tf.boolean_mask(vals, drawn)
    counts = tf.boolean_mask(counts, drawn)
    if self.cache_decay > 0.0:
      occurrence = tf.tensor_scatter_nd_add(
          self.occurrence * (1.0 - self.cache_decay), vals[:, None], counts)
      self.occurrence.assign(occurrence)
      weights = tf.gather(occurrence, vals)
    else:
      weights = tf.gather(self.occurrence, vals) + counts
      # An increment (the same value as writing `weights`): under
      # asynchronous training every worker's draws are counted once.
      self.occurrence.scatter_add(tf.IndexedSlices(counts, vals))

    def redraw():
      logits = tf.math.log(weights)[None, :]
      index, _ = ir.resample_with_replacement(
          logits, tf.ones(tf.shape(logits), tf.bool), self.cache_size,
          ir.step_seed(self.seed, step, ir.STREAM_REFRESH))
      return tf.gather(vals, index[0])

    new_cache = tf.cond(tf.size(vals) > 0, redraw,
                        lambda: self.cache_ids.read_value())
    self.cache_ids.assign(new_cache)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"num_items": self.num_items,
                   "cache_size": self.cache_size,
                   "cache_weight": self.cache_weight,
                   "cache_decay": self.cache_decay})
    return config


@dataclasses.dataclass(frozen=True)
class XIROptions(bir.BIROptions):
  """Options of `--sampler=xir` (BIR's and the `log Q` source's too)."""
  cache_size: int = base.option(
      0, low=0, help="XIR: cache size C (0: the global batch)",
      tune=base.Tune("categorical", choices=(0.5, 1, 4), per_batch=True))
  cache_weight: float = base.option(
      0.2, low=0, high=1, help="XIR: weight lambda of the cache group "
      "(1 - lambda: the batch group)",
      tune=base.Tune("float", 0.05, 0.8))
  cache_decay: float = base.option(
      0.0, low=0, high=1, high_open=True,
      help="XIR: occurrence counts decay by (1 - decay) per step")

  def __post_init__(self):
    super().__post_init__()
    if self.num_resampled == 1:
      raise ValueError("num_resampled must be 0 (the global batch) or >= 2 "
                       "for xir (half batch, half cache draws), got 1")


@base.register_sampler("xir", options=XIROptions)
def _xir(context: base.SamplerContext, options: XIROptions) -> XIRSampler:
  """XIR: BIR plus a cache of often-resampled items (Chen et al. 2022)."""
  if context.item_model is None:
    raise ValueError("the xir sampler needs context.item_model to encode its "
                     "cache ids.")
  return warmup.wrap(XIRSampler(
      num_items=len(context.item_counts) - 1,
      item_model=context.item_model,
      cache_size=options.cache_size or context.global_batch_size,
      cache_weight=options.cache_weight,
      cache_decay=options.cache_decay,
      num_resampled=bir.num_resampled_from_options(options),
      temperature=context.temperature,
      seed=context.seed,
      frequency=in_batch.frequency_from_options(context, options),
      resampling=options.resampling), context, options)
