"""gBCE: binary cross-entropy calibrated for sampled negatives (gSASRec).

Per row `n` (a sequence position) with the positive's score `s+`, `k`
sampled negatives' scores `s_1..s_k` (raw dot products, sigmoid
probabilities) and a catalog of `I` items,

    alpha = k / (I - 1)                      (the negatives' sampling rate)
    beta  = alpha (t (1 - 1/alpha) + 1/alpha) = 1 + t (alpha - 1)
    l_n   = -w_n / (k + 1) (beta log sigma(s+) + sum_i log(1 - sigma(s_i)))

with the calibration `t in [0, 1]`: `t = 0` gives `beta = 1`, plain BCE;
larger `t` lowers the positive's weight towards `alpha`, which undoes the
over-confidence that `k << I` negatives cause. As the reference code does,
`beta log sigma(s+)` is computed as binary cross-entropy on a transformed
positive logit, the logit whose sigmoid is `sigma(s+)^beta`,

    gamma(s+) = log(1 / (sigma(s+)^(-beta) - 1)),

in float64 with clamping (`sigma` clipped to `[eps, 1 - eps]`,
`sigma^(-beta)` to `[1 + eps, max]`, `1 / (.. - 1)` to `[eps, max]`, `eps =
1e-10`), and the `k + 1` binary cross-entropies of the row are averaged
(divided by `k + 1`). The reference casts the negatives' logits to float64
too; here their cross-entropies (`softplus(s)`, stable in float32) are
taken in float32 and summed per row in float64, which keeps the float64
reference within float32 rounding and halves the `[N, k]` work.

Departures from the reference, both explicit options:
  * Masked negatives (`negative_mask`, e.g. accidental hits of the positive
    or the user's items) contribute 0 and the row is still divided by
    `k + 1`: `beta` is calibrated to the nominal `k`, so the positive's
    weight `beta / (k + 1)` does not move with the number of masked draws.
    The reference masks no negative (uniform draws, the positive included).
  * The function returns the per-row losses `l_n` `[N]` (weighted); the
    reference averages over the valid positions of the batch. The task sums
    rows (the package's SUM reduction, correct across replicas);
    `sum_n l_n / sum_n w_n` with 0/1 weights is the reference's mean.

References:
  Petrov, Macdonald. gSASRec: Reducing Overconfidence in Sequential
  Recommendation Trained with Negative Sampling. RecSys 2023. Code:
  github.com/asash/gSASRec-pytorch (`train_gsasrec.py`).
"""

from typing import Optional

import tensorflow as tf

EPS = 1e-10


def gbce_beta(num_negatives: int, num_items: int, t: float) -> float:
  """`beta = alpha (t (1 - 1/alpha) + 1/alpha)`, `alpha = k / (I - 1)`.

  Raises:
    ValueError: If `num_negatives` < 1, `num_items` < 2 or `t` is not in
      `[0, 1]`.
  """
  if num_negatives < 1 or num_items < 2:
    raise ValueError("gBCE needs num_negatives >= 1 and num_items >= 2, got "
                     "%r, %r." % (num_negatives, num_items))
  if not 0.0 <= t <= 1.0:
    raise ValueError("gBCE's t must be in [0, 1], got %r." % (t,))
  alpha = num_negatives / (num_items - 1)
  return alpha * (t * (1.0 - 1.0 / alpha) + 1.0 / alpha)


def transformed_positive_logits(positive_logits: tf.Tensor,
                                beta: float) -> tf.Tensor:
  """`gamma(s) = log(1 / (sigma(s)^(-beta) - 1))`, float64, clamped."""
  s = tf.cast(positive_logits, tf.float64)
  probs = tf.clip_by_value(tf.sigmoid(s), EPS, 1.0 - EPS)
  adjusted = tf.clip_by_value(tf.pow(probs, -beta), 1.0 + EPS,
                              tf.float64.max)
  return tf.math.log(tf.clip_by_value(1.0 / (adjusted - 1.0), EPS,
                                      tf.float64.max))


def gbce_loss(positive_logits: tf.Tensor,
              negative_logits: tf.Tensor,
              num_items: int,
              t: float,
              sample_weight: Optional[tf.Tensor] = None,
              negative_mask: Optional[tf.Tensor] = None) -> tf.Tensor:
  """Per-row gBCE losses `l_n` (module docstring).

  Args:
    positive_logits: `[N]` scores `s+` of the positives.
    negative_logits: `[N, k]` scores of the sampled negatives (`k` static).
    num_items: `I`, the catalog size the negatives are drawn from.
    t: the calibration `t in [0, 1]` (0: plain BCE).
    sample_weight: optional `[N]` row weights `w_n` (0: padding, no loss and
      no gradient).
    negative_mask: optional `[N, k]` bool, True = a valid negative; False
      entries contribute 0 (the row is still divided by `k + 1`).

  Returns:
    float32 `[N]`.

  Raises:
    ValueError: If `negative_logits` is not `[N, k]` with a static `k`, or
      as `gbce_beta`.
  """
  negative_logits = tf.convert_to_tensor(negative_logits)
  if negative_logits.shape.rank != 2 or negative_logits.shape[1] is None:
    raise ValueError("negative_logits must be [N, k] with a static k, got "
                     "%s." % (negative_logits.shape,))
  k = int(negative_logits.shape[1])
  beta = gbce_beta(k, num_items, t)
  gamma = transformed_positive_logits(tf.reshape(positive_logits, [-1]),
                                      beta)
  pos = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.ones_like(gamma), logits=gamma)
  neg_logits = tf.cast(negative_logits, tf.float32)
  neg = tf.nn.sigmoid_cross_entropy_with_logits(
      labels=tf.zeros_like(neg_logits), logits=neg_logits)
  if negative_mask is not None:
    neg = tf.where(tf.cast(negative_mask, tf.bool), neg, tf.zeros_like(neg))
  loss = (pos + tf.cast(tf.reduce_sum(neg, axis=1), tf.float64)) / (k + 1.0)
  if sample_weight is not None:
    w = tf.cast(tf.reshape(sample_weight, [-1]), tf.float64)
    loss = tf.where(w > 0, w * loss, tf.zeros_like(loss))
  return tf.cast(loss, tf.float32)
