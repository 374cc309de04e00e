"""The index benchmark on a small table: ground truth, rows, output files."""

import csv
import os

import numpy as np

from tfrs_negsamp.serving import export
from trainers.serving import index_benchmark as bench


def test_exact_top_k_matches_a_full_sort():
  rng = np.random.default_rng(0)
  items = rng.standard_normal((1000, 8)).astype(np.float32)
  queries = rng.standard_normal((20, 8)).astype(np.float32)
  got = bench.exact_top_k(items, queries, k=7, chunk=128)
  want = np.argsort(-(queries @ items.T), axis=1)[:, :7]
  np.testing.assert_array_equal(got, want)
  assert bench.recall_at_k(got, want) == 1.0
  assert bench.recall_at_k(got[:, ::-1], want) == 1.0  # order-free
  assert bench.recall_at_k(np.zeros_like(got), want) < 0.2


def test_clustered_table_is_unit_norm_and_clustered():
  table = bench.clustered_table(5000, dim=16, num_queries=50, seed=1)
  assert table.name == "synthetic-5K"
  assert table.items.shape == (5000, 16) and table.queries.shape == (50, 16)
  assert table.items.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(table.items, axis=1), 1.0,
                             atol=1e-5)
  # Queries sit near items: far closer than to a random item.
  best = (table.queries @ table.items.T).max(axis=1)
  assert best.mean() > 0.8
  assert abs(float((table.queries @ table.items[:500].T).mean())) < 0.3


def test_benchmark_rows_and_files(tmp_path):
  table = bench.clustered_table(3000, dim=16, num_queries=64, seed=0)
  lines = []
  rows = bench.benchmark_table(table, k=10, search_multipliers=(0.5, 1, 2),
                               batch1_queries=8, batch256_queries=256,
                               max_seconds=0.5, log=lines.append)
  assert [r.index for r in rows] == ["brute_force"] + ["scann"] * 3
  assert rows[0].recall > 0.99  # the BruteForce layer is exact
  serving = rows[1]
  assert serving.serving_default and serving.build_seconds > 0
  served = export.scann_parameters(3000, 10)["num_leaves_to_search"]
  assert serving.leaves_to_search == served
  # Variants search 0.5x, 1x (the serving row) and 2x the served leaves.
  assert sorted(r.leaves_to_search for r in rows[1:]) == sorted(
      {max(1, round(m * served)) for m in (0.5, 1, 2)})
  assert serving.recall > 0.8
  assert all(r.qps_batch1 > 0 and r.qps_batch256 > 0 for r in rows)
  assert len(lines) == 5  # ground truth + one line per row
  paths = bench.write_results(rows, str(tmp_path), header="# t\n\n")
  assert [os.path.basename(p) for p in paths] == [
      "results.csv", "results.md", "recall_vs_qps.png"]
  with open(paths[0]) as f:
    assert len(list(csv.DictReader(f))) == 4
  markdown = open(paths[1]).read()
  assert "scann **(serving)**" in markdown and "Target" in markdown
  assert os.path.getsize(paths[2]) > 10_000
