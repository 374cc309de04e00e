r"""Multi-worker scaling: the same job on 1, 2, ... workers, side by side.

  python -m trainers.bench_scaling --output_dir=runs/bench_scaling \
      --workers=1,2 --samplers=in_batch_logq,cross_batch,xir -- \
      --dataset=movielens --data_path=../shared/data/movielens-100k \
      --epochs=1 --batch_size=256

Every (sampler, workers) run is `python -m trainers.launch_local
--workers=W -- <flags after --> --sampler=S` (MultiWorkerMirroredStrategy on
loopback, one process and one CPU device per worker), with the same global
batch, so the work per step is split over the workers. From each chief's
metrics.json it reports examples/s, the median step time, the bytes
all-gathered per step by the model and the sampler (the candidates' ids and
embeddings, XIR's draw counts; measured from the traced step), the
speed-up over one worker and, with `--floor` (default), the step time as a
ratio to the plain-TFRS floor (`--sampler=plain_tfrs`) on as many workers.
Writes OUTPUT_DIR/results.csv, results.md and
scaling.png; finished runs (OUTPUT_DIR/runs/S.wW/metrics.json) are kept and
skipped when the command is run again.

On a 2-core machine two workers share the cores that one worker already
used (TensorFlow's intra-op threads): the numbers show the synchronisation
cost, not a speed-up. Real scaling needs one machine (or accelerator) per
worker.
"""

import csv
import json
import os
import subprocess
import sys
import time

from trainers import console

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where results and runs go.")
flags.DEFINE_list("workers", ["1", "2"], "Worker counts to compare.")
flags.DEFINE_list("samplers", ["in_batch_logq", "cross_batch", "xir"],
                  "Samplers to compare.")
flags.DEFINE_integer("timeout", 3600, "Seconds per run before it is killed.")
flags.DEFINE_boolean("floor", True,
                     "Also run the plain-TFRS floor (`--sampler=plain_tfrs`:"
                     " tfrs.tasks.Retrieval, id towers, same flags) on every "
                     "worker count and report each step time as a ratio to "
                     "it.")

FLOOR = common.FLOOR

COLUMNS = ("sampler", "workers", "global_batch", "steps", "step_ms",
           "examples_per_second", "gathered_bytes_per_step", "speedup",
           "floor_ratio", "train_seconds", "recall@50")


def run_one(sampler: str, workers: int, train_flags, run_dir: str) -> dict:
  """One launch_local job; returns its chief's metrics.json."""
  metrics_path = os.path.join(run_dir, "metrics.json")
  if os.path.exists(metrics_path):
    with open(metrics_path) as f:
      return json.load(f)
  os.makedirs(run_dir, exist_ok=True)
  command = [sys.executable, "-m", "trainers.launch_local",
             "--workers=%d" % workers, "--"] + list(train_flags) + [
                 "--sampler=%s" % sampler, "--output_dir=%s" % run_dir,
                 "--verbose=2"]
  with open(os.path.join(run_dir, "log.txt"), "w") as log:
    code = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT,
                          timeout=FLAGS.timeout, check=False).returncode
  if code != 0 or not os.path.exists(metrics_path):
    raise RuntimeError("%s on %d workers failed (exit code %d); see %s"
                       % (sampler, workers, code,
                          os.path.join(run_dir, "log.txt")))
  with open(metrics_path) as f:
    return json.load(f)


def _row(sampler, workers, metrics):
  return {
      "sampler": sampler, "workers": workers,
      "global_batch": metrics["flags"]["batch_size"],
      "steps": metrics["steps"],
      "step_ms": 1000.0 * metrics["step_seconds"],
      "examples_per_second": metrics["examples_per_second"],
      "gathered_bytes_per_step": metrics.get("gathered_bytes_per_step") or 0,
      "train_seconds": metrics["train_seconds"],
      "recall@50": metrics.get("recall@50", float("nan")),
  }


def markdown(rows, title):
  lines = ["## " + title, "",
           "| sampler | workers | global batch | step ms | examples/s | "
           "gathered bytes/step | speed-up vs 1 worker | step vs floor | "
           "recall@50 |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
  for r in rows:
    ratio = r.get("floor_ratio", float("nan"))
    lines.append("| %s | %d | %d | %.1f | %.0f | %s | %.2f | %s | %.4f |" % (
        r["sampler"], r["workers"], r["global_batch"], r["step_ms"],
        r["examples_per_second"], format(r["gathered_bytes_per_step"], ","),
        r["speedup"], "–" if ratio != ratio else "%.2f" % ratio,
        r["recall@50"]))
  text = "\n".join(lines) + "\n"
  if any(r["sampler"] == FLOOR for r in rows):
    text += ("\nstep vs floor: the median step time over that of `%s` (the "
             "TFRS tutorial two-tower with `tfrs.tasks.Retrieval`, same "
             "flags) on as many workers; runs are sequential, so read it "
             "as a ratio on a quiet machine.\n" % FLOOR)
  return text


def plot(rows, path):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  samplers = list(dict.fromkeys(r["sampler"] for r in rows))
  workers = sorted({r["workers"] for r in rows})
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  width = 0.8 / max(1, len(workers))
  for j, w in enumerate(workers):
    by = {r["sampler"]: r for r in rows if r["workers"] == w}
    xs = [i + j * width for i in range(len(samplers))]
    axes[0].bar(xs, [by[s]["examples_per_second"] if s in by else 0
                     for s in samplers], width, label="%d worker(s)" % w)
    axes[1].bar(xs, [by[s]["gathered_bytes_per_step"] / 1024.0
                     if s in by else 0 for s in samplers], width,
                label="%d worker(s)" % w)
  for ax, label in zip(axes, ("examples / s", "KiB all-gathered / step")):
    ax.set_xticks([i + width * (len(workers) - 1) / 2
                   for i in range(len(samplers))])
    ax.set_xticklabels(samplers)
    ax.set_ylabel(label)
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper right", ncol=len(workers))
  fig.suptitle("Multi-worker scaling (loopback; workers share the cores)",
               x=0.02, ha="left")
  fig.tight_layout(rect=(0, 0, 1, 0.92))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv):
  train_flags = argv[1:]
  if not FLAGS.output_dir:
    raise common.UsageError("--output_dir is required")
  try:
    workers = [int(w) for w in FLAGS.workers]
  except ValueError as e:
    raise common.UsageError("--workers takes integers, got %s"
                            % ",".join(FLAGS.workers)) from e
  if not workers or min(workers) < 1:
    raise common.UsageError("--workers must be >= 1 each.")
  for name in ("sampler", "output_dir", "strategy", "workers"):
    if common.flag_value(train_flags, name) is not None:
      raise common.UsageError("--%s is set by bench_scaling; remove it from "
                           "the training flags." % name)
  samplers = ([FLOOR] if FLAGS.floor else []) + [
      s for s in FLAGS.samplers if s != FLOOR]
  total = len(samplers) * len(workers)
  start, rows = time.time(), []
  for sampler in samplers:
    base = None
    for w in workers:
      run_dir = os.path.join(FLAGS.output_dir, "runs", "%s.w%d" % (sampler, w))
      row = _row(sampler, w, run_one(sampler, w, train_flags, run_dir))
      base = base or row["examples_per_second"]
      row["speedup"] = row["examples_per_second"] / base
      rows.append(row)
      elapsed = time.time() - start
      print("[%d/%d] %s on %d worker(s): %.0f examples/s, %.1f ms/step, "
            "%s bytes gathered/step  (elapsed %.0fs, eta %.0fs)"
            % (len(rows), total, sampler, w, row["examples_per_second"],
               row["step_ms"], format(row["gathered_bytes_per_step"], ","),
               elapsed, elapsed / len(rows) * (total - len(rows))),
            file=sys.stderr, flush=True)
  floors = {r["workers"]: r["step_ms"] for r in rows if r["sampler"] == FLOOR}
  for row in rows:
    row["floor_ratio"] = (row["step_ms"] / floors[row["workers"]]
                          if row["workers"] in floors else float("nan"))
  with open(os.path.join(FLAGS.output_dir, "results.csv"), "w",
            newline="") as f:
    writer = csv.DictWriter(f, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
  data_path = common.flag_value(train_flags, "data_path")
  title = "scaling on %s: %s" % (
      os.path.basename(os.path.normpath(data_path)) if data_path
      else (common.flag_value(train_flags, "dataset") or "synthetic"),
      " ".join(a for a in train_flags if not a.startswith(
          ("--data_path", "--dataset"))) or "default flags")
  text = markdown(rows, title)
  with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as f:
    f.write(text)
  plot(rows, os.path.join(FLAGS.output_dir, "scaling.png"))
  print(text)


if __name__ == "__main__":
  common.run(main)
