"""A trained history-tower model, exported through `experiment`: same top-k.

Trains the real towers (`--query_tower=mean|sasrec`) one tiny epoch, exports
them with `exporting.export_model`, reloads the SavedModel in a fresh
process importing only TensorFlow and ScaNN, and compares its top-k with
the in-memory model on the users' evaluation histories (sent as item id
strings, with unknown ids and padding mixed in).
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from tests.serving import history_export_test as hist
from tests.serving import server_test
from trainers.pipeline import assembly
from trainers.pipeline import exporting
from trainers.pipeline import fitting
from tfrs_negsamp.data import sequences
from tfrs_negsamp.serving import export
from trainers.serving import server

L = 5


def _trained(query_tower, **overrides):
  dataset = helpers.tiny_dataset(num_users=30, num_items=60)
  config = helpers.tiny_config(query_tower=query_tower, max_history=L,
                               epochs=1, **overrides)
  strategy = tf.distribute.get_strategy()
  model = assembly.create_model(dataset, config, strategy)
  fitting.train(model, dataset, config, strategy)
  return dataset, config, model


def _string_histories(dataset, indices):
  """Model indices `[U, L]` -> item id strings, with noise the export drops.

  Each row gets "" padding and (when it has items: a history of unknown
  ids only is refused over REST) an unknown id inserted, so it is longer
  than L; the export must still reduce it to the same `[U, L]` indices.
  """
  ids = dataset.catalog.item_ids
  rows = []
  for row in indices:
    items = [str(ids[i - 1]) for i in row if i > 0]
    noise = ["not-an-item"] if items else [""]
    rows.append([""] + noise + items[:1] + [""] + items[1:])
  width = max(len(r) for r in rows)
  return [[""] * (width - len(r)) + r for r in rows]


@pytest.mark.slow  # a training run + a fresh process each (20-60 s)
class HistoryExperimentExportTest(tf.test.TestCase):

  def _check(self, query_tower, kind, **overrides):
    dataset, config, model = _trained(query_tower, **overrides)
    users = [str(u) for u in dataset.users[:8]] + ["never-seen"]
    indices = sequences.evaluation_histories(dataset, users, split="test",
                                             max_history=L)
    inputs = {"history": _string_histories(dataset, indices)}
    features = {"history": tf.constant(indices, tf.int64)}
    if config.history_user_id:
      inputs["user_id"] = users
      features["user_id"] = tf.constant(users)
    path = os.path.join(self.get_temp_dir(), query_tower + kind)
    # Every ScaNN leaf searched: exact re-scoring, so the fresh top-k must
    # equal exact search (ScaNN's approximation is export_test's concern).
    leaves = export.scann_parameters(dataset.catalog.num_items,
                                     10)["num_leaves"]
    exporting.export_model(model, dataset, path, kind=kind, k=10,
                            scann_overrides={"num_leaves_to_search": leaves},
                            history_length=config.max_history)
    with open(os.path.join(path, export.METADATA_FILE)) as f:
      meta = json.load(f)
    self.assertEqual(meta["query_input"], "history")
    self.assertEqual(meta["history_length"], L)
    fresh = hist.fresh_process_top_k(path, inputs,
                                     signature="keep_history_items")
    # By default the history's items are left out.
    default = hist.fresh_process_top_k(path, inputs)
    for ids, history in zip(default["ids"], inputs["history"]):
      self.assertFalse(set(ids) & set(history))
    # In memory (items kept): the trained tower on the indices, exact
    # search.
    query = model.query_model(features, training=False).numpy()
    scores = query @ model.catalog_embeddings().T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    want = np.take_along_axis(scores, order, axis=1)
    self.assertAllClose(np.array(fresh["scores"]), want, atol=1e-4)
    ids = dataset.catalog.item_ids[order]
    for got, exact, row in zip(fresh["ids"], ids, want):
      if np.min(np.diff(-row)) > 1e-4:  # no near-ties: same ids
        self.assertEqual(got, exact.tolist())
    # The REST server on the export answers the same (the last user was
    # never seen in training: the history alone decides).
    predictor = server.SavedModelPredictor(path)
    with server.ModelServer(predictor, port=0, threads=1).start() as srv:
      instances = [dict(zip(inputs, row)) for row in zip(*inputs.values())]
      status, _, body = server_test._call(  # pylint: disable=protected-access
          srv, "POST", server_test.PREDICT,
          {"instances": instances, "keep_history_items": True})
    self.assertEqual(status, 200, body)
    self.assertEqual([p["item_ids"] for p in body["predictions"]],
                     fresh["ids"])
    return fresh

  def test_mean_tower_with_user_id_scann_round_trip(self):
    self._check("mean", "scann", history_user_id=True)

  def test_sasrec_tower_brute_force_round_trip(self):
    self._check("sasrec", "brute_force")

  def test_gru_tower_scann_round_trip(self):
    self._check("gru", "scann")


class ExportModelTest(tf.test.TestCase):

  def test_export_model_needs_the_history_length(self):
    dataset = helpers.tiny_dataset(num_users=30, num_items=60)
    config = helpers.tiny_config(query_tower="mean", max_history=L)
    model = assembly.create_model(dataset, config,
                                    tf.distribute.get_strategy())
    history_length = model.query_model.history_length
    try:
      model.query_model.history_length = None
      with self.assertRaisesRegex(ValueError, "history length"):
        exporting.export_model(model, dataset, self.get_temp_dir(),
                                kind="brute_force", k=5)
    finally:
      model.query_model.history_length = history_length


if __name__ == "__main__":
  tf.test.main()
