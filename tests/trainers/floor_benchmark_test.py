"""The plain-TFRS floor of the benchmarks (issue 17).

`benchmarking.PlainTFRSModel` is the TFRS tutorial two-tower; its loss is
checked against a hand-computed in-batch softmax. `time_steps` interleaves
it with the variants and gives each variant its ratio to the floor of its
batch. Nothing here asserts a duration.
"""

import math
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from trainers.pipeline import benchmarking


class PlainTFRSModelTest(tf.test.TestCase):

  def test_loss_is_in_batch_softmax_of_normalised_towers(self):
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(temperature=0.1)
    model = benchmarking.create_floor(dataset, config)
    batch = helpers.first_batch(dataset, 6)
    loss = float(model.compute_loss(batch, training=True))
    u = model.user_model(batch["user_id"]).numpy()
    v = model.item_model(batch["item_id"]).numpy()
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    logits = (u @ v.T / 0.1).astype(np.float64)
    logits -= logits.max(axis=1, keepdims=True)
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    self.assertAllClose(loss, -np.trace(log_softmax), rtol=1e-4)

  def test_embeddings_for_evaluation(self):
    dataset = helpers.tiny_dataset()
    model = benchmarking.create_floor(dataset, helpers.tiny_config())
    items = model.catalog_embeddings(batch_size=7)
    self.assertEqual(items.shape, (dataset.catalog.num_items, 8))
    self.assertAllClose(np.linalg.norm(items, axis=1),
                        np.ones(dataset.catalog.num_items), atol=1e-5)
    users = model.query_embeddings(dataset.users[:5])
    self.assertAllClose(
        users, model._tower(model.user_model,
                            tf.constant(dataset.users[:5])).numpy())


class FloorVariantTest(tf.test.TestCase):

  def test_apply_variant_accepts_floor_and_checks_the_rest(self):
    base = helpers.tiny_config()
    floor = benchmarking.parse_variant("plain_tfrs")
    config = benchmarking.apply_variant(base, floor, 2)
    self.assertEqual((config.sampler, config.seed), ("plain_tfrs", 2))
    with self.assertRaisesRegex(ValueError, "batch_size"):
      benchmarking.apply_variant(base, benchmarking.Variant(
          "f", "plain_tfrs", {"batch_size": 0}), 0)
    with self.assertRaisesRegex(ValueError, "id query tower"):
      benchmarking.apply_variant(base, benchmarking.Variant(
          "f", "plain_tfrs", {"query_tower": "mean"}), 0)

  def test_run_grid_runs_the_floor_with_run_floor(self):
    calls = []

    def fake(name):
      def run(config, dataset=None):
        calls.append((name, config.sampler))
        return {"recall@50": 0.1, "step_seconds": 0.002}
      return run

    base = helpers.tiny_config()
    variants = [benchmarking.Variant("plain_tfrs", "plain_tfrs", {}),
                benchmarking.parse_variant("in_batch")]
    with mock.patch.object(benchmarking, "run_floor", fake("floor")):
      rows = benchmarking.run_grid(base, variants, [0], self.get_temp_dir(),
                                   run_fn=fake("experiment"), dataset=object())
    self.assertEqual(calls, [("floor", "plain_tfrs"),
                             ("experiment", "in_batch")])
    summary = benchmarking.summarize(rows, reference="plain_tfrs")
    self.assertEqual([s["step ratio"] for s in summary], [1.0, 1.0])


class TimeStepsTest(tf.test.TestCase):

  def test_floor_is_the_reference(self):
    dataset = helpers.tiny_dataset()
    rows = benchmarking.time_steps(
        helpers.tiny_config(), [benchmarking.parse_variant("a=in_batch")],
        dataset, steps=6, rounds=2)
    self.assertEqual([r["variant"] for r in rows], ["plain_tfrs", "a"])
    floor, variant = rows
    self.assertEqual(floor["sampler"], "plain_tfrs")
    self.assertEqual(floor["floor_ratio"], 1.0)
    self.assertEqual(variant["step_ms"], min(variant["round_ms"]))
    self.assertEqual(variant["floor_ratio"],
                     variant["step_ms"] / floor["step_ms"])

  @pytest.mark.slow
  def test_one_floor_per_batch_and_ratios(self):
    dataset = helpers.tiny_dataset()
    base = helpers.tiny_config()
    variants = [benchmarking.parse_variant(s) for s in (
        "a=in_batch:batch_size=8", "b=in_batch_logq:batch_size=16")]
    rows = benchmarking.time_steps(base, variants, dataset, steps=7,
                                   rounds=2)
    self.assertEqual([r["variant"] for r in rows],
                     ["plain_tfrs_B8", "plain_tfrs_B16", "a", "b"])
    self.assertEqual([r["batch_size"] for r in rows], [8, 16, 8, 16])
    by_label = {r["variant"]: r for r in rows}
    for row in rows:
      self.assertLen(row["round_ms"], 2)
      self.assertEqual(row["step_ms"], min(row["round_ms"]))
      floor = by_label["plain_tfrs_B%d" % row["batch_size"]]
      self.assertEqual(row["floor_ratio"],
                       row["step_ms"] / floor["step_ms"])
    self.assertEqual(by_label["plain_tfrs_B8"]["floor_ratio"], 1.0)
    table = benchmarking.timing_table(rows, title="t")
    self.assertIn("| a | 8 | %.2f |" % by_label["a"]["step_ms"], table)

  def test_without_floor_ratios_are_nan(self):
    dataset = helpers.tiny_dataset()
    rows = benchmarking.time_steps(
        helpers.tiny_config(), [benchmarking.parse_variant("in_batch")],
        dataset, steps=6, rounds=1, floor=False)
    self.assertEqual([r["variant"] for r in rows], ["in_batch"])
    self.assertTrue(math.isnan(rows[0]["floor_ratio"]))


if __name__ == "__main__":
  tf.test.main()
