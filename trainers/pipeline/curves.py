"""Time to quality: validation curves against training time, and the table.

Runs trained with `--validate_every` record `validation_curve` in their
`metrics.json` (`validation.ValidationMonitor`): one point per evaluation,
with the training seconds so far. `write_time_to_quality` reads the runs of
a benchmark (`OUTPUT/runs/LABEL/seedS/metrics.json`) and writes
`time_to_quality.md` (per run: steps and epochs trained, the best
validation epoch and the training time to it, the test metrics at the best
epoch, why training stopped) next to reference rows (e.g. published
results), and `validation_vs_time.png` (the monitored metric against
training minutes, one line per run).
"""

import json
import os
from typing import Any, Dict, List, Optional, Sequence

REPORTED = ("recall@10", "ndcg@10", "recall@50")


def _runs(output_dir: str, labels: Sequence[str]) -> List[Dict[str, Any]]:
  runs = []
  for label in labels:
    folder = os.path.join(output_dir, "runs", label)
    if not os.path.isdir(folder):
      continue
    for seed_dir in sorted(os.listdir(folder)):
      path = os.path.join(folder, seed_dir, "metrics.json")
      if os.path.exists(path):
        with open(path) as f:
          runs.append(dict(json.load(f), label=label, seed_dir=seed_dir))
  return runs


def time_to_quality_table(runs: List[Dict[str, Any]],
                          references: Sequence[Dict[str, Any]] = (),
                          title: str = "") -> str:
  """The markdown table (see the module docstring)."""
  head = ["variant", "steps", "epochs", "step s", "best epoch",
          "train min to best", "stopped"] + ["test " + m for m in REPORTED]
  lines = []
  if title:
    lines += ["## " + title, ""]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for run in runs:
    curve = run.get("validation_curve") or []
    best = next((p for p in curve if p["epoch"] == run.get("best_epoch")),
                None)
    lines.append("| %s | %d | %d | %.2f | %s | %s | %s | %s |" % (
        run["label"], run.get("optimizer_steps", run.get("steps", 0)),
        curve[-1]["epoch"] if curve else 0, run.get("step_seconds",
                                                    float("nan")),
        run.get("best_epoch", "–"),
        "%.1f" % (best["train_seconds"] / 60.0) if best else "–",
        run.get("stopped_reason", "–"),
        " | ".join("%.4f" % run[m] if m in run else "–" for m in REPORTED)))
  for ref in references:
    lines.append("| %s | – | – | – | – | – | – | %s |" % (
        ref["label"], " | ".join("%.4f" % ref[m] if m in ref else "–"
                                 for m in REPORTED)))
  return "\n".join(lines) + "\n"


def plot_curves(runs: List[Dict[str, Any]], path: str,
                metric: Optional[str] = None) -> Optional[str]:
  """The monitored validation metric against training minutes."""
  curves = [r for r in runs if r.get("validation_curve")]
  if not curves:
    return None
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  metric = metric or curves[0].get("validation_metric", "ndcg@10")
  fig, ax = plt.subplots(figsize=(7.2, 4.8))
  for run in curves:
    points = run["validation_curve"]
    ax.plot([p["train_seconds"] / 60.0 for p in points],
            [p.get(metric, float("nan")) for p in points], marker=".",
            label=run["label"])
  ax.set_xlabel("training time (minutes)")
  ax.set_ylabel("validation " + metric)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def write_time_to_quality(output_dir: str, labels: Sequence[str],
                          references: Sequence[Dict[str, Any]] = (),
                          title: str = "") -> str:
  """Writes time_to_quality.md and validation_vs_time.png; returns the
  table."""
  runs = _runs(output_dir, labels)
  table = time_to_quality_table(runs, references, title)
  with open(os.path.join(output_dir, "time_to_quality.md"), "w") as f:
    f.write(table)
  plot_curves(runs, os.path.join(output_dir, "validation_vs_time.png"))
  return table
