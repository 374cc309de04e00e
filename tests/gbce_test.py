"""gBCE (Petrov & Macdonald 2023; SAMPLERS.md 12.4, issue 25)."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tfrs_negsamp import gbce

_EPS = 1e-10


def _numpy_gbce(pos, neg, num_items, t):
  """The reference's training loss per element, float64, `[N, k + 1]`.

  As `train_gsasrec.py`: the transformed positive logit with its clamps,
  then binary cross-entropy with logits (labels 1, 0, .., 0).
  """
  pos = np.asarray(pos, np.float64)
  neg = np.asarray(neg, np.float64)
  k = neg.shape[-1]
  alpha = k / (num_items - 1)
  beta = alpha * ((1 - 1 / alpha) * t + 1 / alpha)
  probs = np.clip(1.0 / (1.0 + np.exp(-pos)), _EPS, 1 - _EPS)
  adjusted = np.clip(probs ** -beta, 1 + _EPS, np.finfo(np.float64).max)
  gamma = np.log(np.clip(1.0 / (adjusted - 1), _EPS,
                         np.finfo(np.float64).max))
  logits = np.concatenate([gamma[..., None], neg], axis=-1)
  labels = np.zeros_like(logits)
  labels[..., 0] = 1.0
  return (np.maximum(logits, 0) - logits * labels
          + np.log1p(np.exp(-np.abs(logits))))


def _hand_built():
  pos = np.array([2.0, -1.5, 0.0, 7.0, -30.0, 40.0])
  neg = np.array([[0.5, -2.0, 1.0],
                  [3.0, 0.0, -1.0],
                  [-0.5, -0.5, 2.5],
                  [1.0, 1.0, 1.0],
                  [-3.0, 4.0, 0.0],
                  [0.0, -8.0, 6.0]])
  return pos, neg


class GBCETest(tf.test.TestCase, parameterized.TestCase):

  def test_beta(self):
    # ML-1M, 256 negatives, t = 0.75 (gSASRec's configuration).
    alpha = 256 / 3415
    self.assertAlmostEqual(gbce.gbce_beta(256, 3416, 0.75),
                           1 + 0.75 * (alpha - 1), places=12)
    self.assertAlmostEqual(gbce.gbce_beta(256, 3416, 0.0), 1.0, places=12)
    self.assertAlmostEqual(gbce.gbce_beta(256, 3416, 1.0), alpha, places=12)
    for bad in ((0, 10, 0.5), (1, 1, 0.5), (4, 10, 1.5), (4, 10, -0.1)):
      with self.assertRaises(ValueError):
        gbce.gbce_beta(*bad)

  @parameterized.parameters(0.0, 0.5, 0.75, 1.0)
  def test_matches_the_float64_reference(self, t):
    pos, neg = _hand_built()
    got = gbce.gbce_loss(tf.constant(pos, tf.float32),
                         tf.constant(neg, tf.float32), num_items=10, t=t)
    want = _numpy_gbce(pos, neg, 10, t).mean(axis=-1)
    self.assertEqual(got.dtype, tf.float32)
    self.assertAllClose(got, want, rtol=1e-6, atol=1e-7)
    self.assertTrue(np.all(np.isfinite(got.numpy())))

  def test_t_zero_is_plain_bce(self):
    pos, neg = _hand_built()
    pos, neg = pos[:4], neg[:4]  # unclamped logits
    got = gbce.gbce_loss(pos, neg, num_items=50, t=0.0)
    logits = tf.concat([pos[:, None], neg], axis=1)
    labels = tf.concat([tf.ones([4, 1], tf.float64),
                        tf.zeros([4, 3], tf.float64)], axis=1)
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=labels, logits=logits), axis=1)
    self.assertAllClose(got, bce, rtol=1e-6)

  def test_positive_weight_is_beta(self):
    # Where no clamp binds, the positive's term is beta * (-log sigmoid(s+))
    # and its gradient beta times BCE's.
    pos, neg = _hand_built()
    pos = tf.constant(pos[:4])
    neg = tf.constant(neg[:4])
    beta = gbce.gbce_beta(3, 20, 0.6)
    with tf.GradientTape() as tape:
      tape.watch(pos)
      loss = gbce.gbce_loss(pos, neg, num_items=20, t=0.6)
    grad = tape.gradient(loss, pos)
    want = (beta * tf.math.softplus(-pos) +
            tf.reduce_sum(tf.math.softplus(neg), axis=1)) / 4.0
    self.assertAllClose(loss, want, rtol=1e-6)
    self.assertAllClose(grad, -beta * tf.sigmoid(-pos) / 4.0, rtol=1e-5)

  def test_reference_mean_over_valid_positions_and_masks(self):
    # A [B = 2, L = 3] batch with a padding position, as the reference
    # training loop: loss_per_element.mean(-1) * mask, summed / mask.sum().
    rng = np.random.default_rng(0)
    pos = rng.normal(size=[2, 3]) * 3
    neg = rng.normal(size=[2, 3, 4]) * 3
    valid = np.array([[0, 1, 1], [1, 1, 1]], np.float64)
    per_element = _numpy_gbce(pos, neg, 30, 0.75).mean(-1)
    reference = (per_element * valid).sum() / valid.sum()
    w = tf.constant(valid.reshape(-1), tf.float32)
    with tf.GradientTape() as tape:
      pos_t = tf.constant(pos.reshape(-1), tf.float32)
      neg_t = tf.constant(neg.reshape(6, 4), tf.float32)
      tape.watch([pos_t, neg_t])
      rows = gbce.gbce_loss(pos_t, neg_t, num_items=30, t=0.75,
                            sample_weight=w)
    self.assertAllClose(tf.reduce_sum(rows) / tf.reduce_sum(w), reference,
                        rtol=1e-6)
    # The padding row: no loss, no gradient.
    dpos, dneg = tape.gradient(rows, [pos_t, neg_t])
    self.assertEqual(float(rows[0]), 0.0)
    self.assertEqual(float(dpos[0]), 0.0)
    self.assertAllEqual(dneg[0], tf.zeros([4]))
    # A masked negative contributes 0; the row is still divided by k + 1.
    mask = np.ones([6, 4], bool)
    mask[2, 1] = mask[5, 0] = mask[5, 3] = False
    masked = gbce.gbce_loss(pos_t, neg_t, num_items=30, t=0.75,
                            negative_mask=mask)
    elements = _numpy_gbce(pos.reshape(-1), neg.reshape(6, 4), 30, 0.75)
    elements[:, 1:] *= mask
    self.assertAllClose(masked, elements.sum(-1) / 5.0, rtol=1e-6)

  def test_needs_a_static_number_of_negatives(self):
    with self.assertRaisesRegex(ValueError, "static k"):
      gbce.gbce_loss(tf.zeros([3]), tf.zeros([3]), num_items=10, t=0.5)
    fn = tf.function(lambda p, n: gbce.gbce_loss(p, n, 10, 0.5),
                     input_signature=[tf.TensorSpec([None]),
                                      tf.TensorSpec([None, None])])
    with self.assertRaisesRegex(ValueError, "static k"):
      fn.get_concrete_function()


if __name__ == "__main__":
  tf.test.main()
