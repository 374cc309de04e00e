"""Query and item towers of the two-tower retriever."""

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp.models import features as features_lib


def _mlp(hidden: Sequence[int], output_dim: int, name: str):
  layers = [tf.keras.layers.Dense(h, activation="relu") for h in hidden]
  layers.append(tf.keras.layers.Dense(output_dim))
  return tf.keras.Sequential(layers, name=name)


class QueryTower(tf.keras.Model):
  """User id string -> embedding `[d]` (+ optional MLP, L2 normalisation).

  Unknown user ids map to the out-of-vocabulary row 0, a learned embedding
  that no training example updates (so it stays at its initial value).
  """

  def __init__(self, user_vocabulary: Sequence[str], embedding_dim: int,
               hidden: Sequence[int] = (), normalize: bool = True,
               **kwargs) -> None:
    super().__init__(**kwargs)
    self.lookup = tf.keras.layers.StringLookup(
        vocabulary=list(user_vocabulary), mask_token=None, num_oov_indices=1)
    self.embedding = tf.keras.layers.Embedding(
        len(user_vocabulary) + 1, embedding_dim, name="user_embedding")
    self.mlp = _mlp(hidden, embedding_dim, "query_mlp") if hidden else None
    self.normalize = normalize

  def call(self, user_ids: tf.Tensor) -> tf.Tensor:
    x = self.embedding(self.lookup(user_ids))
    if self.mlp is not None:
      x = self.mlp(x)
    if self.normalize:
      x = tf.math.l2_normalize(x, axis=-1)
    return x


class ItemTower(tf.keras.Model):
  """Model item index (int64, any shape `[...]`) -> embedding `[..., d]`.

  Sums of: an id embedding; the mean of the title-token embeddings; a linear
  map of the genre multi-hot (normalised). With features or `hidden`, the
  concatenation goes through an MLP, so encoding an item has a real cost.
  """

  def __init__(self, num_items: int, embedding_dim: int,
               feature_table: Optional[features_lib.ItemFeatureTable] = None,
               hidden: Sequence[int] = (), normalize: bool = True,
               **kwargs) -> None:
    super().__init__(**kwargs)
    self.num_items = num_items
    self.id_embedding = tf.keras.layers.Embedding(
        num_items + 1, embedding_dim, name="item_embedding")
    table = feature_table if (feature_table is not None and
                              feature_table.has_features) else None
    self._title_tokens = None
    self._genres = None
    if table is not None and table.title_tokens is not None:
      self._title_tokens = tf.constant(table.title_tokens)
      self.title_embedding = tf.keras.layers.Embedding(
          table.title_vocab_size, embedding_dim, mask_zero=True,
          name="title_embedding")
    if table is not None and table.genres is not None:
      g = table.genres
      g = g / np.maximum(g.sum(axis=1, keepdims=True), 1.0)
      self._genres = tf.constant(g.astype(np.float32))
      self.genre_projection = tf.keras.layers.Dense(
          embedding_dim, use_bias=False, name="genre_projection")
    use_mlp = bool(hidden) or table is not None
    self.mlp = _mlp(hidden, embedding_dim, "item_mlp") if use_mlp else None
    self.normalize = normalize

  def call(self, item_index: tf.Tensor) -> tf.Tensor:
    item_index = tf.cast(item_index, tf.int64)
    parts = [self.id_embedding(item_index)]
    if self._title_tokens is not None:
      tokens = tf.gather(self._title_tokens, item_index)
      emb = self.title_embedding(tokens)
      mask = tf.cast(tokens > 0, emb.dtype)[..., None]
      parts.append(tf.reduce_sum(emb * mask, axis=-2) /
                   tf.maximum(tf.reduce_sum(mask, axis=-2), 1.0))
    if self._genres is not None:
      parts.append(self.genre_projection(tf.gather(self._genres, item_index)))
    x = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
    if self.mlp is not None:
      x = self.mlp(x)
    if self.normalize:
      x = tf.math.l2_normalize(x, axis=-1)
    return x
