"""History query towers: shapes, masking, causality, table sharing."""

import numpy as np
import tensorflow as tf

from tfrs_negsamp.models import query_towers
from tfrs_negsamp.models import sasrec
from tfrs_negsamp.models import towers

_D = 8
_USERS = ["u1", "u2", "u3"]


def _tower(kind, item_model=None, **kwargs):
  item_model = item_model or towers.ItemTower(20, _D)
  options = dict(max_history=6, dropout=0.0)
  options.update(kwargs)
  return query_towers.create_query_tower(kind, _USERS, item_model, _D,
                                         **options), item_model


def _history(rows, length):
  """Left-pads each list of indices to `length`."""
  out = np.zeros([len(rows), length], np.int64)
  for i, r in enumerate(rows):
    if r:
      out[i, -len(r):] = r
  return tf.constant(out)


class HistoryTowersTest(tf.test.TestCase):

  def test_uses_history(self):
    self.assertFalse(query_towers.uses_history("id"))
    for kind in ("mean", "gru", "sasrec"):
      self.assertTrue(query_towers.uses_history(kind))
    with self.assertRaisesRegex(ValueError, "unknown query tower"):
      query_towers.uses_history("lstm")

  def test_id_tower_is_the_user_id_tower(self):
    tower, _ = _tower("id")
    self.assertIsInstance(tower, towers.QueryTower)

  def test_output_shape_norm_and_left_padding_invariance(self):
    rows = [[3, 4, 5], [7], [], [1, 2, 3, 4, 5, 6]]
    for kind in ("mean", "gru", "sasrec"):
      for user_id in (False, True):
        tower, _ = _tower(kind, history_user_id=user_id)
        users = tf.constant(["u1", "u2", "nobody", "u3"])
        short = tower({"history": _history(rows, 6), "user_id": users})
        self.assertEqual(short.shape, (4, _D), msg=kind)
        self.assertAllClose(tf.norm(short[:2], axis=-1), [1.0, 1.0])
        self.assertTrue(np.all(np.isfinite(short.numpy())), msg=kind)
        # Extra left padding (a shorter window of the same items) changes
        # nothing.
        padded = tower({"history": _history(rows[:3], 6)[:, 1:],
                        "user_id": users[:3]})
        self.assertAllClose(padded, short[:3], atol=1e-6, msg=kind)
        self.assertEqual(tower.use_user_id, user_id)
        self.assertEqual(tower.history_length, 6)

  def test_padding_rows_of_the_table_are_never_read(self):
    # Changing embedding row 0 (padding / unknown) changes no output.
    for kind in ("mean", "gru", "sasrec"):
      tower, item_model = _tower(kind)
      inputs = {"history": _history([[3, 4], [5]], 6)}
      before = tower(inputs)
      table = item_model.id_embedding.embeddings
      table.assign(tf.tensor_scatter_nd_update(table, [[0]], [[9.0] * _D]))
      self.assertAllClose(tower(inputs), before, atol=1e-6, msg=kind)

  def test_sasrec_position_t_ignores_later_items(self):
    tower, _ = _tower("sasrec", num_blocks=2, num_heads=2)
    self.assertIsInstance(tower, sasrec.SASRecQueryTower)
    history = _history([[1, 2, 3, 4, 5, 6], [0, 7, 8, 9, 10, 11]], 6)
    changed = tf.concat([history[:, :3],
                         tf.constant([[12, 13, 14], [15, 16, 17]],
                                     tf.int64)], axis=1)

    def seq(h):
      x, mask = tower.embed_history(h)
      return tower.sequence_output(x, mask)

    a, b = seq(history), seq(changed)
    self.assertAllClose(a[:, :3], b[:, :3], atol=1e-6)
    self.assertNotAllClose(a[:, 3:], b[:, 3:])
    # The query is the last position's output.
    self.assertAllClose(
        tower({"history": history}),
        tf.math.l2_normalize(a[:, -1], axis=-1), atol=1e-6)

  def test_sasrec_last_position_shortcut_matches_the_full_stack(self):
    # The final block computes only the last position; its value and the
    # gradients it sends to every weight equal the full stack's last row.
    tower, item_model = _tower("sasrec", num_blocks=2, num_heads=2)
    history = _history([[1, 2, 3, 4, 5, 6], [7, 8], []], 6)
    x, mask = tower.embed_history(history)
    tower.sequence_output(x, mask)
    weights = tower.trainable_variables + [item_model.id_embedding.embeddings]
    outputs, grads = [], []
    for last_only in (False, True):
      with tf.GradientTape() as tape:
        x, mask = tower.embed_history(history)
        out = tower.sequence_output(x, mask, last_only=last_only)[:, -1]
        loss = tf.reduce_sum(out * tf.range(1.0, _D + 1.0))
      outputs.append(out)
      grads.append([tf.convert_to_tensor(g) if g is not None else None
                    for g in tape.gradient(loss, weights)])
    self.assertAllClose(outputs[0], outputs[1], atol=1e-5)
    for full, short, w in zip(grads[0], grads[1], weights):
      self.assertEqual(full is None, short is None, msg=w.name)
      if full is not None:
        self.assertAllClose(full, short, atol=1e-4, msg=w.name)

  def test_sasrec_dropout_only_in_training(self):
    tower, _ = _tower("sasrec", dropout=0.5)
    inputs = {"history": _history([[3, 4, 5]], 6)}
    self.assertAllClose(tower(inputs), tower(inputs))
    self.assertNotAllClose(tower(inputs, training=True),
                           tower(inputs, training=True))

  def test_shared_and_separate_item_tables(self):
    for kind in ("mean", "gru", "sasrec"):
      shared, item_model = _tower(kind)
      self.assertIs(shared.item_embedding, item_model.id_embedding)
      separate, item_model = _tower(kind, share_item_embeddings=False)
      self.assertIsNot(separate.item_embedding, item_model.id_embedding)
      separate({"history": _history([[1]], 6)})
      self.assertEqual(separate.item_embedding.embeddings.shape, (21, _D))

  def test_gradient_reaches_the_shared_table_through_the_query(self):
    tower, item_model = _tower("gru")
    inputs = {"history": _history([[3, 4]], 6)}
    tower(inputs)
    table = item_model.id_embedding.embeddings
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(tower(inputs) * tf.ones([1, _D]))
    grad = tf.convert_to_tensor(tape.gradient(loss, table))
    rows = np.flatnonzero(np.abs(grad.numpy()).sum(axis=1) > 0).tolist()
    self.assertEqual(rows, [3, 4])


if __name__ == "__main__":
  tf.test.main()
