"""The two-tower `tfrs.Model` whose loss goes through a negative sampler."""

from typing import Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_negsamp import masking
from tfrs_negsamp.samplers import base
from tfrs_negsamp.tasks import retrieval


class TwoTowerModel(tfrs.Model):
  """Query tower + item tower, trained through `tasks.Retrieval(sampler=)`.

  The model is one more user of the drop-in task, written the way the README
  tells a TFRS user to write theirs: per step `u = query_model(...)`
  `[B, d]`, `v = item_model(index)` `[B, d]`, and
  `task(u, v, candidate_ids=index, query_ids=user_id, training=training)`.
  The task gathers the candidates across replicas, calls the sampler, masks
  the users' training items (when built with `consumed_items`) and returns
  the summed loss.

  Args:
    query_model: user id strings `[B]` -> `[B, d]`, or a history tower
      (`uses_history`): `{"history": int64 [B, L], "user_id"}` -> `[B, d]`;
      its batches carry `history` (model indices, 0-padded).
    item_model: int64 item indices `[...]` -> `[..., d]`.
    item_vocabulary: catalog item ids (strings); index `p + 1` is position
      `p`, index 0 is out-of-vocabulary.
    sampler: a `NegativeSampler`.
    temperature: softmax temperature.
    global_negatives: gather candidates across replicas.
    consumed_items: optional `masking.ConsumedItems` (the training pairs,
      model indices); when set, the task excludes the rows' users' training
      items from the negatives (`--mask_history`).
    loss: the task's loss (`retrieval.Retrieval`'s `loss`: "softmax",
      "triplet", a `losses.CMLTripletLoss` or a Keras loss); None: the
      softmax.
    rows_per_block: sequence rows: positions per softmax block (the task's).
  """

  def __init__(self, query_model: tf.keras.Model, item_model: tf.keras.Model,
               item_vocabulary: Sequence[str], sampler: base.NegativeSampler,
               temperature: Optional[float] = None,
               global_negatives: bool = True,
               consumed_items: Optional[masking.ConsumedItems] = None,
               loss=None, rows_per_block: int = 1024, **kwargs) -> None:
    super().__init__(**kwargs)
    self.query_model = query_model
    self.item_model = item_model
    self.item_lookup = tf.keras.layers.StringLookup(
        vocabulary=list(item_vocabulary), mask_token=None, num_oov_indices=1)
    self.task = retrieval.Retrieval(
        loss=loss, temperature=temperature, sampler=sampler,
        gather_candidates=global_negatives, consumed_items=consumed_items,
        rows_per_block=rows_per_block)
    self.loss_per_example = tf.keras.metrics.Mean("loss_per_example")
    # Rows per replica in `fit`, when known (`fitting.train` sets it):
    # MultiWorkerMirroredStrategy's rebatched input has no static batch size.
    self.local_batch_size: Optional[int] = None
    # History towers: `(user_ids, split) -> [U, L]` evaluation histories.
    self.history_source: Optional[Callable[[np.ndarray, str],
                                           np.ndarray]] = None

  @property
  def sampler(self) -> base.NegativeSampler:
    return self.task.sampler

  @property
  def consumed_items(self) -> Optional[masking.ConsumedItems]:
    return self.task.consumed_items

  def train_step(self, inputs):
    if self.local_batch_size and isinstance(inputs, dict):
      inputs = {k: tf.ensure_shape(v, [self.local_batch_size] + v.shape[1:])
                for k, v in inputs.items()}
    return super().train_step(inputs)

  def item_index(self, item_ids: tf.Tensor) -> tf.Tensor:
    return tf.cast(self.item_lookup(item_ids), tf.int64)

  @property
  def uses_history(self) -> bool:
    """Whether the query tower reads `{"history", "user_id"}` dicts."""
    return bool(getattr(self.query_model, "uses_history", False))

  def query(self, features: Dict[str, tf.Tensor],
            training: bool = False) -> tf.Tensor:
    """The query tower on a batch: user ids, or the history dict."""
    if not self.uses_history:
      return self.query_model(features["user_id"])
    inputs = {"history": features["history"]}
    if "user_id" in features:
      inputs["user_id"] = features["user_id"]
    return self.query_model(inputs, training=training)

  def compute_loss(self, features: Dict[str, tf.Tensor],
                   training: bool = False) -> tf.Tensor:
    if "targets" in features:
      return self._sequence_loss(features, training)
    query = self.query(features, training=training)
    index = self.item_index(features["item_id"])
    loss = self.task(query, self.item_model(index), candidate_ids=index,
                     sample_weight=features.get("weight"),
                     query_ids=(features.get("user_id")
                                if self.consumed_items is not None else None),
                     compute_metrics=False, compute_batch_metrics=False,
                     training=training)
    self._track_loss_per_example(loss, tf.shape(query)[0])
    return loss

  def _sequence_loss(self, features: Dict[str, tf.Tensor],
                     training: bool) -> tf.Tensor:
    """Sequence rows: one query per position, every position's next item.

    `features`: `history` `[B, L]` (inputs) and `targets` `[B, L]` (model
    indices, 0 = padding), `user_id` `[B]`. The tower's causal outputs
    `[B, L, d]` and the targets' embeddings go to the task, which treats
    every valid position as a query row (`tasks.Retrieval` sequence mode).
    """
    inputs = {"history": features["history"]}
    if "user_id" in features:
      inputs["user_id"] = features["user_id"]
    query = self.query_model.sequence_embeddings(inputs, training=training)
    targets = tf.cast(features["targets"], tf.int64)
    loss = self.task(query, self.item_model(targets),
                     candidate_ids=tf.where(targets > 0, targets,
                                            -tf.ones_like(targets)),
                     query_ids=(features.get("user_id")
                                if self.consumed_items is not None else None),
                     compute_metrics=False, compute_batch_metrics=False,
                     training=training)
    self._track_loss_per_example(
        loss, tf.reduce_sum(tf.cast(targets > 0, tf.int32)))
    return loss

  def _track_loss_per_example(self, loss: tf.Tensor, rows: tf.Tensor):
    """Adds the step's mean loss per example `sum_r L_r / sum_r B_r`.

    With several replicas the loss and rows are summed across them and only
    replica 0 accumulates (the others add weight 0): the metric's state is
    `(sum of step means, steps)` on replica 0 and zero elsewhere, a state a
    restored backup can put back exactly (`fitting.ExactResume`).
    """
    rows = tf.cast(rows, loss.dtype)
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
      self.loss_per_example.update_state(loss / rows)
      return
    total = context.all_reduce(tf.distribute.ReduceOp.SUM,
                               tf.stack([loss, rows]))
    first = tf.equal(context.replica_id_in_sync_group, 0)
    self.loss_per_example.update_state(
        total[0] / total[1], sample_weight=tf.cast(first, loss.dtype))

  def catalog_embeddings(self, batch_size: int = 4096) -> np.ndarray:
    """Embeddings `[N, d]` of every catalog item (position order)."""
    num_items = int(self.item_lookup.vocabulary_size()) - 1
    out = []
    for start in range(0, num_items, batch_size):
      idx = tf.range(start + 1, min(start + batch_size, num_items) + 1,
                     dtype=tf.int64)
      out.append(self.item_model(idx).numpy())
    return np.concatenate(out, axis=0)

  def query_embeddings(self, user_ids: Sequence[str],
                       batch_size: int = 4096,
                       histories: Optional[np.ndarray] = None,
                       split: str = "test") -> np.ndarray:
    """Query embeddings `[U, d]` of `user_ids` (inference mode).

    A history tower reads `histories` (`[U, L]` int64 model indices,
    left-padded with 0) or, when None, the evaluation histories of `split`
    from `self.history_source(user_ids, split)` (set by
    `assembly.build_model`).
    """
    out = []
    user_ids = np.asarray(user_ids)
    if self.uses_history and histories is None:
      if self.history_source is None:
        raise ValueError("a history query tower needs `histories` (or a "
                         "model with a history_source).")
      histories = self.history_source(user_ids, split)
    for start in range(0, len(user_ids), batch_size):
      ids = tf.constant(user_ids[start:start + batch_size])
      if self.uses_history:
        out.append(self.query_model(
            {"history": tf.constant(histories[start:start + batch_size],
                                    tf.int64),
             "user_id": ids}, training=False).numpy())
      else:
        out.append(self.query_model(ids).numpy())
    return np.concatenate(out, axis=0)
