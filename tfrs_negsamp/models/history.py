"""Shared base of the history-based query towers (mean, GRU, SASRec).

A history tower maps `{"history": int64 [B, L], optional "user_id": string
[B]}` to `[B, d]`. `history` holds model item indices (catalog position + 1;
0 = padding or unknown), left-padded, most recent item last. The items are
embedded with an item id table, by default the candidate tower's own
(`ItemTower.id_embedding`), so every gradient that reaches the query reaches
the item table too. The subclass's `encode(x, mask)` turns the embedded
history `x` `[B, L, e]` and its mask `[B, L]` (True = item) into `[B, h]`;
then, optionally, a user id embedding is concatenated, an MLP maps to `d`
and the result is L2-normalised, as in the other towers.

Sequence-level training (SAMPLERS.md 12.1) reads one query per position:
`sequence_embeddings` maps the same inputs to `[B, L, d]`, where position
`t` is computed from the items at positions `<= t` only (causal), through
the same user embedding, MLP and normalisation. The subclass's
`encode_sequence(x, mask)` gives the `[B, L, h]` encoder states; its last
position equals `encode`'s output, so the last position of
`sequence_embeddings` is `call`'s query (serving reads `call`).
"""

from typing import Dict, Optional, Sequence

import tensorflow as tf


def mlp(hidden: Sequence[int], output_dim: int, name: str) -> tf.keras.Model:
  """ReLU layers of widths `hidden`, then a linear layer to `output_dim`."""
  layers = [tf.keras.layers.Dense(h, activation="relu") for h in hidden]
  layers.append(tf.keras.layers.Dense(output_dim))
  return tf.keras.Sequential(layers, name=name)


class HistoryQueryTower(tf.keras.Model):
  """Base class: history embedding + masking, user id, MLP, L2 norm.

  Args:
    item_embedding: the item id table (`tf.keras.layers.Embedding` with
      `num_items + 1` rows), shared with the item tower, or None to create
      a separate one (then `num_items` is required).
    embedding_dim: `d`, the output width (and that of a new item table).
    num_items: catalog size (for a separate table).
    user_vocabulary: if given, a user id embedding is concatenated to the
      encoded history (unknown users: the OOV row).
    hidden: MLP widths before the output layer.
    normalize: L2-normalise the output.
    project: always apply the output MLP (else only with `hidden` or a
      user embedding; the encoder's width must then be `d`).
    history_length: `L`, the training history length (for export).
  """

  # Marks the towers whose input is the history dict (TwoTowerModel).
  uses_history = True

  def __init__(self, item_embedding: Optional[tf.keras.layers.Embedding],
               embedding_dim: int, num_items: Optional[int] = None,
               user_vocabulary: Optional[Sequence[str]] = None,
               hidden: Sequence[int] = (), normalize: bool = True,
               project: bool = False, history_length: Optional[int] = None,
               **kwargs) -> None:
    super().__init__(**kwargs)
    # The L the tower is trained with (serving pads/compacts to it).
    self.history_length = history_length
    if item_embedding is None:
      if num_items is None:
        raise ValueError("a separate item table needs num_items.")
      item_embedding = tf.keras.layers.Embedding(
          num_items + 1, embedding_dim, name="history_item_embedding")
    self.item_embedding = item_embedding
    self.embedding_dim = embedding_dim
    self.user_lookup = None
    if user_vocabulary is not None:
      self.user_lookup = tf.keras.layers.StringLookup(
          vocabulary=list(user_vocabulary), mask_token=None,
          num_oov_indices=1)
      self.user_embedding = tf.keras.layers.Embedding(
          len(user_vocabulary) + 1, embedding_dim,
          name="history_user_embedding")
    self.hidden = tuple(hidden)
    self.normalize = normalize
    self.output_mlp = None
    if project or self.hidden or self.user_lookup is not None:
      self.output_mlp = mlp(self.hidden, embedding_dim, "query_mlp")

  @property
  def use_user_id(self) -> bool:
    """Whether the tower also reads `user_id`."""
    return self.user_lookup is not None

  def encode(self, x: tf.Tensor, mask: tf.Tensor,
             training: bool = False) -> tf.Tensor:
    """`[B, L, e]` embedded history, `[B, L]` bool mask -> `[B, h]`.

    The encoder of a concrete tower (mean pooling, GRU, SASRec).
    """
    raise TypeError("%s must override encode()." % type(self).__name__)

  def encode_sequence(self, x: tf.Tensor, mask: tf.Tensor,
                      training: bool = False) -> tf.Tensor:
    """`[B, L, e]`, `[B, L]` -> `[B, L, h]`, position `t` from `<= t` only.

    The causal encoder of a concrete tower; `[:, -1]` equals `encode`.
    """
    raise TypeError("%s must override encode_sequence()."
                    % type(self).__name__)

  def embed_history(self, history: tf.Tensor):
    """`[B, L]` indices -> (`[B, L, e]` embeddings, `[B, L]` bool mask)."""
    history = tf.cast(history, tf.int64)
    mask = history > 0
    x = self.item_embedding(history)
    return x * tf.cast(mask, x.dtype)[..., None], mask

  def _output(self, h: tf.Tensor,
              inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    """User embedding, MLP and L2 norm of `h` `[B, h]` or `[B, L, h]`."""
    if self.user_lookup is not None:
      user = self.user_embedding(self.user_lookup(inputs["user_id"]))
      if h.shape.rank == 3:
        user = tf.broadcast_to(
            user[:, None, :],
            tf.concat([tf.shape(h)[:2], tf.shape(user)[1:]], 0))
      h = tf.concat([h, user], -1)
    if self.output_mlp is not None:
      h = self.output_mlp(h)
    if self.normalize:
      h = tf.math.l2_normalize(h, axis=-1)
    return h

  def call(self, inputs: Dict[str, tf.Tensor],
           training: bool = False) -> tf.Tensor:
    x, mask = self.embed_history(inputs["history"])
    return self._output(self.encode(x, mask, training=training), inputs)

  def sequence_embeddings(self, inputs: Dict[str, tf.Tensor],
                          training: bool = False) -> tf.Tensor:
    """One query per position, `[B, L, d]`, for sequence-level training.

    Position `t`'s query depends only on `inputs["history"][:, :t + 1]`
    (and the user id); `[:, -1]` is `call(inputs)`. Positions before the
    row's first item (left padding) get a finite query that a loss must
    weight by 0 (their target is 0 in `sequences.sequence_dataset`).

    Args:
      inputs: `{"history": int64 [B, L], optional "user_id": string [B]}`.
      training: Training mode (dropout).

    Returns:
      float `[B, L, d]`.
    """
    x, mask = self.embed_history(inputs["history"])
    return self._output(self.encode_sequence(x, mask, training=training),
                        inputs)
