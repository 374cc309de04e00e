"""Chunked exact softmax over the catalog (SAMPLERS.md 12.3, issue 25)."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tfrs_negsamp import full_softmax
from tfrs_negsamp import masking

_N, _I, _D = 7, 23, 5   # 23 items: chunks of 5 and 8 do not divide it


def _problem(seed=0):
  rng = np.random.default_rng(seed)
  queries = tf.constant(rng.normal(size=[_N, _D]), tf.float32)
  table = tf.constant(rng.normal(size=[_I + 1, _D]), tf.float32)
  positives = tf.constant(rng.integers(1, _I + 1, size=[_N]), tf.int64)
  return queries, table, positives


def _reference(queries, table, positives, temperature=1.0, weights=None):
  """TF's dense sparse softmax CE over items 1..I (class j - 1 = item j)."""
  logits = tf.linalg.matmul(queries, table[1:], transpose_b=True)
  loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
      labels=positives - 1, logits=logits / temperature)
  if weights is not None:
    loss *= weights
  return loss


def _loss_and_grads(fn, queries, table):
  with tf.GradientTape() as tape:
    tape.watch([queries, table])
    per_row = fn(queries, table)
    # Distinct row coefficients: the upstream gradient is not all ones.
    total = tf.reduce_sum(per_row * tf.range(1.0, _N + 1.0))
  dq, dt = tape.gradient(total, [queries, table])
  return per_row, tf.convert_to_tensor(dq), tf.convert_to_tensor(dt)


class FullSoftmaxTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(chunk_size=(1, 5, 8, 23, 64),
                         temperature=(1.0, 0.3), graph=(False, True))
  def test_equals_dense_softmax_ce_loss_and_gradients(
      self, chunk_size, temperature, graph):
    queries, table, positives = _problem()

    def ours(q, t):
      return full_softmax.full_softmax_loss(
          q, positives, t, temperature=temperature, chunk_size=chunk_size)

    if graph:  # unknown catalog size: the dynamic (unbalanced) chunks
      ours = tf.function(ours, input_signature=[
          tf.TensorSpec([None, _D]), tf.TensorSpec([None, _D])])
    got = _loss_and_grads(ours, queries, table)
    want = _loss_and_grads(
        lambda q, t: _reference(q, t, positives, temperature), queries,
        table)
    for a, b in zip(got, want):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-5)
    # Row 0 of the table (padding) is not a class: no gradient.
    self.assertAllEqual(got[2][0], tf.zeros([_D]))

  def test_callable_item_embeddings_and_their_variables(self):
    queries, table, positives = _problem(1)
    layer = tf.keras.layers.Dense(_D)
    emb = tf.keras.layers.Embedding(_I + 1, _D)
    emb.build(None)
    emb.embeddings.assign(table)
    item_fn = lambda ids: layer(emb(ids))  # noqa: E731
    item_fn(tf.constant([1], tf.int64))
    variables = [emb.embeddings] + layer.trainable_variables
    results = []
    for loss_fn in (
        lambda: full_softmax.full_softmax_loss(
            queries, positives, item_fn, num_items=_I, chunk_size=6),
        lambda: _reference(queries, item_fn(tf.range(_I + 1)), positives)):
      with tf.GradientTape() as tape:
        loss = tf.reduce_sum(loss_fn())
      results.append((loss, [tf.convert_to_tensor(g)
                             for g in tape.gradient(loss, variables)]))
    self.assertAllClose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
      self.assertAllClose(a, b, rtol=1e-4, atol=1e-5)
    with self.assertRaisesRegex(ValueError, "needs num_items"):
      full_softmax.full_softmax_loss(queries, positives, item_fn)

  @parameterized.parameters(3, 8, 30)
  def test_masked_items_get_no_mass(self, chunk_size):
    # Row n drops items M_n (its positive listed too, and kept): the loss
    # equals the dense CE with those logits removed, and the gradient sends
    # nothing to the masked items through that row.
    queries, table, positives = _problem(2)
    pos = positives.numpy()
    masked = np.zeros([_N, 4], np.int64)
    masked[0] = [2, 9, 0, pos[0]]
    masked[1] = [pos[1], -1, 0, 0]
    masked[3] = [1, 23, 11, 12]
    masked[5] = [7, 7, 8, 0]             # a duplicate entry
    masked_t = tf.constant(masked)

    def ours(q, t):
      return full_softmax.full_softmax_loss(
          q, positives, t, masked_items=masked_t, chunk_size=chunk_size)

    def dense(q, t):
      logits = tf.linalg.matmul(q, t[1:], transpose_b=True)
      keep = np.ones([_N, _I], bool)
      for n in range(_N):
        for j in masked[n]:
          if j >= 1 and j != pos[n]:
            keep[n, j - 1] = False
      logits = tf.where(keep, logits, -1e9)
      return tf.nn.sparse_softmax_cross_entropy_with_logits(
          labels=positives - 1, logits=logits)

    got = _loss_and_grads(ours, queries, table)
    want = _loss_and_grads(dense, queries, table)
    for a, b in zip(got, want):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-5)
    # Masking changes the rows it touches and only those.
    plain = full_softmax.full_softmax_loss(queries, positives, table)
    changed = np.abs(got[0].numpy() - plain.numpy()) > 1e-6
    self.assertAllEqual(changed, [True, False, False, True, False, True,
                                  False])
    # Only row 3 reads items 11, 12 and 23 (masked there): no gradient.
    queries_one = tf.one_hot([3], _N)
    with tf.GradientTape() as tape:
      tape.watch(table)
      row = tf.reduce_sum(queries_one * full_softmax.full_softmax_loss(
          queries, positives, table, masked_items=masked_t,
          chunk_size=chunk_size))
    grad = tf.convert_to_tensor(tape.gradient(row, table)).numpy()
    for j in (1, 11, 12, 23):
      self.assertAllEqual(grad[j], np.zeros(_D))
    self.assertGreater(np.abs(grad[2]).sum(), 0)

  def test_consumed_callable_mask_matches_the_tensor_mask(self):
    queries, table, positives = _problem(3)
    histories = tf.constant([[3, 4, -1], [5, -1, -1], [-1, -1, -1],
                             [1, 2, 22], [9, 9, -1], [7, -1, -1],
                             [8, 10, 12]], tf.int64)
    consumed = masking.history_consumed(histories)
    a = full_softmax.full_softmax_loss(queries, positives, table,
                                       masked_items=consumed, chunk_size=4)
    b = full_softmax.full_softmax_loss(queries, positives, table,
                                       masked_items=histories, chunk_size=9)
    self.assertAllClose(a, b, rtol=1e-6)
    self.assertNotAllClose(
        a, full_softmax.full_softmax_loss(queries, positives, table))

  @parameterized.parameters("bitset", "codes", "csr")
  def test_consumed_items_table_in_a_graph(self, method):
    # The per-user training items of `masking.ConsumedItems` (state
    # variables read inside the custom gradient) mask like the history.
    queries, table, positives = _problem(5)
    users = ["u%d" % i for i in range(4)]
    pairs = {"u0": [3, 4], "u1": [5, 17], "u2": [], "u3": [1, 2, 22]}
    user_ids = [u for u in users for _ in pairs[u]]
    items = [j for u in users for j in pairs[u]]
    consumed_items = masking.ConsumedItems.from_pairs(
        users, user_ids, items, num_items=_I, method=method)
    rows = tf.constant(["u0", "u1", "u2", "u3", "u0", "zz", "u3"])
    history = np.full([_N, 3], -1, np.int64)
    for n, u in enumerate(rows.numpy()):
      got = pairs.get(u.decode(), [])
      history[n, :len(got)] = got

    @tf.function
    def ours(q, t):
      return full_softmax.full_softmax_loss(
          q, positives, t, chunk_size=6,
          masked_items=consumed_items.for_users(rows))

    got = _loss_and_grads(ours, queries, table)
    want = _loss_and_grads(
        lambda q, t: full_softmax.full_softmax_loss(
            q, positives, t, masked_items=tf.constant(history)),
        queries, table)
    for a, b in zip(got, want):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-6)

  def test_zero_weight_and_padding_rows_have_no_loss_and_no_gradient(self):
    queries, table, positives = _problem(4)
    weights = tf.constant([1.0, 0.0, 2.0, 0.0, 1.0, 0.5, 0.0])
    padded = tf.tensor_scatter_nd_update(positives, [[4]], [0])  # padding

    def ours(q, t):
      return full_softmax.full_softmax_loss(q, padded, t,
                                            sample_weight=weights,
                                            chunk_size=5)

    loss, dq, dt = _loss_and_grads(ours, queries, table)
    want_w = weights.numpy() * (padded.numpy() > 0)
    dense = _loss_and_grads(
        lambda q, t: _reference(q, t, positives, weights=want_w), queries,
        table)
    for a, b in zip((loss, dq, dt), dense):
      self.assertAllClose(a, b, rtol=1e-5, atol=1e-5)
    for n in (1, 3, 4, 6):
      self.assertEqual(float(loss[n]), 0.0)
      self.assertAllEqual(dq[n], tf.zeros([_D]))
    # Zero-weight rows holding inf or NaN queries change nothing either.
    bad = tf.tensor_scatter_nd_update(
        queries, [[1], [3]], [[np.inf] * _D, [np.nan] * _D])
    loss_bad, dq_bad, dt_bad = _loss_and_grads(ours, bad, table)
    self.assertAllClose(loss_bad, loss, rtol=1e-6)
    self.assertAllClose(dq_bad, dq, rtol=1e-6)
    self.assertAllClose(dt_bad, dt, rtol=1e-6)

  def test_bad_arguments(self):
    queries, table, positives = _problem()
    with self.assertRaisesRegex(ValueError, "chunk_size"):
      full_softmax.full_softmax_loss(queries, positives, table, chunk_size=0)
    with self.assertRaisesRegex(ValueError, "temperature"):
      full_softmax.full_softmax_loss(queries, positives, table,
                                     temperature=0.0)
    with self.assertRaisesRegex(ValueError, "num_items"):
      full_softmax.full_softmax_loss(queries, positives, table, num_items=5)


if __name__ == "__main__":
  tf.test.main()
