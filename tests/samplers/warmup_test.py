"""Warm-up: in-batch + log Q for W steps, then the wrapped sampler alone."""

import dataclasses

import numpy as np
import tensorflow as tf

import tfrs_negsamp as tn
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import warmup

RNG = np.random.RandomState(0)
B, D = 6, 4
IDS = np.array([3, 1, 4, 1, 5, 9], np.int64)  # rows 1 and 3 share item 1


def _freq():
  return tn.frequency.StreamingFrequencyEstimator(num_buckets=64)


def _bir():
  return tn.samplers.BIRSampler(num_resampled=4, seed=7, frequency=_freq())


def _loss_and_grads(task, q, c, ids):
  q, c = tf.constant(q), tf.constant(c)
  with tf.GradientTape() as tape:
    tape.watch([q, c])
    loss = task(q, c, candidate_ids=tf.constant(ids), training=True)
  return (float(loss),) + tuple(g.numpy() for g in tape.gradient(loss, [q, c]))


class WarmupTest(tf.test.TestCase):

  def test_warm_steps_train_in_batch_logq_then_the_sampler_alone(self):
    wrapped = tn.tasks.Retrieval(sampler=tn.samplers.WarmupSampler(
        _bir(), warmup_steps=2, frequency=_freq()))
    in_batch = tn.tasks.Retrieval(
        sampler=tn.samplers.InBatchSampler(frequency=_freq()))
    bir = tn.tasks.Retrieval(sampler=_bir())
    for step in range(4):
      q = RNG.normal(size=(B, D)).astype(np.float32)
      c = RNG.normal(size=(B, D)).astype(np.float32)
      got = _loss_and_grads(wrapped, q, c, IDS)
      # The references see every step too (their state advances alike).
      logq = _loss_and_grads(in_batch, q, c, IDS)
      alone = _loss_and_grads(bir, q, c, IDS)
      want = logq if step < 2 else alone
      for g, w in zip(got, want):
        self.assertAllClose(g, w, rtol=1e-5, atol=1e-6, msg="step %d" % step)
      # The two phases differ: the test can tell them apart.
      self.assertNotAllClose(logq[0], alone[0])

  def test_the_wrapped_sampler_runs_during_the_warm_up(self):
    inner = _bir()
    sampler = tn.samplers.WarmupSampler(inner, warmup_steps=5,
                                        frequency=_freq())
    q = tf.constant(RNG.normal(size=(B, D)).astype(np.float32))
    for _ in range(3):
      groups = sampler(q, q, tf.constant(IDS), training=True)
    self.assertEqual(int(inner.step.numpy()), 3)  # BIR's draws advanced
    self.assertEqual(int(sampler.step.numpy()), 3)
    self.assertEqual([float(g.weight) for g in groups], [1.0, 0.0])
    sampler(q, q, tf.constant(IDS), training=False)  # evaluation: no step
    self.assertEqual(int(sampler.step.numpy()), 3)

  def test_config_round_trip_keeps_the_wrapped_sampler(self):
    sampler = tn.samplers.WarmupSampler(
        tn.samplers.AdaptiveSampler(pool_size=3, num_hard_negatives=2),
        warmup_steps=11, frequency=_freq())
    again = tn.samplers.WarmupSampler.from_config(sampler.get_config())
    self.assertEqual(again.warmup_steps, 11)
    self.assertIsInstance(again.sampler, tn.samplers.AdaptiveSampler)
    self.assertEqual(again.sampler.pool_size, 3)
    self.assertIsInstance(again.frequency,
                          tn.frequency.StreamingFrequencyEstimator)

  def test_step_is_checkpointed(self):
    sampler = tn.samplers.WarmupSampler(_bir(), warmup_steps=2,
                                        frequency=_freq())
    q = tf.constant(RNG.normal(size=(B, D)).astype(np.float32))
    for _ in range(3):
      sampler(q, q, tf.constant(IDS), training=True)
    path = tf.train.Checkpoint(s=sampler).write(self.get_temp_dir() + "/c")
    fresh = tn.samplers.WarmupSampler(_bir(), warmup_steps=2,
                                      frequency=_freq())
    fresh.build()
    tf.train.Checkpoint(s=fresh).read(path).assert_consumed()
    self.assertEqual(int(fresh.step.numpy()), 3)
    self.assertEqual(int(fresh.sampler.step.numpy()), 3)

  def test_bad_arguments_are_refused(self):
    with self.assertRaisesRegex(ValueError, "warmup_steps must be an int"):
      tn.samplers.WarmupSampler(_bir(), warmup_steps=-1)
    with self.assertRaisesRegex(ValueError, "not a Compose"):
      tn.samplers.WarmupSampler(
          tn.samplers.Compose([tn.samplers.InBatchSampler()]), 3)


class RegistryWarmupTest(tf.test.TestCase):

  def _context(self, calls_per_epoch=None, **options):
    counts = np.array([0, 5, 4, 3, 2, 1], np.float64)
    table = tf.constant(RNG.normal(size=(6, D)).astype(np.float32))
    return base.SamplerContext(item_counts=counts,
                               item_model=lambda i: tf.gather(table, i),
                               global_batch_size=4, options=options,
                               sampler_calls_per_epoch=calls_per_epoch)

  def test_epochs_become_steps_from_the_context(self):
    for name in ("bir", "xir", "adaptive", "adaptive_mixed", "two_stage"):
      self.assertIn("warmup_epochs", base.option_names(name), name)
      wrapped = base.create_sampler(
          name, self._context(calls_per_epoch=13, warmup_epochs=2.5))
      self.assertIsInstance(wrapped, warmup.WarmupSampler, name)
      self.assertEqual(wrapped.warmup_steps, 33, name)  # ceil(32.5)

  def test_the_unit_given_replaces_the_other_default(self):
    @dataclasses.dataclass(frozen=True)
    class EpochsByDefault(warmup.WarmupOptions):
      warmup_epochs: float = base.option(2.0, low=0.0)

    @base.register_sampler("warmup_test_sampler", options=EpochsByDefault)
    def _factory(context, options):
      return warmup.wrap(tn.samplers.InBatchSampler(), context, options)
    self.addCleanup(base.unregister_sampler, "warmup_test_sampler")

    name = "warmup_test_sampler"
    steps = base.build_options(name, {"warmup_steps": 7})
    self.assertEqual((steps.warmup_steps, steps.warmup_epochs), (7, 0.0))
    default = base.create_sampler(name, self._context(calls_per_epoch=10))
    self.assertEqual(default.warmup_steps, 20)
    given = base.create_sampler(name, self._context(calls_per_epoch=10,
                                                    warmup_steps=7))
    self.assertEqual(given.warmup_steps, 7)
    off = base.create_sampler(name, self._context(warmup_epochs=0.0))
    self.assertNotIsInstance(off, warmup.WarmupSampler)
    self.assertNotIn("warmup_steps", base.option_tunes("bir"))
    self.assertIn("warmup_epochs", base.option_tunes("bir"))

  def test_epochs_without_the_trainer_count_are_flat_row_epochs(self):
    # 15 interactions, a global batch of 4: 4 calls an epoch.
    wrapped = base.create_sampler("bir", self._context(warmup_epochs=2.0))
    self.assertEqual(wrapped.warmup_steps, 8)

  def test_epochs_without_a_count_or_with_steps_are_refused(self):
    with self.assertRaisesRegex(ValueError, "needs calls_per_epoch"):
      tn.samplers.WarmupSampler(_bir(), warmup_epochs=1.0)
    with self.assertRaisesRegex(ValueError, "not both"):
      base.build_options("xir", {"warmup_steps": 5, "warmup_epochs": 1.0})
    with self.assertRaisesRegex(ValueError, "warmup_epochs"):
      base.build_options("bir", {"warmup_epochs": -1.0})

  def test_score_based_samplers_take_the_option(self):
    for name in ("bir", "xir", "adaptive", "adaptive_mixed", "two_stage"):
      self.assertIn("warmup_steps", base.option_names(name), name)
      plain = base.create_sampler(name, self._context(warmup_epochs=0.0))
      self.assertNotIsInstance(plain, warmup.WarmupSampler, name)
      default = base.create_sampler(name, self._context())
      self.assertEqual(isinstance(default, warmup.WarmupSampler),
                       name in ("bir", "xir", "adaptive_mixed"), name)
      wrapped = base.create_sampler(name, self._context(warmup_steps=30))
      self.assertIsInstance(wrapped, warmup.WarmupSampler, name)
      self.assertEqual(wrapped.warmup_steps, 30)
      self.assertIs(type(wrapped.sampler), type(plain), name)

  def test_one_flag_with_one_help_for_cross_batch_and_the_others(self):
    info = base.option_table()["warmup_steps"]
    self.assertEqual(info.help, warmup.WARMUP_HELP)
    self.assertIn("cross_batch", info.defaults)
    self.assertIn("bir", info.defaults)


class TrainerWarmupTest(tf.test.TestCase):
  """The trainer's epochs-to-steps conversion counts the calls a fit makes."""

  def test_one_epoch_of_fit_is_warmup_epochs_one(self):
    from tests import helpers  # pylint: disable=g-import-not-at-top
    from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
    from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
    dataset = helpers.tiny_dataset()
    for rows in (dict(query_tower="id"),
                 dict(query_tower="sasrec", training_rows="sequence",
                      max_history=5, dropout=0.0, rows_per_block=16)):
      config = helpers.tiny_config(
          sampler="bir", sampler_options={"warmup_epochs": 1.0,
                                          "num_buckets": 256}, **rows)
      model = assembly.create_model(dataset, config,
                                    tf.distribute.get_strategy())
      sampler = model.sampler
      self.assertIsInstance(sampler, warmup.WarmupSampler)
      calls = assembly.sampler_calls_per_epoch(dataset, config)
      self.assertEqual(sampler.warmup_steps, calls, msg=str(rows))
      model.fit(inputs.train_dataset(dataset, config), epochs=1,
                steps_per_epoch=inputs.train_steps_per_epoch(dataset, config),
                verbose=0)
      # The warm-up ends exactly after one epoch of training.
      self.assertEqual(int(sampler.step.numpy()), calls, msg=str(rows))
      if "training_rows" in rows:  # B L = 40 positions: 3 blocks a step.
        self.assertEqual(calls,
                         3 * inputs.train_steps_per_epoch(dataset, config))


if __name__ == "__main__":
  tf.test.main()
