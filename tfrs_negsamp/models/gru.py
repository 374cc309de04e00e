"""GRU4Rec query tower (the TFRS sequential-retrieval tutorial's).

    h = GRU(e(s_1) .. e(s_L); mask)[last state]
    u = normalize(MLP([h ; e_user]))      (MLP only with hidden / user id)

The GRU has `d` units and skips padded steps (Keras masking), so with left
padding its last output is the state after the most recent item and extra
padding does not change it; an all-padding history gives the zero state.
(Hidasi et al. Session-based Recommendations with Recurrent Neural Networks.
ICLR 2016.)
"""

from typing import Optional, Sequence

import tensorflow as tf

from tfrs_negsamp.models import history


class GRUQueryTower(history.HistoryQueryTower):
  """History -> GRU last state -> (MLP) -> `[B, d]`."""

  def __init__(self, item_embedding: Optional[tf.keras.layers.Embedding],
               embedding_dim: int, num_items: Optional[int] = None,
               user_vocabulary: Optional[Sequence[str]] = None,
               hidden: Sequence[int] = (), normalize: bool = True,
               history_length: Optional[int] = None, **kwargs) -> None:
    super().__init__(item_embedding, embedding_dim, num_items=num_items,
                     user_vocabulary=user_vocabulary, hidden=hidden,
                     normalize=normalize, history_length=history_length,
                     **kwargs)
    self.gru = tf.keras.layers.GRU(embedding_dim, name="history_gru")

  def encode(self, x, mask, training=False):
    return self.gru(x, mask=mask, training=training)
