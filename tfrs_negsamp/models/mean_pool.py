"""YouTubeDNN query tower: masked mean of the history's item embeddings.

    h = sum_t m_t e(s_t) / max(1, sum_t m_t)        (m_t = 1 for real items)
    u = normalize(MLP([h ; e_user]))

(Covington, Adams, Sargin. Deep Neural Networks for YouTube
Recommendations. RecSys 2016.) The MLP (`hidden` widths, then a linear layer
to `d`) is always applied. An all-padding history gives `h = 0`.

Per position (sequence training), the running mean of the prefix,

    h_t = cumsum_t(m e) / max(1, cumsum_t(m)),

`O(L e)` for all positions; `h_L` is the mean above.
"""

import tensorflow as tf

from tfrs_negsamp.models import history


class MeanPoolQueryTower(history.HistoryQueryTower):
  """History -> masked mean of item embeddings -> MLP -> `[B, d]`."""

  def __init__(self, *args, **kwargs) -> None:
    """Arguments as `history.HistoryQueryTower` (always with the MLP)."""
    kwargs["project"] = True
    super().__init__(*args, **kwargs)

  def encode(self, x, mask, training=False):
    del training
    count = tf.reduce_sum(tf.cast(mask, x.dtype), axis=1, keepdims=True)
    return tf.reduce_sum(x, axis=1) / tf.maximum(count, 1.0)

  def encode_sequence(self, x, mask, training=False):
    del training
    count = tf.cumsum(tf.cast(mask, x.dtype), axis=1)[..., None]
    return tf.cumsum(x, axis=1) / tf.maximum(count, 1.0)
