"""SASRec query tower: causal self-attention over the history.

Kang, McAuley. Self-Attentive Sequential Recommendation. ICDM 2018. With
`x_t = sqrt(d) e(s_t) + p_{L-1-t}` (learned position embeddings, indexed by
recency so that extra left padding changes nothing), dropout and the
padding mask `m`:

    for each of `num_blocks` blocks:
      q = LN(x)
      x = q + MHA(q, x, x; causal & key-padding mask)    (dropout inside)
      y = LN(x)
      x = (y + W2 dropout(relu(W1 y))) * m               (point-wise FFN)
    u = normalize(MLP(LN(x)_L))     (MLP only with hidden / user id)

Position `t` attends to positions `<= t` that hold items, so its output does
not depend on later items. The query is the output at the last position
(the most recent item, histories being left-padded).
"""

from typing import Optional, Sequence

import tensorflow as tf

from tfrs_negsamp.models import history


class SASRecBlock(tf.keras.layers.Layer):
  """One self-attention block: LN, causal MHA + residual, LN, FFN + residual."""

  def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.2,
               **kwargs) -> None:
    super().__init__(**kwargs)
    self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8)
    self.attention = tf.keras.layers.MultiHeadAttention(
        num_heads=num_heads, key_dim=max(dim // num_heads, 1),
        dropout=dropout)
    self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8)
    self.ffn_in = tf.keras.layers.Dense(dim, activation="relu")
    self.ffn_out = tf.keras.layers.Dense(dim)
    self.ffn_dropout = tf.keras.layers.Dropout(dropout)
    self.out_dropout = tf.keras.layers.Dropout(dropout)

  def call(self, x: tf.Tensor, mask: tf.Tensor,
           training: bool = False, last_only: bool = False) -> tf.Tensor:
    """`x` `[B, L, d]`, `mask` `[B, L]` bool -> `[B, L, d]`.

    With `last_only` only the last position's output is computed (`[B, 1,
    d]`): its query attends to every non-padding key (the causal mask of the
    last row is all ones) and the FFN runs on one position, which is what
    the query tower reads from the final block.
    """
    if last_only:
      attention_mask = mask[:, None, :]
      q = self.attention_norm(x[:, -1:])
      mask = mask[:, -1:]
    else:
      length = tf.shape(x)[1]
      causal = tf.linalg.band_part(tf.ones([length, length], tf.bool), -1, 0)
      attention_mask = tf.logical_and(causal[None], mask[:, None, :])
      q = self.attention_norm(x)
    x = q + self.attention(q, x, x, attention_mask=attention_mask,
                           training=training)
    y = self.ffn_norm(x)
    x = y + self.out_dropout(
        self.ffn_out(self.ffn_dropout(self.ffn_in(y), training=training)),
        training=training)
    return x * tf.cast(mask, x.dtype)[..., None]


class SASRecQueryTower(history.HistoryQueryTower):
  """History -> SASRec blocks -> last position -> (MLP) -> `[B, d]`.

  Args (beyond `HistoryQueryTower`'s):
    max_history: the longest history (rows of the position table).
    num_blocks: self-attention blocks.
    num_heads: attention heads.
    dropout: dropout rate (embeddings, attention, FFN).
  """

  def __init__(self, item_embedding: Optional[tf.keras.layers.Embedding],
               embedding_dim: int, max_history: int,
               num_items: Optional[int] = None,
               user_vocabulary: Optional[Sequence[str]] = None,
               hidden: Sequence[int] = (), normalize: bool = True,
               num_blocks: int = 2, num_heads: int = 1, dropout: float = 0.2,
               **kwargs) -> None:
    super().__init__(item_embedding, embedding_dim, num_items=num_items,
                     user_vocabulary=user_vocabulary, hidden=hidden,
                     normalize=normalize, history_length=max_history,
                     **kwargs)
    self.max_history = max_history
    self.position_embedding = tf.keras.layers.Embedding(
        max_history, embedding_dim, name="position_embedding")
    self.embedding_dropout = tf.keras.layers.Dropout(dropout)
    self.blocks = [SASRecBlock(embedding_dim, num_heads, dropout,
                               name="sasrec_block_%d" % i)
                   for i in range(num_blocks)]
    self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8)

  def sequence_output(self, x: tf.Tensor, mask: tf.Tensor,
                      training: bool = False,
                      last_only: bool = False) -> tf.Tensor:
    """Block stack over every position: `[B, L, e]` -> `[B, L, d]`.

    `last_only`: the final block computes the last position alone (`[B, 1,
    d]`), the same values as `[:, -1:]` of the full output at about half the
    final block's cost.
    """
    length = tf.shape(x)[1]
    recency = tf.range(length - 1, -1, -1)        # last position -> 0
    x = x * tf.math.sqrt(tf.cast(self.embedding_dim, x.dtype))
    x = x + self.position_embedding(recency)[None]
    x = self.embedding_dropout(x, training=training)
    x = x * tf.cast(mask, x.dtype)[..., None]
    for i, block in enumerate(self.blocks):
      x = block(x, mask, training=training,
                last_only=last_only and i == len(self.blocks) - 1)
    return self.final_norm(x)

  def encode(self, x, mask, training=False):
    return self.sequence_output(x, mask, training=training,
                                last_only=True)[:, -1]
