"""History-tower export: string histories in, same top-k after a round trip.

A stand-in history tower (masked mean of an item embedding, optionally plus
a user embedding) keeps these tests independent of the real towers and
fast; `history_experiment_test.py` exports a trained one.
"""

import json
import os

import numpy as np
import tensorflow as tf

from tests.serving import stand_ins
from tfrs_negsamp.serving import export

L = 4
NUM_ITEMS = 60
ITEM_IDS = np.array(["i%d" % p for p in range(NUM_ITEMS)])

def fresh_process_top_k(path, inputs, signature="serving_default"):
  """`signature(**inputs)` in a process importing only TF and ScaNN.

  Returns `{"ids", "scores", "inputs"}` and every output by name.
  """
  out = stand_ins.fresh_outputs(path, inputs, signature=signature)
  answer = {"ids": out["item_ids"].tolist(), "scores": out["scores"],
            "inputs": out["__inputs__"]}
  answer.update(out)
  return answer


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
# What the export leaves out of each row's answer: every known id of the
# history (also those beyond the last L), and which entries are unknown.
EXCLUDED = [
    {"i3", "i7", "i11"}, {"i0", "i59", "i1"},
    {"i1", "i2", "i3", "i4", "i5", "i6"}, {"i9", "i8"}, set(),
    {"i20", "i21", "i22", "i23", "i24"},
]
UNKNOWN = [[h not in ("",) and h not in set(ITEM_IDS) for h in row]
           for row in HISTORIES]


def top_k(scores, k, exclude=None):
  """Exact top-k positions and scores per row, `exclude[row]` ids out."""
  scores = np.array(scores, np.float64)
  for row, ids in enumerate(exclude or []):
    for item in ids:
      scores[row, int(item[1:])] = -np.inf
  order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
  return order, np.take_along_axis(scores, order, axis=1)


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
    # Kept: the plain top-10, as the in-memory index has it.
    kept = fresh_process_top_k(path, inputs, signature="keep_history_items")
    self.assertEqual(kept["inputs"], sorted(inputs))
    _, want = top_k(scores, 10)
    self.assertAllClose(kept["scores"], want, atol=1e-5)
    mem_scores, mem_ids = index({k: tf.constant(v)
                                 for k, v in inputs.items()})
    self.assertAllClose(kept["scores"], mem_scores, atol=1e-5)
    self.assertEqual(kept["ids"], mem_ids.numpy().astype(str).tolist())
    self.assertAllEqual(kept["excluded"], [0] * len(HISTORIES))
    # By default: the top-10 of the items not in the history.
    fresh = fresh_process_top_k(path, inputs)
    order, want = top_k(scores, 10, EXCLUDED)
    self.assertAllClose(fresh["scores"], want, atol=1e-5)
    self.assertEqual(fresh["ids"], ITEM_IDS[order].tolist())
    self.assertAllEqual(fresh["count"], [10] * len(HISTORIES))
    self.assertAllEqual(fresh["excluded"], [len(e) for e in EXCLUDED])
    self.assertAllEqual(fresh["unknown_history"], UNKNOWN)
    for row, ids in enumerate(fresh["ids"]):
      self.assertFalse(set(ids) & EXCLUDED[row])
    with open(os.path.join(path, export.METADATA_FILE)) as f:
      meta = json.load(f)
    self.assertEqual(meta["query_input"], "history")
    self.assertEqual(meta["history_length"], L)
    self.assertEqual(meta["inputs"], ["history", "user_id"] if use_user_id
                     else ["history"])
    self.assertEqual(meta["index"], kind)
    self.assertEqual(meta["exclusion"], "history")
    self.assertEqual(meta["outputs"], ["item_ids", "scores", "count",
                                       "excluded", "unknown_history"])

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
    query = tower({"history": tf.constant([[0, 0, 4, 8]], tf.int64)})
    scores = query.numpy() @ items.T
    argv = ["--model_dir=%s" % path, "--history=i3,nope,i7", "--k=5"]
    # By default the history's items are left out of the answer.
    out = stand_ins.program("query", argv)
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    self.assertEqual(answer["history"], ["i3", "nope", "i7"])
    order, _ = top_k(scores, 5, [{"i3", "i7"}])
    self.assertEqual(answer["item_ids"], ITEM_IDS[order[0]].tolist())
    warning = "--history: unknown item ids ignored: 'nope'"
    self.assertEqual(answer["warnings"], [warning])
    self.assertEqual([l for l in out.stderr.splitlines()
                      if l.startswith("warning")], ["warning: " + warning])
    self.assertIn("2 seen items excluded", out.stdout)
    # --keep_history_items: the in-memory index's answer.
    out = stand_ins.program("query", argv + ["--keep_history_items"])
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    _, want = index({"history": tf.constant([["i3", "nope", "i7"]])})
    self.assertEqual(json.loads(out.stdout.strip().splitlines()[-1])[
        "item_ids"], want[0].numpy().astype(str).tolist())
    # Every id unknown: one line naming them, exit status 2.
    out = stand_ins.program("query", ["--model_dir=%s" % path,
                                      "--history=zz,nope,zz"])
    self.assertEqual(out.returncode, 2, out.stderr[-3000:])
    self.assertNotIn("Traceback", out.stderr)
    self.assertEqual([l for l in out.stderr.splitlines() if l.strip()], [
        "error: --history has no item id of the catalog: 'zz', 'nope' are "
        "unknown; send ids of the export's catalog"])
    # Bad flags for a history export: one line, exit status 2.
    for flags, line in [
        ([], "error: this export takes a history: pass --history=<item "
         "ids, oldest first>, e.g. --history=12,7"),
        (["--history="], "error: --history is empty: pass one or more ids, "
         "e.g. --history=12,7 (item ids, oldest first)"),
        (["--history=i1,", "--k=2"], "error: --history=i1, has an empty id "
         "(entry 2); e.g. --history=12,7 (item ids, oldest first)"),
        (["--history=i1", "--k=6"], "error: --k must be in [1, 5] (the "
         "export's k), got 6")]:
      out = stand_ins.program("query", ["--model_dir=%s" % path] + flags)
      self.assertEqual(out.returncode, 2, out.stderr[-3000:])
      self.assertEqual([l for l in out.stderr.splitlines() if l.strip()],
                       [line])

  def test_query_cli_with_a_user_input_takes_one_user(self):
    tower = MeanHistoryTower(NUM_ITEMS, 8, users=["u1", "u2"])
    wrapper = export.HistoryQueryModel(tower, ITEM_IDS, L, use_user_id=True)
    index = export.build_index(wrapper, ITEM_IDS, np.eye(NUM_ITEMS, 8),
                               kind="brute_force", k=5)
    path = os.path.join(self.get_temp_dir(), "cli_user")
    export.export(index, path, ["u1"])
    out = stand_ins.program("query", ["--model_dir=%s" % path,
                                      "--history=i1", "--user_id=u1,u2"])
    self.assertEqual(out.returncode, 2, out.stderr[-3000:])
    self.assertEqual(out.stderr.strip(), "error: --user_id=u1,u2: a history "
                     "export answers one history, so pass one user id")
    out = stand_ins.program("query", ["--model_dir=%s" % path,
                                      "--history=i1,i2", "--user_id=u2"])
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    self.assertEqual((answer["user_id"], answer["count"]), ("u2", 5))
    self.assertFalse({"i1", "i2"} & set(answer["item_ids"]))


if __name__ == "__main__":
  tf.test.main()
