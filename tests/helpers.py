"""Small shared fixtures: a tiny synthetic data set and a model factory."""

import numpy as np
import tensorflow as tf

from tfrs_negsamp import data as data_lib
from tfrs_negsamp import experiment


def tiny_dataset(num_users=60, num_items=40, per_user=12, seed=0):
  return data_lib.load_dataset(
      "synthetic", seed=seed, num_users=num_users, num_items=num_items,
      interactions_per_user=per_user)


def tiny_config(**overrides):
  config = experiment.ExperimentConfig(
      batch_size=8, epochs=1, embedding_dim=8, verbose=0,
      sampler_options={"num_buckets": 256})
  for k, v in overrides.items():
    setattr(config, k, v)
  return config


def first_batch(dataset, batch_size, offset=0):
  rows = dataset.train.subset(np.arange(offset, offset + batch_size))
  return next(iter(data_lib.to_tf_dataset(rows, batch_size=batch_size)))


def copy_weights(src: tf.keras.Model, dst: tf.keras.Model):
  for a, b in zip(src.weights, dst.weights):
    b.assign(a.read_value())
