"""User-history masking: which items has a row's user consumed in training?

A negative that the row's user consumed in training is a false negative: the
sources keep such items out (SAMPLERS.md 0.3; the Apple pools drop the user's
items, the Deezer sampler rejects them). This module holds the one
membership test every sampler and the task use.

Table. With `U` users (model user index `u` in `1..U`, 0 = unknown) and `N`
items (model item index `j` in `1..N`, 0 = out-of-vocabulary), the training
pair `(u, j)` has the code

    code(u, j) = u * (N + 1) + j,

an injective map onto `[0, (U + 1)(N + 1))`. `ConsumedItems` keeps the sorted
distinct codes of the training pairs, followed by one sentinel
`int64.max`, as a non-trainable int64 state variable `codes [P + 1]`
(created once, replica-consistent, `distribute.add_state`).

Test. `(u, j)` was consumed iff `u >= 1`, `1 <= j <= N` and

    codes[searchsorted_left(codes, code(u, j))] == code(u, j),

`O(log P)` per pair, exact. The sentinel keeps the gather in range (a code
larger than every pair lands on it and never equals it). Unknown users,
padding / OOV ids (`j <= 0`) and ids above `N` consume nothing.

Fast path (`method="bitset"`, chosen by "auto" when it fits in
`max_bitset_bytes`): the same pairs as a packed bit matrix, one row of
`W = ceil((N + 1) / 32)` int32 words per user index,

    bits[u, j // 32] >> (j % 32) & 1 == 1   iff   (u, j) is a pair,

`O(1)` per pair, no dependent loads. For ids shared by all rows (`[K]`,
the in-batch and extra columns) it is two slice gathers, `bits[users]`
`[B, W]` and then the ids' words of its transpose `[K, B]`, plus two
element-wise ops; the words are read as bytes (`tf.bitcast`, item `j` is
bit `j % 8` of byte `j // 8` on a little-endian host), so the `[K, B]`
intermediates take one byte per pair (2-3x faster than int32 words at
B = K = 1024). Per-row ids `[B, K]` take one scalar gather each. On
ML-100K the bitset is 944 x 53 words (200 KB); the binary search over the
1-D code table costs several milliseconds per `256 x 256` test on a CPU
(cache-missing dependent loads), more than the step it masks. Both give the
same answer (tested).

Large tables (`method="csr"`, chosen by "auto" when the bitset does not
fit; issue 17): user `u`'s items as an ascending list, CSR state
`row_splits [U + 2]` and `values [P]` int64,

    items(u) = values[row_splits[u] : row_splits[u + 1]]

(user 0 owns the empty list). The rows' lists are gathered once as `E`
entries `(b, item)`, `E = sum_b H_{u_b}` (a ragged range). Shared ids `[K]`:
the `M` distinct valid ids are sorted once, each entry's item is
binary-searched among them (`O(E log M)`), a hit sets `marked[slot, b]` of
an `[M, B]` boolean matrix, and the mask is `marked[slot(ids[k]), b]`,
read back at the `K` positions (a repeated id reads its one slot): in all
`O(E log K + B K)` instead of the code table's `O(B K log P)`. Per-row ids
`[B, K]`: the entries' codes `b * (N + 1) + item` are ascending, and
`code(b, ids[b, k])` is binary-searched among them, `O(B K log E)`. Same
answers as the code table (tested). At issue 17's scale (U = 200,000,
N = 50,000, 25 items per user, B = K = 4096 shared ids; the bitset would
take 1.25 GB) one test costs 39 ms of CPU against 1,030 ms for the code
table; on ML-100K at B = K = 256 it is 2.7 ms against 0.5 ms for the
bitset and 3.6 ms for the code table (best CPU time of `contains` in a
`tf.function`, 2-core CPU).

`consumed(ids) -> bool [B, K]` is the per-batch callable of the interfaces
(`ConsumedItems.for_users(user_ids)`): `ids` are int64 model item indices,
`[K]` shared by every row or `[B, K]` per row; True where the item is in the
row's user's training items. It does not special-case the row's positive:
callers keep the positive column (`negatives_mask`). Under
`tf.distribute`, rows are this replica's queries and the columns may be
gathered from every replica: the test only pairs a row's own user with the
column ids, so no gather of users is needed.

`history_consumed(user_history)` builds the same callable from per-row
history ids (`[B, H]`, padded with -1), for callers that hold the history
instead of the table. Masks are boolean and carry no gradient.
"""

import sys
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp import keys as keys_lib

# `consumed(ids) -> bool [B, K]`.
Consumed = Callable[[tf.Tensor], tf.Tensor]

_SENTINEL = np.iinfo(np.int64).max
# The bitset's int32 words are read as bytes on little-endian hosts.
_LITTLE_ENDIAN = sys.byteorder == "little"
METHODS = ("bitset", "codes", "csr")
# "auto" keeps a bitset up to this size (per replica), else the CSR lists.
MAX_BITSET_BYTES = 1 << 27


def pair_codes(user_index, item_index, num_items: int) -> np.ndarray:
  """`user_index * (num_items + 1) + item_index` as int64 (NumPy)."""
  return (np.asarray(user_index, np.int64) * (int(num_items) + 1)
          + np.asarray(item_index, np.int64))


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class ConsumedItems(tf.keras.layers.Layer):
  """The training (user, item) pairs: a membership test for the negatives.

  State (non-trainable, replica-consistent, created once in `build`): the
  packed bitset `bits [U + 1, W]` int32, the sorted code table
  `codes [P + 1]` int64, or the per-user item lists `row_splits [U + 2]`
  and `values [P]` int64 (see the module docstring).

  Args:
    users: user vocabulary (strings); user `users[p]` has index `p + 1`.
    num_items: `N`, catalog size (item indices `1..N`).
    codes: int64 pair codes `u * (N + 1) + j` of the training pairs (any
      order, duplicates allowed), with `u` and `j` model indices.
    method: "bitset", "codes" (sorted table + binary search), "csr"
      (per-user sorted item lists) or "auto" (bitset when it takes at most
      `max_bitset_bytes`, else "csr").
    max_bitset_bytes: the "auto" threshold.
    item_ids: optional raw item vocabulary (strings or ints): item
      `item_ids[p]` has index `p + 1`. With it, the ids given to
      `contains` / `for_users` are the int64 *keys* of a sampler
      (`bind_keys(sampler.id_keys)`, which the task does), mapped back to
      indices through a hash table; without it they are the indices.

  Use `from_pairs` to build it from model indices (the trainer), or
  `from_interactions` from raw (user id, item id) training pairs (a TFRS
  model's data, for `tfrs_negsamp.tasks.Retrieval(consumed_items=...)`).
  """

  def __init__(self, users: Sequence[str], num_items: int,
               codes: Sequence[int], method: str = "auto",
               max_bitset_bytes: int = MAX_BITSET_BYTES,
               item_ids: Optional[Sequence[Any]] = None, **kwargs) -> None:
    super().__init__(trainable=False, **kwargs)
    self.users = [str(u) for u in np.asarray(users).tolist()]
    self.item_ids = (None if item_ids is None
                     else np.asarray(item_ids).reshape(-1).tolist())
    if self.item_ids is not None and len(self.item_ids) != int(num_items):
      raise ValueError("item_ids holds %d ids for num_items=%d."
                       % (len(self.item_ids), num_items))
    self._key_table = None  # raw-id keys -> item index (`bind_keys`)
    self.num_items = int(num_items)
    if self.num_items < 1:
      raise ValueError("num_items must be >= 1, got %r." % num_items)
    codes = np.unique(np.asarray(codes, np.int64).reshape(-1))
    limit = (len(self.users) + 1) * (self.num_items + 1)
    if codes.size and (codes[0] < 0 or codes[-1] >= limit):
      raise ValueError("pair codes must lie in [0, %d)." % limit)
    self._table = np.concatenate([codes, [_SENTINEL]]).astype(np.int64)
    self.words = (self.num_items + 1 + 31) // 32
    self.max_bitset_bytes = int(max_bitset_bytes)
    if method == "auto":
      size = 4 * (len(self.users) + 1) * self.words
      method = "bitset" if size <= self.max_bitset_bytes else "csr"
    if method not in METHODS:
      raise ValueError("unknown method %r; valid: %s"
                       % (method, ", ".join(METHODS)))
    self.method = method
    self.user_lookup = tf.keras.layers.StringLookup(
        vocabulary=self.users if self.users else None, mask_token=None,
        num_oov_indices=1, name="user_lookup")

  @classmethod
  def from_pairs(cls, users: Sequence[str], user_ids: Sequence[str],
                 item_index: Sequence[int], num_items: int,
                 **kwargs) -> "ConsumedItems":
    """Builds the table from training rows.

    Args:
      users: the user vocabulary (e.g. `dataset.users`).
      user_ids: `[R]` user id strings of the training rows.
      item_index: `[R]` model item indices (catalog position + 1).
      num_items: `N`.
      **kwargs: layer arguments.

    Raises:
      ValueError: a row's user is not in `users`, or an item index is out of
        `1..N`.
    """
    users = np.asarray(users).astype(str)
    order = np.argsort(users, kind="stable")
    user_ids = np.asarray(user_ids).astype(str)
    pos = np.searchsorted(users, user_ids, sorter=order)
    pos = np.minimum(pos, max(users.size - 1, 0))
    if user_ids.size and (
        users.size == 0 or np.any(users[order[pos]] != user_ids)):
      raise ValueError("a training row's user is not in the vocabulary.")
    item_index = np.asarray(item_index, np.int64)
    if item_index.size and (item_index.min() < 1
                            or item_index.max() > num_items):
      raise ValueError("item indices must lie in [1, %d]." % num_items)
    user_index = (order[pos] + 1) if user_ids.size else np.zeros([0],
                                                                  np.int64)
    return cls(users, num_items, pair_codes(user_index, item_index,
                                            num_items), **kwargs)

  @classmethod
  def from_interactions(cls, user_ids: Sequence[Any],
                        item_ids: Sequence[Any],
                        **kwargs) -> "ConsumedItems":
    """Builds the table from raw training pairs (a TFRS model's data).

    The user vocabulary is the distinct `user_ids` (as strings) and the item
    vocabulary the distinct `item_ids` (strings or ints, kept as given);
    give it to `tfrs_negsamp.tasks.Retrieval(consumed_items=...)` and pass
    `query_ids=<the rows' user ids>` to the task's call.

    Args:
      user_ids: `[R]` user ids of the training rows (strings or ints).
      item_ids: `[R]` item ids of the same rows (strings or ints), as the
        model's `candidate_ids`.
      **kwargs: `method`, `max_bitset_bytes` and layer arguments.

    Raises:
      ValueError: `user_ids` and `item_ids` differ in length, or are empty.
    """
    user_ids = _as_numpy(user_ids)
    item_ids = _as_numpy(item_ids)
    if user_ids.shape != item_ids.shape or user_ids.ndim != 1:
      raise ValueError("user_ids and item_ids must be 1-D of one length, "
                       "got shapes %s and %s." % (user_ids.shape,
                                                  item_ids.shape))
    if not user_ids.size:
      raise ValueError("no training pairs: user_ids is empty.")
    users = np.unique(user_ids.astype(str))
    items, item_index = np.unique(item_ids, return_inverse=True)
    return cls.from_pairs(users, user_ids.astype(str),
                          item_index.reshape(-1) + 1, items.size,
                          item_ids=items, **kwargs)

  def bind_keys(self, key_fn: Callable[[tf.Tensor], tf.Tensor]) -> None:
    """Maps raw item ids to the keys `contains` receives (a hash table).

    Only for a table built with `item_ids` (`from_interactions`); the task
    binds its sampler's `id_keys` (catalog indices, fingerprints of string
    ids, or the int ids themselves). Runs eagerly (the keys of the item
    vocabulary are computed once); binding again replaces the map.
    """
    if self.item_ids is None:
      return
    with tf.init_scope():
      keys = key_fn(tf.constant(self.item_ids))
      self._key_table = tf.lookup.StaticHashTable(
          tf.lookup.KeyValueTensorInitializer(
              tf.cast(keys, tf.int64),
              tf.range(1, len(self.item_ids) + 1, dtype=tf.int64)),
          default_value=0)

  @property
  def num_pairs(self) -> int:
    return int(self._table.size - 1)

  def bitset(self) -> np.ndarray:
    """The packed pairs `[(U + 1) * W]` int32, row-major `[U + 1, W]`."""
    codes = self._table[:-1]
    users, items = np.divmod(codes, self.num_items + 1)
    flat = users * self.words + items // 32
    bits = np.zeros([(len(self.users) + 1) * self.words], np.uint32)
    np.bitwise_or.at(bits, flat, (np.uint32(1) << (items % 32).astype(
        np.uint32)))
    return bits.view(np.int32)

  def csr(self):
    """The pairs as per-user sorted item lists (NumPy).

    Returns:
      `(row_splits [U + 2], values [P])` int64: user `u`'s items are
      `values[row_splits[u]:row_splits[u + 1]]`, ascending; user 0 (unknown)
      and item 0 own nothing.
    """
    users, items = np.divmod(self._table[:-1], self.num_items + 1)
    keep = np.logical_and(users >= 1, items >= 1)
    users, items = users[keep], items[keep]  # sorted by (user, item)
    counts = np.bincount(users, minlength=len(self.users) + 1)
    splits = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return splits, items.astype(np.int64)

  def build(self, input_shape=None):
    if self.item_ids is not None and self._key_table is None:
      self.bind_keys(keys_lib.default_keys)
    if self.method == "bitset":
      self.bits = distribute.add_state(
          self, "bits", [len(self.users) + 1, self.words], tf.int32,
          tf.keras.initializers.Constant(self.bitset().reshape(
              len(self.users) + 1, self.words)))
    elif self.method == "csr":
      splits, values = self.csr()
      self.row_splits = distribute.add_state(
          self, "row_splits", [splits.size], tf.int64,
          tf.keras.initializers.Constant(splits))
      self.values = distribute.add_state(
          self, "values", [values.size], tf.int64,
          tf.keras.initializers.Constant(values))
    else:
      self.codes = distribute.add_state(
          self, "codes", [self._table.size], tf.int64,
          tf.keras.initializers.Constant(self._table))
    super().build(input_shape)

  def user_index(self, user_ids: tf.Tensor) -> tf.Tensor:
    """Model user indices `[B]` int64 (0 = unknown user).

    Int user ids are looked up by their decimal strings.
    """
    user_ids = tf.convert_to_tensor(user_ids)
    if not self.users:
      return tf.zeros(tf.shape(user_ids), tf.int64)
    if user_ids.dtype != tf.string:
      user_ids = tf.strings.as_string(user_ids)
    return tf.cast(self.user_lookup(user_ids), tf.int64)

  def item_index(self, ids: tf.Tensor) -> tf.Tensor:
    """Item indices (`1..N`, 0 unknown) of `ids`: keys when built with
    `item_ids` (see `bind_keys`), else the ids themselves."""
    ids = tf.cast(ids, tf.int64)
    if self.item_ids is None:
      return ids
    if not self.built:
      self.build()
    return self._key_table.lookup(ids)

  def contains(self, user_index: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    """Whether row `b`'s user consumed `ids`.

    Args:
      user_index: `[B]` int model user indices (0 = unknown).
      ids: `[K]` int item indices shared by every row, or `[B, K]` per row.

    Returns:
      bool `[B, K]`, stop-gradient (a boolean has none).
    """
    if not self.built:
      self.build()
    user_index = tf.cast(tf.reshape(user_index, [-1]), tf.int64)
    ids = self.item_index(ids)
    if self.method == "bitset":
      # Few `[B, K]` ops (this runs on every logits matrix): validity is
      # settled on the ids alone (an invalid id becomes 0, whose bit is
      # never set; unknown users own the all-zero row 0), in int32.
      ids = tf.cast(tf.where(tf.logical_and(ids >= 1, ids <= self.num_items),
                             ids, tf.zeros_like(ids)), tf.int32)
      bits = self.bits.read_value()  # [U + 1, W]
      users = tf.cast(user_index, tf.int32)
      column = tf.bitwise.right_shift(ids, 5)
      bit = tf.bitwise.left_shift(tf.ones_like(ids),
                                  tf.bitwise.bitwise_and(ids, 31))
      if ids.shape.rank == 1 and _LITTLE_ENDIAN:
        # Shared ids: two slice gathers (the rows' bytes, then the ids'
        # bytes of the transposed rows) instead of B * K scalar gathers,
        # which cost several times the logits matmul on a CPU. The int32
        # words are read as bytes (little-endian: item j is bit j % 8 of
        # byte j // 8), so the `[K, B]` intermediates take 1 byte per
        # pair, not 4: 2-3x faster than int32 words, same bits.
        byte_rows = tf.reshape(tf.bitcast(bits, tf.uint8),
                               [-1, 4 * self.words])  # [U + 1, 4 W]
        rows = tf.transpose(tf.gather(byte_rows, users))  # [4 W, B]
        byte = tf.gather(rows, tf.bitwise.right_shift(ids, 3))  # [K, B]
        mask = tf.cast(tf.bitwise.left_shift(
            tf.ones_like(ids), tf.bitwise.bitwise_and(ids, 7)), tf.uint8)
        hit = tf.not_equal(
            tf.bitwise.bitwise_and(byte, tf.expand_dims(mask, 1)), 0)
        return tf.transpose(hit)
      if ids.shape.rank == 1:
        rows = tf.transpose(tf.gather(bits, users))  # [W, B]
        words = tf.gather(rows, column)  # [K, B]
        hit = tf.not_equal(
            tf.bitwise.bitwise_and(words, tf.expand_dims(bit, 1)), 0)
        return tf.transpose(hit)
      word = tf.gather(tf.reshape(bits, [-1]),
                       tf.expand_dims(users * self.words, 1) + column)
      return tf.not_equal(tf.bitwise.bitwise_and(word, bit), 0)
    if self.method == "csr":
      return self._contains_csr(user_index, ids)
    if ids.shape.rank == 1:
      ids = tf.expand_dims(ids, 0)
    valid = tf.logical_and(
        tf.logical_and(ids >= 1, ids <= self.num_items),
        tf.expand_dims(user_index >= 1, 1))
    codes = (tf.expand_dims(user_index, 1) * (self.num_items + 1) + ids)
    shape = tf.shape(codes)
    flat = tf.reshape(codes, [-1])
    table = self.codes.read_value()
    pos = tf.searchsorted(table, flat, side="left", out_type=tf.int64)
    found = tf.equal(tf.gather(table, pos), flat)
    found = tf.reshape(found, shape)
    return tf.logical_and(found, valid)

  def _contains_csr(self, user_index: tf.Tensor,
                    ids: tf.Tensor) -> tf.Tensor:
    """`contains` on the per-user lists (`method="csr"`, module docstring)."""
    splits = self.row_splits.read_value()  # [U + 2]
    values = self.values.read_value()  # [P]
    # Row b's items: entries e of the batch's lists, row[e] = b, `[E]`,
    # E = sum_b H_b; sorted by (row, item) as the lists are.
    lists = tf.ragged.range(tf.gather(splits, user_index),
                            tf.gather(splits, user_index + 1))
    row = lists.value_rowids()  # [E] int64
    item = tf.gather(values, lists.flat_values)  # [E], in 1..N
    num_rows = tf.shape(user_index, out_type=tf.int64)[0]
    sentinel = tf.constant([_SENTINEL], tf.int64)
    valid = tf.logical_and(ids >= 1, ids <= self.num_items)
    if ids.shape.rank == 2:
      # Per-row ids: binary search of code(b, id) among the batch's entries
      # (ascending codes), O(B K log E).
      entries = tf.concat([row * (self.num_items + 1) + item, sentinel], 0)
      query = (tf.expand_dims(tf.range(num_rows), 1) * (self.num_items + 1)
               + ids)
      shape = tf.shape(query)
      query = tf.reshape(query, [-1])
      pos = tf.searchsorted(entries, query, side="left", out_type=tf.int64)
      found = tf.reshape(tf.equal(tf.gather(entries, pos), query), shape)
      return tf.logical_and(found, valid)
    # Shared ids: each entry's item among the M distinct ids (sorted once),
    # O(E log M); the hits set an [M, B] mask, read back at the K positions
    # (repeated ids share a slot).
    ids = tf.where(valid, ids, -tf.ones_like(ids))  # -1 matches nothing
    unique, column = tf.unique(ids, out_idx=tf.int64)  # [M], [K]
    order = tf.argsort(unique, stable=True)
    num_unique = tf.size(unique, out_type=tf.int64)
    keys = tf.concat([tf.gather(unique, order), sentinel], 0)  # [M + 1]
    slot = tf.concat([tf.cast(order, tf.int64),
                      tf.zeros([1], tf.int64)], 0)  # [M + 1], last unused
    pos = tf.searchsorted(keys, item, side="left", out_type=tf.int64)
    hit = tf.equal(tf.gather(keys, pos), item)
    # Transposed, `[M, B]`: the K reads are whole-row slice gathers. Only
    # the hits are scattered (each (slot, row) at most once).
    index = tf.boolean_mask(tf.stack([tf.gather(slot, pos), row], 1), hit)
    marked = tf.scatter_nd(index, tf.ones(tf.shape(index)[:1], tf.bool),
                           tf.stack([num_unique, num_rows]))
    return tf.transpose(tf.gather(marked, column))  # [B, K]

  def for_users(self, user_ids: tf.Tensor) -> Consumed:
    """The per-batch callable `consumed(ids) -> bool [B, K]` of `user_ids`."""
    return self.for_user_index(self.user_index(user_ids))

  def for_user_index(self, user_index: tf.Tensor) -> Consumed:
    """`for_users` from model user indices (`user_index`)."""
    return lambda ids: self.contains(user_index, ids)

  def call(self, user_ids: tf.Tensor, ids: tf.Tensor) -> tf.Tensor:
    return self.for_users(user_ids)(ids)

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.pop("trainable", None)
    config.update({"users": self.users, "num_items": self.num_items,
                   "codes": self._table[:-1].tolist(),
                   "method": self.method,
                   "max_bitset_bytes": self.max_bitset_bytes,
                   "item_ids": self.item_ids})
    return config


def _as_numpy(values: Any) -> np.ndarray:
  """Ids as a NumPy array; bytes (a `tf.string` tensor's) decoded as UTF-8.

  `tf.string` holds UTF-8 bytes (a title such as "Misérables"), which
  NumPy's `astype(str)` would decode as ASCII and reject.
  """
  if tf.is_tensor(values):
    values = values.numpy()
  values = np.asarray(values)
  if values.dtype.kind == "S":
    values = np.char.decode(values, "utf-8")
  elif values.dtype.kind == "O":
    values = np.asarray(
        [v.decode("utf-8") if isinstance(v, bytes) else str(v)
         for v in values.reshape(-1).tolist()],
        dtype=str).reshape(values.shape)
  return values


def history_consumed(user_history: tf.Tensor) -> Consumed:
  """`consumed(ids)` from per-row history keys `[B, H]` (negative: padding).

  `consumed(ids)[b, k] = ids[b, k] in user_history[b]`, for ids >= 0;
  `O(B K H)`.
  """
  hist = tf.cast(user_history, tf.int64)

  def consumed(ids: tf.Tensor) -> tf.Tensor:
    ids = tf.cast(ids, tf.int64)
    if ids.shape.rank == 1:
      ids = tf.broadcast_to(tf.expand_dims(ids, 0),
                            tf.stack([tf.shape(hist)[0], tf.shape(ids)[0]]))
    hit = tf.reduce_any(tf.equal(tf.expand_dims(ids, -1),
                                 tf.expand_dims(hist, 1)), axis=-1)
    return tf.logical_and(hit, ids >= 0)
  return consumed


def negatives_mask(consumed: Optional[Consumed], ids: tf.Tensor,
                   positive_ids: tf.Tensor,
                   keep: Optional[tf.Tensor] = None) -> Optional[tf.Tensor]:
  """`[B, K]` bool, True where a column must be masked as consumed.

  A column is masked when the row's user consumed its item, its id differs
  from the row's positive id (duplicates of the positive are accidental
  hits, governed by `remove_accidental_hits`), and `keep` is False there
  (`keep` marks the positive column itself).

  Args:
    consumed: the per-batch callable, or None (returns None).
    ids: `[K]` or `[B, K]` int column ids.
    positive_ids: `[B]` int ids of the rows' positives.
    keep: optional `[B, K]` bool of columns never masked.
  """
  if consumed is None:
    return None
  ids = tf.cast(ids, tf.int64)
  positive_ids = tf.cast(tf.reshape(positive_ids, [-1, 1]), tf.int64)
  row_ids = ids if ids.shape.rank == 2 else tf.expand_dims(ids, 0)
  mask = tf.logical_and(tf.cast(consumed(ids), tf.bool),
                        tf.not_equal(row_ids, positive_ids))
  if keep is not None:
    mask = tf.logical_and(mask, tf.logical_not(tf.cast(keep, tf.bool)))
  return tf.stop_gradient(mask)
