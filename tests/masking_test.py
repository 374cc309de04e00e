"""User-history masking: the membership test, the task and the samplers."""

import numpy as np
import tensorflow as tf

from tests import helpers
from trainers.pipeline import experiment
from tfrs_negsamp import losses
from tfrs_negsamp import masking
from tfrs_negsamp.samplers import adaptive
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import bir
from tfrs_negsamp.samplers import cross_batch
from tfrs_negsamp.samplers import uniform
from tfrs_negsamp.samplers import xir
from tfrs_negsamp.tasks import retrieval

MIN_FLOAT = retrieval.MIN_FLOAT
N = 8
USERS = ["a", "b", "c", "d"]
# Training pairs: user -> consumed item indices.
HISTORY = {"a": [1, 2, 3], "b": [2, 5], "c": [4], "d": []}


def table(method="auto"):
  user_ids = [u for u, items in HISTORY.items() for _ in items]
  items = [i for u in HISTORY for i in HISTORY[u]]
  return masking.ConsumedItems.from_pairs(USERS, user_ids, items, N,
                                          method=method)


def lse(x):
  x = np.asarray(x, np.float64)
  return np.log(np.sum(np.exp(x - x.max()))) + x.max()


def random_embeddings(shape, seed):
  return tf.constant(np.random.RandomState(seed).normal(size=shape)
                     .astype(np.float32))


class MembershipTest(tf.test.TestCase):

  def test_matches_numpy_on_random_pairs(self):
    rs = np.random.RandomState(0)
    users = np.array(["u%d" % i for i in range(30)])
    rows_u = users[rs.randint(0, 30, 400)]
    rows_i = rs.randint(1, 41, 400)
    pairs = set(zip(rows_u.tolist(), rows_i.tolist()))
    queries = np.concatenate([users[rs.randint(0, 30, 9)], ["unknown"]])
    per_row = rs.randint(-1, 43, (10, 50))  # padding, OOV and > N included
    shared = rs.randint(-1, 43, 50)
    for method in masking.METHODS:
      layer = masking.ConsumedItems.from_pairs(users, rows_u, rows_i, 40,
                                               method=method)
      consumed = layer.for_users(tf.constant(queries))
      want = np.array([[(q, i) in pairs for i in row]
                       for q, row in zip(queries, per_row)])
      self.assertAllEqual(consumed(tf.constant(per_row)), want, msg=method)
      want = np.array([[(q, i) in pairs for i in shared] for q in queries])
      self.assertAllEqual(consumed(tf.constant(shared)), want, msg=method)
      self.assertFalse(np.any(consumed(tf.constant(shared)).numpy()[-1]))
    self.assertEqual(layer.num_pairs, len(pairs))

  def test_auto_picks_the_bitset_when_small(self):
    self.assertEqual(table().method, "bitset")
    big = masking.ConsumedItems(USERS, N, [], max_bitset_bytes=1)
    self.assertEqual(big.method, "codes")
    with self.assertRaises(ValueError):
      masking.ConsumedItems(USERS, N, [], method="hash")

  def test_history_callable_equals_the_table(self):
    hist = tf.constant([[1, 2, 3], [2, 5, -1], [4, -1, -1], [-1, -1, -1]],
                       tf.int64)
    ids = tf.constant([0, 1, 2, 3, 4, 5, -1], tf.int64)
    want = table().for_users(tf.constant(USERS))(ids)
    self.assertAllEqual(masking.history_consumed(hist)(ids), want)

  def test_negatives_mask_keeps_positive_and_its_duplicates(self):
    consumed = table().for_users(tf.constant(["a", "b"]))
    mask = masking.negatives_mask(
        consumed, tf.constant([1, 2, 3, 1]), tf.constant([1, 2]),
        keep=tf.constant([[True, False, False, False],
                          [False, True, False, False]]))
    self.assertAllEqual(mask, [[False, True, True, False],
                               [False, False, False, False]])
    self.assertIsNone(masking.negatives_mask(None, tf.constant([1]),
                                             tf.constant([1])))


class TaskMaskingTest(tf.test.TestCase):
  """Consumed columns get zero mass: the loss of the columns deleted."""

  def setUp(self):
    super().setUp()
    self.users = tf.constant(["a", "b", "c", "d"])
    self.consumed = table().for_users(self.users)
    self.q = random_embeddings([4, 3], 0)
    self.c = random_embeddings([4, 3], 1)
    # Row a's positive is 1 and it consumed 2, 3 (columns 1, 2); row b's
    # positive is 2 (it consumed 5: column 3, and 2 itself); c and d none.
    self.ids = tf.constant([1, 2, 3, 5], tf.int64)

  def expected_in_batch(self, extra=None, extra_ids=()):
    q, c = self.q.numpy(), self.c.numpy()
    cols = c if extra is None else np.concatenate([c, extra])
    ids = list(self.ids.numpy()) + list(extra_ids)
    total = 0.0
    for i, user in enumerate(USERS):
      z = cols @ q[i]
      keep = [j == i or (ids[j] != ids[i] and ids[j] not in HISTORY[user])
              for j in range(len(ids))]
      total += -z[i] + lse(z[keep])
    return total

  def test_in_batch_columns(self):
    task = retrieval.SampledRetrieval()
    group = base.CandidateGroup()
    loss = task(self.q, self.c, [group], candidate_ids=self.ids,
                consumed=self.consumed)
    self.assertAllClose(loss, self.expected_in_batch(), rtol=1e-5)
    logits, _ = task.group_logits(self.q, self.c, self.ids, group,
                                  consumed=self.consumed)
    probs = tf.nn.softmax(logits).numpy()
    self.assertAllEqual(probs[0, 1:3], [0.0, 0.0])
    self.assertEqual(probs[1, 3], 0.0)

  def test_off_reproduces_the_unmasked_loss_exactly(self):
    task = retrieval.SampledRetrieval(temperature=0.3)
    group = base.CandidateGroup(column_log_q=tf.constant([0.1, 0.2, 0., 1.]))
    plain = task(self.q, self.c, [group], candidate_ids=self.ids)
    never = task(self.q, self.c, [group], candidate_ids=self.ids,
                 consumed=lambda ids: tf.zeros([4, 4], tf.bool))
    self.assertEqual(float(plain), float(never))
    off = experiment.build_model(
        helpers.tiny_dataset(), helpers.tiny_config(mask_history=False), 8)
    self.assertIsNone(off.consumed_items)

  def test_extra_and_drop_in_batch_columns(self):
    extra = random_embeddings([3, 3], 2)
    extra_ids = [3, 6, 4]  # 3: consumed by a; 4: consumed by c
    task = retrieval.SampledRetrieval()
    group = base.CandidateGroup(extra_embeddings=extra,
                                extra_ids=tf.constant(extra_ids, tf.int64))
    loss = task(self.q, self.c, [group], candidate_ids=self.ids,
                consumed=self.consumed)
    self.assertAllClose(loss, self.expected_in_batch(extra.numpy(),
                                                     extra_ids), rtol=1e-5)
    # drop_in_batch: [positive | extra]
    group = group._replace(drop_in_batch=True)
    loss = task(self.q, self.c, [group], candidate_ids=self.ids,
                consumed=self.consumed)
    q, c, e = self.q.numpy(), self.c.numpy(), extra.numpy()
    want = 0.0
    for i, user in enumerate(USERS):
      z = np.concatenate([[q[i] @ c[i]], e @ q[i]])
      keep = [True] + [x not in HISTORY[user] and x != self.ids[i]
                       for x in extra_ids]
      want += -z[0] + lse(z[np.array(keep)])
    self.assertAllClose(loss, want, rtol=1e-5)

  def test_per_query_columns_and_triplet(self):
    emb = random_embeddings([4, 2, 3], 3)
    pq_ids = np.array([[2, 7], [5, 6], [4, 4], [1, 2]])
    group = base.CandidateGroup(
        per_query=base.PerQuery(embeddings=emb, ids=tf.constant(pq_ids)),
        drop_in_batch=True)
    loss = retrieval.SampledRetrieval()(
        self.q, self.c, [group], candidate_ids=self.ids,
        consumed=self.consumed)
    q, c, e = self.q.numpy(), self.c.numpy(), emb.numpy()
    want = 0.0
    for i, user in enumerate(USERS):
      z = np.concatenate([[q[i] @ c[i]], e[i] @ q[i]])
      keep = [True] + [x not in HISTORY[user] for x in pq_ids[i]]
      want += -z[0] + lse(z[np.array(keep)])
    self.assertAllClose(loss, want, rtol=1e-5)
    # CML: the hardest *valid* negative only.
    cml = losses.CMLTripletLoss(margin=1.0)
    got = losses.triplet_group_loss(cml, self.q, self.c, self.ids, group,
                                    consumed=self.consumed)
    want = 0.0
    for i, user in enumerate(USERS):
      d = [np.sum((q[i] - e[i, k]) ** 2) for k in range(2)
           if pq_ids[i, k] not in HISTORY[user]]
      if d:
        want += max(0.0, 1.0 + np.sum((q[i] - c[i]) ** 2) - min(d))
    self.assertAllClose(got, want, rtol=1e-5)


class SamplerMaskingTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    self.users = tf.constant(["a", "b", "c", "d"])
    self.consumed = table().for_users(self.users)
    self.ids = tf.constant([1, 2, 3, 5], tf.int64)
    self.q = random_embeddings([4, 3], 0)
    self.c = random_embeddings([4, 3], 1)

  def test_cross_batch_queue_slot(self):
    sampler = cross_batch.CrossBatchSampler(memory_size=4)
    first_ids = tf.constant([3, 4, 6, 7], tf.int64)
    first = random_embeddings([4, 3], 5)
    sampler(self.q, first, first_ids, training=True)
    task = retrieval.SampledRetrieval()
    groups = sampler(self.q, self.c, self.ids, training=False,
                     consumed=self.consumed)
    loss = task(self.q, self.c, groups, candidate_ids=self.ids,
                consumed=self.consumed)
    q = self.q.numpy()
    cols = np.concatenate([self.c.numpy(), first.numpy()])
    ids = list(self.ids.numpy()) + list(first_ids.numpy())
    want = 0.0
    for i, user in enumerate(USERS):
      z = cols @ q[i]
      keep = [j == i or (ids[j] != ids[i] and ids[j] not in HISTORY[user])
              for j in range(len(ids))]
      want += -z[i] + lse(z[keep])
    self.assertAllClose(loss, want, rtol=1e-5)

  def test_bir_and_xir_never_draw_consumed_columns(self):
    cache = tf.constant([3, 4, 2, 6], tf.int64)
    for sampler in (bir.BIRSampler(num_resampled=50, temperature=1.0),
                    xir.XIRSampler(num_items=N, cache_size=4,
                                   num_resampled=100, temperature=1.0,
                                   item_model=lambda i: tf.gather(
                                       random_embeddings([N + 1, 3], 7),
                                       i))):
      sampler(self.q, self.c, self.ids)  # build
      if isinstance(sampler, xir.XIRSampler):
        sampler.cache_ids.assign(cache)
      groups = sampler(self.q, self.c, self.ids, consumed=self.consumed)
      batch_group = groups[-1]
      drawn = batch_group.score_mask.numpy()
      for i, user in enumerate(USERS):
        for j, item in enumerate(self.ids.numpy()):
          if j != i and item in HISTORY[user] and item != self.ids[i]:
            self.assertFalse(drawn[i, j], msg=(i, j))
      # Row a consumed every other in-batch column: only its positive.
      self.assertAllEqual(drawn[0], [True, False, False, True])
      if isinstance(sampler, xir.XIRSampler):
        mask = groups[0].score_mask.numpy()[:, 1:]  # [positive | cache]
        for i, user in enumerate(USERS):
          for k, item in enumerate(cache.numpy()):
            if item in HISTORY[user]:
              self.assertFalse(mask[i, k], msg=(i, k))
      # The task's own mask then changes nothing: the loss of the columns
      # deleted is already the sampler's.
      task = retrieval.SampledRetrieval()
      cand = self.c
      self.assertAllClose(
          task(self.q, cand, groups, candidate_ids=self.ids),
          task(self.q, cand, groups, candidate_ids=self.ids,
               consumed=self.consumed), rtol=1e-6)

  def test_bir_row_with_everything_consumed_has_zero_loss(self):
    sampler = bir.BIRSampler(num_resampled=8, temperature=1.0)
    users = tf.constant(["a", "a"])
    ids = tf.constant([1, 2], tf.int64)
    consumed = table().for_users(users)
    groups = sampler(self.q[:2], self.c[:2], ids, consumed=consumed)
    self.assertAllEqual(groups[0].score_mask, [[True, False],
                                               [False, True]])
    loss = retrieval.SampledRetrieval()(self.q[:2], self.c[:2], groups,
                                        candidate_ids=ids, consumed=consumed)
    self.assertAllClose(loss, 0.0, atol=1e-6)

  def test_uniform_catalog_draw(self):
    emb = random_embeddings([N + 1, 3], 9)
    counts = np.ones(N + 1)
    counts[0] = 0
    sampler = uniform.UniformSampler(counts, num_negatives=30,
                                     item_model=lambda i: tf.gather(emb, i))
    groups = sampler(self.q, self.c, self.ids, consumed=self.consumed)
    pq = groups[0].per_query
    ids, valid = pq.ids.numpy(), pq.mask.numpy()
    for i, user in enumerate(USERS):
      for k in range(30):
        if ids[i, k] in HISTORY[user]:
          self.assertFalse(valid[i, k])
    # Redraws: with 3 of 7 items consumed, most of row a's draws are kept.
    self.assertGreater(valid[0].mean(), 0.8)
    loss = retrieval.SampledRetrieval()(self.q, self.c, groups,
                                        candidate_ids=self.ids,
                                        consumed=self.consumed)
    q, c, e = self.q.numpy(), self.c.numpy(), emb.numpy()
    want = 0.0
    for i in range(4):
      z = np.concatenate([[q[i] @ c[i]], e[ids[i]][valid[i]] @ q[i]])
      want += -z[0] + lse(z)
    self.assertAllClose(loss, want, rtol=1e-5)

  def test_ans_mining_never_returns_a_consumed_item(self):
    # Make the consumed columns the hardest: without the mask they would be
    # mined first.
    sampler = adaptive.AdaptiveSampler(pool_size=100, num_hard_negatives=1)
    c = tf.constant([[1., 0., 0.], [5., 0., 0.], [4., 0., 0.],
                     [0., 1., 0.]])
    q = tf.constant([[1., 0., 0.]] * 4)
    groups = sampler(q, c, self.ids, consumed=self.consumed)
    task = retrieval.SampledRetrieval()
    logits, _ = task.group_logits(q, c, self.ids, groups[0],
                                  consumed=self.consumed)
    logits = logits.numpy()
    # Row a: columns 1, 2 (items 2, 3) consumed -> the mined negative is
    # column 3 (score 0), not column 1 (score 5).
    self.assertAllClose(sorted(logits[0]), [0.0, 1.0])
    loss = task(q, c, groups, candidate_ids=self.ids, consumed=self.consumed)
    qn, cn, ids = q.numpy(), c.numpy(), self.ids.numpy()
    want = 0.0
    for i, user in enumerate(USERS):
      z = cn @ qn[i]
      neg = [z[j] for j in range(4) if j != i and ids[j] != ids[i]
             and ids[j] not in HISTORY[user]]
      want += -z[i] + lse([z[i], max(neg)])
    self.assertAllClose(loss, want, rtol=1e-5)


class DistributedMaskingTest(tf.test.TestCase):

  def test_mirrored_equals_one_device_with_masking(self):
    dataset = helpers.tiny_dataset()
    strategy = experiment.make_strategy("mirrored", 2)
    for sampler in ("in_batch_logq", "bir"):
      config = helpers.tiny_config(sampler=sampler, mask_history=True)
      single, mirrored = helpers.single_and_mirrored(dataset, config,
                                                     strategy)
      self.assertIsNotNone(single.consumed_items)
      helpers.check_mirrored_matches_single(self, strategy, single, mirrored,
                                            dataset, steps=2)

  def test_model_masks_consumed_in_batch_columns(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(sampler="in_batch", mask_history=True)
    model = experiment.build_model(dataset, config, 8)
    batch = helpers.first_batch(dataset, 8)
    masked = float(model.compute_loss(batch, training=False))
    consumed = model.consumed_items.for_users(batch["user_id"])
    ids = model.item_index(batch["item_id"])
    self.assertTrue(np.any(masking.negatives_mask(
        consumed, ids, ids, keep=tf.eye(8, dtype=tf.bool)).numpy()))
    model.consumed_items = None
    self.assertLess(masked, float(model.compute_loss(batch, training=False)))
