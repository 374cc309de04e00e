"""Markdown tables of a defaults study: runs next to popularity and EASE^R.

Reads the `metrics.json` of every run folder under `--runs` whose name is
`<prefix><set>-<label>` (e.g. `d-ml100k-xir`), and the baselines of each set
(`<baselines>/<set>/{popularity,ease}_baseline-test/metrics.json`), and
prints one table per set: the best validation value of the run's monitored
metric (recall@50 at the defaults), test recall@50, HR@10 and NDCG@10, the
lift over popularity (test recall@50 / popularity's), the ratio to EASE^R's
recall@50, the best validation epoch and the training minutes.

Seeds: a run folder `<prefix><set>-<label>.s<k>` is seed `k` of `<label>`
(`<label>` alone is the first seed); a label with several seeds gets one
row of mean +- sample standard deviation and its number of seeds `n`
(the lift is the mean's).

  python tools/study_table.py --runs=runs/study --baselines=runs/baselines \
      --prefix=d- --sets=ml100k,ml1m30,amz30

Pure Python (no TensorFlow).
"""

import argparse
import glob
import json
import os
import re
import statistics
import sys

COLUMNS = ("recall@50", "hr@10", "ndcg@10")
# The best validation value of the monitored metric (`metrics.json`).
VALIDATION = "best_validation"
SEED_SUFFIX = re.compile(r"\.s(\d+)$")
# Short set names of the run folders -> the baselines' folder names.
ALIASES = {"amz": "amazon"}


def _load(path):
  with open(path) as f:
    return json.load(f)


def _baseline(baselines, data_set, name, runs=None, prefix=""):
  # A baseline run among the runs (`<prefix><set>-popularity_baseline`)
  # first; then a subsampled set ("amz30") is compared with its own
  # baselines when they exist, else with the whole set's.
  if runs is not None:
    path = os.path.join(runs, "%s%s-%s" % (prefix, data_set, name),
                        "metrics.json")
    if os.path.exists(path):
      return _load(path), data_set
  whole = data_set.rstrip("0123456789")
  for folder in (data_set, whole, ALIASES.get(whole, whole)):
    path = os.path.join(baselines, folder, name + "-test", "metrics.json")
    if os.path.exists(path):
      return _load(path), folder
  return None, None


def table(runs, baselines, prefix, data_set):
  """The markdown table of one data set (a list of lines)."""
  pop, pop_from = _baseline(baselines, data_set, "popularity_baseline",
                            runs, prefix)
  ease, _ = _baseline(baselines, data_set, "ease_baseline", runs, prefix)
  by_label = {}
  for path in sorted(glob.glob(os.path.join(
      runs, "%s%s-*" % (prefix, data_set), "metrics.json"))):
    label = os.path.basename(os.path.dirname(path))[
        len(prefix) + len(data_set) + 1:]
    if label.endswith("_baseline"):
      continue  # a reference row
    by_label.setdefault(SEED_SUFFIX.sub("", label), []).append(_load(path))
  rows = [(label, summarize(ms)) for label, ms in by_label.items()]
  rows.sort(key=lambda r: -r[1]["recall@50"][0])
  lines = ["| run | seeds | validation | recall@50 | HR@10 | NDCG@10 | lift "
           "over popularity | / EASE^R | best epoch | training min | "
           "stopped |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
           "| ---: | --- |"]
  for name, ref in (("popularity", pop), ("EASE^R", ease)):
    if ref is not None:
      lines.append("| *%s* | | | %.4f | %.4f | %.4f | %s | %s | | | |" % (
          name, ref["recall@50"], ref["hr@10"], ref["ndcg@10"],
          "1.00" if name == "popularity" else
          "%.2f" % (ref["recall@50"] / pop["recall@50"]) if pop else "",
          "%.2f" % (ref["recall@50"] / ease["recall@50"]) if ease else ""))
  for label, m in rows:
    mean = m["recall@50"][0]
    lift = mean / pop["recall@50"] if pop else float("nan")
    lines.append("| %s | %d | %s | %s | %s | %s | %.2f%s | %s | %s | %.1f | "
                 "%s |"
                 % (label, m["n"], _cell(m[VALIDATION]) if VALIDATION in m
                    else "", _cell(m["recall@50"]), _cell(m["hr@10"]),
                    _cell(m["ndcg@10"]), lift,
                    " (< 1.3)" if lift < 1.3 else "",
                    "%.2f" % (mean / ease["recall@50"]) if ease else "",
                    m["best_epoch"], m["minutes"], m["stopped"]))
  if pop_from and pop_from != data_set:
    lines.append("")
    lines.append("Baselines: the whole %s set (this set is a subsample of "
                 "its users)." % pop_from)
  return lines


def summarize(metrics):
  """Mean and sample std (0 for one seed) of `COLUMNS` over seeds' metrics.

  And of `VALIDATION` when every seed has it.
  """
  out = {"n": len(metrics)}
  keys = COLUMNS + ((VALIDATION,) if all(
      m.get(VALIDATION) is not None for m in metrics) else ())
  for key in keys:
    values = [m[key] for m in metrics]
    out[key] = (statistics.fmean(values),
                statistics.stdev(values) if len(values) > 1 else 0.0)
  out["best_epoch"] = "/".join(str(m.get("best_epoch", "")) for m in metrics)
  out["minutes"] = statistics.fmean(
      m.get("train_seconds", float("nan")) / 60.0 for m in metrics)
  out["stopped"] = ", ".join(sorted({m.get("stopped_reason") or ""
                                     for m in metrics} - {""}))
  return out


def _cell(mean_std):
  mean, std = mean_std
  return "%.4f" % mean if not std else "%.4f ± %.4f" % (mean, std)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--runs", required=True)
  parser.add_argument("--baselines", required=True)
  parser.add_argument("--prefix", default="d-")
  parser.add_argument("--sets", required=True,
                      help="comma-separated set names, e.g. ml100k,amz30")
  args = parser.parse_args(argv)
  for data_set in args.sets.split(","):
    print("### %s\n" % data_set)
    print("\n".join(table(args.runs, args.baselines, args.prefix, data_set)))
    print()
  return 0


if __name__ == "__main__":
  sys.exit(main())
