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

Sequence training (`sequence_embeddings`) reads the output of every position
of one pass (`[B, L, d]`), as SASRec does. The position table is indexed by
the distance to the row's end, a fixed relabelling of SASRec's absolute
positions for a row of length `L` (`p_{L-1-t}` at position `t`): position
`t < L - 1` sees its most recent item at index `L - 1 - t`, not 0, exactly
as SASRec's position `t` sees it at `t` rather than at `L - 1`. Only the
last position has serving's layout (most recent item at index 0), and it is
the position `call` computes. A training pass increments the dropout
counter once, whichever of `call` or `sequence_embeddings` it is.

Dropout (embeddings, attention probabilities, both FFN sites) is stateless
(`models.dropout`): site `k` of the training call numbered `t` draws its
mask from `fold_in([seed, t], k)` over the global batch's rows, `t` being
`dropout_step`, a non-trainable int64 counter of the tower (in every
checkpoint and backup, identical on every replica) that each training call
increments. A run restored from a backup of step `t` therefore drops the
same entries as the uninterrupted run, and replicas drop the same entries
of their rows as one device holding the global batch. Sites: 0 the
embeddings; block `i`: `3 i + 1` attention, `3 i + 2` and `3 i + 3` the FFN.
With `dropout=0` there is no counter and no dropout op.
"""

from typing import Optional, Sequence

import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp.models import dropout as dropout_lib
from tfrs_negsamp.models import history


class SASRecBlock(tf.keras.layers.Layer):
  """One self-attention block: LN, causal MHA + residual, LN, FFN + residual.

  Its dropout sites are `salt` (attention), `salt + 1` and `salt + 2` (FFN)
  of `dropout_lib.StepSeededDropout` with `seed` and `step`.
  """

  def __init__(self, dim: int, num_heads: int = 1, dropout: float = 0.2,
               seed: int = 0, salt: int = 1,
               step: Optional[dropout_lib.StepFn] = None,
               **kwargs) -> None:
    super().__init__(**kwargs)
    self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8)
    self.attention = dropout_lib.StepSeededMultiHeadAttention(
        num_heads=num_heads, key_dim=max(dim // num_heads, 1),
        dropout=dropout, seed=seed, salt=salt, step=step)
    self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-8)
    self.ffn_in = tf.keras.layers.Dense(dim, activation="relu")
    self.ffn_out = tf.keras.layers.Dense(dim)
    self.ffn_dropout = dropout_lib.StepSeededDropout(
        dropout, seed=seed, salt=salt + 1, step=step)
    self.out_dropout = dropout_lib.StepSeededDropout(
        dropout, seed=seed, salt=salt + 2, step=step)

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
    seed: base seed of the dropout masks (see the module docstring).
  """

  def __init__(self, item_embedding: Optional[tf.keras.layers.Embedding],
               embedding_dim: int, max_history: int,
               num_items: Optional[int] = None,
               user_vocabulary: Optional[Sequence[str]] = None,
               hidden: Sequence[int] = (), normalize: bool = True,
               num_blocks: int = 2, num_heads: int = 1, dropout: float = 0.2,
               seed: int = 0, **kwargs) -> None:
    super().__init__(item_embedding, embedding_dim, num_items=num_items,
                     user_vocabulary=user_vocabulary, hidden=hidden,
                     normalize=normalize, history_length=max_history,
                     **kwargs)
    self.max_history = max_history
    self.position_embedding = tf.keras.layers.Embedding(
        max_history, embedding_dim, name="position_embedding")
    # The number of training calls so far (only when there is dropout).
    self.dropout_step = (distribute.add_state(self, "dropout_step", [],
                                              tf.int64)
                         if dropout > 0 else None)
    step = self._read_dropout_step
    self.embedding_dropout = dropout_lib.StepSeededDropout(
        dropout, seed=seed, salt=0, step=step)
    self.blocks = [SASRecBlock(embedding_dim, num_heads, dropout, seed=seed,
                               salt=3 * i + 1, step=step,
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
    x = self.final_norm(x)
    if self.dropout_step is not None and training is not None:
      # After every read of this call (automatic control dependencies keep
      # the program order of the variable's reads and this write).
      if tf.is_tensor(training):
        self.dropout_step.assign_add(tf.cast(training, tf.int64))
      elif training:
        self.dropout_step.assign_add(1)
    return x

  def _read_dropout_step(self) -> tf.Tensor:
    return tf.identity(self.dropout_step)

  def encode(self, x, mask, training=False):
    return self.sequence_output(x, mask, training=training,
                                last_only=True)[:, -1]

  def encode_sequence(self, x, mask, training=False):
    return self.sequence_output(x, mask, training=training)
