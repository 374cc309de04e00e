"""Small shared fixtures: a tiny synthetic data set and a model factory."""

import numpy as np
import tensorflow as tf

from tfrs_negsamp import data as data_lib
from trainers.pipeline import assembly
from trainers.pipeline import configuration


def tiny_dataset(num_users=60, num_items=40, per_user=12, seed=0):
  return data_lib.load_dataset(
      "synthetic", seed=seed, num_users=num_users, num_items=num_items,
      interactions_per_user=per_user)


def tiny_config(**overrides):
  """A small config; the estimator gets 256 buckets when the sampler has
  one (and `sampler_options` is not overridden)."""
  config = configuration.ExperimentConfig(
      batch_size=8, epochs=1, embedding_dim=8, verbose=0)
  for k, v in overrides.items():
    setattr(config, k, v)
  if "sampler_options" not in overrides:
    config.sampler_options = configuration.sampler_options_for(
        config.sampler, {"num_buckets": 256})
  return config


def first_batch(dataset, batch_size, offset=0):
  rows = dataset.train.subset(np.arange(offset, offset + batch_size))
  return next(iter(data_lib.to_tf_dataset(rows, batch_size=batch_size)))


def copy_weights(src: tf.keras.Model, dst: tf.keras.Model):
  for a, b in zip(src.weights, dst.weights):
    b.assign(a.read_value())


def single_device_step(model, batch):
  """Loss and dense gradients of one training-mode call on one device."""
  with tf.GradientTape() as tape:
    loss = model.compute_loss(batch, training=True)
  return loss, [tf.convert_to_tensor(g) for g in tape.gradient(
      loss, model.trainable_variables)]


def mirrored_step(strategy, model):
  """A `tf.function(batch)` returning the replica-summed loss and gradients.

  The batch is split over the replicas as Keras would (in order); the sums
  are what the optimizer applies, so they must equal `single_device_step`
  on the whole batch.
  """
  @tf.function
  def step(inputs):
    def fn(x):
      with tf.GradientTape() as tape:
        loss = model.compute_loss(x, training=True)
      g = tape.gradient(loss, model.trainable_variables)
      return loss, [tf.convert_to_tensor(v) for v in g]
    losses, per_grads = strategy.run(fn, args=(inputs,))
    return (strategy.reduce("SUM", losses, axis=None),
            [strategy.reduce("SUM", g, axis=None) for g in per_grads])

  def run(batch):
    return step(next(iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(batch)))))
  return run


def single_and_mirrored(dataset, config, strategy):
  """The same model on one device and under `strategy`, equal weights."""
  single = assembly.create_model(dataset, config,
                                   tf.distribute.get_strategy())
  mirrored = assembly.create_model(dataset, config, strategy)
  copy_weights(single, mirrored)
  return single, mirrored


def check_mirrored_matches_single(test, strategy, single, mirrored, dataset,
                                  steps, global_batch=8, after_step=None):
  """Feeds `steps` global batches to both models; asserts the same math.

  The replica-summed loss and gradients under `strategy` must equal one
  device's on the whole global batch (float32 tolerance: the summation
  order differs). `after_step(i)` runs extra checks after step `i`.
  """
  step = mirrored_step(strategy, mirrored)
  for i in range(steps):
    batch = first_batch(dataset, global_batch, offset=global_batch * i)
    loss, grads = single_device_step(single, batch)
    m_loss, m_grads = step(batch)
    test.assertAllClose(m_loss, loss, rtol=1e-5, msg="step %d" % i)
    for a, b in zip(m_grads, grads):
      test.assertAllClose(a, b, rtol=1e-3, atol=1e-5)
    if after_step is not None:
      after_step(i)


def check_replicas_match(test, mirrored_owner, single_owner, names,
                         exact=False):
  """Each variable `name`: equal on both replicas, and equal to one device.

  `exact` compares with one device bit for bit; otherwise within 1e-6
  (graph vs eager arithmetic may differ by an ulp).
  """
  for name in names:
    copies = [v.numpy() for v in getattr(mirrored_owner, name).values]
    test.assertLen(copies, 2)
    test.assertAllEqual(copies[0], copies[1], msg=name)
    reference = getattr(single_owner, name).numpy()
    if exact:
      test.assertAllEqual(copies[0], reference, msg=name)
    else:
      test.assertAllClose(copies[0], reference, rtol=1e-6, atol=1e-6,
                          msg=name)


def check_config_round_trip(test, sampler):
  """Keras serialize/deserialize gives the same class and config; returns it."""
  config = sampler.get_config()
  again = tf.keras.layers.deserialize(tf.keras.layers.serialize(sampler))
  test.assertIsInstance(again, type(sampler))
  test.assertEqual(again.get_config(), config)
  return again
