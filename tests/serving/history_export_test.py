"""History-tower export: string histories in, same top-k after a round trip.

A stand-in history tower (masked mean of an item embedding, optionally plus
a user embedding) keeps these tests independent of the real towers and
fast; `history_experiment_test.py` exports a trained one.
"""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tfrs_negsamp.serving import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
L = 4
NUM_ITEMS = 60
ITEM_IDS = np.array(["i%d" % p for p in range(NUM_ITEMS)])

# Runs in a fresh interpreter that imports only tensorflow and scann.
_FRESH = r"""
import json, sys
import tensorflow as tf
import scann  # registers the ScaNN ops
loaded = tf.saved_model.load(sys.argv[1])
inputs = {k: tf.constant(v) for k, v in json.loads(sys.argv[2]).items()}
sig = loaded.signatures["serving_default"]
out = sig(**inputs)
print(json.dumps({"ids": out["item_ids"].numpy().astype(str).tolist(),
                  "scores": out["scores"].numpy().tolist(),
                  "inputs": sorted(sig.structured_input_signature[1])}))
"""


def fresh_process_top_k(path, inputs):
  """`serving_default(**inputs)` in a process importing only TF and ScaNN."""
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  out = subprocess.run([sys.executable, "-c", _FRESH, path,
                        json.dumps(inputs)], capture_output=True, text=True,
                       env=env, timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


class MeanHistoryTower(tf.keras.Model):
  """Stand-in: masked mean of item embeddings (+ a user embedding)."""

  def __init__(self, num_items, dim, users=None):
    super().__init__()
    self.items = tf.keras.layers.Embedding(num_items + 1, dim)
    self.lookup = None
    if users is not None:
      self.lookup = tf.keras.layers.StringLookup(vocabulary=list(users))
      self.users = tf.keras.layers.Embedding(len(users) + 1, dim)

  def call(self, inputs):
    history = inputs["history"]
    mask = tf.cast(history > 0, tf.float32)[..., None]
    x = tf.reduce_sum(self.items(history) * mask, axis=1) / tf.maximum(
        tf.reduce_sum(mask, axis=1), 1.0)
    if self.lookup is not None:
      x += self.users(self.lookup(inputs["user_id"]))
    return x


# Rows of different forms: padding anywhere, unknown ids, longer than L,
# shorter than L, empty; and the model indices (position + 1) each should
# become (left-padded, most recent last, the last L known ids).
HISTORIES = [
    ["i3", "i7", "i11", "", "", ""],
    ["", "", "", "i0", "i59", "i1"],
    ["i1", "i2", "i3", "i4", "i5", "i6"],
    ["i9", "nope", "", "i8", "unknown", ""],
    ["", "", "", "", "", ""],
    ["i20", "i20", "i21", "i22", "i23", "i24"],
]
EXPECTED = [
    [0, 4, 8, 12],
    [0, 1, 60, 2],
    [4, 5, 6, 7],
    [0, 0, 10, 9],
    [0, 0, 0, 0],
    [22, 23, 24, 25],
]


class CompactHistoryTest(tf.test.TestCase):

  def test_right_aligns_drops_padding_and_keeps_the_last_l(self):
    indices = tf.constant([[0, 5, 0, 7, 0], [1, 2, 3, 4, 5], [0, 0, 0, 0, 0],
                           [3, 0, 0, 0, 0]], tf.int64)
    self.assertAllEqual(export.compact_history(indices, 3),
                        [[0, 5, 7], [3, 4, 5], [0, 0, 0], [0, 0, 3]])
    # Shorter than L: left-padded up to L.
    self.assertAllEqual(export.compact_history(indices[:, :2], 4),
                        [[0, 0, 0, 5], [0, 0, 1, 2], [0, 0, 0, 0],
                         [0, 0, 0, 3]])
    self.assertEqual(export.compact_history(indices, 3).shape[1], 3)

  def test_string_histories_map_through_the_catalog(self):
    tower = MeanHistoryTower(NUM_ITEMS, 8)
    wrapper = export.HistoryQueryModel(tower, ITEM_IDS, L)
    got = wrapper({"history": tf.constant(HISTORIES)})
    want = tower({"history": tf.constant(EXPECTED, tf.int64)})
    self.assertAllClose(got, want)
    with self.assertRaisesRegex(ValueError, "history_length must be >= 1"):
      export.HistoryQueryModel(tower, ITEM_IDS, 0)


class HistoryExportTest(tf.test.TestCase):

  def _round_trip(self, kind, use_user_id):
    tf.keras.utils.set_random_seed(1)
    users = ["u%d" % i for i in range(10)]
    tower = MeanHistoryTower(NUM_ITEMS, 8,
                             users=users if use_user_id else None)
    wrapper = export.HistoryQueryModel(tower, ITEM_IDS, L,
                                       use_user_id=use_user_id)
    item_embeddings = np.random.default_rng(0).normal(
        size=(NUM_ITEMS, 8)).astype(np.float32)
    index = export.build_index(wrapper, ITEM_IDS, item_embeddings, kind=kind,
                               k=10)
    inputs = {"history": HISTORIES}
    if use_user_id:
      # A seen user, an unseen one ("" and "stranger": the OOV row).
      inputs["user_id"] = ["u1", "u2", "stranger", "", "u9", "u3"]
    path = os.path.join(self.get_temp_dir(), "%s_%s" % (kind, use_user_id))
    export.export(index, path, users[:1], metadata={"index": kind})
    # The in-memory reference: the tower on hand-made model indices.
    features = {"history": tf.constant(EXPECTED, tf.int64)}
    if use_user_id:
      features["user_id"] = tf.constant(inputs["user_id"])
    query = tower(features).numpy()
    scores = query @ item_embeddings.T
    fresh = fresh_process_top_k(path, inputs)
    self.assertEqual(fresh["inputs"], sorted(inputs))
    fresh_scores = np.array(fresh["scores"])
    self.assertAllClose(fresh_scores, -np.sort(-scores, axis=1)[:, :10],
                        atol=1e-5)
    # Same ids as the in-memory index (rows without near-ties).
    mem_scores, mem_ids = index({k: tf.constant(v)
                                 for k, v in inputs.items()})
    self.assertAllClose(fresh_scores, mem_scores, atol=1e-5)
    self.assertEqual(fresh["ids"], mem_ids.numpy().astype(str).tolist())
    with open(os.path.join(path, export.METADATA_FILE)) as f:
      meta = json.load(f)
    self.assertEqual(meta["query_input"], "history")
    self.assertEqual(meta["history_length"], L)
    self.assertEqual(meta["inputs"], ["history", "user_id"] if use_user_id
                     else ["history"])
    self.assertEqual(meta["index"], kind)

  def test_scann_history_round_trip_in_a_fresh_process(self):
    self._round_trip("scann", use_user_id=False)

  def test_brute_force_history_and_user_round_trip(self):
    self._round_trip("brute_force", use_user_id=True)

  def test_query_cli_takes_a_history(self):
    tower = MeanHistoryTower(NUM_ITEMS, 8)
    wrapper = export.HistoryQueryModel(tower, ITEM_IDS, L)
    items = np.random.default_rng(2).normal(size=(NUM_ITEMS, 8))
    index = export.build_index(wrapper, ITEM_IDS, items, kind="brute_force",
                               k=5)
    path = os.path.join(self.get_temp_dir(), "cli")
    export.export(index, path, ["u"])
    _, want = index({"history": tf.constant([["i3", "nope", "i7"]])})
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-m", "trainers.query", "--model_dir=%s" % path,
         "--history=i3,nope,i7", "--k=5"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=False)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    self.assertEqual(answer["history"], ["i3", "nope", "i7"])
    self.assertEqual(answer["item_ids"], want[0].numpy().astype(str).tolist())


if __name__ == "__main__":
  tf.test.main()
