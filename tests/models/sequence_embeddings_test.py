"""History towers' per-position queries for sequence training (issue 25)."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tfrs_negsamp.models import query_towers
from tfrs_negsamp.models import towers

_D = 8
_L = 6
_USERS = ["u1", "u2", "u3"]
_KINDS = ("mean", "gru", "sasrec")


def _tower(kind, **kwargs):
  item_model = towers.ItemTower(30, _D)
  options = dict(max_history=_L, dropout=0.0, num_blocks=2, num_heads=2)
  options.update(kwargs)
  return query_towers.create_query_tower(kind, _USERS, item_model, _D,
                                         **options), item_model


def _inputs():
  history = tf.constant([[1, 2, 3, 4, 5, 6],
                         [0, 0, 7, 8, 9, 10],
                         [0, 0, 0, 0, 0, 11],
                         [0, 0, 0, 0, 0, 0]], tf.int64)
  return {"history": history,
          "user_id": tf.constant(["u1", "u2", "nobody", "u3"])}


def _replace_after(history, t, offset=12):
  """Items at positions > t replaced by other items (padding kept)."""
  later = tf.range(_L)[None, :] > t
  other = tf.where(history > 0, history + offset, tf.zeros_like(history))
  return tf.where(later, other, history)


class SequenceEmbeddingsTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.product(kind=_KINDS, user_id=(False, True))
  def test_last_position_is_the_query_and_shapes(self, kind, user_id):
    tower, _ = _tower(kind, history_user_id=user_id)
    inputs = _inputs()
    query = tower(inputs)
    seq = tower.sequence_embeddings(inputs)
    self.assertEqual(seq.shape, (4, _L, _D))
    self.assertTrue(np.all(np.isfinite(seq.numpy())))
    self.assertAllClose(seq[:, -1], query, atol=1e-5)
    # Every position holding an item is a unit query, like `call`'s.
    mask = inputs["history"].numpy() > 0
    norms = tf.norm(seq, axis=-1).numpy()
    self.assertAllClose(norms[mask], np.ones(mask.sum()), atol=1e-5)
    # The same in a graph.
    graph = tf.function(lambda x: tower.sequence_embeddings(x))(inputs)
    self.assertAllClose(graph, seq, atol=1e-5)

  @parameterized.product(kind=_KINDS, user_id=(False, True))
  def test_position_t_ignores_later_positions(self, kind, user_id):
    tower, _ = _tower(kind, history_user_id=user_id)
    inputs = _inputs()
    base = tower.sequence_embeddings(inputs).numpy()
    for t in range(_L - 1):
      changed = dict(inputs, history=_replace_after(inputs["history"], t))
      other = tower.sequence_embeddings(changed).numpy()
      self.assertAllClose(other[:, :t + 1], base[:, :t + 1], atol=1e-6,
                          msg="%s t=%d" % (kind, t))
      # Row 0 holds items after t: its later positions do change.
      self.assertNotAllClose(other[0, t + 1:], base[0, t + 1:])

  @parameterized.parameters(*_KINDS)
  def test_position_t_sends_no_gradient_to_later_items(self, kind):
    # d(query_t)/d(table row of an item at a position > t) = 0.
    tower, item_model = _tower(kind)
    history = tf.constant([[1, 2, 3, 4, 5, 6]], tf.int64)
    tower.sequence_embeddings({"history": history})
    table = item_model.id_embedding.embeddings
    for t in range(_L):
      with tf.GradientTape() as tape:
        seq = tower.sequence_embeddings({"history": history})
        loss = tf.reduce_sum(seq[0, t] * tf.range(1.0, _D + 1.0))
      grad = tf.convert_to_tensor(tape.gradient(loss, table)).numpy()
      touched = np.flatnonzero(np.abs(grad).sum(axis=1) > 0).tolist()
      self.assertEqual(touched, list(range(1, t + 2)), msg=kind)

  def test_mean_is_the_running_prefix_mean(self):
    tower, item_model = _tower("mean")
    inputs = {"history": tf.constant([[0, 0, 3, 4, 5, 6]], tf.int64)}
    tower(inputs)
    table = item_model.id_embedding.embeddings.numpy()
    x, mask = tower.embed_history(inputs["history"])
    got = tower.encode_sequence(x, mask).numpy()[0]
    for t in range(_L):
      prefix = [i for i in inputs["history"].numpy()[0, :t + 1] if i]
      want = (table[prefix].mean(axis=0) if prefix
              else np.zeros(_D, np.float32))
      self.assertAllClose(got[t], want, atol=1e-6)

  def test_gru_positions_are_the_states_after_each_prefix(self):
    # Position t equals the last state of the GRU run on the prefix alone
    # (left-padded to L), the recurrence being the same.
    tower, _ = _tower("gru")
    history = tf.constant([[0, 5, 6, 7, 8, 9]], tf.int64)
    seq = tower.sequence_embeddings({"history": history}).numpy()
    for t in range(1, _L):
      prefix = tf.concat([tf.zeros([1, _L - 1 - t], tf.int64),
                          history[:, :t + 1]], axis=1)
      self.assertAllClose(seq[0, t], tower({"history": prefix})[0],
                          atol=1e-5)


class SASRecSequenceDropoutTest(tf.test.TestCase):

  def test_masks_follow_the_counter_one_step_per_call(self):
    tower, _ = _tower("sasrec", dropout=0.4, seed=2)
    inputs = _inputs()
    inference = tower.sequence_embeddings(inputs)
    self.assertEqual(int(tower.dropout_step.numpy()), 0)
    first = tower.sequence_embeddings(inputs, training=True)
    second = tower.sequence_embeddings(inputs, training=True)
    self.assertEqual(int(tower.dropout_step.numpy()), 2)
    self.assertNotAllClose(first, second)
    self.assertNotAllClose(first, inference)
    self.assertAllClose(tower.sequence_embeddings(inputs), inference)
    # A restored counter replays the masks (exact resume), in a graph too.
    call = tf.function(lambda x: tower.sequence_embeddings(x, training=True))
    tower.dropout_step.assign(0)
    self.assertAllEqual(call(inputs), first)
    self.assertAllEqual(call(inputs), second)

  def test_mirrored_replicas_equal_one_device(self):
    devices = tf.config.list_logical_devices("CPU")
    self.assertGreaterEqual(len(devices), 2,
                            "conftest must split the CPU into 2 devices")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    inputs = _inputs()
    single, _ = _tower("sasrec", dropout=0.4, seed=2)
    single.sequence_embeddings(inputs)
    with strategy.scope():
      mirrored, _ = _tower("sasrec", dropout=0.4, seed=2)
      mirrored.sequence_embeddings(inputs)
    mirrored.set_weights(single.get_weights())
    expected = single.sequence_embeddings(inputs, training=True)
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(inputs).unbatch().batch(4))
    out = strategy.run(
        tf.function(lambda x: mirrored.sequence_embeddings(x,
                                                           training=True)),
        args=(next(iter(dist)),))
    got = tf.concat(strategy.experimental_local_results(out), axis=0)
    self.assertAllClose(got, expected, atol=1e-5)
    self.assertEqual(int(mirrored.dropout_step.numpy()), 1)


if __name__ == "__main__":
  tf.test.main()
