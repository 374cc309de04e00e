"""Exact softmax cross-entropy over the whole catalog, chunked over items.

For `N` query rows `q_n` with positive item `p_n`, the catalog's items
`j = 1..I` (model item indices; index 0 is padding / out-of-vocabulary and
never a class) with embeddings `e_j`, temperature `T` and row weights `w_n`,

    z_nj = <q_n, e_j> / T
    l_n  = w_n (log sum_{j in A_n} exp(z_nj) - z_{n p_n}),

where `A_n` is the catalog minus the row's masked items (the positive is
always in `A_n`). This is `tf.nn.sparse_softmax_cross_entropy_with_logits`
over the whole catalog (SAMPLERS.md 12.3), the reference every sampler
approximates.

Memory. The `[N, I]` logits are never held: the forward pass visits the
catalog in chunks of `C` items and keeps a running log-sum-exp (`m_n`, the
running max, and `s_n = sum exp(z - m_n)`), so it holds `O(N C)` floats.
The backward pass (`tf.custom_gradient`) recomputes each chunk's logits
from the saved `lse_n = m_n + log s_n`:

    dl_n/dz_nj = w_n (softmax_nj - [j = p_n]),   softmax_nj = exp(z_nj - lse_n)
    dq_n  = sum_j dl_n/dz_nj e_j / T,   de_j = sum_n dl_n/dz_nj q_n / T,

again `O(N C)` (a plain `tf.while_loop` under autodiff would keep every
chunk's `[N, C]` activations for the backward pass). Cost: one `N x I x d`
matmul forward, three backward.

Row weights. Rows whose weight is 0 (padding positions) or whose positive is
not in `1..I` contribute 0 loss and 0 gradient.

Masked items. Per row, either a `[N, K]` tensor of item indices to drop
from the denominator (entries `< 1` are ignored; e.g. the row's user's other
history items), or a callable `consumed(ids [C]) -> bool [N, C]`, True
where row `n`'s user consumed item `ids[c]` (the per-batch callable of
`masking.ConsumedItems.for_users`). In both cases the positive stays.
"""

from typing import Callable, Optional, Union

import tensorflow as tf

ItemEmbeddings = Union[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]
MaskedItems = Union[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]

DEFAULT_CHUNK_SIZE = 1024


def catalog_table(item_embeddings: ItemEmbeddings,
                  num_items: Optional[int] = None) -> tf.Tensor:
  """The `[I, d]` embeddings of items `1..I` (row `r` is item `r + 1`).

  Args:
    item_embeddings: a `[I + 1, d]` table indexed by model item index (row
      0, padding, is not used), or a callable mapping int64 indices `[I]`
      to `[I, d]` (e.g. the item tower), called once on `1..num_items`: its
      activations cost `O(I h)`, independent of `N`.
    num_items: `I`; required with a callable, checked against a table.

  Returns:
    float32 `[I, d]`, differentiable w.r.t. the table or the callable's
    variables.

  Raises:
    ValueError: If `num_items` is missing for a callable or disagrees with
      the table's rows.
  """
  if callable(item_embeddings):
    if num_items is None:
      raise ValueError("a callable item_embeddings needs num_items.")
    table = item_embeddings(tf.range(1, num_items + 1, dtype=tf.int64))
  else:
    table = tf.convert_to_tensor(item_embeddings)
    if (num_items is not None and table.shape[0] is not None and
        table.shape[0] != num_items + 1):
      raise ValueError("item_embeddings has %d rows; expected num_items + 1 "
                       "= %d (row 0 is padding)."
                       % (table.shape[0], num_items + 1))
    table = table[1:]
  return tf.cast(table, tf.float32)


def _masked_in_chunk(masked_items: Optional[MaskedItems],
                     positives: tf.Tensor, ids: tf.Tensor,
                     first: tf.Tensor) -> Optional[tf.Tensor]:
  """`[N, C]` bool: the row's masked items among `ids` (never the positive).

  `ids = first + range(C)` are the chunk's item indices.
  """
  if masked_items is None:
    return None
  num_rows = tf.shape(positives)[0]
  chunk = tf.shape(ids)[0]
  if callable(masked_items):
    masked = tf.cast(masked_items(ids), tf.bool)
  else:
    items = tf.cast(masked_items, tf.int64)                   # [N, K]
    col = items - first
    hit = ((items >= 1) & (col >= 0) & (col < tf.cast(chunk, tf.int64)))
    where = tf.where(hit)                                     # [H, 2]
    cols = tf.gather_nd(col, where)
    masked = tf.scatter_nd(
        tf.stack([where[:, 0], cols], axis=1),
        tf.ones_like(cols, tf.int32),
        tf.cast(tf.stack([num_rows, chunk]), tf.int64)) > 0
  return masked & tf.not_equal(ids[None, :], positives[:, None])


def full_softmax_loss(queries: tf.Tensor,
                      positives: tf.Tensor,
                      item_embeddings: ItemEmbeddings,
                      num_items: Optional[int] = None,
                      temperature: Optional[float] = None,
                      sample_weight: Optional[tf.Tensor] = None,
                      masked_items: Optional[MaskedItems] = None,
                      chunk_size: int = DEFAULT_CHUNK_SIZE) -> tf.Tensor:
  """Per-row exact softmax cross-entropy over the catalog (module docstring).

  Args:
    queries: `[N, d]` query embeddings.
    positives: `[N]` int positive item indices in `1..I` (others: 0 loss).
    item_embeddings: `[I + 1, d]` table or callable (`catalog_table`).
    num_items: `I` (required with a callable).
    temperature: `T` (None: 1).
    sample_weight: optional `[N]` row weights `w_n` (0 = no loss).
    masked_items: optional `[N, K]` item indices or `consumed` callable
      excluded from row `n`'s denominator (never its positive).
    chunk_size: `C`, at most this many items per chunk (any `C >= 1`). With
      a static catalog size the chunks are balanced, `ceil(I / ceil(I /
      C))` items each; the last chunk's padding is masked.

  Returns:
    float32 `[N]` losses `l_n`; the task sums them (SUM reduction).

  Raises:
    ValueError: If `chunk_size` < 1 or `temperature` <= 0.
  """
  if chunk_size < 1:
    raise ValueError("chunk_size must be >= 1, got %r." % (chunk_size,))
  temperature = 1.0 if temperature is None else float(temperature)
  if temperature <= 0:
    raise ValueError("temperature must be > 0, got %r." % (temperature,))
  table = catalog_table(item_embeddings, num_items)
  queries = tf.cast(queries, tf.float32)
  positives = tf.cast(tf.reshape(positives, [-1]), tf.int64)
  num_classes = tf.shape(table, out_type=tf.int64)[0]
  valid = (positives >= 1) & (positives <= num_classes)
  weights = tf.cast(valid, tf.float32)
  if sample_weight is not None:
    weights *= tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
  safe_positives = tf.where(valid, positives, tf.ones_like(positives))
  chunk = int(chunk_size)
  static_classes = table.shape[0]
  if static_classes:
    # Balanced chunks: the last one is not mostly padding.
    chunk = -(-static_classes // -(-static_classes // chunk))
  num_chunks = (num_classes + chunk - 1) // chunk
  dim = tf.shape(table)[1]
  inv_t = 1.0 / temperature
  minus_inf = tf.constant(-float("inf"), tf.float32)

  def chunk_logits(q, padded, c):
    """Logits `[N, C]` of chunk `c` (-inf where not a class) and its rows."""
    first = c * chunk + 1
    ids = first + tf.range(chunk, dtype=tf.int64)
    e_c = tf.slice(padded, tf.stack([c * chunk, 0]),
                   tf.constant([chunk, -1], tf.int64))
    z = tf.linalg.matmul(q, e_c, transpose_b=True)
    if inv_t != 1.0:
      z *= inv_t
    # Padding rows of the last chunk: -inf through a [C] bias (one add).
    z += tf.where(ids <= num_classes, 0.0, minus_inf)[None, :]
    masked = _masked_in_chunk(masked_items, safe_positives, ids, first)
    if masked is not None:
      z = tf.where(masked, minus_inf, z)
    return z, e_c

  @tf.custom_gradient
  def loss_fn(q, e):
    # Rows without loss score a zero query: whatever their query holds
    # (inf, NaN), they add nothing to the loss or to the item gradient.
    q = tf.where(weights[:, None] > 0, q, tf.zeros_like(q))
    pad = num_chunks * chunk - num_classes
    padded = tf.pad(e, tf.stack([tf.stack([tf.constant(0, tf.int64), pad]),
                                 tf.zeros([2], tf.int64)]))
    e_pos = tf.gather(e, safe_positives - 1)
    z_pos = tf.reduce_sum(q * e_pos, axis=1) * inv_t

    def forward(c, m, s):
      z, _ = chunk_logits(q, padded, c)
      m_new = tf.maximum(m, tf.reduce_max(z, axis=1))
      s = s * tf.exp(m - m_new) + tf.reduce_sum(
          tf.exp(z - m_new[:, None]), axis=1)
      return c + 1, m_new, s

    # The running max starts at the positive's logit (always a class), so it
    # is finite from the first chunk on.
    _, m, s = tf.while_loop(
        lambda c, m, s: c < num_chunks, forward,
        (tf.constant(0, tf.int64), z_pos, tf.zeros_like(z_pos)))
    lse = m + tf.math.log(s)
    loss = tf.where(weights > 0, weights * (lse - z_pos),
                    tf.zeros_like(lse))

    def grad(upstream, variables=None):
      coef = tf.where(weights > 0, weights * upstream,
                      tf.zeros_like(upstream))                 # [N]

      def backward(c, dq, de):
        z, e_c = chunk_logits(q, padded, c)
        g = tf.exp(z - lse[:, None]) * (coef * inv_t)[:, None]  # [N, C]
        dq += tf.linalg.matmul(g, e_c)
        de = de.write(tf.cast(c, tf.int32),
                      tf.linalg.matmul(g, q, transpose_a=True))
        return c + 1, dq, de

      _, dq, de = tf.while_loop(
          lambda c, dq, de: c < num_chunks, backward,
          (tf.constant(0, tf.int64), tf.zeros_like(q),
           tf.TensorArray(tf.float32, size=tf.cast(num_chunks, tf.int32),
                          element_shape=tf.TensorShape([chunk, None]))))
      de = tf.reshape(de.stack(), tf.stack([-1, dim]))[:num_classes]
      # The positive's own term, -z_{n p_n}.
      pos_coef = (coef * inv_t)[:, None]
      dq -= pos_coef * e_pos
      de = tf.tensor_scatter_nd_add(de, (safe_positives - 1)[:, None],
                                    -pos_coef * q)
      if variables is None:
        return dq, de
      # Variables a `consumed` callable reads: masks carry no gradient.
      return (dq, de), [None] * len(variables)

    return loss, grad

  return loss_fn(queries, table)
