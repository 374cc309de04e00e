"""SavedModel export: top-k identical after a round trip in a fresh process."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import fitting
from tfrs_negsamp.serving import export

# Runs in a fresh interpreter that imports only tensorflow and scann.
_FRESH = r"""
import json, sys
import tensorflow as tf
import scann  # registers the ScaNN ops
loaded = tf.saved_model.load(sys.argv[1])
users = tf.constant(json.loads(sys.argv[2]))
scores, ids = loaded(users)
sig = loaded.signatures["serving_default"](user_id=users)
print(json.dumps({"ids": ids.numpy().astype(str).tolist(),
                  "scores": scores.numpy().tolist(),
                  "sig_ids": sig["item_ids"].numpy().astype(str).tolist()}))
"""


def _fresh_process_top_k(path, users):
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  out = subprocess.run([sys.executable, "-c", _FRESH, path,
                        json.dumps(list(users))], capture_output=True,
                       text=True, env=env, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


class ExportTest(tf.test.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.dataset = helpers.tiny_dataset(num_users=80, num_items=300)
    config = helpers.tiny_config(epochs=1)
    strategy = tf.distribute.get_strategy()
    cls.model = assembly.create_model(cls.dataset, config, strategy)
    fitting.train(cls.model, cls.dataset, config, strategy)
    cls.users = [str(u) for u in cls.dataset.users[:5]] + ["never-seen"]

  def _round_trip(self, kind):
    path = os.path.join(self.get_temp_dir(), kind)
    index = export.build_index(
        self.model.query_model, self.dataset.catalog.item_ids,
        self.model.catalog_embeddings(), kind=kind, k=10)
    scores, ids = index(tf.constant(self.users))
    export.export(index, path, self.users[:1])
    fresh = _fresh_process_top_k(path, self.users)
    self.assertEqual(fresh["ids"], ids.numpy().astype(str).tolist())
    self.assertEqual(fresh["sig_ids"], fresh["ids"])
    self.assertAllClose(fresh["scores"], scores.numpy(), atol=1e-5)
    with open(os.path.join(path, export.METADATA_FILE)) as f:
      self.assertEqual(json.load(f)["k"], 10)
    return ids.numpy().astype(str)

  def test_scann_round_trip_in_a_fresh_process(self):
    scann_ids = self._round_trip("scann")
    # ScaNN agrees with exact search on most of the top-10.
    brute = export.build_index(
        self.model.query_model, self.dataset.catalog.item_ids,
        self.model.catalog_embeddings(), kind="brute_force", k=10)
    _, exact = brute(tf.constant(self.users))
    exact = exact.numpy().astype(str)
    # 8 of 17 leaves searched: approximate, and the partition varies with
    # the (thread-order dependent) training run, so a loose bound here ...
    overlap = np.mean([len(set(a) & set(b)) / 10.0
                       for a, b in zip(scann_ids, exact)])
    self.assertGreaterEqual(overlap, 0.7)
    # ... and exactness when every leaf is searched (re-scoring is exact):
    # the same top-10 scores as brute force (ids may swap among ties).
    leaves = export.scann_parameters(self.dataset.catalog.num_items,
                                     10)["num_leaves"]
    full = export.build_index(
        self.model.query_model, self.dataset.catalog.item_ids,
        self.model.catalog_embeddings(), kind="scann", k=10,
        scann_overrides={"num_leaves_to_search": leaves})
    full_scores, _ = full(tf.constant(self.users))
    exact_scores, _ = brute(tf.constant(self.users))
    self.assertAllClose(full_scores, exact_scores, atol=1e-4)

  def test_brute_force_round_trip_matches_model_scores(self):
    ids = self._round_trip("brute_force")
    # The top-1 of the index is the argmax of <u, v> over the catalog.
    u = self.model.query_embeddings(self.users)
    v = self.model.catalog_embeddings()
    best = self.dataset.catalog.item_ids[np.argmax(u @ v.T, axis=1)]
    self.assertAllEqual(ids[:, 0], best)

  def test_bad_arguments(self):
    with self.assertRaisesRegex(ValueError, "unknown index 'faiss'"):
      export.build_index(self.model.query_model, ["1"], np.ones([1, 8]),
                         kind="faiss")
    with self.assertRaisesRegex(ValueError, "k must be in"):
      export.build_index(self.model.query_model, ["1", "2"], np.ones([2, 8]),
                         kind="brute_force", k=5)
    with self.assertRaisesRegex(ValueError, "do not match"):
      export.build_index(self.model.query_model, ["1", "2"], np.ones([3, 8]),
                         kind="brute_force", k=1)

  def test_scann_parameters_scale_with_the_catalog(self):
    small = export.scann_parameters(300, 10)
    large = export.scann_parameters(1_000_000, 10)
    self.assertLessEqual(small["num_leaves"], 300)
    self.assertEqual(large["num_leaves"], 1000)
    self.assertLessEqual(small["num_reordering_candidates"], 300)
    self.assertGreaterEqual(large["num_leaves_to_search"], 8)


if __name__ == "__main__":
  tf.test.main()
