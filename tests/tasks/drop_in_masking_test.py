"""The drop-in task masks a user's own items, as the trainer's model does.

`tfrs_negsamp.tasks.Retrieval` takes what masking needs from a TFRS user's
model: the rows' user ids with a `ConsumedItems` table of the training pairs,
or the rows' histories. A consumed item other than the row's positive gets
zero softmax mass; the trainer's `TwoTowerModel` goes through the same task
and gets the same loss on the same batch.
"""

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfrs_negsamp as tn
from tests import helpers
from trainers.pipeline import assembly

# Three rows (user, positive): (a, x), (b, y), (a, z). Training pairs:
# a -> {x, y}, b -> {z}. Row 0 masks column y; row 1 masks column z; row 2
# masks x and y, so only its positive is left (zero loss).
USERS = ["a", "b", "a"]
POSITIVES = ["x", "y", "z"]
PAIRS = (["a", "a", "b"], ["x", "y", "z"])
Q = np.array([[1., 0.], [0., 1.], [1., 1.]], np.float32)
C = np.array([[2., 0.], [1., 1.], [0., 3.]], np.float32)
KEEP = np.array([[1, 0, 1], [1, 1, 0], [0, 0, 1]], bool)


def _lse(x):
  return np.log(np.sum(np.exp(x)))


def _expected(keep):
  scores = Q @ C.T
  return sum(-scores[i, i] + _lse(scores[i][keep[i]]) for i in range(3))


def _task(**kwargs):
  return tn.tasks.Retrieval(sampler=tn.samplers.InBatchSampler(), **kwargs)


class DropInMaskingTest(tf.test.TestCase):

  def test_consumed_items_carry_zero_softmax_mass(self):
    table = tn.masking.ConsumedItems.from_interactions(*PAIRS)
    task = _task(consumed_items=table)
    loss = task(tf.constant(Q), tf.constant(C),
                candidate_ids=tf.constant(POSITIVES),
                query_ids=tf.constant(USERS))
    # Equal to the loss with the masked columns deleted.
    self.assertAllClose(loss, _expected(KEEP))
    # Unmasked (no user ids): every column counts.
    plain = _task(consumed_items=table)(
        tf.constant(Q), tf.constant(C), candidate_ids=tf.constant(POSITIVES))
    self.assertAllClose(plain, _expected(np.ones([3, 3], bool)))
    # mask_history=False turns it off even with the ids.
    off = _task(consumed_items=table, mask_history=False)(
        tf.constant(Q), tf.constant(C), candidate_ids=tf.constant(POSITIVES),
        query_ids=tf.constant(USERS))
    self.assertAllClose(off, plain)

  def test_the_masked_columns_get_min_float_logits(self):
    table = tn.masking.ConsumedItems.from_interactions(*PAIRS)
    task = _task(consumed_items=table)
    consumed = task._consumed(tf.constant(USERS), None)  # pylint: disable=protected-access
    keys = task.sampler.id_keys(tf.constant(POSITIVES))
    groups = task.sampler(tf.constant(Q), tf.constant(C), keys,
                          consumed=consumed, ids_are_keys=True)
    logits, _ = task.group_logits(tf.constant(Q), tf.constant(C), keys,
                                  groups[0], consumed=consumed)
    probs = tf.nn.softmax(logits).numpy()
    self.assertAllEqual(probs[~KEEP], np.zeros(np.sum(~KEEP)))

  def test_history_ids_mask_the_same_columns(self):
    # A history tower's input, padded with "": same masks as the table.
    history = tf.constant([["x", "y", ""], ["z", "", ""], ["x", "y", ""]])
    loss = _task()(tf.constant(Q), tf.constant(C),
                   candidate_ids=tf.constant(POSITIVES),
                   query_history=history)
    self.assertAllClose(loss, _expected(KEEP))
    # Int histories pad with negative values.
    int_history = tf.constant([[10, 11, -1], [12, -1, -1], [10, 11, -1]])
    loss = _task()(tf.constant(Q), tf.constant(C),
                   candidate_ids=tf.constant([10, 11, 12]),
                   query_history=int_history)
    self.assertAllClose(loss, _expected(KEEP))

  def test_int_ids_and_a_catalog_sampler(self):
    # Int user and item ids; a sampler with a catalog (keys are catalog
    # indices): the table binds to the sampler's keys.
    table = tn.masking.ConsumedItems.from_interactions(
        [1, 1, 2], [100, 101, 102])
    item_table = tf.constant(C)

    def item_model(ids):
      return tf.gather(item_table, tf.cast(ids, tf.int32) - 100)

    sampler = tn.samplers.UniformSampler(
        candidates=tf.data.Dataset.from_tensor_slices(
            tf.constant([100, 101, 102], tf.int64)).batch(2),
        candidate_model=item_model, num_negatives=1)
    task = tn.tasks.Retrieval(sampler=sampler, consumed_items=table)
    consumed = task._consumed(tf.constant([1, 2, 1]), None)  # pylint: disable=protected-access
    keys = sampler.id_keys(tf.constant([100, 101, 102], tf.int64))
    self.assertAllEqual(consumed(keys).numpy(),
                        [[1, 1, 0], [0, 0, 1], [1, 1, 0]])

  def test_utf8_ids_from_string_tensors(self):
    # A TFRS model's data: tf.string tensors holding UTF-8 (non-ASCII
    # titles such as MovieLens's "Misérables"); the same masks as str ids.
    names = {"x": "Misérables", "y": "Ça", "z": "Zoë"}
    users = {"a": "ä", "b": "b"}
    table = tn.masking.ConsumedItems.from_interactions(
        tf.constant([users[u] for u in PAIRS[0]]),
        tf.constant([names[i] for i in PAIRS[1]]))
    loss = _task(consumed_items=table)(
        tf.constant(Q), tf.constant(C),
        candidate_ids=tf.constant([names[i] for i in POSITIVES]),
        query_ids=tf.constant([users[u] for u in USERS]))
    self.assertAllClose(loss, _expected(KEEP))

  def test_user_ids_without_a_table_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "consumed_items"):
      _task()(tf.constant(Q), tf.constant(C),
              candidate_ids=tf.constant(POSITIVES),
              query_ids=tf.constant(USERS))


class PipelineIsADropInUserTest(tf.test.TestCase):
  """The trainer's model and a hand-written TFRS model: the same loss."""

  def test_same_loss_on_the_same_batch(self):
    dataset = helpers.tiny_dataset()
    for sampler in ("in_batch", "cross_batch"):
      config = helpers.tiny_config(sampler=sampler, mask_history=True,
                                   sampler_options={"frequency": "none"}
                                   if sampler == "cross_batch" else {})
      model = assembly.build_model(dataset, config, 8)
      batch = helpers.first_batch(dataset, 8)
      pipeline = float(model.compute_loss(batch, training=False))

      train = dataset.train
      task = tn.tasks.Retrieval(
          temperature=config.temperature,
          sampler=(tn.samplers.InBatchSampler() if sampler == "in_batch"
                   else tn.samplers.CrossBatchSampler(memory_size=16)),
          consumed_items=tn.masking.ConsumedItems.from_interactions(
              train.user_ids, train.item_ids))

      class UserModel(tfrs.Model):
        """What the README tells a TFRS user to write (string ids)."""

        def compute_loss(self, features, training=False):
          users = model.query_model(features["user_id"])
          items = model.item_model(model.item_index(features["item_id"]))
          return task(users, items, candidate_ids=features["item_id"],
                      query_ids=features["user_id"],
                      compute_metrics=False, training=training)

      mine = float(UserModel().compute_loss(batch, training=False))
      self.assertAllClose(mine, pipeline, msg=sampler)
      # And masking mattered on this batch.
      model.task.mask_history = False
      self.assertNotAllClose(
          float(model.compute_loss(batch, training=False)), pipeline)


if __name__ == "__main__":
  tf.test.main()
