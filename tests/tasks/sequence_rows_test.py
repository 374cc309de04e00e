"""`tasks.Retrieval` on sequence rows: `[B, L, d]` queries and candidates.

Every valid position is a query row whose positive is its next item. The
flattened loss on a hand-built `[2, 3]` batch equals the hand-computed sum
over valid positions for in-batch (blocks of positions), the full softmax
(equal to `sparse_softmax_cross_entropy_with_logits` over the catalog) and
gBCE (against the formula's float64 reference); padding carries no loss and
no gradient; a user's items are masked per position; two replicas give one
device's loss and gradients.
"""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

import tfrs_negsamp as tn
from trainers.pipeline import strategies

RNG = np.random.RandomState(0)
NUM_ITEMS, DIM = 9, 4
TABLE = RNG.normal(size=(NUM_ITEMS + 1, DIM)).astype(np.float32)
# Two rows of three positions; row 0's first position is padding (-1).
IDS = np.array([[-1, 5, 6], [7, 5, 8]])
QUERIES = RNG.normal(size=(2, 3, DIM)).astype(np.float32)


def _candidates(ids=IDS):
  return TABLE[np.maximum(ids, 0)]


def _lse(x):
  return np.log(np.sum(np.exp(x)))


def _in_batch_reference(blocks):
  """Sum over blocks of the in-batch softmax of each valid row (NumPy).

  `blocks`: lists of flat positions (b * 3 + t); in a block, row i's
  columns are the block's positives, the duplicates of its own id masked.
  """
  q, c, ids = QUERIES.reshape(-1, DIM), _candidates().reshape(-1, DIM), (
      IDS.reshape(-1))
  total = 0.0
  for block in blocks:
    for i in block:
      cols = [j for j in block if j == i or ids[j] != ids[i]]
      total += -q[i] @ c[i] + _lse(q[i] @ c[cols].T)
  return total


def _task(**kwargs):
  return tn.tasks.Retrieval(sampler=tn.samplers.InBatchSampler(), **kwargs)


class SequenceRowsTaskTest(tf.test.TestCase):

  def test_in_batch_over_all_valid_positions(self):
    loss = _task()(tf.constant(QUERIES), tf.constant(_candidates()),
                   candidate_ids=tf.constant(IDS))
    # One block (5 valid positions <= 1024 rows).
    self.assertAllClose(loss, _in_batch_reference([[1, 2, 3, 4, 5]]))

  def test_blocks_take_positions_in_position_major_order(self):
    # Position-major valid order: (b1, t0) (b0, t1) (b1, t1) (b0, t2)
    # (b1, t2) = flat 3, 1, 4, 2, 5; blocks of two.
    loss = _task(rows_per_block=2)(
        tf.constant(QUERIES), tf.constant(_candidates()),
        candidate_ids=tf.constant(IDS))
    self.assertAllClose(loss, _in_batch_reference([[3, 1], [4, 2], [5]]))

  def test_padding_carries_no_loss_and_no_gradient(self):
    q = tf.Variable(QUERIES)
    with tf.GradientTape() as tape:
      loss = _task()(q, tf.constant(_candidates()),
                     candidate_ids=tf.constant(IDS))
    grad = tape.gradient(loss, q).numpy()
    self.assertAllEqual(grad[0, 0], np.zeros(DIM))  # the padding position
    self.assertTrue(np.all(np.abs(grad[1]).sum(axis=1) > 0))
    # Changing a padding position's query or candidate changes nothing.
    other = QUERIES.copy()
    other[0, 0] += 10.0
    cands = _candidates().copy()
    cands[0, 0] -= 3.0
    self.assertAllClose(
        _task()(tf.constant(other), tf.constant(cands),
                candidate_ids=tf.constant(IDS)), loss)

  def test_full_softmax_is_the_catalog_cross_entropy(self):
    sampler = tn.samplers.FullSoftmax(
        num_items=NUM_ITEMS, item_model=lambda i: tf.gather(TABLE, i),
        chunk_size=4)
    loss = tn.tasks.Retrieval(sampler=sampler, temperature=0.5)(
        tf.constant(QUERIES), tf.constant(_candidates()),
        candidate_ids=tf.constant(IDS))
    valid = IDS >= 0
    logits = QUERIES[valid] @ TABLE[1:].T / 0.5
    expected = tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=IDS[valid] - 1, logits=logits))
    self.assertAllClose(loss, expected)

  def test_gbce_against_the_float64_formula(self):
    # Per-row uniform negatives (k = 3) and the gBCE loss, t = 0.75.
    counts = np.concatenate([[0.0], np.ones(NUM_ITEMS)])
    sampler = tn.samplers.UniformSampler(
        item_counts=counts, item_model=lambda i: tf.gather(TABLE, i),
        num_negatives=3, seed=5)
    task = tn.tasks.Retrieval(sampler=sampler,
                              loss=tn.losses.GBCE(t=0.75,
                                                  num_items=NUM_ITEMS))
    # The block's rows: the valid positions in position-major order, then
    # the padding one (its positive shown to the sampler as 0). The draws
    # the task's call will make (same step and seed, state untouched):
    order = [3, 1, 4, 2, 5, 0]
    q = QUERIES.reshape(-1, DIM)[order]
    pos_ids = np.maximum(IDS.reshape(-1)[order], 0)
    drawn = sampler(tf.constant(q), tf.constant(TABLE[pos_ids]),
                    tf.constant(pos_ids, tf.int64), training=False)[0]
    neg = drawn.per_query.ids.numpy()
    loss = task(tf.constant(QUERIES), tf.constant(_candidates()),
                candidate_ids=tf.constant(IDS))
    alpha = 3 / (NUM_ITEMS - 1)
    beta = alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha)
    total = 0.0
    for n in range(5):  # the padding row adds nothing
      s_pos = np.float64(q[n] @ TABLE[pos_ids[n]])
      sig = np.clip(1 / (1 + np.exp(-s_pos)), 1e-10, 1 - 1e-10)
      pos_term = beta * np.log(sig)
      neg_terms = sum(np.log(1 - 1 / (1 + np.exp(-np.float64(
          q[n] @ TABLE[j])))) for j in neg[n])
      total += -(pos_term + neg_terms) / 4.0
    self.assertAllClose(loss, total, rtol=1e-5)

  def test_a_users_items_are_masked_at_every_position(self):
    # Row 0's user consumed 7 and 8 (row 1's targets); row 1's user none.
    table = tn.masking.ConsumedItems.from_interactions(
        ["u0", "u0", "u0", "u0", "u1"], [5, 6, 7, 8, 1])
    task = _task(consumed_items=table)
    loss = task(tf.constant(QUERIES), tf.constant(_candidates()),
                candidate_ids=tf.constant(IDS),
                query_ids=tf.constant(["u0", "u1"]))
    q, c, ids = (QUERIES.reshape(-1, DIM), _candidates().reshape(-1, DIM),
                 IDS.reshape(-1))
    mine = {0: {5, 6, 7, 8}, 1: {1}}
    total = 0.0
    block = [1, 2, 3, 4, 5]
    for i in block:
      user = i // 3
      cols = [j for j in block if j == i or (
          ids[j] != ids[i] and ids[j] not in mine[user])]
      total += -q[i] @ c[i] + _lse(q[i] @ c[cols].T)
    self.assertAllClose(loss, total)


def _in_batch_logq():
  return tn.samplers.InBatchSampler(
      frequency=tn.frequency.StreamingFrequencyEstimator(num_buckets=64))


def _full():
  # Stateless: the valid positions form one block of data-dependent size.
  return tn.samplers.FullSoftmax(
      num_items=NUM_ITEMS, item_model=lambda i: tf.gather(TABLE, i),
      chunk_size=4)


class SequenceRowsMirroredTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters((_in_batch_logq,), (_full,))
  def test_two_replicas_equal_one_device(self, make_sampler):
    strategy = strategies.make_strategy("mirrored", 2)
    ids = np.array([[-1, 5, 6], [7, 5, 8], [-1, -1, 2], [3, 4, 1]])
    queries = RNG.normal(size=(4, 3, DIM)).astype(np.float32)

    def step(q, c, i):
      with tf.GradientTape() as tape:
        tape.watch(q)
        tape.watch(c)
        loss = task(q, c, candidate_ids=i, training=True)
      return (loss,) + tuple(tape.gradient(loss, [q, c]))

    with strategy.scope():
      task = tn.tasks.Retrieval(sampler=make_sampler(), rows_per_block=4)
    inputs = tf.data.Dataset.from_tensors(
        (queries, _candidates(ids), ids))
    dist = next(iter(strategy.experimental_distribute_dataset(inputs)))
    loss, dq, dc = strategy.run(tf.function(step), args=dist)
    two = float(strategy.reduce("SUM", loss, axis=None))
    dq = np.concatenate([x.numpy() for x in
                         strategy.experimental_local_results(dq)])
    # The full softmax scores the item tower's table, not the candidates.
    dc = None if dc is None else np.concatenate(
        [x.numpy() for x in strategy.experimental_local_results(dc)])
    single = tn.tasks.Retrieval(sampler=make_sampler(), rows_per_block=4)
    q, c = tf.constant(queries), tf.constant(_candidates(ids))
    with tf.GradientTape() as tape:
      tape.watch(q)
      tape.watch(c)
      one = single(q, c, candidate_ids=tf.constant(ids), training=True)
    gq, gc = tape.gradient(one, [q, c])
    if make_sampler is _full:  # the catalog cross-entropy of the valid rows
      valid = ids >= 0
      logits = queries[valid] @ TABLE[1:].T
      self.assertAllClose(one, tf.reduce_sum(
          tf.nn.sparse_softmax_cross_entropy_with_logits(
              labels=ids[valid] - 1, logits=logits)), rtol=1e-5)
    self.assertAllClose(two, one, rtol=1e-5)
    # The replicas' gradients, summed by the optimizer, are one device's.
    self.assertAllClose(dq, gq, atol=1e-5)
    if dc is None:
      self.assertIsNone(gc)
    else:
      self.assertAllClose(dc, gc, atol=1e-5)


if __name__ == "__main__":
  tf.test.main()
