"""The floors of the benchmarks (issues 17 and 27).

`benchmarking.PlainTFRSModel` is the TFRS tutorial two-tower; its loss is
checked against a hand-computed in-batch softmax, as is the loss of
`TFRSLogQFloor` (TFRS's Retrieval with the batch's sampling probabilities
and accidental hits removed, on the variant's towers, and its `[B, B + M]`
form). `time_steps` interleaves the floors with the variants and gives each
variant its ratios to the floors of its settings. Nothing here asserts a
duration.
"""

import json
import math
import os
import subprocess
import sys
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from trainers.pipeline import benchmarking
from trainers.pipeline import inputs
from trainers.pipeline import tuning

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SMALL = ["--dataset=synthetic", "--synthetic_users=120",
         "--synthetic_items=40", "--synthetic_interactions=8",
         "--embedding_dim=8", "--batch_size=16", "--epochs=1", "--verbose=0",
         "--query_tower=id", "--validate_every=0"]


def _program(name, args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3",
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  return subprocess.run([sys.executable, "-m", "trainers." + name] + args,
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=600, check=False)


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


def np_logq_loss(u, v, ids, probability, temperature, num_rows):
  """Sum over rows of the softmax CE of `u v^T / tau - log p`, positive of
  row `i` at column `i`, other columns with the row's id masked."""
  logits = (u @ v.T / temperature - np.log(probability)[None, :]).astype(
      np.float64)
  rows = np.arange(num_rows)
  hit = ids[None, :] == ids[:num_rows, None]
  hit[rows, rows] = False
  logits[hit] = -np.inf
  logits -= logits.max(axis=1, keepdims=True)
  log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
  return -log_softmax[rows, rows].sum()


def first_training_batch(dataset, config):
  return next(iter(inputs.train_dataset(dataset, config, shuffle=False)))


class TFRSLogQFloorTest(tf.test.TestCase):

  def test_loss_is_tfrs_logq_softmax_on_the_variants_towers(self):
    dataset = helpers.tiny_dataset(num_items=12, per_user=6)  # repeats
    for tower in ("id", "mean"):
      config = helpers.tiny_config(temperature=0.1, query_tower=tower,
                                   batch_size=16, training_rows="window")
      model = benchmarking.create_logq_floor(dataset, config)
      self.assertEqual(model.towers.uses_history, tower != "id")
      batch = first_training_batch(dataset, config)
      loss = float(model.compute_loss(batch, training=True))
      u = model.towers.query(batch).numpy()
      ids = model.towers.item_index(batch["item_id"]).numpy()
      v = model.towers.item_model(ids).numpy()
      self.assertLess(len(set(ids)), len(ids))  # 16 rows, 12 items: hits
      probability = np.array([np.mean(ids == i) for i in ids])
      self.assertAllClose(
          loss, np_logq_loss(u, v, ids, probability, 0.1, len(ids)),
          rtol=1e-4, msg=tower)

  def test_memory_floor_adds_the_last_m_candidates(self):
    # M = 2B: the first step sees B empty slots (id -1, zero embeddings,
    # probability 1) and writes its candidates at slots 0..B-1; the second
    # step's columns are its batch, then the memory.
    dataset = helpers.tiny_dataset()
    config = helpers.tiny_config(temperature=0.1, batch_size=8)
    model = benchmarking.create_logq_floor(dataset, config, memory_size=16)
    batches = iter(inputs.train_dataset(dataset, config, shuffle=False))
    first = next(batches)
    model.compute_loss(first, training=True)
    ids = model.towers.item_index(first["item_id"]).numpy()
    self.assertAllClose(model.memory.numpy()[:8],
                        model.towers.item_model(ids).numpy())
    self.assertAllEqual(model.memory_ids.numpy(),
                        np.concatenate([ids, -np.ones(8, np.int64)]))
    self.assertEqual(int(model.head.numpy()), 8)
    second = next(batches)
    memory = (model.memory.numpy(), model.memory_ids.numpy(),
              model.memory_probability.numpy())
    loss = float(model.compute_loss(second, training=False))
    u = model.towers.query(second).numpy()
    ids2 = model.towers.item_index(second["item_id"]).numpy()
    v = np.concatenate([model.towers.item_model(ids2).numpy(), memory[0]])
    probability = np.concatenate(
        [[np.mean(ids2 == i) for i in ids2], memory[2]])
    self.assertAllClose(
        loss, np_logq_loss(u, v, np.concatenate([ids2, memory[1]]),
                           probability, 0.1, 8), rtol=1e-4)
    with self.assertRaisesRegex(ValueError, "M >= B"):
      benchmarking.create_logq_floor(dataset, config, memory_size=4)

  def test_sequence_rows_are_refused(self):
    # Sequence rows make every position a query: not the floor's [B, B].
    config = helpers.tiny_config(query_tower="mean")
    with self.assertRaisesRegex(ValueError, "--training_rows=window"):
      benchmarking.create_logq_floor(helpers.tiny_dataset(), config)
    benchmarking.check_logq_floor(helpers.tiny_config(
        query_tower="mean", training_rows="window"))

  @pytest.mark.slow
  def test_time_steps_gives_ratios_to_the_floors_of_each_setting(self):
    dataset = helpers.tiny_dataset()
    variants = [benchmarking.parse_variant(v) for v in (
        "a=in_batch_logq:batch_size=8",
        "m=in_batch_logq:batch_size=8:query_tower=mean:"
        "training_rows=window",
        "c=cross_batch:batch_size=8:memory_size=16")]
    rows = benchmarking.time_steps(helpers.tiny_config(), variants, dataset,
                                   steps=6, rounds=1, logq_floor=True)
    self.assertEqual([r["variant"] for r in rows], [
        "plain_tfrs", "tfrs_logq_B8", "tfrs_logq_B8_mean",
        "tfrs_logq_M16_B8", "a", "m", "c"])
    by_label = {r["variant"]: r for r in rows}
    ms = lambda label: by_label[label]["step_ms"]  # noqa: E731
    for label, floor in (("a", "tfrs_logq_B8"), ("m", "tfrs_logq_B8_mean"),
                         ("c", "tfrs_logq_B8")):
      self.assertEqual(by_label[label]["logq_floor_ratio"],
                       ms(label) / ms(floor))
      self.assertEqual(by_label[label]["floor_ratio"],
                       ms(label) / ms("plain_tfrs"))
    self.assertEqual(by_label["c"]["arithmetic_ratio"],
                     ms("c") / ms("tfrs_logq_M16_B8"))
    self.assertTrue(math.isnan(by_label["a"]["arithmetic_ratio"]))
    self.assertEqual(by_label["tfrs_logq_B8_mean"]["query_tower"], "mean")
    table = benchmarking.timing_table(rows)
    self.assertIn("ratio to tfrs_logq | ratio to its [B, B + M] floor |",
                  table)

  def test_target_table_reads_ratios_and_bounds(self):
    rows = [{"variant": "f", "step_ms": 2.0},
            {"variant": "x", "step_ms": 5.0, "logq_floor_ratio": 1.25,
             "arithmetic_ratio": float("nan")},
            {"variant": "y", "step_ms": 3.0, "arithmetic_ratio": 1.1}]
    target = benchmarking.Target
    table = benchmarking.target_table(rows, [
        target("x/f", "x", "f", 2.0),
        target("x/own", "x", benchmarking.OWN_LOGQ_FLOOR, 1.2),
        target("y/arith", "y", benchmarking.OWN_ARITHMETIC_FLOOR),
        target("missing", "z", "f", 1.0),
        target("no denominator", "x", "z", 1.0)])
    self.assertIn("| x/f | x | f | 2.50 | <= 2.00 | no |", table)
    self.assertIn("| x/own | x | logq_floor | 1.25 | <= 1.20 | no |", table)
    self.assertIn("| y/arith | y | arithmetic_floor | 1.10 | – | – |", table)
    self.assertNotIn("missing", table)
    self.assertNotIn("no denominator", table)


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

  def test_every_round_times_its_steps_on_sequence_rows(self):
    # 60 users: 7 batches of 8 sequence rows an epoch, against 88 batches
    # of interactions; each round's `fit` reads 16 batches.
    timers = []

    class Recorded(benchmarking.fitting.StepTimer):

      def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        timers.append(self)

    dataset = helpers.tiny_dataset()
    with mock.patch.object(benchmarking.fitting, "StepTimer", Recorded):
      rows = benchmarking.time_steps(
          helpers.tiny_config(query_tower="sasrec", max_history=10),
          [benchmarking.parse_variant("in_batch_logq")], dataset, steps=16,
          rounds=2, floor=False)
    self.assertEqual([t.steps for t in timers], [16, 16])
    self.assertLen(timers[-1].durations, 16 - 5)
    self.assertTrue(all(math.isfinite(ms) for ms in rows[0]["round_ms"]))

  def test_without_floor_ratios_are_nan(self):
    dataset = helpers.tiny_dataset()
    rows = benchmarking.time_steps(
        helpers.tiny_config(), [benchmarking.parse_variant("in_batch")],
        dataset, steps=6, rounds=1, floor=False)
    self.assertEqual([r["variant"] for r in rows], ["in_batch"])
    self.assertTrue(math.isnan(rows[0]["floor_ratio"]))


class FloorProgramsTest(tf.test.TestCase):
  """The floor in `trainers.train`, `trainers.tune` and the scaling table."""

  def test_the_programs_name_the_floor_as_the_harness_does(self):
    from trainers import common  # pylint: disable=g-import-not-at-top
    self.assertEqual(common.FLOOR, benchmarking.FLOOR)

  def test_train_runs_the_floor_and_refuses_what_it_cannot_run(self):
    out_dir = self.get_temp_dir()
    out = _program("train", SMALL + ["--sampler=plain_tfrs",
                                     "--output_dir=%s" % out_dir])
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    with open(os.path.join(out_dir, "metrics.json")) as f:
      metrics = json.load(f)
    self.assertEqual(metrics["flags"]["sampler"], "plain_tfrs")
    # One epoch of whole batches of 16.
    self.assertEqual(metrics["steps"],
                     metrics["dataset_summary"]["train_rows"] // 16)
    self.assertBetween(metrics["recall@50"], 0.0, 1.0)
    for flag, problem in (("--query_tower=mean", "id query tower"),
                          ("--export_dir=%s/e" % out_dir, "--export_dir")):
      out = _program("train", SMALL + ["--sampler=plain_tfrs", flag])
      self.assertEqual(out.returncode, 2, out.stderr[-2000:])
      self.assertIn(problem, out.stderr)
      self.assertNotIn("Traceback", out.stderr)

  def test_tuning_reports_steps_as_ratios_to_the_floor(self):
    base = helpers.tiny_config(num_validation=1)
    dataset = helpers.tiny_dataset()
    calls = []

    def run_fn(config, dataset=None):
      del dataset
      calls.append(config.sampler)
      return {"recall@50": 0.2, "recall@10": 0.1, "step_seconds": 1.0,
              "eval_split": config.eval_split}

    out = self.get_temp_dir()
    with mock.patch.object(benchmarking, "run_floor") as floor:
      floor.return_value = {"recall@50": 0.1, "step_seconds": 0.25}
      result = tuning.tune(base, ["in_batch"], trials=1, output_dir=out,
                           final_seeds=2, baselines=(), dataset=dataset,
                           run_fn=run_fn, floor=True)
    self.assertEqual(floor.call_count, 2)  # one per final seed
    self.assertEqual(calls, ["in_batch"] * 3)  # 1 trial + 2 seeds
    ratios = {s["variant"]: s["step ratio"] for s in result["summary"]}
    self.assertEqual(ratios, {"plain_tfrs": 1.0, "in_batch": 4.0})
    # A history tower has no floor: refused before any trial runs.
    calls.clear()
    with self.assertRaisesRegex(ValueError, "id query tower"):
      tuning.tune(helpers.tiny_config(num_validation=1, query_tower="mean"),
                  ["in_batch"], trials=1, output_dir=out + "/h",
                  baselines=(), dataset=dataset, run_fn=run_fn, floor=True)
    self.assertEqual(calls, [])

  def test_scaling_table_divides_by_the_floor_of_each_worker_count(self):
    out_dir = self.get_temp_dir()
    # Finished runs are read back, not re-run: one fake metrics.json each.
    step_ms = {("plain_tfrs", 1): 2.0, ("plain_tfrs", 2): 4.0,
               ("in_batch_logq", 1): 3.0, ("in_batch_logq", 2): 5.0}
    for (sampler, workers), ms in step_ms.items():
      run_dir = os.path.join(out_dir, "runs", "%s.w%d" % (sampler, workers))
      os.makedirs(run_dir)
      with open(os.path.join(run_dir, "metrics.json"), "w") as f:
        json.dump({"flags": {"batch_size": 64}, "steps": 10,
                   "step_seconds": ms / 1000.0,
                   "examples_per_second": 64000.0 / ms,
                   "train_seconds": 1.0, "recall@50": 0.3}, f)
    out = _program("bench_scaling", [
        "--output_dir=%s" % out_dir, "--workers=1,2",
        "--samplers=in_batch_logq", "--", "--dataset=synthetic"])
    self.assertEqual(out.returncode, 0, out.stderr[-3000:])
    with open(os.path.join(out_dir, "results.md")) as f:
      table = f.read()
    self.assertIn("| plain_tfrs | 1 | 64 | 2.0 | 32000 | 0 | 1.00 | 1.00 |",
                  table)
    self.assertIn("| in_batch_logq | 1 | 64 | 3.0 | 21333 | 0 | 1.00 | 1.50 |",
                  table)
    self.assertIn("| in_batch_logq | 2 | 64 | 5.0 | 12800 | 0 | 0.60 | 1.25 |",
                  table)


if __name__ == "__main__":
  tf.test.main()
