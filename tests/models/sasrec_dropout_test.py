"""Step-seeded dropout and the SASRec tower's stateless dropout masks."""

import numpy as np
import tensorflow as tf

from tests import helpers
from trainers.pipeline import inputs
from trainers.pipeline import strategies
from tfrs_negsamp.models import dropout as dropout_lib
from tfrs_negsamp.models import query_towers
from tfrs_negsamp.models import towers

_D = 8


def _layer(rate, step, salt=0, seed=5):
  return dropout_lib.StepSeededDropout(rate, seed=seed, salt=salt,
                                       step=lambda: tf.constant(step))


def _mirrored():
  devices = tf.config.list_logical_devices("CPU")
  assert len(devices) >= 2, "conftest must split the CPU into 2 devices"
  return strategies.make_strategy("mirrored", 2)


def _sasrec(dropout, seed=3, **kwargs):
  item_model = towers.ItemTower(20, _D)
  return query_towers.create_query_tower(
      "sasrec", ["u1"], item_model, _D, max_history=6, dropout=dropout,
      seed=seed, num_blocks=2, num_heads=2, **kwargs)


def _history():
  return {"history": tf.constant([[0, 0, 1, 2, 3, 4], [5, 6, 7, 8, 9, 10],
                                  [0, 0, 0, 0, 0, 11]], tf.int64)}


class StepSeededDropoutTest(tf.test.TestCase):

  def test_mask_is_a_function_of_seed_step_and_salt(self):
    x = tf.ones([4, 50])
    a = _layer(0.5, 7)(x, training=True)
    self.assertAllEqual(a, _layer(0.5, 7)(x, training=True))
    for other in (_layer(0.5, 8), _layer(0.5, 7, salt=1),
                  _layer(0.5, 7, seed=6)):
      self.assertNotAllEqual(a, other(x, training=True))

  def test_rate_and_scale(self):
    x = tf.ones([200, 100])
    for rate in (0.2, 0.5):
      y = _layer(rate, 3)(x, training=True).numpy()
      self.assertEqual(set(np.unique(y).tolist()), {0.0, 1.0 / (1 - rate)})
      self.assertNear(float(np.mean(y == 0)), rate, 0.01)
      self.assertNear(float(np.mean(y)), 1.0, 0.02)  # E[dropout(x)] = x

  def test_inference_and_rate_zero_are_the_identity(self):
    x = tf.random.normal([3, 4])
    self.assertAllEqual(_layer(0.5, 1)(x), x)
    self.assertAllEqual(_layer(0.5, 1)(x, training=False), x)
    self.assertAllEqual(_layer(0.0, 1)(x, training=True), x)
    self.assertAllEqual(
        dropout_lib.StepSeededDropout(0.0)(x, training=True), x)
    with self.assertRaisesRegex(ValueError, "needs `step`"):
      dropout_lib.StepSeededDropout(0.5)(x, training=True)
    with self.assertRaisesRegex(ValueError, "rate must be in"):
      dropout_lib.StepSeededDropout(1.0)

  def test_tensor_training_flag(self):
    x = tf.ones([4, 50])
    layer = _layer(0.5, 7)
    self.assertAllEqual(layer(x, training=tf.constant(True)),
                        layer(x, training=True))
    self.assertAllEqual(layer(x, training=tf.constant(False)), x)

  def test_gradient_is_the_mask(self):
    x = tf.ones([4, 10])
    layer = _layer(0.25, 2)
    with tf.GradientTape() as tape:
      tape.watch(x)
      y = layer(x, training=True)
    self.assertAllEqual(tape.gradient(y, x), y)

  def test_replicas_use_the_global_batch_rows(self):
    # Each replica drops different entries of its own rows, the ones one
    # device drops in the same rows of the global batch.
    strategy = _mirrored()
    x = tf.reshape(tf.range(1.0, 8 * 30 + 1.0), [8, 30])
    single = _layer(0.5, 4)(x, training=True)
    with strategy.scope():
      layer = _layer(0.5, 4)
    dist = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(x).unbatch().batch(8))
    out = strategy.run(tf.function(lambda b: layer(b, training=True)),
                       args=(next(iter(dist)),))
    rows = strategy.experimental_local_results(out)
    self.assertLen(rows, 2)
    self.assertAllEqual(tf.concat(rows, 0), single)
    self.assertNotAllEqual(rows[0] == 0, rows[1] == 0)

  def test_config_round_trip(self):
    layer = _layer(0.3, 1, salt=4, seed=9)
    copy = dropout_lib.StepSeededDropout.from_config(layer.get_config())
    self.assertEqual((copy.rate, copy.seed, copy.salt), (0.3, 9, 4))


class StepSeededAttentionTest(tf.test.TestCase):

  def _pair(self, rate, step=0):
    ours = dropout_lib.StepSeededMultiHeadAttention(
        num_heads=2, key_dim=4, dropout=rate, seed=1, salt=2,
        step=lambda: tf.constant(step))
    keras = tf.keras.layers.MultiHeadAttention(num_heads=2, key_dim=4,
                                               dropout=rate)
    q = tf.random.stateless_normal([3, 5, 8], [1, 2])
    ours(q, q)
    keras(q, q)
    keras.set_weights(ours.get_weights())
    return ours, keras, q

  def test_without_dropout_equals_keras_bit_for_bit(self):
    ours, keras, q = self._pair(0.0)
    for training in (False, True):
      self.assertAllEqual(ours(q, q, training=training),
                          keras(q, q, training=training))

  def test_dropout_on_the_attention_probabilities(self):
    ours, keras, q = self._pair(0.5)
    inner = ours._dropout_layer  # pylint: disable=protected-access
    self.assertIsInstance(inner, dropout_lib.StepSeededDropout)
    self.assertEqual((inner.rate, inner.seed, inner.salt), (0.5, 1, 2))
    self.assertAllEqual(ours(q, q), keras(q, q))  # inference
    a = ours(q, q, training=True)
    self.assertAllEqual(a, ours(q, q, training=True))  # same step
    self.assertNotAllClose(a, ours(q, q))
    other, _, _ = self._pair(0.5, step=1)
    other.set_weights(ours.get_weights())
    self.assertAllEqual(other(q, q), ours(q, q))
    self.assertNotAllClose(a, other(q, q, training=True))  # next step


class SASRecDropoutTest(tf.test.TestCase):

  def test_no_dropout_no_counter_and_training_is_inference(self):
    tower = _sasrec(0.0)
    inputs = _history()
    self.assertAllEqual(tower(inputs, training=True), tower(inputs))
    self.assertIsNone(tower.dropout_step)
    self.assertFalse(any("dropout_step" in v.name for v in tower.variables))

  def test_masks_follow_the_checkpointed_counter(self):
    tower = _sasrec(0.3)
    inputs = _history()
    inference = tower(inputs)
    self.assertEqual(int(tower.dropout_step.numpy()), 0)
    first = tower(inputs, training=True)
    second = tower(inputs, training=True)
    self.assertEqual(int(tower.dropout_step.numpy()), 2)
    self.assertNotAllClose(first, second)
    self.assertNotAllClose(first, inference)
    self.assertAllEqual(tower(inputs), inference)  # no increment
    self.assertEqual(int(tower.dropout_step.numpy()), 2)
    self.assertIn(tower.dropout_step, tower.non_trainable_variables)
    # A restore of the counter replays the masks, in eager and in a graph.
    tower.dropout_step.assign(1)
    self.assertAllEqual(tower(inputs, training=True), second)
    call = tf.function(lambda x: tower(x, training=True))
    tower.dropout_step.assign(0)
    self.assertAllEqual(call(inputs), first)
    self.assertAllEqual(call(inputs), second)
    self.assertEqual(int(tower.dropout_step.numpy()), 2)

  def test_counter_is_in_the_checkpoint(self):
    tower = _sasrec(0.3)
    inputs = _history()
    tower(inputs, training=True)
    path = tf.train.Checkpoint(tower=tower).save(
        self.get_temp_dir() + "/ckpt")
    expected = tower(inputs, training=True)
    restored = _sasrec(0.3)
    restored(inputs)
    tf.train.Checkpoint(tower=restored).restore(path).assert_consumed()
    self.assertEqual(int(restored.dropout_step.numpy()), 1)
    self.assertAllEqual(restored(inputs, training=True), expected)

  def test_seed_changes_the_masks(self):
    inputs = _history()
    a, b = _sasrec(0.3, seed=3), _sasrec(0.3, seed=4)
    a(inputs)
    b(inputs)
    b.set_weights(a.get_weights())
    self.assertAllEqual(a(inputs), b(inputs))
    self.assertNotAllClose(a(inputs, training=True),
                           b(inputs, training=True))

  def test_mirrored_with_dropout_equals_single_device(self):
    # The replicas draw the global batch's masks: the replica-summed loss
    # and gradients equal one device's on the whole batch, step after step.
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(query_tower="sasrec", max_history=5,
                                 dropout=0.3, sampler="cross_batch",
                                 training_rows="window")
    config.sampler_options = dict(config.sampler_options, memory_size=8)
    strategy = _mirrored()
    single, mirrored = helpers.single_and_mirrored(dataset, config, strategy)
    step = helpers.mirrored_step(strategy, mirrored)
    batches = list(inputs.train_dataset(dataset, config,
                                            shuffle=True).take(2))
    inference = single.compute_loss(batches[0], training=False)
    for i, batch in enumerate(batches):
      loss, grads = helpers.single_device_step(single, batch)
      m_loss, m_grads = step(batch)
      self.assertAllClose(m_loss, loss, rtol=1e-5, msg="step %d" % i)
      for a, b in zip(m_grads, grads):
        self.assertAllClose(a, b, rtol=1e-3, atol=1e-5)
      if i == 0:
        self.assertNotAllClose(loss, inference)
    for tower in (single.query_model, mirrored.query_model):
      self.assertEqual(int(tower.dropout_step.numpy()), 2)


if __name__ == "__main__":
  tf.test.main()
