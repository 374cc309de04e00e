"""YouTubeDNN query tower: masked mean of the history's item embeddings.

    h = sum_t m_t e(s_t) / max(1, sum_t m_t)        (m_t = 1 for real items)
    u = normalize(MLP([h ; e_user]))

(Covington, Adams, Sargin. Deep Neural Networks for YouTube
Recommendations. RecSys 2016.) The MLP (`hidden` widths, then a linear layer
to `d`) is always applied. An all-padding history gives `h = 0`.
"""

from typing import Optional, Sequence

import tensorflow as tf

from tfrs_negsamp.models import history


class MeanPoolQueryTower(history.HistoryQueryTower):
  """History -> masked mean of item embeddings -> MLP -> `[B, d]`."""

  def __init__(self, item_embedding: Optional[tf.keras.layers.Embedding],
               embedding_dim: int, num_items: Optional[int] = None,
               user_vocabulary: Optional[Sequence[str]] = None,
               hidden: Sequence[int] = (), normalize: bool = True,
               history_length: Optional[int] = None, **kwargs) -> None:
    super().__init__(item_embedding, embedding_dim, num_items=num_items,
                     user_vocabulary=user_vocabulary, hidden=hidden,
                     normalize=normalize, project=True,
                     history_length=history_length, **kwargs)

  def encode(self, x, mask, training=False):
    del training
    count = tf.reduce_sum(tf.cast(mask, x.dtype), axis=1, keepdims=True)
    return tf.reduce_sum(x, axis=1) / tf.maximum(count, 1.0)
