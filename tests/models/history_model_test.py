"""Two-tower models with history query towers: training, CBNS, mirrored."""

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import inputs
from trainers.pipeline import strategies
from tfrs_negsamp import protocol
from tfrs_negsamp import samplers as samplers_lib
from tfrs_negsamp.data import sequences


def _mirrored():
  devices = tf.config.list_logical_devices("CPU")
  assert len(devices) >= 2, "conftest must split the CPU into 2 devices"
  return strategies.make_strategy("mirrored", 2)


def _config(tower, **overrides):
  # One history window per target, unless a test asks for sequence rows.
  options = dict(query_tower=tower, max_history=5, dropout=0.0,
                 training_rows="window")
  options.update(overrides)
  return helpers.tiny_config(**options)


def _batches(dataset, config, count):
  # Shuffled (seeded: the same batches on every call), so that a batch mixes
  # users (history masking would hide every negative of a one-user batch).
  ds = inputs.train_dataset(dataset, config, shuffle=True)
  return list(ds.take(count))


def _nonzero_rows(grad):
  grad = tf.convert_to_tensor(grad).numpy()
  return set(np.flatnonzero(np.abs(grad).sum(axis=1) > 0).tolist())


class HistoryModelTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dataset = helpers.tiny_dataset()

  def test_train_batches_have_static_history_features(self):
    config = _config("mean")
    spec = inputs.train_dataset(self.dataset, config).element_spec
    self.assertEqual(spec["history"].shape.as_list(), [8, 5])
    self.assertEqual(spec["history"].dtype, tf.int64)
    self.assertEqual(spec["item_id"].shape.as_list(), [8])
    # The id tower keeps today's pipeline.
    spec = inputs.train_dataset(self.dataset, _config("id")).element_spec
    self.assertNotIn("history", spec)

  def test_config_validation(self):
    for bad in (dict(query_tower="lstm"), dict(max_history=0),
                dict(num_heads=0), dict(dropout=1.0)):
      with self.assertRaises(ValueError, msg=str(bad)):
        _config("mean", **bad).validate()

  def _check_fit(self, tower, **overrides):
    strategy = tf.distribute.get_strategy()
    config = _config(tower, learning_rate=0.02, dropout=0.1, **overrides)
    model = assembly.create_model(self.dataset, config, strategy)
    batches = _batches(self.dataset, config, 4)
    before = np.mean([float(model.compute_loss(b)) for b in batches])
    train = inputs.train_dataset(self.dataset, config).take(15)
    history = model.fit(train.repeat(2), epochs=1, verbose=0)
    after = np.mean([float(model.compute_loss(b)) for b in batches])
    self.assertLess(after, before, msg=tower)
    self.assertEqual(int(model.optimizer.iterations.numpy()), 30)
    self.assertTrue(np.isfinite(history.history["loss"][-1]))

  def test_fit_decreases_the_loss_mean(self):
    self._check_fit("mean")

  def test_fit_decreases_the_loss_gru(self):
    self._check_fit("gru")

  def test_fit_decreases_the_loss_sasrec(self):
    self._check_fit("sasrec")

  def test_fit_decreases_the_loss_sequence_rows(self):
    # 60 users a batch of 8: 7 steps an epoch; 3 epochs hold the 15 steps.
    for tower in ("sasrec", "mean"):
      self._check_fit(tower, training_rows="sequence", epochs=3)

  def test_evaluation_queries_use_the_evaluation_histories(self):
    config = _config("gru")
    model = assembly.create_model(self.dataset, config,
                                    tf.distribute.get_strategy())
    sets = protocol.evaluation_sets(self.dataset)
    histories = sequences.evaluation_histories(self.dataset, sets.user_ids,
                                               "test", max_history=5)
    self.assertAllClose(model.query_embeddings(sets.user_ids),
                        model.query_embeddings(sets.user_ids,
                                               histories=histories))
    metrics = protocol.evaluate_model(model, sets, progress=False)
    self.assertAllClose(
        metrics["recall@10"],
        protocol.evaluate_model(model, sets, progress=False,
                                histories=histories)["recall@10"])
    # Other histories give other queries (the tower reads them).
    self.assertNotAllClose(
        model.query_embeddings(sets.user_ids),
        model.query_embeddings(sets.user_ids,
                               histories=np.roll(histories, 1, axis=0)))

  def _check_samplers(self, pairs):
    strategy = tf.distribute.get_strategy()
    for name, tower in pairs:
      config = _config(tower, sampler=name)
      model = assembly.create_model(self.dataset, config, strategy)
      batch = _batches(self.dataset, config, 1)[0]
      loss = model.compute_loss(batch, training=True)
      self.assertTrue(np.isfinite(float(loss)), msg=(name, tower))
      self.assertGreater(float(loss), 0.0, msg=(name, tower))

  def test_samplers_work_with_history_towers(self):
    # Shared columns, a queue, per-row draws, resampling.
    self._check_samplers((("cross_batch", "mean"), ("uniform", "gru"),
                          ("xir", "sasrec")))

  @pytest.mark.slow
  def test_every_sampler_works_with_every_history_tower(self):
    self._check_samplers([(name, tower)
                          for name in samplers_lib.available_samplers()
                          for tower in ("mean", "gru", "sasrec")])

  def test_sampler_gets_the_users_training_items_as_consumed(self):
    # One door: the task turns the rows' users into `consumed`, which the
    # sampler receives; it holds each row's user's training items (all of
    # them, not only the history window), and nothing else.
    config = _config("mean")
    model = assembly.create_model(self.dataset, config,
                                    tf.distribute.get_strategy())
    seen = {}
    sample = model.sampler.sample

    def spy(*args, **kwargs):
      seen["consumed"] = kwargs["consumed"]
      return sample(*args, **kwargs)

    model.sampler.sample = spy
    batch = _batches(self.dataset, config, 1)[0]
    model.compute_loss(batch)
    catalog = self.dataset.catalog
    items = tf.range(1, catalog.num_items + 1, dtype=tf.int64)
    got = seen["consumed"](items).numpy()
    train = self.dataset.train
    for row, user in enumerate(batch["user_id"].numpy().astype(str)):
      mine = catalog.index_of(train.item_ids[train.user_ids == user]) + 1
      want = np.isin(np.arange(1, catalog.num_items + 1), mine)
      self.assertAllEqual(got[row], want)

  def test_cbns_queue_gradient_reaches_the_shared_table_via_the_query(self):
    # The queue columns are stop-gradient: with an id tower they update
    # only user vectors; with a history tower sharing the item table they
    # update the rows of the history items.
    strategy = tf.distribute.get_strategy()
    for tower in ("mean", "id"):
      config = _config(tower, sampler="cross_batch", item_features=False)
      config.sampler_options = dict(config.sampler_options, memory_size=16,
                                    logq="none")
      model = assembly.create_model(self.dataset, config, strategy)
      batches = _batches(self.dataset, config, 3)
      for b in batches[:2]:
        model.compute_loss(b, training=True)  # fills the queue (16 slots)
      self.assertEqual(int(model.sampler.filled.numpy()), 16)
      batch = batches[2]
      table = model.item_model.id_embedding.embeddings
      with tf.GradientTape() as tape:
        query = model.query(batch, training=True)
        index = model.item_index(batch["item_id"])
        candidates = model.item_model(index)
        groups = model.sampler(query, candidates, index, training=False,
                               positive_ids=index)
        logits, _ = model.task.group_logits(query, candidates, index,
                                            groups[0])
        queue_part = tf.reduce_sum(
            tf.reduce_logsumexp(logits[:, candidates.shape[0]:], axis=1))
      grad = tape.gradient(queue_part, table)
      rows = _nonzero_rows(grad) if grad is not None else set()
      if tower == "id":
        self.assertEqual(rows, set(), msg="id tower: no table gradient")
        continue
      history_rows = set(batch["history"].numpy().ravel().tolist()) - {0}
      batch_rows = set(index.numpy().tolist())
      queue_rows = set(model.sampler.queue_ids.numpy().tolist())
      only_history = history_rows - batch_rows
      self.assertNotEmpty(only_history)
      # Every history row (not in the batch) gets a gradient from the queue
      # columns, through the query; queue items themselves get none.
      self.assertEqual(rows, history_rows)
      self.assertTrue(only_history <= rows)
      self.assertFalse((queue_rows - history_rows) & rows)

  def test_mirrored_equals_single_device_mean_in_batch(self):
    self._check_mirrored("mean", "in_batch_logq")

  def test_mirrored_equals_single_device_sasrec_cross_batch(self):
    self._check_mirrored("sasrec", "cross_batch")

  def test_mirrored_equals_single_device_sequence_rows(self):
    # Every position a query row, in blocks shared by the replicas.
    # Gradients summed over blocks and replicas in another order: float32
    # noise of ~1e-6 of the largest entries (~30).
    self._check_mirrored("sasrec", "cross_batch", training_rows="sequence",
                         rows_per_block=8, atol=1e-4)
    self._check_mirrored("mean", "in_batch_logq", training_rows="sequence",
                         atol=1e-4)

  def _check_mirrored(self, tower, sampler, atol=1e-5, **overrides):
    strategy = _mirrored()
    config = _config(tower, sampler=sampler, **overrides)
    config.sampler_options = dict(config.sampler_options, memory_size=8)
    single, mirrored = helpers.single_and_mirrored(self.dataset, config,
                                                   strategy)
    step = helpers.mirrored_step(strategy, mirrored)
    for i, batch in enumerate(_batches(self.dataset, config, 2)):
      loss, grads = helpers.single_device_step(single, batch)
      m_loss, m_grads = step(batch)
      self.assertAllClose(m_loss, loss, rtol=1e-5, msg="%s %d" % (tower, i))
      for a, b in zip(m_grads, grads):
        self.assertAllClose(a, b, rtol=1e-3, atol=atol)

  @pytest.mark.slow
  def test_fit_under_mirrored_strategy_restores_static_shapes(self):
    strategy = _mirrored()
    config = _config("mean", sampler="cross_batch")
    model = assembly.create_model(self.dataset, config, strategy)
    model.local_batch_size = config.batch_size // 2
    train = inputs.train_dataset(self.dataset, config).take(10)
    history = model.fit(train, epochs=1, verbose=0)
    self.assertEqual(int(model.optimizer.iterations.numpy()), 10)
    self.assertTrue(np.isfinite(history.history["loss"][-1]))


if __name__ == "__main__":
  tf.test.main()
