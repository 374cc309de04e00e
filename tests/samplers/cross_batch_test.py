"""Cross-batch negative sampling: queue contents, losses, state, replicas."""

import collections
import json
import os
import subprocess
import sys

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import fitting
from trainers.pipeline import strategies
from tfrs_negsamp import frequency
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import cross_batch
from tfrs_negsamp.samplers import in_batch
from tfrs_negsamp.samplers import memory
from tfrs_negsamp.tasks import retrieval

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
STATE = ("queue_emb", "queue_ids", "queue_logq", "head", "filled", "step")
LOG2 = np.log(2.0)


def _lse(values):
  values = np.asarray(values, np.float64)
  return np.log(np.sum(np.exp(values)))


class ReferenceQueue:
  """Pure-NumPy FIFO: the last `capacity` (embedding, id, log q) rows."""

  def __init__(self, capacity):
    self.rows = collections.deque(maxlen=capacity)

  def push(self, embeddings, ids, log_q):
    for row in zip(embeddings, ids, log_q):
      self.rows.append(row)

  def arrays(self):
    emb, ids, log_q = zip(*self.rows)
    return np.stack(emb), np.array(ids), np.array(log_q)


def _fifo(sampler):
  """The sampler's queue, oldest row first."""
  order = sampler.queue.fifo_order().numpy()
  return (sampler.queue_emb.numpy()[order], sampler.queue_ids.numpy()[order],
          sampler.queue_logq.numpy()[order])


def _static(num_items):
  counts = np.arange(1, num_items + 1, dtype=np.float64)
  return frequency.StaticItemProbability(counts)


class QueueTest(parameterized.TestCase, tf.test.TestCase):

  @parameterized.named_parameters(
      ("multiple_wraps", 8, 4, 7, False),
      ("multiple_graph", 12, 4, 6, True),
      ("equal_to_batch", 4, 4, 3, False),
      ("not_a_multiple_wraps_mid_batch", 6, 4, 5, True),
      ("smaller_than_batch", 3, 4, 4, False),
      ("not_full_yet", 32, 4, 3, False))
  def test_queue_holds_the_last_m_candidates_in_fifo_order(
      self, memory_size, batch, steps, graph):
    num_items = 50
    sampler = cross_batch.CrossBatchSampler(
        memory_size, frequency=_static(num_items))
    ref = ReferenceQueue(memory_size)
    rng = np.random.default_rng(memory_size + steps)

    def run(q, c, ids, training):
      return sampler(q, c, ids, training=training)
    if graph:
      run = tf.function(run)

    for _ in range(steps):
      q = rng.normal(size=(batch, 3)).astype(np.float32)
      c = rng.normal(size=(batch, 3)).astype(np.float32)
      ids = rng.integers(0, num_items, size=batch)
      args = (tf.constant(q), tf.constant(c), tf.constant(ids, tf.int64))
      groups = run(*args, True)
      self.assertLen(groups, 1)
      # log Q of the batch = log(G f_j), f_j = (j + 1) / sum; stored as is.
      log_q = np.log(batch * (ids + 1) / (num_items * (num_items + 1) / 2))
      ref.push(c, ids, log_q)
      # Inference calls read the queue but never write it.
      run(*args, False)

    emb, ids, log_q = _fifo(sampler)
    ref_emb, ref_ids, ref_log_q = ref.arrays()
    self.assertAllEqual(ids, ref_ids)
    self.assertAllEqual(emb, ref_emb)
    self.assertAllClose(log_q, ref_log_q, atol=1e-5)
    seen = batch * steps
    self.assertEqual(int(sampler.filled.numpy()), min(seen, memory_size))
    self.assertEqual(int(sampler.head.numpy()), seen % memory_size)
    self.assertEqual(int(sampler.step.numpy()), steps)
    # Unwritten slots keep the empty sentinel.
    self.assertAllEqual(sampler.queue_ids.numpy()[min(seen, memory_size):],
                        np.full(max(memory_size - seen, 0), -1))

  def test_ring_buffer_rejects_a_write_with_missing_fields(self):
    layer = tf.keras.layers.Layer()
    buf = memory.RingBuffer(layer, 4, [memory.Field("a"), memory.Field("b")])
    with self.assertRaisesRegex(ValueError, "exactly the fields"):
      buf.write({"a": tf.zeros([2])})
    self.assertLen(layer.non_trainable_weights, 4)


# Loss example. Static Q over ids 0..3 with counts [4, 2, 1, 1]:
# f = [.5, .25, .125, .125]; G = 2 so log Q = log(2 f) = [0, -l2, -2 l2,
# -2 l2] (l2 = log 2). M = 5, warm-up 2 steps.
COUNTS = [4., 2., 1., 1.]
LOG_Q = np.log(2 * np.array(COUNTS) / 8.0)
STEPS = [  # (queries, candidates, ids)
    ([[1., 0.], [0., 1.]], [[1., 0.], [0., 1.]], [0, 1]),
    ([[1., 1.], [1., -1.]], [[1., 1.], [1., -1.]], [2, 3]),
    ([[1., 0.], [0., 1.]], [[2., 0.], [0., 1.]], [1, 2]),
]


def _loss(sampler, q, c, ids, training=True):
  task = retrieval.Retrieval()
  q, c = tf.constant(q), tf.constant(c)
  ids = tf.constant(ids, tf.int64)
  groups = sampler(q, c, ids, training=training)
  return float(task.groups_loss(q, c, groups, candidate_ids=ids))


class LossTest(tf.test.TestCase):

  def test_before_warmup_the_loss_is_plain_in_batch(self):
    sampler = cross_batch.CrossBatchSampler(
        5, warmup_steps=2, frequency=frequency.StaticItemProbability(COUNTS))
    reference = in_batch.InBatchSampler(
        frequency=frequency.StaticItemProbability(COUNTS))
    for step, (q, c, ids) in enumerate(STEPS[:2]):
      # At step 1 the queue is not empty: only the warm-up hides it.
      if step:
        self.assertEqual(int(sampler.filled.numpy()), 2)
      self.assertAllClose(_loss(sampler, q, c, ids),
                          _loss(reference, q, c, ids), rtol=1e-6, atol=0)
    # Also without a frequency source.
    plain = cross_batch.CrossBatchSampler(4, warmup_steps=3)
    for q, c, ids in STEPS:
      self.assertAllClose(_loss(plain, q, c, ids),
                          _loss(in_batch.InBatchSampler(), q, c, ids),
                          rtol=1e-6, atol=0)

  def test_after_warmup_the_loss_matches_hand_computation(self):
    sampler = cross_batch.CrossBatchSampler(
        5, warmup_steps=2, frequency=frequency.StaticItemProbability(COUNTS))
    for q, c, ids in STEPS[:2]:
      _loss(sampler, q, c, ids)
    # Step 2: q = [[1, 0], [0, 1]], batch c = [[2, 0], [0, 1]] ids [1, 2].
    # Queue slots 0..3: [1, 0] id 0, [0, 1] id 1, [1, 1] id 2, [1, -1] id 3;
    # slot 4 is empty (masked). log Q (batch): [-l2, -2 l2]; (queue):
    # [0, -l2, -2 l2, -2 l2]. z = s - log Q:
    #   row 0: batch [2 + l2, 0 + 2 l2] | queue [1, 0 + l2 (id 1 = row 0's
    #          positive: accidental hit, masked), 1 + 2 l2, 1 + 2 l2]
    #   row 1: batch [0 + l2, 1 + 2 l2] | queue [0, 1 + l2, 1 + 2 l2 (id 2 =
    #          row 1's positive: masked), -1 + 2 l2]
    row0 = [2 + LOG2, 2 * LOG2, 1, 1 + 2 * LOG2, 1 + 2 * LOG2]
    row1 = [LOG2, 1 + 2 * LOG2, 0, 1 + LOG2, -1 + 2 * LOG2]
    expected = (-(2 + LOG2) + _lse(row0)) + (-(1 + 2 * LOG2) + _lse(row1))
    q, c, ids = STEPS[2]
    self.assertAllClose(_loss(sampler, q, c, ids, training=False), expected,
                        atol=1e-5)
    # The same example with accidental hits kept: the masked columns return.
    keep = cross_batch.CrossBatchSampler(
        5, warmup_steps=2, frequency=frequency.StaticItemProbability(COUNTS),
        remove_accidental_hits=False)
    for step_q, step_c, step_ids in STEPS[:2]:
      _loss(keep, step_q, step_c, step_ids)
    expected_kept = (-(2 + LOG2) + _lse(row0 + [LOG2]) - (1 + 2 * LOG2)
                     + _lse(row1 + [1 + 2 * LOG2]))
    self.assertAllClose(_loss(keep, q, c, ids, training=False),
                        expected_kept, atol=1e-5)

  def test_the_current_batch_is_not_in_its_own_softmax(self):
    # Training step 2 reads the queue before writing it: its loss equals the
    # inference loss on the same (pre-step) queue.
    sampler = cross_batch.CrossBatchSampler(
        5, warmup_steps=2, frequency=frequency.StaticItemProbability(COUNTS))
    for q, c, ids in STEPS[:2]:
      _loss(sampler, q, c, ids)
    q, c, ids = STEPS[2]
    before = _loss(sampler, q, c, ids, training=False)
    self.assertAllClose(_loss(sampler, q, c, ids, training=True), before,
                        rtol=1e-6, atol=0)
    self.assertEqual(int(sampler.filled.numpy()), 5)

  def test_gradients_reach_the_batch_candidates_not_the_queue(self):
    sampler = cross_batch.CrossBatchSampler(
        5, warmup_steps=2, frequency=frequency.StaticItemProbability(COUNTS))
    for q, c, ids in STEPS[:2]:
      _loss(sampler, q, c, ids)
    q = tf.Variable(STEPS[2][0])
    c = tf.Variable(STEPS[2][1])
    ids = tf.constant(STEPS[2][2], tf.int64)
    task = retrieval.Retrieval()
    with tf.GradientTape(persistent=True) as tape:
      tape.watch(sampler.queue_emb)  # a path into it would show a gradient
      groups = sampler(q, c, ids, training=True)
      loss = task.groups_loss(q, c, groups, candidate_ids=ids)
    self.assertIsNone(tape.gradient(loss, sampler.queue_emb))
    grad_q, grad_c = tape.gradient(loss, [q, c])

    # The same loss written out with the queue as constants.
    queue = tf.constant([[1., 0.], [0., 1.], [1., 1.], [1., -1.]])
    log_q = tf.constant(np.concatenate([LOG_Q[[1, 2]], LOG_Q[:4]]),
                        tf.float32)
    keep = tf.constant([[1, 1, 1, 0, 1, 1], [1, 1, 1, 1, 0, 1]]) > 0
    with tf.GradientTape() as tape2:
      z = tf.matmul(q, tf.concat([c, queue], 0), transpose_b=True) - log_q
      z = tf.where(keep, z, retrieval.MIN_FLOAT)
      manual = tf.reduce_sum(tf.reduce_logsumexp(z, 1) -
                             tf.linalg.diag_part(z[:, :2]))
    want_q, want_c = tape2.gradient(manual, [q, c])
    self.assertAllClose(loss, manual, atol=1e-5)
    self.assertAllClose(grad_c, want_c, atol=1e-5)
    self.assertAllClose(grad_q, want_q, atol=1e-5)
    self.assertGreater(float(tf.reduce_sum(tf.abs(grad_c))), 0.0)
    # The queue's columns do change the query gradient (they are used).
    with tf.GradientTape() as tape3:
      plain = task.groups_loss(q, c, in_batch.InBatchSampler(
          frequency=frequency.StaticItemProbability(COUNTS))(q, c, ids),
                   candidate_ids=ids)
    self.assertNotAllClose(tape3.gradient(plain, q), grad_q)


class StateTest(tf.test.TestCase):

  def _trained_sampler(self, steps=5):
    sampler = cross_batch.CrossBatchSampler(
        6, warmup_steps=1,
        frequency=frequency.StreamingFrequencyEstimator(num_buckets=64))
    rng = np.random.default_rng(1)
    for _ in range(steps):
      _loss(sampler, rng.normal(size=(4, 3)).astype(np.float32),
            rng.normal(size=(4, 3)).astype(np.float32),
            rng.integers(0, 20, size=4))
    return sampler

  def test_checkpoint_restores_the_queue_bit_exact(self):
    sampler = self._trained_sampler()
    path = tf.train.Checkpoint(sampler=sampler).save(
        os.path.join(self.get_temp_dir(), "ckpt"))
    fresh = cross_batch.CrossBatchSampler(
        6, warmup_steps=1,
        frequency=frequency.StreamingFrequencyEstimator(num_buckets=64))
    # Restored before the variables exist: applied when they are built.
    tf.train.Checkpoint(sampler=fresh).restore(path)
    q = np.ones((4, 3), np.float32)
    c = np.eye(4, 3, dtype=np.float32)
    fresh(tf.constant(q), tf.constant(c), tf.constant([1, 2, 3, 4], tf.int64),
          training=False)
    for name in STATE:
      self.assertAllEqual(getattr(fresh, name).numpy(),
                          getattr(sampler, name).numpy(), msg=name)
    self.assertAllEqual(fresh.frequency.avg_gap.numpy(),
                        sampler.frequency.avg_gap.numpy())
    # Both continue identically.
    self.assertEqual(_loss(sampler, q, c, [1, 2, 3, 4]),
                     _loss(fresh, q, c, [1, 2, 3, 4]))
    self.assertAllEqual(_fifo(fresh)[1], _fifo(sampler)[1])

  def test_config_round_trip(self):
    sampler = cross_batch.CrossBatchSampler(
        96, warmup_steps=7,
        frequency=frequency.StreamingFrequencyEstimator(num_buckets=128,
                                                        alpha=0.05),
        remove_accidental_hits=False, name="cbns")
    config = sampler.get_config()
    for key in ("memory_size", "warmup_steps", "frequency",
                "remove_accidental_hits"):
      self.assertIn(key, config)
    clone = cross_batch.CrossBatchSampler.from_config(config)
    self.assertEqual(clone.get_config(), config)
    again = helpers.check_config_round_trip(self, sampler)
    self.assertEqual(again.frequency.alpha, 0.05)

  def test_bad_memory_size_and_warmup_are_rejected(self):
    for bad in (0, -8, 2.5, "512", None, True):
      with self.assertRaisesRegex(ValueError,
                                  "memory_size must be a positive integer"):
        cross_batch.CrossBatchSampler(bad)
    with self.assertRaisesRegex(ValueError, "warmup_steps must be an integer"):
      cross_batch.CrossBatchSampler(8, warmup_steps=-1)
    ctx = base.SamplerContext(item_counts=np.ones(5), global_batch_size=32,
                              options={"memory_size": -64})
    with self.assertRaisesRegex(ValueError, "memory_size.*-64"):
      base.create_sampler("cross_batch", ctx)

  def test_registry_reads_the_trainer_options(self):
    ctx = base.SamplerContext(
        item_counts=np.ones(5), global_batch_size=32,
        options={"memory_size": 0, "warmup_steps": 0, "frequency": "streaming"})
    sampler = base.create_sampler("cross_batch", ctx)
    self.assertEqual(sampler.memory_size, 128)  # 0 -> 4 x global batch
    self.assertEqual(sampler.warmup_steps, 0)
    self.assertIsInstance(sampler.frequency,
                          frequency.StreamingFrequencyEstimator)
    ctx = ctx._replace(options={"memory_size": 96, "warmup_steps": 10,
                                "frequency": "none"})
    sampler = base.create_sampler("cross_batch", ctx)
    self.assertEqual((sampler.memory_size, sampler.warmup_steps), (96, 10))
    self.assertIsNone(sampler.frequency)


def _cbns_config(**options):
  opts = {"num_buckets": 256, "memory_size": 12, "warmup_steps": 1}
  opts.update(options)
  return helpers.tiny_config(sampler="cross_batch", sampler_options=opts)


class ModelTest(tf.test.TestCase):

  def test_fit_resumes_with_the_same_queue_and_saved_model_keeps_it(self):
    dataset = helpers.tiny_dataset(num_users=30)
    config = _cbns_config()
    strategy = tf.distribute.get_strategy()
    model = assembly.create_model(dataset, config, strategy)
    stats = fitting.train(model, dataset, config, strategy)
    sampler = model.sampler
    self.assertEqual(int(sampler.step.numpy()), stats["steps"])
    self.assertEqual(int(sampler.filled.numpy()), 12)
    path = tf.train.Checkpoint(model=model).save(
        os.path.join(self.get_temp_dir(), "ckpt"))

    # SavedModel of the training model: the queue is in it.
    export = os.path.join(self.get_temp_dir(), "saved")
    tf.saved_model.save(model, export)
    loaded = tf.saved_model.load(export)
    for name in STATE:
      self.assertAllEqual(getattr(loaded.task.sampler, name).numpy(),
                          getattr(sampler, name).numpy(), msg=name)

    fresh = assembly.create_model(dataset, config, strategy)
    self.assertEqual(int(fresh.sampler.filled.numpy()), 0)
    tf.train.Checkpoint(model=fresh).restore(
        path).assert_existing_objects_matched()
    for name in STATE:
      self.assertAllEqual(getattr(fresh.sampler, name).numpy(),
                          getattr(sampler, name).numpy(), msg=name)
    # model.fit continues from the restored queue exactly as the original.
    fitting.train(model, dataset, config, strategy)
    fitting.train(fresh, dataset, config, strategy)
    self.assertEqual(int(fresh.sampler.step.numpy()), 2 * stats["steps"])
    self.assertEqual(int(fresh.optimizer.iterations.numpy()),
                     2 * stats["steps"])
    self.assertAllEqual(fresh.sampler.queue_ids.numpy(),
                        sampler.queue_ids.numpy())
    self.assertAllClose(fresh.sampler.queue_emb.numpy(),
                        sampler.queue_emb.numpy(), atol=1e-5)

  def test_mirrored_equals_single_device_and_queues_are_identical(self):
    # Two replicas x 4 rows vs one device x 8 rows; M = 12 is not a multiple
    # of G = 8, so writes wrap mid-batch; warm-up 1 step.
    dataset = helpers.tiny_dataset()
    config = _cbns_config()
    strategy = strategies.make_strategy("mirrored", 2)
    self.assertEqual(strategy.num_replicas_in_sync, 2)
    single, mirrored = helpers.single_and_mirrored(dataset, config, strategy)

    helpers.check_mirrored_matches_single(
        self, strategy, single, mirrored, dataset, steps=4,
        after_step=lambda i: helpers.check_replicas_match(
            self, mirrored.sampler, single.sampler, STATE))
    self.assertEqual(int(mirrored.sampler.step.values[0].numpy()), 4)
    self.assertEqual(int(mirrored.sampler.head.values[0].numpy()), 32 % 12)

  def test_fit_under_mirrored_strategy_keeps_the_queues_identical(self):
    dataset = helpers.tiny_dataset(num_users=30)
    strategy = strategies.make_strategy("mirrored", 2)
    config = _cbns_config(memory_size=20, warmup_steps=5)
    model = assembly.create_model(dataset, config, strategy)
    stats = fitting.train(model, dataset, config, strategy)
    s = model.sampler
    self.assertEqual(int(s.step.values[0].numpy()), stats["steps"])
    self.assertEqual(int(s.filled.values[0].numpy()), 20)
    for name in STATE:
      copies = [v.numpy() for v in getattr(s, name).values]
      self.assertAllEqual(copies[0], copies[1], msg=name)
    self.assertTrue(np.all(s.queue_ids.values[0].numpy() >= 0))


def test_trainer_accepts_the_cbns_flags(tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "trainers.train", "--dataset=synthetic",
       "--synthetic_users=200", "--synthetic_items=100",
       "--synthetic_interactions=10", "--embedding_dim=8", "--batch_size=32",
       "--epochs=1", "--verbose=0", "--sampler=cross_batch",
       "--memory_size=80", "--warmup_steps=10",
       "--output_dir=%s" % tmp_path],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
      capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["flags"]["sampler"] == "cross_batch"
  assert metrics["flags"]["sampler_options"]["memory_size"] == 80
  assert metrics["flags"]["sampler_options"]["warmup_steps"] == 10
  assert metrics["estimator_step"] == metrics["optimizer_steps"] > 10


if __name__ == "__main__":
  tf.test.main()
