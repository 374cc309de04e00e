"""Side-by-side benchmark runs: variants x seeds in one process.

A *variant* is a label plus overrides of an `ExperimentConfig` (fields such
as `batch_size`, or sampler options such as `memory_size`), written
`label=sampler[:key=value...]`, e.g. `cbns_4B=cross_batch:memory_size=512`.
Every finished run leaves `OUTPUT/runs/LABEL/seedS/metrics.json`; a re-run of
the same command skips those, so an interrupted benchmark resumes.

Outputs: `results.csv` (one row per variant x seed), `results.md` (mean ± std
per variant, step-time ratio to the reference variant) and PNG plots.
"""

import contextlib
import copy
import csv
import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from tfrs_negsamp import experiment

COHORTS = ("head", "mid", "tail")
TABLE_COLUMNS = (
    ("recall@10", "recall@10"), ("recall@50", "recall@50"),
    ("recall@100", "recall@100"), ("hr@10", "hr@10"),
    ("ndcg@10", "ndcg@10"), ("head hr@10", "cohorts.head.hr@10"),
    ("mid hr@10", "cohorts.mid.hr@10"), ("tail hr@10", "cohorts.tail.hr@10"),
    ("balance", "balance"), ("step ms", "step_ms"),
    ("examples/s", "examples_per_second"))


@dataclasses.dataclass(frozen=True)
class Variant:
  label: str
  sampler: str
  overrides: Dict[str, Any]


def _convert(value: str) -> Any:
  for cast in (int, float):
    with contextlib.suppress(ValueError):  # not that type: try the next
      return cast(value)
  if value.lower() in ("true", "false"):
    return value.lower() == "true"
  return value


def parse_variant(spec: str) -> Variant:
  """`label=sampler:key=value:...` (or just `sampler`) -> `Variant`."""
  spec = spec.strip()
  label, _, rest = spec.partition("=") if "=" in spec.split(":")[0] else (
      None, None, spec)
  parts = rest.split(":")
  sampler = parts[0]
  overrides = {}
  for part in parts[1:]:
    key, sep, value = part.partition("=")
    if not sep or not key:
      raise ValueError("bad variant %r: expected key=value after ':', got %r"
                       % (spec, part))
    overrides[key] = _convert(value)
  return Variant(label or sampler, sampler, overrides)


def apply_variant(base: experiment.ExperimentConfig, variant: Variant,
                  seed: int) -> experiment.ExperimentConfig:
  """A copy of `base` with the variant's sampler, overrides and seed."""
  config = copy.deepcopy(base)
  config.sampler = variant.sampler
  config.seed = seed
  fields = {f.name for f in dataclasses.fields(config)}
  for key, value in variant.overrides.items():
    if key in fields:
      setattr(config, key, value)
    else:
      config.sampler_options[key] = value
  config.validate()
  return config


def load_best_settings(path: str) -> Dict[str, Dict[str, Any]]:
  """`best.json` of `trainers.tune`: {sampler: {"params": {...}, ...}}."""
  with open(path) as f:
    best = json.load(f)
  if not isinstance(best, dict) or not all(
      isinstance(v, dict) and isinstance(v.get("params"), dict)
      for v in best.values()):
    raise ValueError("%s is not a best.json of trainers.tune "
                     "({sampler: {\"params\": {...}}})." % path)
  return {sampler: dict(entry["params"]) for sampler, entry in best.items()}


def with_best_settings(variants: Sequence[Variant],
                       best: Dict[str, Dict[str, Any]]) -> List[Variant]:
  """Each variant with the tuned settings of its sampler underneath.

  A variant's own overrides win over the tuned values (so a suite can still
  pin, e.g., the batch size); samplers without tuned settings are unchanged.
  """
  return [Variant(v.label, v.sampler,
                  dict(best.get(v.sampler, {}), **v.overrides))
          for v in variants]


def flatten(metrics: Dict[str, Any]) -> Dict[str, Any]:
  """Nested metrics -> flat `a.b.c` keys (lists dropped)."""
  flat = {}

  def walk(prefix, value):
    if isinstance(value, dict):
      for k, v in value.items():
        walk(prefix + "." + k if prefix else k, v)
    elif not isinstance(value, (list, tuple)):
      flat[prefix] = value
  walk("", metrics)
  if "step_seconds" in flat and flat["step_seconds"] is not None:
    flat["step_ms"] = 1000.0 * flat["step_seconds"]
  return flat


class Progress:
  """One line per run: `[i/n] label seed s ... elapsed, ETA`."""

  def __init__(self, total: int):
    self.total, self.done, self.start = total, 0, time.time()

  def report(self, text: str) -> None:
    self.done += 1
    elapsed = time.time() - self.start
    eta = elapsed / self.done * (self.total - self.done)
    print("[%d/%d] %s  (elapsed %.0fs, eta %.0fs)"
          % (self.done, self.total, text, elapsed, eta), file=sys.stderr,
          flush=True)


def run_grid(base: experiment.ExperimentConfig, variants: Sequence[Variant],
             seeds: Sequence[int], output_dir: str,
             run_fn: Optional[Callable[..., Dict[str, Any]]] = None,
             dataset=None) -> List[Dict[str, Any]]:
  """Runs every variant with every seed (skipping finished ones)."""
  run_fn = run_fn or experiment.run
  labels = [v.label for v in variants]
  if len(set(labels)) != len(labels):
    raise ValueError("variant labels must be unique: %s" % labels)
  if dataset is None:
    dataset = experiment.load_data(base)
  rows = []
  progress = Progress(len(variants) * len(seeds))
  for variant in variants:
    for seed in seeds:
      run_dir = os.path.join(output_dir, "runs", variant.label,
                             "seed%d" % seed)
      path = os.path.join(run_dir, "metrics.json")
      if os.path.exists(path):
        with open(path) as f:
          metrics = json.load(f)
        status = "done before, skipped"
      else:
        config = apply_variant(base, variant, seed)
        config.output_dir = run_dir
        metrics = run_fn(config, dataset=dataset)
        status = "recall@50=%.4f step=%.1fms" % (
            metrics["recall@50"], 1000 * (metrics.get("step_seconds") or 0))
      progress.report("%s seed %d: %s" % (variant.label, seed, status))
      row = flatten(metrics)
      row.update({"variant": variant.label, "sampler": variant.sampler,
                  "seed": seed})
      rows.append(row)
  return rows


def _mean_std(values: List[float]):
  values = [v for v in values if v is not None and not (
      isinstance(v, float) and math.isnan(v))]
  if not values:
    return float("nan"), float("nan")
  return float(np.mean(values)), float(np.std(values))


def summarize(rows: List[Dict[str, Any]],
              reference: Optional[str] = None) -> List[Dict[str, Any]]:
  """Mean and std of every table column per variant (in first-seen order)."""
  order = []
  for row in rows:
    if row["variant"] not in order:
      order.append(row["variant"])
  summary = []
  for label in order:
    mine = [r for r in rows if r["variant"] == label]
    entry = {"variant": label, "sampler": mine[0]["sampler"],
             "runs": len(mine)}
    for name, key in TABLE_COLUMNS:
      entry[name] = _mean_std([r.get(key) for r in mine])
    summary.append(entry)
  ref = next((s for s in summary if s["variant"] == reference), None)
  for entry in summary:
    if ref and not math.isnan(ref["step ms"][0]) and ref["step ms"][0] > 0:
      entry["step ratio"] = entry["step ms"][0] / ref["step ms"][0]
    else:
      entry["step ratio"] = float("nan")
  return summary


def write_csv(rows: List[Dict[str, Any]], path: str) -> None:
  keys = ["variant", "sampler", "seed"]
  for row in rows:
    keys += [k for k in row if k not in keys]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow(row)


def _fmt(mean_std, digits=4):
  mean, std = mean_std
  if math.isnan(mean):
    return "–"
  if abs(mean) >= 100:
    return "%.0f ± %.0f" % (mean, std)
  return ("%.*f ± %.*f" % (digits, mean, digits, std))


def markdown_table(summary: List[Dict[str, Any]], title: str = "",
                   reference: Optional[str] = None) -> str:
  names = [n for n, _ in TABLE_COLUMNS]
  header = ["variant", "runs"] + names + ["step ratio"]
  lines = []
  if title:
    lines += ["## " + title, ""]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "---|" * len(header))
  for s in summary:
    cells = [s["variant"], str(s["runs"])]
    for name in names:
      cells.append(_fmt(s[name], 1 if name in ("step ms", "examples/s")
                        else 4))
    ratio = s["step ratio"]
    cells.append("–" if math.isnan(ratio) else "%.2f" % ratio)
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("Mean ± std over seeds. Metrics: full-corpus ranking, "
               "training items excluded, averaged per user; cohorts are "
               "equal-interaction-mass tertiles of training counts; balance "
               "= 1 − Gini(head/mid/tail HR@10). step ms: median wall time "
               "of a training step; step ratio: to `%s`, measured in the "
               "same process." % (reference or "–"))
  return "\n".join(lines) + "\n"


def plot(summary: List[Dict[str, Any]], output_dir: str,
         prefix: str = "") -> List[str]:
  """PNG plots: balance vs HR@10, per-cohort HR@10 bars, recall@50 vs step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []

  def scatter(xkey, ykey, xlabel, ylabel, name):
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for s in summary:
      (x, xe), (y, ye) = s[xkey], s[ykey]
      if math.isnan(x) or math.isnan(y):
        continue
      ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", capsize=3)
      ax.annotate(s["variant"], (x, y), textcoords="offset points",
                  xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(output_dir, prefix + name)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)

  scatter("hr@10", "balance", "HR@10", "balance (1 − Gini of cohort HR@10)",
          "balance_vs_hr10.png")
  scatter("step ms", "recall@50", "training step time (ms)", "recall@50",
          "recall50_vs_step_time.png")

  fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(summary) + 2), 4.8))
  width = 0.8 / len(COHORTS)
  x = np.arange(len(summary))
  for i, cohort in enumerate(COHORTS):
    means = [s["%s hr@10" % cohort][0] for s in summary]
    stds = [s["%s hr@10" % cohort][1] for s in summary]
    ax.bar(x + (i - 1) * width, means, width, yerr=stds, capsize=2,
           label=cohort)
  ax.set_xticks(x)
  ax.set_xticklabels([s["variant"] for s in summary], rotation=30,
                     ha="right", fontsize=8)
  ax.set_ylabel("HR@10")
  ax.legend()
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  path = os.path.join(output_dir, prefix + "cohort_hr10.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  paths.append(path)
  return paths


def write_report(rows: List[Dict[str, Any]], output_dir: str,
                 title: str = "", reference: Optional[str] = None,
                 preamble: str = "") -> Dict[str, Any]:
  """results.csv, results.md and the plots; returns the summary."""
  os.makedirs(output_dir, exist_ok=True)
  write_csv(rows, os.path.join(output_dir, "results.csv"))
  summary = summarize(rows, reference)
  with open(os.path.join(output_dir, "results.md"), "w") as f:
    if preamble:
      f.write(preamble.rstrip() + "\n\n")
    f.write(markdown_table(summary, title, reference))
  plot(summary, output_dir)
  return {"summary": summary}
