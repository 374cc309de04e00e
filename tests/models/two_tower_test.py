"""The two-tower model: training, checkpoints, MirroredStrategy equivalence."""

import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import fitting
from trainers.pipeline import strategies


def _mirrored():
  devices = tf.config.list_logical_devices("CPU")
  assert len(devices) >= 2, "conftest must split the CPU into 2 devices"
  return strategies.make_strategy("mirrored", 2)


class TwoTowerModelTest(tf.test.TestCase):

  def test_fit_decreases_the_loss(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(epochs=3, learning_rate=0.05)
    strategy = tf.distribute.get_strategy()
    model = assembly.create_model(dataset, config, strategy)
    batch = helpers.first_batch(dataset, 32)
    before = float(model.compute_loss(batch))
    stats = fitting.train(model, dataset, config, strategy)
    after = float(model.compute_loss(batch))
    self.assertLess(after, before)
    self.assertGreater(stats["steps"], 20)
    # The estimator saw exactly one update per step.
    self.assertEqual(int(model.sampler.frequency.step.numpy()),
                     stats["steps"])

  def test_sampler_state_survives_a_checkpoint(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config()
    strategy = tf.distribute.get_strategy()
    model = assembly.create_model(dataset, config, strategy)
    fitting.train(model, dataset, config, strategy)
    path = tf.train.Checkpoint(model=model).save(
        self.get_temp_dir() + "/ckpt")
    fresh = assembly.create_model(dataset, config, strategy)
    est, fresh_est = model.sampler.frequency, fresh.sampler.frequency
    self.assertNotAllEqual(est.avg_gap.numpy(), fresh_est.avg_gap.numpy())
    tf.train.Checkpoint(model=fresh).restore(path).assert_existing_objects_matched()
    for name in ("step", "last_step", "avg_gap", "n_updates"):
      self.assertAllEqual(getattr(est, name).numpy(),
                          getattr(fresh_est, name).numpy(), msg=name)

  def test_mirrored_equals_single_device_on_the_global_batch(self):
    # In-batch + streaming logQ: two replicas of 4 rows each must give the
    # loss and gradients of one device on the 8-row global batch, because
    # each replica's negatives are the whole global batch.
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(sampler="in_batch_logq")
    strategy = _mirrored()
    single, mirrored = helpers.single_and_mirrored(dataset, config, strategy)

    helpers.check_mirrored_matches_single(self, strategy, single, mirrored,
                                          dataset, steps=3)
    est = mirrored.sampler.frequency
    helpers.check_replicas_match(self, est, single.sampler.frequency,
                                 ("step", "last_step", "avg_gap",
                                  "n_updates"))
    self.assertEqual(int(est.step.values[0].numpy()), 3)

  def test_fit_under_mirrored_strategy(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(sampler="in_batch_logq")
    strategy = _mirrored()
    model = assembly.create_model(dataset, config, strategy)
    stats = fitting.train(model, dataset, config, strategy)
    est = model.sampler.frequency
    self.assertEqual(int(est.step.values[0].numpy()), stats["steps"])
    self.assertAllEqual(est.avg_gap.values[0].numpy(),
                        est.avg_gap.values[1].numpy())
    # The candidates' embeddings (d float32) and ids (int64), global batch.
    self.assertEqual(stats["gathered_bytes_per_step"],
                     config.batch_size * (4 * config.embedding_dim + 8))

  def test_gathered_bytes_count_the_xir_draw_sums(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(sampler="xir")
    config.sampler_options = dict(config.sampler_options, cache_size=6)
    strategy = _mirrored()
    model = assembly.create_model(dataset, config, strategy)
    stats = fitting.train(model, dataset, config, strategy)
    g, d = config.batch_size, config.embedding_dim
    # Plus one all-reduce of the float32 draw counts of the G + C columns.
    self.assertEqual(stats["gathered_bytes_per_step"],
                     g * (4 * d + 8) + 4 * (g + 6))
    # XIR inside its default warm-up (whose in-batch group gathers nothing
    # more).
    self.assertAllEqual(model.sampler.sampler.cache_ids.values[0].numpy(),
                        model.sampler.sampler.cache_ids.values[1].numpy())

  def test_one_device_gathers_nothing(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(sampler="in_batch_logq")
    strategy = strategies.make_strategy("default")
    model = assembly.create_model(dataset, config, strategy)
    stats = fitting.train(model, dataset, config, strategy)
    self.assertIsNone(stats["gathered_bytes_per_step"])


if __name__ == "__main__":
  tf.test.main()
