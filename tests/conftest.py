"""Test set-up: Keras 2, two logical CPUs, deterministic ops.

The CPU is split into two logical devices before TensorFlow initialises its
runtime, so that `tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])` runs
here as it would on two GPUs. Single-device code keeps using `/cpu:0`.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
  tf.config.set_logical_device_configuration(
      _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
except RuntimeError:  # already initialised by an earlier import
  pass

import pytest  # noqa: E402

SHARED_ML100K = os.path.abspath(
    os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                 "movielens-100k"))


@pytest.fixture(autouse=True)
def _clean_keras_session():
  tf.keras.backend.clear_session()
  tf.keras.utils.set_random_seed(0)
  yield


@pytest.fixture
def ml100k_path():
  if not os.path.exists(os.path.join(SHARED_ML100K, "u.data")):
    raise FileNotFoundError(
        "MovieLens 100K not found at %s: the tests expect ../shared beside "
        "the checkout." % SHARED_ML100K)
  return SHARED_ML100K


def pytest_collection_modifyitems(config, items):
  """Drops `tf.test.TestCase.test_session`, a context manager, not a test."""
  del config
  items[:] = [item for item in items if item.name != "test_session"]
