"""Tests of `optimizers.LazyAdam` (rows-only Adam for sparse gradients)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import inputs
from trainers.pipeline import strategies
from tfrs_negsamp import optimizers

ROWS, DIM = 9, 3  # rows 7 and 8 are never touched
LR, B1, B2, EPS = 0.05, 0.9, 0.999, 1e-7
# Per step: (indices with repeats, one gradient row per index).
_RNG = np.random.default_rng(0)
STEPS = [(np.array(idx), _RNG.normal(size=(len(idx), DIM)).astype(np.float32))
         for idx in ([0, 2, 2, 5], [1, 1, 1], [2, 6, 0, 2, 3], [5], [4, 0])]


def _lazy_reference(w, steps):
  """NumPy LazyAdam: only the summed rows' m, v and weights change."""
  w = w.astype(np.float64).copy()
  m, v = np.zeros_like(w), np.zeros_like(w)
  for t, (idx, values) in enumerate(steps, start=1):
    rows = np.unique(idx)
    g = np.zeros_like(w)
    np.add.at(g, idx, values)
    g = g[rows]
    m[rows] = B1 * m[rows] + (1 - B1) * g
    v[rows] = B2 * v[rows] + (1 - B2) * g * g
    alpha = LR * np.sqrt(1 - B2**t) / (1 - B1**t)
    w[rows] -= alpha * m[rows] / (np.sqrt(v[rows]) + EPS)
  return w, m, v


def _initial():
  return np.random.default_rng(1).normal(size=(ROWS, DIM)).astype(np.float32)


class LazyAdamTest(tf.test.TestCase):

  def _slots(self, opt, var):
    # pylint: disable=protected-access
    index = opt._index_dict[opt._var_key(var)]
    return opt._momentums[index], opt._velocities[index]

  def test_sparse_matches_numpy_lazy_rule(self):
    var = tf.Variable(_initial())
    opt = optimizers.LazyAdam(LR, beta_1=B1, beta_2=B2, epsilon=EPS)

    @tf.function(reduce_retracing=True)
    def step(idx, values):
      grad = tf.IndexedSlices(values, idx, tf.constant([ROWS, DIM], tf.int64))
      opt.apply_gradients([(grad, var)])

    for idx, values in STEPS:
      step(tf.constant(idx, tf.int64), tf.constant(values))
    w, m, v = _lazy_reference(_initial(), STEPS)
    tf_m, tf_v = self._slots(opt, var)
    self.assertAllClose(var.numpy(), w, rtol=1e-5, atol=1e-6)
    self.assertAllClose(tf_m.numpy(), m, rtol=1e-4, atol=1e-7)
    self.assertAllClose(tf_v.numpy(), v, rtol=1e-4, atol=1e-9)
    # Row never touched: weights and moments unchanged.
    untouched = sorted(set(range(ROWS)) - set(np.concatenate(
        [idx for idx, _ in STEPS])))
    self.assertNotEmpty(untouched)
    self.assertAllEqual(var.numpy()[untouched], _initial()[untouched])
    self.assertAllEqual(tf_m.numpy()[untouched], 0 * w[untouched])

  def test_update_step_sums_duplicates(self):
    var = tf.Variable(_initial())
    opt = optimizers.LazyAdam(LR, beta_1=B1, beta_2=B2, epsilon=EPS)
    opt.build([var])
    idx, values = STEPS[0]
    opt.update_step(tf.IndexedSlices(tf.constant(values),
                                     tf.constant(idx)), var)
    w, _, _ = _lazy_reference(_initial(), STEPS[:1])
    self.assertAllClose(var.numpy(), w, rtol=1e-5, atol=1e-6)

  def test_dense_matches_keras_adam(self):
    a = tf.Variable(_initial())
    b = tf.Variable(_initial())
    lazy = optimizers.LazyAdam(LR)
    adam = tf.keras.optimizers.Adam(LR)
    for _, values in STEPS:
      grad = tf.constant(np.resize(values, (ROWS, DIM)))
      lazy.apply_gradients([(grad, a)])
      adam.apply_gradients([(grad, b)])
    self.assertAllEqual(a.numpy(), b.numpy())
    for x, y in zip(self._slots(lazy, a), self._slots(adam, b)):
      self.assertAllEqual(x.numpy(), y.numpy())

  def test_dense_amsgrad_and_sparse_amsgrad_run(self):
    var = tf.Variable(_initial())
    opt = optimizers.LazyAdam(LR, amsgrad=True)
    for idx, values in STEPS:
      opt.apply_gradients([(tf.IndexedSlices(
          tf.constant(values), tf.constant(idx)), var)])
    self.assertAllEqual(np.isfinite(var.numpy()), np.ones((ROWS, DIM), bool))

  def test_mirrored_equals_one_device(self):
    strategy = strategies.make_strategy("mirrored", 2)
    results = []
    for strat in (tf.distribute.get_strategy(), strategy):
      with strat.scope():
        table = tf.Variable(_initial())
        opt = optimizers.LazyAdam(LR)

      @tf.function
      def step(idx, values, table=table, opt=opt, strat=strat):
        def replica_fn(i, x):
          # Replica r takes block r of the global batch.
          ctx = tf.distribute.get_replica_context()
          n = ctx.num_replicas_in_sync
          r = ctx.replica_id_in_sync_group
          i = tf.gather(tf.reshape(i, [n, -1]), r)
          x = tf.gather(tf.reshape(x, [n, -1, DIM]), r)
          with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, i) * x)
          grad = tape.gradient(loss, table)
          assert isinstance(grad, tf.IndexedSlices)
          opt.apply_gradients([(grad, table)])
        strat.run(replica_fn, args=(idx, values))

      for idx, values in STEPS:
        if len(idx) % 2:  # Even batches split over two replicas.
          idx, values = np.append(idx, idx[:1]), np.concatenate(
              [values, values[:1]])
        step(tf.constant(idx, tf.int64), tf.constant(values))
      copies = getattr(table, "values", (table,))
      for c in copies:
        self.assertAllClose(c.numpy(), copies[0].numpy(), rtol=0, atol=0)
      m, v = self._slots(opt, table)
      results.append((copies[0].numpy(), m.numpy(), v.numpy()))
    for single, mirrored in zip(*results):
      self.assertAllClose(mirrored, single, rtol=1e-5, atol=1e-7)

  def test_checkpoint_restores_slots(self):
    var = tf.Variable(_initial())
    opt = optimizers.LazyAdam(LR)
    grad = lambda idx, values: tf.IndexedSlices(  # noqa: E731
        tf.constant(values), tf.constant(idx))
    for idx, values in STEPS[:3]:
      opt.apply_gradients([(grad(idx, values), var)])
    path = tf.train.Checkpoint(var=var, opt=opt).save(
        os.path.join(self.get_temp_dir(), "ckpt"))
    var2 = tf.Variable(np.zeros((ROWS, DIM), np.float32))
    opt2 = optimizers.LazyAdam(LR)
    opt2.build([var2])
    tf.train.Checkpoint(var=var2, opt=opt2).restore(path).assert_consumed()
    for idx, values in STEPS[3:]:
      opt.apply_gradients([(grad(idx, values), var)])
      opt2.apply_gradients([(grad(idx, values), var2)])
    self.assertAllEqual(var.numpy(), var2.numpy())

  def test_config_round_trip(self):
    opt = optimizers.LazyAdam(0.02, beta_1=0.8)
    again = tf.keras.optimizers.deserialize(
        tf.keras.optimizers.serialize(opt))
    self.assertIsInstance(again, optimizers.LazyAdam)
    self.assertEqual(again.get_config(), opt.get_config())

  def test_make_optimizer_and_config(self):
    self.assertIsInstance(optimizers.make_optimizer("lazy_adam", 0.1),
                          optimizers.LazyAdam)
    self.assertNotIsInstance(optimizers.make_optimizer("adam", 0.1),
                             optimizers.LazyAdam)
    with self.assertRaisesRegex(ValueError, "unknown optimizer"):
      optimizers.make_optimizer("sgd", 0.1)
    with self.assertRaisesRegex(ValueError, "unknown optimizer"):
      helpers.tiny_config(optimizer="sgd").validate()

  def test_model_trains_with_lazy_adam(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(optimizer="lazy_adam", item_features=False)
    model = assembly.create_model(dataset, config,
                                    tf.distribute.get_strategy())
    self.assertIsInstance(model.optimizer, optimizers.LazyAdam)
    before = [w.numpy() for w in model.trainable_variables]
    model.fit(inputs.train_dataset(dataset, config, shuffle=False),
              epochs=1, steps_per_epoch=3, verbose=0)
    after = [w.numpy() for w in model.trainable_variables]
    self.assertTrue(any(not np.array_equal(a, b)
                        for a, b in zip(before, after)))

  @pytest.mark.slow
  def test_mirrored_model_fit_equals_one_device(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(optimizer="lazy_adam", item_features=False,
                                 learning_rate=0.05)
    strategy = strategies.make_strategy("mirrored", 2)
    single, mirrored = helpers.single_and_mirrored(dataset, config, strategy)
    for model in (single, mirrored):
      model.fit(inputs.train_dataset(dataset, config, shuffle=False),
                epochs=1, steps_per_epoch=4, verbose=0)
    self.assertIsInstance(mirrored.optimizer, optimizers.LazyAdam)
    for a, b in zip(single.trainable_variables,
                    mirrored.trainable_variables):
      self.assertAllClose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-5,
                          msg=a.name)
    for a, b in zip(single.optimizer.variables, mirrored.optimizer.variables):
      self.assertAllClose(b.numpy(), a.numpy(), rtol=1e-3, atol=1e-6,
                          msg=a.name)


if __name__ == "__main__":
  tf.test.main()
