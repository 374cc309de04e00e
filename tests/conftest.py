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


def _ml100k_dir():
  """$TFRS_NEGSAMP_ML100K, else ../shared/data/movielens-100k of the checkout.

  Bazel runs the tests from its runfiles tree, which has no ../shared beside
  it: tools/bazel_test.sh passes the directory with --test_env, and without it
  the runfiles' symlinks still lead back to the checkout.
  """
  if os.environ.get("TFRS_NEGSAMP_ML100K"):
    return os.path.abspath(os.environ["TFRS_NEGSAMP_ML100K"])
  rel = os.path.join("..", "..", "shared", "data", "movielens-100k")
  here = os.path.abspath(os.path.join(os.path.dirname(__file__), rel))
  real = os.path.join(os.path.dirname(os.path.realpath(__file__)), rel)
  if os.path.exists(here) or not os.path.exists(real):
    return here
  return os.path.abspath(real)


SHARED_ML100K = _ml100k_dir()


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
