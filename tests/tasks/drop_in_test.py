"""`tfrs_negsamp.tasks.Retrieval`: TFRS parity without a sampler, and the
sampler path (string ids, errors, loss choice, metrics).

`TfrsCasesTest` restates each case of TFRS's own
`tensorflow_recommenders/tasks/retrieval_test.py` against our class;
`TfrsOwnSuiteTest` runs TFRS's file itself with its `Retrieval` pointed at
ours.
"""

import importlib
import unittest

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from tfrs_negsamp import losses
from tfrs_negsamp import samplers
from tfrs_negsamp.samplers import base
from tfrs_negsamp.tasks import retrieval


def _zeros_corpus():
  # 20 all-zero candidates: every score ties at 0 with the true one's.
  return tf.data.Dataset.from_tensor_slices(
      np.zeros([20, 3], np.float32)).batch(16)


def _task(**kwargs):
  return retrieval.Retrieval(
      metrics=tfrs.metrics.FactorizedTopK(candidates=_zeros_corpus(),
                                          ks=[5]),
      batch_metrics=[tf.keras.metrics.TopKCategoricalAccuracy(
          k=1, name="batch_top1")], **kwargs)


def _results(task):
  return {m.name: float(m.result().numpy()) for m in task.metrics}


def _reset(task):
  for m in task.metrics:
    m.reset_states()


class TfrsCasesTest(tf.test.TestCase):
  """TFRS's cases, restated (our numbers, our layout)."""

  def test_two_by_two_softmax_and_metric_switches(self):
    # q = [[1,2,3],[2,3,4]], c = [[1,1,1],[1,1,0]]:
    # scores [[6, 3], [9, 5]]; the 2-way softmax is a sigmoid of the gap:
    # row 0 gap +3 (positive wins), row 1 gap -4 (positive loses).
    q = tf.constant([[1., 2., 3.], [2., 3., 4.]])
    c = tf.constant([[1., 1., 1.], [1., 1., 0.]])
    sig = lambda x: 1.0 / (1.0 + np.exp(-x))
    expected = -np.log(sig(3.0)) - np.log(sig(-4.0))
    task = _task(loss_metrics=[tf.keras.metrics.Mean(name="loss_mean")])
    self.assertAllClose(task(q, c), expected)
    # The zero corpus ties everything, so top-5 always holds the positive;
    # only row 0 ranks its positive first in the batch.
    self.assertAllClose(_results(task), {
        "factorized_top_k/top_5_categorical_accuracy": 1.0,
        "batch_top1": 0.5, "loss_mean": expected})
    for kwargs, factorized, batch in (
        ({"compute_metrics": False}, 0.0, 0.5),
        ({"compute_batch_metrics": False}, 1.0, 0.0)):
      _reset(task)
      self.assertAllClose(task(q, c, **kwargs), expected)
      got = _results(task)
      self.assertAllClose(
          got["factorized_top_k/top_5_categorical_accuracy"], factorized)
      self.assertAllClose(got["batch_top1"], batch)
    # Example weights scale each row's term and the batch accuracy.
    _reset(task)
    loss = task(q, c, sample_weight=tf.constant([0.7, 0.3]))
    self.assertAllClose(loss, -0.7 * np.log(sig(3.0))
                        - 0.3 * np.log(sig(-4.0)))
    self.assertAllClose(_results(task)["batch_top1"], 0.7)

  def test_graph_mode_session(self):
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
      task = _task()
      loss = task(tf.constant([[1., 2., 3.], [2., 3., 4.]]),
                  tf.constant([[1., 1., 1.], [1., 1., 0.]]))
      sess.run([v.initializer for v in task.variables])
      for m in task.metrics:
        sess.run([v.initializer for v in m.variables])
      sess.run(loss)
      got = {m.name: sess.run(m.result()) for m in task.metrics}
    self.assertAllClose(got, {
        "factorized_top_k/top_5_categorical_accuracy": 1.0,
        "batch_top1": 0.5})

  def test_extra_candidate_rows_are_shared_negatives(self):
    # q = [[3,2,1],[2,3,4]], c = [[0,1,0],[0,1,1],[1,1,0]] (row 3 extra):
    # scores [[2, 3, 5], [3, 7, 5]].
    q = tf.constant([[3., 2., 1.], [2., 3., 4.]])
    c = tf.constant([[0., 1., 0.], [0., 1., 1.], [1., 1., 0.]])
    lse = lambda *x: np.log(np.sum(np.exp(x)))
    expected = (-2 + lse(2, 3, 5)) + (-7 + lse(3, 7, 5))
    task = _task()
    self.assertAllClose(task(q, c), expected)
    self.assertAllClose(_results(task), {
        "factorized_top_k/top_5_categorical_accuracy": 1.0,
        "batch_top1": 0.5})

  def test_multi_head_queries_use_max_sim(self):
    # Two heads per query; a column's score is its best head:
    # [[2, 5, 5], [3, 7, 7]]. Factorized metrics are skipped (rank 3).
    q = tf.constant([[[3., 2., 1.], [1., 2., 3.]],
                     [[2., 3., 4.], [4., 3., 2.]]])
    c = tf.constant([[0., 1., 0.], [0., 1., 1.], [1., 1., 0.]])
    lse = lambda *x: np.log(np.sum(np.exp(x)))
    task = _task()
    self.assertAllClose(task(q, c), (-2 + lse(2, 5, 5)) + (-7 + lse(3, 7, 7)))
    self.assertAllClose(_results(task), {
        "factorized_top_k/top_5_categorical_accuracy": 0.0,
        "batch_top1": 0.5})

  def test_every_option_matches_stock_tfrs(self):
    rng = np.random.RandomState(0)
    q = tf.constant(rng.normal(size=[4, 3]), tf.float32)
    c = tf.constant(rng.normal(size=[6, 3]), tf.float32)
    ids = tf.constant(["a", "b", "a", "c", "d", "b"])
    p = tf.constant([0.1, 0.2, 0.1, 0.3, 0.05, 0.2])
    mask = tf.constant(rng.rand(4, 6) > 0.2)
    for kwargs in ({"temperature": 0.3}, {"num_hard_negatives": 2},
                   {"remove_accidental_hits": True}):
      ours = retrieval.Retrieval(**kwargs)(
          q, c, candidate_sampling_probability=p, candidate_ids=ids,
          score_mask=mask, sample_weight=tf.constant([1., 2., 0.5, 1.]))
      stock = tfrs.tasks.Retrieval(**kwargs)(
          q, c, candidate_sampling_probability=p, candidate_ids=ids,
          score_mask=mask, sample_weight=tf.constant([1., 2., 0.5, 1.]))
      self.assertAllEqual(ours, stock, msg=str(kwargs))
    with self.assertRaisesRegex(ValueError, "candidate ids"):
      retrieval.Retrieval(remove_accidental_hits=True)(q, c)


class TfrsOwnSuiteTest(tf.test.TestCase):
  """TFRS's `retrieval_test.py`, run with its `Retrieval` set to ours."""

  def test_tfrs_suite_passes_against_ours(self):
    created = []

    class Counted(retrieval.Retrieval):
      def __init__(self, *args, **kwargs):
        created.append(self)
        super().__init__(*args, **kwargs)

    module = importlib.import_module(
        "tensorflow_recommenders.tasks.retrieval_test")
    stock = module.retrieval.Retrieval
    module.retrieval.Retrieval = Counted
    try:
      suite = unittest.TestSuite(
          t for s in unittest.TestLoader().loadTestsFromModule(module)
          for t in s if not t.id().endswith("test_session"))
      result = unittest.TestResult()
      suite.run(result)
    finally:
      module.retrieval.Retrieval = stock
    self.assertEqual(result.testsRun, 4)
    self.assertEqual(result.failures + result.errors, [])
    self.assertLen(created, 4)  # every case built our class


Q = tf.constant([[1., 0.], [0., 1.]])
C = tf.constant([[2., 0.], [0., 3.]])


class SamplerPathTest(tf.test.TestCase):

  def test_in_batch_sampler_equals_tfrs_with_probabilities(self):
    # A static source: f = [0.5, 0.25, 0.25] -> Q_j = 2 f_j (G = 2).
    freq = __import__("tfrs_negsamp").frequency.StaticItemProbability(
        [2., 1., 1.])
    ours = retrieval.Retrieval(
        sampler=samplers.InBatchSampler(frequency=freq,
                                        remove_accidental_hits=False))
    loss = ours(Q, C, candidate_ids=tf.constant([0, 2]), training=False)
    stock = tfrs.tasks.Retrieval()(
        Q, C, candidate_sampling_probability=tf.constant([1.0, 0.5]))
    self.assertAllClose(loss, stock)

  def test_string_ids_duplicate_title_is_an_accidental_hit(self):
    # Both rows' positive is "x": each row's other column is the same item,
    # so it is masked and each row's loss is 0 (only its own column left).
    task = retrieval.Retrieval(sampler=samplers.InBatchSampler())
    loss = task(Q, C, candidate_ids=tf.constant(["x", "x"]))
    self.assertAllClose(loss, 0.0)
    lse = lambda *x: np.log(np.sum(np.exp(x)))
    loss = task(Q, C, candidate_ids=tf.constant(["x", "y"]))
    self.assertAllClose(loss, (-2 + lse(2, 0)) + (-3 + lse(0, 3)))

  def test_string_and_int_ids_give_the_same_cbns_losses(self):
    out = {}
    for kind, ids in (("str", [["a", "b"], ["c", "a"], ["b", "d"]]),
                      ("int", [[1, 2], [3, 1], [2, 4]])):
      task = retrieval.Retrieval(
          sampler=samplers.CrossBatchSampler(memory_size=3))
      out[kind] = [float(task(Q, C, candidate_ids=tf.constant(i),
                              training=True)) for i in ids]
    self.assertAllClose(out["str"], out["int"])
    self.assertNotAllClose(out["int"][0], out["int"][2])  # the queue acts

  def test_evaluation_leaves_sampler_state_alone(self):
    sampler = samplers.CrossBatchSampler(memory_size=4)
    task = retrieval.Retrieval(sampler=sampler)
    task(Q, C, candidate_ids=tf.constant(["a", "b"]), training=False)
    self.assertEqual(int(sampler.filled.numpy()), 0)
    task(Q, C, candidate_ids=tf.constant(["a", "b"]))  # unset = training
    self.assertEqual(int(sampler.filled.numpy()), 2)

  def test_batch_metrics_on_in_batch_columns(self):
    metric = tf.keras.metrics.TopKCategoricalAccuracy(k=1)
    task = retrieval.Retrieval(
        batch_metrics=[metric], sampler=samplers.CrossBatchSampler(
            memory_size=2))
    # scores [[2, 0], [0, 3]]: both positives first.
    task(Q, C, candidate_ids=tf.constant([1, 2]))
    self.assertAllClose(metric.result(), 1.0)
    metric.reset_states()
    # Row 1's positive [0, 3] scores 1 against q = [[0, 1], [1, 0]]...
    task(tf.constant([[0., 1.], [1., 0.]]), C,
         candidate_ids=tf.constant([1, 2]))
    self.assertAllClose(metric.result(), 0.0)

  def test_triplet_is_the_tasks_own_argument(self):
    cml = losses.CMLTripletLoss(margin=0.5)
    group = base.CandidateGroup()
    ids = tf.constant([1, 2], tf.int64)
    expected = retrieval.Retrieval(loss=cml).groups_loss(
        Q, C, [group], candidate_ids=ids)
    for loss in ("triplet", losses.CMLTripletLoss(margin=0.5)):
      task = retrieval.Retrieval(loss=loss, sampler=samplers.InBatchSampler())
      got = task(Q, C, candidate_ids=ids)
      if loss == "triplet":  # default margin 1
        expected_1 = retrieval.Retrieval(
            loss=losses.CMLTripletLoss()).groups_loss(Q, C, [group],
                                                      candidate_ids=ids)
        self.assertAllClose(got, expected_1)
      else:
        self.assertAllClose(got, expected)
    # ||u - v||^2: row 0: D+ = 1, D- = 10 -> 0; row 1: D+ = 4, D- = 5 ->
    # [0.5 + 4 - 5]_+ = 0; a margin of 2 gives 1.
    got = retrieval.Retrieval(loss=losses.CMLTripletLoss(margin=2.0),
                              sampler=samplers.InBatchSampler())(
                                  Q, C, candidate_ids=ids)
    self.assertAllClose(got, 1.0)
    with self.assertRaisesRegex(ValueError, "unknown loss 'hinge'"):
      retrieval.Retrieval(loss="hinge")

  def test_bad_arguments_name_the_argument(self):
    task = retrieval.Retrieval(sampler=samplers.InBatchSampler())
    with self.assertRaisesRegex(ValueError, "candidate_ids is required"):
      task(Q, C)
    with self.assertRaisesRegex(ValueError, "candidate_ids and "
                                "candidate_embeddings must have the same"):
      task(Q, C, candidate_ids=tf.constant([1, 2, 3]))
    with self.assertRaisesRegex(ValueError, "candidate_ids must have rank 1"):
      task(Q, C, candidate_ids=tf.constant([[1, 2]]))
    with self.assertRaisesRegex(ValueError, "query_embeddings must have rank"):
      task(tf.ones([2, 1, 2]), C, candidate_ids=tf.constant([1, 2]))
    with self.assertRaisesRegex(ValueError, "candidate_sampling_probability"):
      task(Q, C, candidate_ids=tf.constant([1, 2]),
           candidate_sampling_probability=tf.constant([0.5, 0.5]))
    with self.assertRaisesRegex(ValueError, "memory_size must be a positive"):
      samplers.CrossBatchSampler(memory_size=0)
    with self.assertRaisesRegex(TypeError, "sampler must be"):
      retrieval.Retrieval(sampler="in_batch")
    with self.assertRaisesRegex(ValueError, "candidate ids must be integers"):
      task(Q, C, candidate_ids=tf.constant([1.0, 2.0]))


class CandidatesTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.titles = np.array(["a", "b", "c", "b"])
    self.table = tf.constant([[0., 0.], [1., 0.], [0., 1.], [1., 1.]])
    lookup = tf.keras.layers.StringLookup(vocabulary=["a", "b", "c"],
                                          mask_token=None)
    self.model = lambda t: tf.gather(self.table, lookup(t))

  def test_catalog_maps_ids_and_embeds_with_the_tower(self):
    sampler = samplers.UniformSampler(
        candidates=tf.data.Dataset.from_tensor_slices(self.titles).batch(3),
        candidate_model=self.model, num_negatives=2)
    catalog = sampler.candidate_catalog
    self.assertEqual(catalog.num_items, 3)  # "b" twice
    self.assertAllEqual(sampler.id_keys(tf.constant(["c", "a", "zz"])),
                        [3, 1, 0])
    self.assertAllClose(catalog.embed(tf.constant([[3, 1]])),
                        [[[1., 1.], [1., 0.]]])
    groups = sampler(Q, C, tf.constant(["a", "b"]), training=True)
    drawn = groups[0].per_query.ids.numpy()
    self.assertTrue(np.all(drawn != np.array([[1], [2]])))  # not positive
    self.assertAllClose(groups[0].per_query.dense_embeddings(),
                        tf.gather(self.table, drawn))

  def test_counts_per_candidate(self):
    ds = tf.data.Dataset.from_tensor_slices(self.titles).batch(2)
    sampler = samplers.PopularitySampler(
        candidates=ds, candidate_model=self.model,
        item_counts={"a": 1, "b": 3})
    self.assertAllClose(sampler.distribution.probabilities()[0],
                        [0., 0.25, 0.75, 0.])
    with self.assertRaisesRegex(ValueError, "needs item_counts"):
      samplers.PopularitySampler(candidates=ds, candidate_model=self.model)
    with self.assertRaisesRegex(ValueError, "item_counts must be"):
      samplers.PopularitySampler(candidates=ds, candidate_model=self.model,
                                 item_counts=[1, 2])

  def test_bad_candidates_name_the_argument(self):
    with self.assertRaisesRegex(ValueError, "candidates must be a batched"):
      samplers.UniformSampler(
          candidates=tf.data.Dataset.from_tensor_slices(self.titles),
          candidate_model=self.model)
    with self.assertRaisesRegex(ValueError, "pass both candidates="):
      samplers.XIRSampler(candidates=tf.data.Dataset.from_tensor_slices(
          self.titles).batch(2))
    with self.assertRaisesRegex(TypeError, "candidate_model must be"):
      samplers.MixedSampler(candidates=tf.data.Dataset.from_tensor_slices(
          self.titles).batch(2), candidate_model="tower")

  def test_mixed_without_counts_learns_the_batch_frequency(self):
    ds = tf.data.Dataset.from_tensor_slices(self.titles).batch(2)
    sampler = samplers.MixedSampler(candidates=ds, candidate_model=self.model,
                                    num_uniform=1)
    self.assertIsNotNone(sampler.frequency)
    task = retrieval.Retrieval(sampler=sampler)
    for _ in range(3):
      task(Q, C, candidate_ids=tf.constant(["a", "b"]), training=True)
    self.assertEqual(int(sampler.frequency.step.numpy()), 3)
    # Seen every step: p_hat = 1 -> expected count -log(1 - p) clipped.
    self.assertAllClose(sampler.frequency.probability(
        tf.constant([1, 2], tf.int64)), [1.0, 1.0])


if __name__ == "__main__":
  tf.test.main()
