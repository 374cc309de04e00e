"""Stateless, step-seeded draws of the catalog, adaptive and two-stage samplers.

Every draw is seeded by `importance_resampling.draw_seed(seed, step, draw)`:
a function of the sampler's seed, its checkpointed step counter, the replica
id and the draw's index. So the same (seed, step) draws the same numbers (a
run restored from a checkpoint continues exactly), another step or seed draws
others, and two replicas draw different rows while their state stays equal.
"""

import numpy as np
import tensorflow as tf

from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import importance_resampling as ir
from trainers.pipeline import configuration
from trainers.pipeline import strategies

N, B, D = 40, 8, 4
COUNTS = np.concatenate([[0.0], np.arange(1, N + 1, dtype=np.float64)])
TABLE = np.random.RandomState(0).normal(size=(N + 1, D)).astype(np.float32)
OPTIONS = {"num_negatives": 5, "pool_size": 3, "num_hard_negatives": 2,
           "num_uniform": 6, "warmup_epochs": 0.0}  # the sampler's own draws
# The two-stage pool must hold its K2 = 2 hard negatives among 6 items.
POOLS = {"two_stage": 6, "two_stage_triplet": 6}
# (registry name, extra options): one case per converted sampler family.
CASES = (("uniform", {}), ("popularity", {}), ("inverse_popularity", {}),
         ("balanced", {}), ("mixed", {}), ("adaptive", {}),
         ("adaptive_mixed", {}), ("two_stage", {}), ("two_stage_triplet", {}),
         ("two_stage", {"rule": "query_score"}))


def make(name, options, seed=0):
  context = base.SamplerContext(
      item_counts=COUNTS, item_model=lambda i: tf.gather(TABLE, i),
      global_batch_size=B, seed=seed,
      # OPTIONS is shared: each sampler takes the options it declares.
      options=configuration.sampler_options_for(
          name, dict(OPTIONS, pool_size=POOLS.get(name, 3), **options)))
  sampler = base.create_sampler(name, context)
  sampler.build(tf.TensorShape([B, D]))
  return sampler


def draws(sampler, training=True):
  """One call's random outcome as a flat int64 tensor.

  The drawn per-row ids, shared extra ids and the pool mask, whichever the
  sampler's group has.
  """
  rng = np.random.RandomState(1)
  q = tf.constant(rng.normal(size=(B, D)).astype(np.float32))
  c = tf.constant(rng.normal(size=(B, D)).astype(np.float32))
  ids = tf.constant(np.arange(B) * 3 % N + 1, tf.int64)
  group = sampler(q, c, ids, training=training)[0]
  parts = []
  if group.per_query is not None:
    parts.append(group.per_query.ids)
  if group.extra_ids is not None:
    parts.append(group.extra_ids)
  if group.score_mask is not None:
    parts.append(group.score_mask)
  assert parts
  return tf.concat([tf.reshape(tf.cast(p, tf.int64), [-1]) for p in parts],
                   axis=0)


class DrawSeedTest(tf.test.TestCase):

  def test_seed_is_a_function_of_seed_step_and_draw(self):
    seed = ir.draw_seed(3, tf.constant(5, tf.int64), 1).numpy()
    self.assertAllEqual(seed, ir.draw_seed(3, tf.constant(5, tf.int64),
                                           1).numpy())
    others = [ir.draw_seed(3, 6, 1), ir.draw_seed(4, 5, 1),
              ir.draw_seed(3, 5, 0), ir.draw_seed(3, 5, 1, ir.STREAM_CACHE)]
    for other in others:
      self.assertNotAllEqual(seed, other.numpy())


class StatelessDrawsTest(tf.test.TestCase):

  def test_same_seed_and_step_same_draws_other_step_or_seed_others(self):
    for name, options in CASES:
      msg = "%s %s" % (name, options)
      first, second = make(name, options), make(name, options)
      a0 = draws(first).numpy()
      restored = make(name, options)
      restored.set_weights(first.get_weights())  # a checkpoint at step 1
      self.assertAllEqual(draws(second).numpy(), a0, msg=msg)
      a1 = draws(first).numpy()
      self.assertNotAllEqual(a1, a0, msg=msg)
      self.assertAllEqual(draws(restored).numpy(), a1, msg=msg)
      self.assertEqual(int(first.step.numpy()), 2, msg)
      # Evaluation calls draw with the current step and do not advance it.
      self.assertAllEqual(draws(first, training=False).numpy(),
                          draws(first, training=False).numpy(), msg=msg)
      self.assertEqual(int(first.step.numpy()), 2, msg)
      self.assertNotAllEqual(draws(make(name, options, seed=1)).numpy(), a0,
                             msg=msg)
      self.assertEqual(make(name, options, seed=4).get_config()["seed"], 4)


class MirroredDrawsTest(tf.test.TestCase):

  def test_replicas_draw_different_rows_and_hold_identical_state(self):
    # Two logical CPUs, eager `strategy.run` (no collectives involved).
    # Replica 0 folds in id 0 and so draws exactly what one device draws.
    strategy = strategies.make_strategy("mirrored", 2)
    for name, options in CASES:
      msg = "%s %s" % (name, options)
      with strategy.scope():
        sampler = make(name, options)
      out = strategy.run(lambda s=sampler: draws(s))
      r0, r1 = [t.numpy() for t in strategy.experimental_local_results(out)]
      self.assertNotAllEqual(r0, r1, msg=msg)
      self.assertAllEqual(r0, draws(make(name, options)).numpy(), msg=msg)
      self.assertAllEqual([int(v.numpy()) for v in sampler.step.values],
                          [1, 1], msg=msg)
      for var in sampler.weights:
        copies = [v.numpy() for v in var.values]
        self.assertLen(copies, 2)
        self.assertAllEqual(copies[0], copies[1], msg=msg)


if __name__ == "__main__":
  tf.test.main()
