"""Shared serving fixtures: one tiny exported model and a server on it."""

import collections
import os

import pytest
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import exporting
from trainers.pipeline import fitting

TinyExport = collections.namedtuple("TinyExport", "path users num_items k")

# Small limits, so that the 413 and 400 cases need only small bodies.
MAX_BODY_BYTES = 16 * 1024
MAX_INSTANCES = 64


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
  """A tiny two-tower model trained one epoch, exported with ScaNN (k=20)."""
  dataset = helpers.tiny_dataset(num_users=80, num_items=300)
  config = helpers.tiny_config(epochs=1)
  strategy = tf.distribute.get_strategy()
  model = assembly.create_model(dataset, config, strategy)
  fitting.train(model, dataset, config, strategy)
  path = os.path.join(str(tmp_path_factory.mktemp("serving")), "export")
  exporting.export_model(model, dataset, path, kind="scann", k=20)
  return TinyExport(path=path, users=[str(u) for u in dataset.users[:6]],
                    num_items=dataset.catalog.num_items, k=20)


@pytest.fixture(scope="session")
def served(tiny_export):
  """A `ModelServer` on `tiny_export`, on a free loopback port (a thread)."""
  from trainers.serving import server  # pylint: disable=g-import-not-at-top
  predictor = server.SavedModelPredictor(tiny_export.path)
  srv = server.ModelServer(predictor, port=0, max_body_bytes=MAX_BODY_BYTES,
                           max_instances=MAX_INSTANCES, threads=2).start()
  yield srv
  srv.stop()
