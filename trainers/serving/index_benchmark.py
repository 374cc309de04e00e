"""ScaNN vs exact brute force: recall@k, queries per second and build time.

What is measured, per item table:

- Ground truth: the exact top-k by inner product, computed in NumPy by
  chunked matmul over the items (float32), independent of the indexes.
- `brute_force`: the `tfrs.layers.factorized_top_k.BruteForce` layer (the
  `--index=brute_force` export), recall checked against the ground truth.
- `scann` (the serving configuration): the `tfrs.layers.factorized_top_k.ScaNN`
  layer with `export.scann_parameters(N, k)` (or overrides), i.e. what
  `--index=scann` exports and `trainers.serve` answers with.
- ScaNN variants: the same built index with a different number of leaves
  searched per query. The TFRS layer fixes that number at build time, so the
  variants call the layer's own searcher (`scann_ops.searcher_from_module` of
  the layer's serialized index, `search_batched_parallel(...,
  leaves_to_search=L)`, the call the layer itself makes): one build, several
  operating points; the build time is the layer's.

Every search runs inside a `tf.function` (as in the SavedModel signature) on
query embeddings (no query tower), in batches of 1 and 256; QPS is queries
answered per wall-clock second after one warm-up call, bounded by a query
count and a time budget per measurement.

Synthetic tables (`clustered_table`) are meant to be realistic for ANN, not
uniform noise (on which every method degrades to exhaustive search): unit
vectors around `N / 500` cluster centres of log-normal sizes, with queries
drawn near random items (a noisy copy of an item, renormalised), as user
embeddings sit near the items they interact with.
"""

import csv
import dataclasses
import math
import os
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

CSV_FILE = "results.csv"
MARKDOWN_FILE = "results.md"
PLOT_FILE = "recall_vs_qps.png"


@dataclasses.dataclass
class Table:
  """Items and queries of one benchmark (unit rows, float32)."""
  name: str
  items: np.ndarray     # [N, d]
  queries: np.ndarray   # [Q, d]
  description: str = ""


@dataclasses.dataclass
class Measurement:
  """One row of the results table."""
  table: str
  num_items: int
  dim: int
  index: str            # brute_force | scann
  via: str              # what was timed
  num_leaves: Optional[int]
  leaves_to_search: Optional[int]
  reorder: Optional[int]
  build_seconds: Optional[float]
  recall: float
  qps_batch1: float
  qps_batch256: float
  speedup_batch1: float = float("nan")
  speedup_batch256: float = float("nan")
  serving_default: bool = False


def _normalize(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def clustered_table(num_items: int, dim: int = 64, num_queries: int = 1000,
                    seed: int = 0, items_per_cluster: int = 500,
                    spread: float = 1.0, query_noise: float = 0.5,
                    chunk: int = 100_000) -> Table:
  """Clustered unit vectors and queries near items (see the module doc).

  Args:
    num_items: N.
    dim: d.
    num_queries: Q, each a noisy copy of a uniformly drawn item.
    seed: NumPy seed.
    items_per_cluster: mean cluster size (N / this many centres).
    spread: within-cluster noise (relative to the unit centre).
    query_noise: query noise (relative to the unit item).
    chunk: rows generated at a time (bounds float64 temporaries).

  Returns:
    A `Table` named like "synthetic-1M".
  """
  rng = np.random.default_rng(seed)
  num_clusters = max(8, num_items // items_per_cluster)
  centres = _normalize(rng.standard_normal((num_clusters, dim)))
  weights = rng.lognormal(0.0, 1.0, num_clusters)
  assignment = rng.choice(num_clusters, size=num_items,
                          p=weights / weights.sum())
  items = np.empty((num_items, dim), np.float32)
  for start in range(0, num_items, chunk):
    end = min(start + chunk, num_items)
    noise = rng.standard_normal((end - start, dim)) * spread / math.sqrt(dim)
    items[start:end] = _normalize(centres[assignment[start:end]] + noise)
  sources = rng.integers(0, num_items, num_queries)
  noise = rng.standard_normal((num_queries, dim)) * query_noise / math.sqrt(
      dim)
  queries = _normalize(items[sources] + noise).astype(np.float32)
  size = ("%dM" % (num_items // 1_000_000) if num_items % 1_000_000 == 0
          else "%dK" % (num_items // 1000) if num_items % 1000 == 0
          else str(num_items))
  return Table(
      name="synthetic-%s" % size, items=items, queries=queries,
      description="%d unit vectors (d=%d) in %d Gaussian clusters "
      "(log-normal sizes, spread %.1f); %d queries = noisy items (noise %.1f)"
      % (num_items, dim, num_clusters, spread, num_queries, query_noise))


def exact_top_k(items: np.ndarray, queries: np.ndarray, k: int,
                chunk: int = 32768) -> np.ndarray:
  """Exact top-`k` item indices `[Q, k]` by inner product (best first)."""
  num_queries = queries.shape[0]
  best_scores = np.full((num_queries, k), -np.inf, np.float32)
  best_ids = np.zeros((num_queries, k), np.int64)
  rows = np.arange(num_queries)[:, None]
  for start in range(0, items.shape[0], chunk):
    scores = queries @ items[start:start + chunk].T
    kk = min(k, scores.shape[1])
    top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    merged_scores = np.concatenate([best_scores, scores[rows, top]], axis=1)
    merged_ids = np.concatenate([best_ids, top + start], axis=1)
    keep = np.argpartition(-merged_scores, k - 1, axis=1)[:, :k]
    best_scores, best_ids = merged_scores[rows, keep], merged_ids[rows, keep]
  order = np.argsort(-best_scores, axis=1)
  return best_ids[rows, order]


def recall_at_k(found: np.ndarray, exact: np.ndarray) -> float:
  """Mean over queries of |found ∩ exact| / k (rows of `[Q, k]` ids)."""
  k = exact.shape[1]
  return float(np.mean([len(set(a[:k].tolist()) & set(b.tolist())) / k
                        for a, b in zip(found, exact)]))


def measure_qps(search: Callable, queries: np.ndarray, batch_size: int,
                max_queries: int, max_seconds: float, rounds: int = 3,
                min_round_seconds: float = 0.5) -> Tuple[float, int]:
  """Queries per second of `search` over batches of `queries`.

  One warm-up call, then `rounds` rounds. A round searches batches (cycling
  over `queries`) until it has done `max_queries / rounds` queries and run
  `min_round_seconds`, or has run `max_seconds / rounds` (at least one
  batch). The median round rate is reported, which damps bursts of other
  load on a shared machine; the minimum duration keeps fast searches from
  being timed over a few milliseconds.

  Returns:
    (queries per second, queries timed in all rounds).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  per_round = max(batch_size, max_queries // rounds)
  batches = []
  for start in range(0, per_round, batch_size):
    rows = np.arange(start, start + batch_size) % queries.shape[0]
    batches.append(tf.constant(queries[rows]))
  _sync(search(batches[0]))
  budget = max_seconds / rounds
  rates, total = [], 0
  for _ in range(rounds):
    done, begin = 0, time.perf_counter()
    while True:
      _sync(search(batches[(done // batch_size) % len(batches)]))
      done += batch_size
      elapsed = time.perf_counter() - begin
      if elapsed >= budget or (done >= per_round and
                               elapsed >= min(min_round_seconds, budget)):
        break
    rates.append(done / (time.perf_counter() - begin))
    total += done
  return float(np.median(rates)), total


def _sync(result):
  return result[1].numpy()  # indices: forces the computation to finish


def _search_all(search: Callable, queries: np.ndarray,
                batch_size: int = 256) -> np.ndarray:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  out = [search(tf.constant(queries[i:i + batch_size]))[1].numpy()
         for i in range(0, queries.shape[0], batch_size)]
  return np.concatenate(out, axis=0).astype(np.int64)


def _tf_function(fn: Callable, dim: int) -> Callable:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.function(fn, input_signature=[tf.TensorSpec([None, dim],
                                                        tf.float32)])


def benchmark_table(table: Table, k: int = 10,
                    scann_overrides: Optional[Dict[str, int]] = None,
                    search_multipliers: Sequence[float] = (0.25, 0.5, 2.0),
                    batch1_queries: int = 500, batch256_queries: int = 1024,
                    max_seconds: float = 8.0,
                    log: Callable[[str], None] = print) -> List[Measurement]:
  """Brute force, the serving ScaNN index and its variants on one table.

  Args:
    table: items and queries.
    k: the k of recall@k and of every search.
    scann_overrides: ScaNN parameters replacing the derived ones.
    search_multipliers: variants search this many times the serving
      configuration's leaves (1 is the serving row itself).
    batch1_queries, batch256_queries: most queries timed per measurement.
    max_seconds: time budget of one QPS measurement.
    log: progress lines.

  Returns:
    Rows: brute force, ScaNN (serving configuration), then the variants.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_recommenders as tfrs  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.serving import export  # pylint: disable=g-import-not-at-top
  export.require_scann()
  # pylint: disable-next=g-import-not-at-top
  from scann.scann_ops.py import scann_ops

  num_items, dim = table.items.shape
  tag = "[%s %dx%d]" % (table.name, num_items, dim)
  begin = time.perf_counter()
  exact = exact_top_k(table.items, table.queries, k)
  log("%s exact top-%d of %d queries (NumPy): %.1f s"
      % (tag, k, table.queries.shape[0], time.perf_counter() - begin))
  rows: List[Measurement] = []

  def measure(index, via, search, build_seconds, params=None, leaves=None,
              serving=False):
    recall = recall_at_k(_search_all(search, table.queries), exact)
    qps1, n1 = measure_qps(search, table.queries, 1, batch1_queries,
                           max_seconds)
    qps256, n256 = measure_qps(search, table.queries, 256, batch256_queries,
                               max_seconds)
    row = Measurement(
        table=table.name, num_items=num_items, dim=dim, index=index, via=via,
        num_leaves=params and params["num_leaves"], leaves_to_search=leaves,
        reorder=params and params["num_reordering_candidates"],
        build_seconds=build_seconds, recall=recall, qps_batch1=qps1,
        qps_batch256=qps256, serving_default=serving)
    if rows:
      row.speedup_batch1 = qps1 / rows[0].qps_batch1
      row.speedup_batch256 = qps256 / rows[0].qps_batch256
    rows.append(row)
    log("%s %-11s %-34s build %s recall@%d %.4f | batch 1: %.0f q/s (%d "
        "queries) | batch 256: %.0f q/s (%d queries)"
        % (tag, index, via if leaves is None else "%s L=%d" % (via, leaves),
           "%.1f s" % build_seconds if build_seconds is not None else "-",
           k, recall, qps1, n1, qps256, n256))

  items = tf.constant(table.items)
  begin = time.perf_counter()
  brute = tfrs.layers.factorized_top_k.BruteForce(k=k)
  brute.index(items)
  build = time.perf_counter() - begin
  measure("brute_force", "tfrs BruteForce layer",
          _tf_function(brute.call, dim), build)
  del brute

  params = export.scann_parameters(num_items, k, scann_overrides)
  begin = time.perf_counter()
  layer = tfrs.layers.factorized_top_k.ScaNN(k=k, **params)
  layer.index(items)
  build = time.perf_counter() - begin
  measure("scann", "tfrs ScaNN layer", _tf_function(layer.call, dim), build,
          params, params["num_leaves_to_search"], serving=True)
  searcher = scann_ops.searcher_from_module(
      layer._serialized_searcher)  # pylint: disable=protected-access
  seen = {params["num_leaves_to_search"]}
  for multiplier in search_multipliers:
    leaves = int(min(params["num_leaves"], max(1, round(
        multiplier * params["num_leaves_to_search"]))))
    if leaves in seen:
      continue
    seen.add(leaves)

    def search(q, leaves=leaves):
      result = searcher.search_batched_parallel(
          q, final_num_neighbors=k, leaves_to_search=leaves)
      return result.distances, result.indices

    measure("scann", "scann op, same index", _tf_function(search, dim),
            None, params, leaves)
  return rows


def trained_table(data_path: str, epochs: int = 2,
                  sampler: str = "in_batch_logq", seed: int = 0,
                  log: Callable[[str], None] = print) -> Table:
  """Items and users of a model trained here on MovieLens (`data_path`).

  Trains `epochs` epochs with `trainers.pipeline.experiment` (default settings:
  d=64, normalised towers); the table holds every catalog item's embedding
  and every training user's query embedding.
  """
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import configuration  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import fitting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  config = configuration.ExperimentConfig(
      dataset="movielens", data_path=data_path, sampler=sampler,
      epochs=epochs, seed=seed, verbose=0)
  config.validate()
  begin = time.perf_counter()
  dataset = inputs.load_data(config)
  strategy = strategies.make_strategy("default")
  model = assembly.create_model(dataset, config, strategy)
  fitting.train(model, dataset, config, strategy)
  items = model.catalog_embeddings().astype(np.float32)
  queries = model.query_embeddings(dataset.users).astype(np.float32)
  name = os.path.basename(os.path.normpath(data_path)) or "movielens"
  log("[%s] trained %d epochs (%s) in %.1f s: %d items, %d users"
      % (name, epochs, sampler, time.perf_counter() - begin,
         items.shape[0], queries.shape[0]))
  return Table(name="%s-trained" % name, items=items, queries=queries,
               description="the catalog (%d items) and users (%d) of a "
               "two-tower model trained here for %d epochs (%s, d=%d)"
               % (items.shape[0], queries.shape[0], epochs, sampler,
                  items.shape[1]))


def write_csv(rows: Sequence[Measurement], path: str) -> None:
  fields = [f.name for f in dataclasses.fields(Measurement)]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=fields)
    writer.writeheader()
    for row in rows:
      writer.writerow(dataclasses.asdict(row))


def _fmt(value, pattern="%.0f"):
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return pattern % value


def markdown_table(rows: Sequence[Measurement], k: int = 10) -> str:
  lines = [
      "| table | items | index (timed via) | leaves | leaves searched | "
      "reorder | build s | recall@%d | QPS batch 1 | QPS batch 256 | "
      "speed-up b1 | speed-up b256 |" % k,
      "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    name = r.index + (" **(serving)**" if r.serving_default else "")
    lines.append("| %s | %s | %s (%s) | %s | %s | %s | %s | %.4f | %s | %s "
                 "| %s | %s |" % (
                     r.table, "{:,}".format(r.num_items), name, r.via,
                     _fmt(r.num_leaves, "%d"), _fmt(r.leaves_to_search, "%d"),
                     _fmt(r.reorder, "%d"), _fmt(r.build_seconds, "%.1f"),
                     r.recall, _fmt(r.qps_batch1), _fmt(r.qps_batch256),
                     _fmt(r.speedup_batch1, "%.1fx"),
                     _fmt(r.speedup_batch256, "%.1fx")))
  return "\n".join(lines) + "\n"


def target_check(rows: Sequence[Measurement], table: str,
                 min_recall: float = 0.95, min_speedup: float = 10.0) -> str:
  """One line per ScaNN row of `table`: does it reach the target?"""
  out = []
  for r in rows:
    if r.table != table or r.index != "scann":
      continue
    ok1 = r.recall >= min_recall and r.speedup_batch1 >= min_speedup
    ok256 = r.recall >= min_recall and r.speedup_batch256 >= min_speedup
    out.append("- %s L=%d%s: recall@10 %.4f, %.1fx (batch 1) %s, %.1fx "
               "(batch 256) %s" % (
                   table, r.leaves_to_search,
                   " (serving)" if r.serving_default else "", r.recall,
                   r.speedup_batch1, "meets" if ok1 else "misses",
                   r.speedup_batch256, "meets" if ok256 else "misses"))
  return "\n".join(out)


def plot(rows: Sequence[Measurement], path: str, k: int = 10) -> None:
  """Recall@k vs QPS (log), one panel per batch size, one line per table."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  tables = list(dict.fromkeys(r.table for r in rows))
  colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
  fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
  for ax, (attr, title) in zip(axes, (("qps_batch1", "batch 1"),
                                      ("qps_batch256", "batch 256"))):
    for i, name in enumerate(tables):
      color = colors[i % len(colors)]
      scann = sorted((r for r in rows
                      if r.table == name and r.index == "scann"),
                     key=lambda r: r.leaves_to_search)
      xs = [getattr(r, attr) for r in scann]
      ax.plot(xs, [r.recall for r in scann], "o-", color=color,
              label="%s ScaNN" % name)
      for r in scann:
        ax.annotate("L=%d%s" % (r.leaves_to_search,
                                "*" if r.serving_default else ""),
                    (getattr(r, attr), r.recall), fontsize=7,
                    textcoords="offset points", xytext=(4, -9))
      for r in rows:
        if r.table == name and r.index == "brute_force":
          ax.plot([getattr(r, attr)], [r.recall], "x", color=color,
                  markersize=10, mew=2, label="%s brute force" % name)
    ax.set_xscale("log")
    ax.set_xlabel("queries per second (log scale)")
    ax.set_ylabel("recall@%d vs exact" % k)
    ax.set_title("%s (L = leaves searched, * = serving setting)" % title)
    ax.grid(True, which="both", alpha=0.3)
  axes[0].legend(fontsize=7, loc="best")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def write_results(rows: Sequence[Measurement], output_dir: str,
                  header: str = "", k: int = 10) -> List[str]:
  """Writes results.csv, results.md and recall_vs_qps.png to `output_dir`."""
  os.makedirs(output_dir, exist_ok=True)
  paths = [os.path.join(output_dir, name)
           for name in (CSV_FILE, MARKDOWN_FILE, PLOT_FILE)]
  write_csv(rows, paths[0])
  largest = max(rows, key=lambda r: r.num_items).table
  with open(paths[1], "w") as f:
    f.write(header)
    f.write(markdown_table(rows, k))
    f.write("\nTarget on the largest table (recall@%d >= 0.95 at >= 10x the "
            "brute-force QPS):\n\n" % k)
    f.write(target_check(rows, largest) + "\n")
    f.write("\n![recall vs QPS](%s)\n" % PLOT_FILE)
  plot(rows, paths[2], k)
  return paths
