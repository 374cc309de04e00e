"""AMNS with a learned log Q: training calls update the frequency estimate."""

import tensorflow as tf

import tfrs_negsamp as tn


def _sampler():
  titles = ["a", "b", "c", "d"]
  movies = tf.data.Dataset.from_tensor_slices(titles).batch(2)
  movie_model = tf.keras.Sequential([
      tf.keras.layers.StringLookup(vocabulary=titles, mask_token=None),
      tf.keras.layers.Embedding(5, 2)])
  sampler = tn.samplers.AdaptiveMixedSampler(
      candidates=movies, candidate_model=movie_model, num_uniform=2,
      pool_size=2, num_hard_negatives=1, logq=True)
  return sampler, movie_model


class AdaptiveMixedFrequencyTest(tf.test.TestCase):

  def test_training_calls_advance_the_estimator_and_evaluation_does_not(self):
    sampler, movie_model = _sampler()
    self.assertIsNotNone(sampler.frequency)
    titles = tf.constant(["a", "c"])
    sampler(tf.ones([2, 2]), movie_model(titles), titles, training=False)
    before = [v.numpy().copy() for v in sampler.frequency.weights]
    sampler(tf.ones([2, 2]), movie_model(titles), titles, training=False)
    for b, v in zip(before, sampler.frequency.weights):
      self.assertAllEqual(b, v.numpy())
    sampler(tf.ones([2, 2]), movie_model(titles), titles, training=True)
    changed = [not (b == v.numpy()).all()
               for b, v in zip(before, sampler.frequency.weights)]
    self.assertTrue(any(changed))


if __name__ == "__main__":
  tf.test.main()
