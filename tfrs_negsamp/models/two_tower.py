"""The two-tower `tfrs.Model` whose loss goes through a negative sampler."""

from typing import Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_negsamp import distribute
from tfrs_negsamp import losses
from tfrs_negsamp.samplers import base
from tfrs_negsamp.tasks import retrieval


class TwoTowerModel(tfrs.Model):
  """Query tower + item tower, trained through `sampler` and `SampledRetrieval`.

  Per step: `u = query_model(user_id)` `[B, d]`; `v = item_model(index)`
  `[B, d]`; the candidates (and their ids) are gathered across replicas,
  local block first (`global_negatives=True`, SAMPLERS.md D4/D5); the sampler
  turns them into candidate groups; the task returns the summed loss.

  Args:
    query_model: user id strings `[B]` -> `[B, d]`.
    item_model: int64 item indices `[...]` -> `[..., d]`.
    item_vocabulary: catalog item ids (strings); index `p + 1` is position
      `p`, index 0 is out-of-vocabulary.
    sampler: a `NegativeSampler`.
    temperature: softmax temperature.
    global_negatives: gather candidates across replicas.
  """

  def __init__(self, query_model: tf.keras.Model, item_model: tf.keras.Model,
               item_vocabulary: Sequence[str], sampler: base.NegativeSampler,
               temperature: Optional[float] = None,
               global_negatives: bool = True, **kwargs) -> None:
    super().__init__(**kwargs)
    self.query_model = query_model
    self.item_model = item_model
    self.item_lookup = tf.keras.layers.StringLookup(
        vocabulary=list(item_vocabulary), mask_token=None, num_oov_indices=1)
    self.sampler = sampler
    # A sampler with `loss="triplet"` (two-stage CML) gets the hinge loss.
    self.task = retrieval.SampledRetrieval(
        temperature=temperature,
        pairwise_loss=losses.pairwise_loss_for(sampler))
    self.global_negatives = global_negatives
    self.loss_per_example = tf.keras.metrics.Mean("loss_per_example")
    # Rows per replica in `fit`, when known (`experiment.train` sets it):
    # MultiWorkerMirroredStrategy's rebatched input has no static batch size.
    self.local_batch_size: Optional[int] = None

  def train_step(self, inputs):
    if self.local_batch_size and isinstance(inputs, dict):
      inputs = {k: tf.ensure_shape(v, [self.local_batch_size] + v.shape[1:])
                for k, v in inputs.items()}
    return super().train_step(inputs)

  def item_index(self, item_ids: tf.Tensor) -> tf.Tensor:
    return tf.cast(self.item_lookup(item_ids), tf.int64)

  def compute_loss(self, features: Dict[str, tf.Tensor],
                   training: bool = False) -> tf.Tensor:
    query = self.query_model(features["user_id"])
    index = self.item_index(features["item_id"])
    candidates = self.item_model(index)
    cand_ids = index
    if self.global_negatives:
      candidates = distribute.all_gather_local_first(candidates)
      cand_ids = distribute.all_gather_local_first(index)
    groups = self.sampler(query, candidates, cand_ids, training=training,
                          positive_ids=index)
    loss = self.task(query, candidates, groups, candidate_ids=cand_ids,
                     sample_weight=features.get("weight"))
    self.loss_per_example.update_state(
        loss / tf.cast(tf.shape(query)[0], loss.dtype))
    return loss

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
                       batch_size: int = 4096) -> np.ndarray:
    out = []
    user_ids = np.asarray(user_ids)
    for start in range(0, len(user_ids), batch_size):
      out.append(self.query_model(
          tf.constant(user_ids[start:start + batch_size])).numpy())
    return np.concatenate(out, axis=0)
