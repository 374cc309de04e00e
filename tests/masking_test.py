"""User-history masking: the membership test, the task and the samplers."""

import os
from unittest import mock

import numpy as np
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import strategies
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

  def test_byte_reads_equal_the_int32_words(self):
    # Issue 17: shared ids read the bitset as bytes; the int32-word path
    # (the former one, kept for big-endian hosts) and the code table are
    # the references, on ids spanning every word and byte boundary.
    rs = np.random.RandomState(1)
    num_items = 70
    users = np.array(["u%d" % i for i in range(25)])
    rows_u = users[rs.randint(0, 25, 600)]
    rows_i = rs.randint(1, num_items + 1, 600)
    queries = tf.constant(np.concatenate([users, ["unknown"]]))
    shared = tf.constant(np.arange(-2, num_items + 4))
    bits = masking.ConsumedItems.from_pairs(users, rows_u, rows_i, num_items,
                                            method="bitset")
    codes = masking.ConsumedItems.from_pairs(users, rows_u, rows_i,
                                             num_items, method="codes")
    got = bits.for_users(queries)(shared)
    with mock.patch.object(masking, "_LITTLE_ENDIAN", False):
      words = bits.for_users(queries)(shared)
    self.assertAllEqual(got, words)
    self.assertAllEqual(got, codes.for_users(queries)(shared))
    self.assertGreater(int(tf.reduce_sum(tf.cast(got, tf.int32))), 300)

  def test_auto_picks_the_bitset_when_small(self):
    self.assertEqual(table().method, "bitset")
    big = masking.ConsumedItems(USERS, N, [], max_bitset_bytes=1)
    self.assertEqual(big.method, "csr")  # issue 17: not "codes"
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


class CsrTest(tf.test.TestCase):
  """Issue 17: the per-user lists equal the code table and the bitset."""

  def random_case(self, rs, num_users, num_items, num_rows, batch, k):
    users = np.array(["u%d" % i for i in range(num_users)])
    # Users with 0..many items: a per-user rate, some users none at all.
    rate = rs.rand(num_users) * (rs.rand(num_users) > 0.2)
    rows_u, rows_i = [], []
    for _ in range(num_rows):
      p = rs.randint(num_users)
      if rs.rand() < rate[p]:
        rows_u.append(users[p])
        rows_i.append(rs.randint(1, num_items + 1))
    names = np.concatenate([users, ["unknown"]])
    queries = tf.constant(names[rs.randint(0, num_users + 1, batch)])
    # Padding, OOV, too-large ids and repeats (few distinct values).
    shared = tf.constant(rs.randint(-2, num_items + 3, k), tf.int64)
    per_row = tf.constant(rs.randint(-2, num_items + 3, (batch, k)),
                          tf.int64)
    return users, rows_u, rows_i, queries, shared, per_row

  def test_csr_equals_codes_and_bitset(self):
    rs = np.random.RandomState(3)
    cases = [(8, 12, 60, 1, 1), (8, 12, 60, 1, 7), (8, 12, 60, 9, 1),
             (20, 40, 500, 16, 30), (5, 3, 40, 6, 20), (30, 70, 0, 5, 9),
             (1, 1, 3, 3, 4)]
    for num_users, num_items, num_rows, batch, k in cases:
      users, rows_u, rows_i, queries, shared, per_row = self.random_case(
          rs, num_users, num_items, num_rows, batch, k)
      pairs = set(zip(rows_u, rows_i))
      names = queries.numpy().astype(str)
      want_shared = np.array([[(q, i) in pairs for i in shared.numpy()]
                              for q in names])
      want_row = np.array([[(q, i) in pairs for i in row]
                           for q, row in zip(names, per_row.numpy())])
      for method in ("csr", "codes", "bitset"):
        layer = masking.ConsumedItems.from_pairs(
            users, rows_u, rows_i, num_items, method=method)
        consumed = layer.for_users(queries)
        msg = (method, num_users, num_items, num_rows, batch, k)
        self.assertAllEqual(consumed(shared), want_shared, msg=msg)
        self.assertAllEqual(consumed(per_row), want_row, msg=msg)

  def test_repeated_ids_and_unknown_users(self):
    layer = table("csr")
    ids = tf.constant([2, 2, 0, 9, -1, 5, 2, 1], tf.int64)
    got = layer.for_users(tf.constant(["a", "zz", "b", "d"]))(ids)
    self.assertAllEqual(got, [
        [True, True, False, False, False, False, True, True],
        [False] * 8,
        [True, True, False, False, False, True, True, False],
        [False] * 8])

  def test_csr_state(self):
    layer = table("csr")
    layer.build()
    self.assertAllEqual(layer.row_splits, [0, 0, 3, 5, 6, 6])
    self.assertAllEqual(layer.values, [1, 2, 3, 2, 5, 4])
    self.assertEmpty(layer.trainable_weights)
    self.assertLen(layer.non_trainable_weights, 2)

  def test_checkpoint_round_trip(self):
    layer = table("csr")
    layer.build()
    path = tf.train.Checkpoint(layer=layer).save(
        os.path.join(self.get_temp_dir(), "csr"))
    other = table("csr")
    other.build()
    other.row_splits.assign(tf.zeros_like(other.row_splits))
    other.values.assign(tf.zeros_like(other.values))
    queries = tf.constant(USERS)
    ids = tf.constant([1, 2, 3, 4, 5], tf.int64)
    self.assertFalse(np.any(other.for_users(queries)(ids).numpy()))
    tf.train.Checkpoint(layer=other).restore(path).assert_consumed()
    self.assertAllEqual(other.for_users(queries)(ids),
                        layer.for_users(queries)(ids))
    config = layer.get_config()
    self.assertEqual(config["method"], "csr")
    self.assertAllEqual(
        masking.ConsumedItems.from_config(config).for_users(queries)(ids),
        layer.for_users(queries)(ids))

  def test_inside_tf_function(self):
    layer = table("csr")
    ref = table("codes")

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string),
                                  tf.TensorSpec([None], tf.int64),
                                  tf.TensorSpec([None, None], tf.int64)])
    def masks(users, shared, per_row):
      consumed = layer.for_users(users)
      return consumed(shared), consumed(per_row)

    for users, shared, per_row in [
        (["a", "b", "zz"], [1, 2, 5, 2, 0, 9], [[1, 4], [5, 5], [2, 3]]),
        (["c"], [4], [[4]])]:
      got = masks(tf.constant(users), tf.constant(shared, tf.int64),
                  tf.constant(per_row, tf.int64))
      want = ref.for_users(tf.constant(users))
      self.assertAllEqual(got[0], want(tf.constant(shared, tf.int64)))
      self.assertAllEqual(got[1], want(tf.constant(per_row, tf.int64)))

  def test_no_gradient(self):
    layer = table("csr")
    x = tf.Variable(1.0)
    with tf.GradientTape() as tape:
      mask = layer.for_users(tf.constant(USERS))(tf.constant([1, 2]))
      y = tf.reduce_sum(tf.where(mask, x, 0.0))
    self.assertEqual(mask.dtype, tf.bool)
    self.assertAllClose(tape.gradient(y, x), 3.0)  # only through `where`


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
    task = retrieval.Retrieval()
    group = base.CandidateGroup()
    loss = task.groups_loss(self.q, self.c, [group], candidate_ids=self.ids,
                consumed=self.consumed)
    self.assertAllClose(loss, self.expected_in_batch(), rtol=1e-5)
    logits, _ = task.group_logits(self.q, self.c, self.ids, group,
                                  consumed=self.consumed)
    probs = tf.nn.softmax(logits).numpy()
    self.assertAllEqual(probs[0, 1:3], [0.0, 0.0])
    self.assertEqual(probs[1, 3], 0.0)

  def test_off_reproduces_the_unmasked_loss_exactly(self):
    task = retrieval.Retrieval(temperature=0.3)
    group = base.CandidateGroup(column_log_q=tf.constant([0.1, 0.2, 0., 1.]))
    plain = task.groups_loss(self.q, self.c, [group], candidate_ids=self.ids)
    never = task.groups_loss(self.q, self.c, [group], candidate_ids=self.ids,
                 consumed=lambda ids: tf.zeros([4, 4], tf.bool))
    self.assertEqual(float(plain), float(never))
    off = assembly.build_model(
        helpers.tiny_dataset(), helpers.tiny_config(mask_history=False), 8)
    self.assertIsNone(off.consumed_items)

  def test_extra_and_drop_in_batch_columns(self):
    extra = random_embeddings([3, 3], 2)
    extra_ids = [3, 6, 4]  # 3: consumed by a; 4: consumed by c
    task = retrieval.Retrieval()
    group = base.CandidateGroup(extra_embeddings=extra,
                                extra_ids=tf.constant(extra_ids, tf.int64))
    loss = task.groups_loss(self.q, self.c, [group], candidate_ids=self.ids,
                consumed=self.consumed)
    self.assertAllClose(loss, self.expected_in_batch(extra.numpy(),
                                                     extra_ids), rtol=1e-5)
    # drop_in_batch: [positive | extra]
    group = group._replace(drop_in_batch=True)
    loss = task.groups_loss(self.q, self.c, [group], candidate_ids=self.ids,
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
    loss = retrieval.Retrieval().groups_loss(
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
    task = retrieval.Retrieval()
    groups = sampler(self.q, self.c, self.ids, training=False,
                     consumed=self.consumed)
    loss = task.groups_loss(self.q, self.c, groups, candidate_ids=self.ids,
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
      task = retrieval.Retrieval()
      cand = self.c
      self.assertAllClose(
          task.groups_loss(self.q, cand, groups, candidate_ids=self.ids),
          task.groups_loss(self.q, cand, groups, candidate_ids=self.ids,
               consumed=self.consumed), rtol=1e-6)

  def test_bir_row_with_everything_consumed_has_zero_loss(self):
    sampler = bir.BIRSampler(num_resampled=8, temperature=1.0)
    users = tf.constant(["a", "a"])
    ids = tf.constant([1, 2], tf.int64)
    consumed = table().for_users(users)
    groups = sampler(self.q[:2], self.c[:2], ids, consumed=consumed)
    self.assertAllEqual(groups[0].score_mask, [[True, False],
                                               [False, True]])
    loss = retrieval.Retrieval().groups_loss(self.q[:2], self.c[:2], groups,
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
    loss = retrieval.Retrieval().groups_loss(self.q, self.c, groups,
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
    task = retrieval.Retrieval()
    logits, _ = task.group_logits(q, c, self.ids, groups[0],
                                  consumed=self.consumed)
    logits = logits.numpy()
    # Row a: columns 1, 2 (items 2, 3) consumed -> the mined negative is
    # column 3 (score 0), not column 1 (score 5).
    self.assertAllClose(sorted(logits[0]), [0.0, 1.0])
    loss = task.groups_loss(q, c, groups, candidate_ids=self.ids, consumed=self.consumed)
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
    strategy = strategies.make_strategy("mirrored", 2)
    for sampler in ("in_batch_logq", "bir"):
      config = helpers.tiny_config(sampler=sampler, mask_history=True)
      single, mirrored = helpers.single_and_mirrored(dataset, config,
                                                     strategy)
      self.assertIsNotNone(single.consumed_items)
      helpers.check_mirrored_matches_single(self, strategy, single, mirrored,
                                            dataset, steps=2)

  def test_mirrored_equals_one_device_with_csr_masking(self):
    # Issue 17: the per-user lists (what "auto" picks for large tables).
    def csr_items(dataset):
      train = dataset.train
      return masking.ConsumedItems.from_pairs(
          dataset.users, train.user_ids,
          dataset.catalog.index_of(train.item_ids) + 1,
          dataset.catalog.num_items, method="csr", name="consumed_items")

    dataset = helpers.tiny_dataset()
    strategy = strategies.make_strategy("mirrored", 2)
    config = helpers.tiny_config(sampler="in_batch_logq", mask_history=True)
    with mock.patch.object(assembly, "consumed_items", csr_items):
      single, mirrored = helpers.single_and_mirrored(dataset, config,
                                                     strategy)
    self.assertEqual(single.consumed_items.method, "csr")
    self.assertEqual(mirrored.consumed_items.method, "csr")
    helpers.check_mirrored_matches_single(self, strategy, single, mirrored,
                                          dataset, steps=2)

  def test_model_masks_consumed_in_batch_columns(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(sampler="in_batch", mask_history=True)
    model = assembly.build_model(dataset, config, 8)
    batch = helpers.first_batch(dataset, 8)
    masked = float(model.compute_loss(batch, training=False))
    consumed = model.consumed_items.for_users(batch["user_id"])
    ids = model.item_index(batch["item_id"])
    self.assertTrue(np.any(masking.negatives_mask(
        consumed, ids, ids, keep=tf.eye(8, dtype=tf.bool)).numpy()))
    model.task.mask_history = False
    self.assertLess(masked, float(model.compute_loss(batch, training=False)))
