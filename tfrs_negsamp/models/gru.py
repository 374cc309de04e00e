"""GRU4Rec query tower (the TFRS sequential-retrieval tutorial's).

    h = GRU(e(s_1) .. e(s_L); mask)[last state]
    u = normalize(MLP([h ; e_user]))      (MLP only with hidden / user id)

The GRU has `d` units and skips padded steps (Keras masking), so with left
padding its last output is the state after the most recent item and extra
padding does not change it; an all-padding history gives the zero state.
The layer returns every step's output (`return_sequences`): a masked step
repeats the previous output, so position `t` holds the state after the
items at positions `<= t` (sequence training) and the last position is the
last state (bit for bit).
(Hidasi et al. Session-based Recommendations with Recurrent Neural Networks.
ICLR 2016.)
"""


import tensorflow as tf

from tfrs_negsamp.models import history


class GRUQueryTower(history.HistoryQueryTower):
  """History -> GRU last state -> (MLP) -> `[B, d]`."""

  def __init__(self, *args, **kwargs) -> None:
    """Arguments as `history.HistoryQueryTower`."""
    super().__init__(*args, **kwargs)
    self.gru = tf.keras.layers.GRU(self.embedding_dim, return_sequences=True,
                                   name="history_gru")

  def encode(self, x, mask, training=False):
    return self.gru(x, mask=mask, training=training)[:, -1]

  def encode_sequence(self, x, mask, training=False):
    return self.gru(x, mask=mask, training=training)
