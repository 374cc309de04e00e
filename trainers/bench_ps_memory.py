r"""Memory and speed of parameter-server training against one process.

  python -m trainers.bench_ps_memory --output_dir=runs/bench_ps_memory \
      --items=1000000 --memory_limit_mb=2600 --speed_items=100000

Capacity: the same training job (a synthetic catalog of `--items` items,
id towers of `--embedding_dim`, LazyAdam, in-batch softmax with static
logQ) runs

1. in one process without a limit (the memory it needs),
2. in one process under `--memory_limit_mb` (`ulimit -d`, RLIMIT_DATA: an
   allocation past it fails), expected to fail,
3. as a parameter-server job (`launch_local --workers --ps`), every task
   under the same limit, the tables and their Adam slots split over the
   parameter servers;

and writes each process's peak resident memory (the one-process runs from
the operating system's accounting of the child, the job from its
`metrics.json`). Speed: the job of `--speed_items` items, which every
set-up holds, in one process, on `MirroredStrategy` (2 logical CPUs, global
batch `B` split over them) and on the parameter-server job (`--workers` workers of
`B`-row steps): the same `B` in-batch columns per row either way, in
examples/s of training. Writes `results.md` (the tables, with the commands) and
`results.json` to `--output_dir`.
"""

import json
import os
import resource
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from absl import flags

from trainers import common

FLAGS = flags.FLAGS
flags.DEFINE_string("output_dir", None, "Where the runs and results go.")
flags.DEFINE_integer("items", 1_000_000, "Catalog size of the capacity runs.")
flags.DEFINE_integer("speed_items", 100_000,
                     "Catalog size of the speed runs (every set-up holds it).")
flags.DEFINE_integer("users", 500, "Synthetic users.")
flags.DEFINE_integer("interactions", 100, "Synthetic interactions per user.")
flags.DEFINE_integer("embedding_dim", 64, "Embedding dimension.")
flags.DEFINE_integer("batch_size", 1024, "Rows per step (per worker).")
flags.DEFINE_integer("epochs", 1, "Training epochs.")
flags.DEFINE_integer("workers", 2, "Workers of the parameter-server job.")
flags.DEFINE_integer("ps", 2, "Parameter servers of the job.")
flags.DEFINE_integer("memory_limit_mb", 0,
                     "Per-process limit (RLIMIT_DATA) of runs 2 and 3, MiB.")
flags.DEFINE_list("runs", ["unlimited", "limited", "parameter_server",
                           "speed"],
                  "Which runs: unlimited, limited, parameter_server, speed "
                  "(none: rewrite the report of the runs so far).")
flags.mark_flag_as_required("output_dir")

_GIB = float(1 << 30)


def train_flags(items: int, output_dir: str,
                batch_size: Optional[int] = None) -> List[str]:
  return [
      "--dataset=synthetic", "--synthetic_items=%d" % items,
      "--synthetic_users=%d" % FLAGS.users,
      "--synthetic_interactions=%d" % FLAGS.interactions,
      "--embedding_dim=%d" % FLAGS.embedding_dim,
      "--batch_size=%d" % (batch_size or FLAGS.batch_size),
      "--epochs=%d" % FLAGS.epochs, "--sampler=in_batch_logq_static",
      "--optimizer=lazy_adam", "--item_features=false",
      "--mask_history=false", "--verbose=0", "--output_dir=%s" % output_dir]


def _limit(limit_bytes: int):
  def set_limit():
    if limit_bytes:
      resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))
  return set_limit


def run_process(command: Sequence[str], log: str,
                limit_bytes: int = 0) -> Dict[str, Any]:
  """Runs `command` (output to `log`); exit code, seconds, peak memory.

  The peak is the child's maximum resident set size as the kernel counts
  it (`wait4`), known even when the child fails.
  """
  start = time.monotonic()
  with open(log, "w") as out:
    child = subprocess.Popen(list(command), stdout=out,
                             stderr=subprocess.STDOUT,
                             preexec_fn=_limit(limit_bytes))
    _, status, usage = os.wait4(child.pid, 0)
  code = os.waitstatus_to_exitcode(status)
  with open(log, errors="replace") as f:
    lines = [l.strip() for l in f if l.strip()]
  return {"command": " ".join(command), "exit_code": code,
          "seconds": time.monotonic() - start,
          "peak_memory_bytes": usage.ru_maxrss * 1024,
          "error": failure(lines) if code else None}


_FAILURES = ("Fatal Python error", "bad_alloc", "MemoryError",
             "Unable to allocate", "ResourceExhausted", "stopped (")


def failure(lines: Sequence[str]) -> str:
  """The line of a failed run's log that says why (and where, if fatal).

  A crash (`Fatal Python error`) is followed by the Python stack: the first
  frame in Keras, this package or the trainers says what it was doing.
  """
  for i, line in enumerate(lines):
    if not (line.startswith(("error:", "data error:"))
            or any(marker in line for marker in _FAILURES)):
      continue
    if "Fatal Python error" in line:
      for frame in lines[i + 1:]:
        if frame.startswith("File") and any(
            part in frame for part in ("/tf_keras/", "/tfrs_negsamp/",
                                       "/trainers/")):
          path, _, rest = frame.partition(", line ")
          return "%s in %s line %s" % (
              line, "/".join(path.strip('File "').split("/")[-2:]), rest)
    return line[:300]
  return (lines or [""])[-1][:300]


def _metrics(folder: str) -> Dict[str, Any]:
  path = os.path.join(folder, "metrics.json")
  if not os.path.exists(path):
    return {}
  with open(path) as f:
    return json.load(f)


def _python(*args: str) -> List[str]:
  return [sys.executable, "-m"] + list(args)


def main(argv):
  if len(argv) > 1:
    raise common.UsageError("unexpected argument(s) %s" % " ".join(argv[1:]))
  for name in ("items", "speed_items", "users", "interactions",
               "embedding_dim", "batch_size", "epochs", "workers", "ps"):
    if getattr(FLAGS, name) < 1:
      raise common.UsageError("--%s must be >= 1, got %d"
                              % (name, getattr(FLAGS, name)))
  valid = {"unlimited", "limited", "parameter_server", "speed", "none"}
  if set(FLAGS.runs) - valid:
    raise common.UsageError("--runs: unknown %s; valid: %s" % (
        ", ".join(sorted(set(FLAGS.runs) - valid)), ", ".join(sorted(valid))))
  if FLAGS.memory_limit_mb < 0 or (
      FLAGS.memory_limit_mb == 0 and "limited" in FLAGS.runs):
    raise common.UsageError("--memory_limit_mb must be > 0 for the limited "
                            "run (0: the parameter_server run unlimited)")
  out = os.path.abspath(FLAGS.output_dir)
  os.makedirs(out, exist_ok=True)
  limit = FLAGS.memory_limit_mb << 20
  # Runs accumulate in results.json: one invocation may measure capacity,
  # another speed (with other flags), and the report shows every run.
  path = os.path.join(out, "results.json")
  results: Dict[str, Any] = {}
  if os.path.exists(path):
    with open(path) as f:
      results = json.load(f)

  def settings(items, workers=None, limit_mb=0):
    return {"items": items, "embedding_dim": FLAGS.embedding_dim,
            "users": FLAGS.users, "interactions": FLAGS.interactions,
            "batch_size": FLAGS.batch_size, "epochs": FLAGS.epochs,
            "workers": workers, "ps": FLAGS.ps if workers else None,
            "memory_limit_mb": limit_mb}

  def one_process(name, items, extra, limit_bytes=0, batch_size=None):
    folder = os.path.join(out, name)
    print("%s: %d items ..." % (name, items), flush=True)
    run = run_process(
        _python("trainers.train", *(train_flags(items, folder, batch_size)
                                    + extra)),
        os.path.join(out, name + ".log"), limit_bytes)
    run["metrics"] = _metrics(folder)
    run["settings"] = settings(items, limit_mb=limit_bytes >> 20)
    results[name] = run
    print("  exit %d, %.0f s, peak %.2f GiB%s" % (
        run["exit_code"], run["seconds"], run["peak_memory_bytes"] / _GIB,
        " (%s)" % run["error"] if run["error"] else ""), flush=True)

  def ps_job(name, items, limit_mb=0):
    folder = os.path.join(out, name)
    print("%s: %d items ..." % (name, items), flush=True)
    launch = ["trainers.launch_local", "--workers=%d" % FLAGS.workers,
              "--ps=%d" % FLAGS.ps, "--memory_limit_mb=%d" % limit_mb]
    run = run_process(
        _python(*(launch + ["--"] + train_flags(items, folder))),
        os.path.join(out, name + ".log"))
    run["metrics"] = _metrics(folder)
    run["settings"] = settings(items, FLAGS.workers, limit_mb)
    results[name] = run
    peaks = run["metrics"].get("peak_memory_bytes_per_process", {})
    print("  exit %d, %.0f s, peaks %s" % (
        run["exit_code"], run["seconds"], ", ".join(
            "%s %.2f GiB" % (k, v / _GIB) for k, v in peaks.items())),
          flush=True)

  if "unlimited" in FLAGS.runs:
    one_process("one_process", FLAGS.items, [])
  if "limited" in FLAGS.runs:
    one_process("one_process_limited", FLAGS.items, [], limit)
  if "parameter_server" in FLAGS.runs:
    ps_job("parameter_server_limited" if limit else "parameter_server",
           FLAGS.items, FLAGS.memory_limit_mb)
  if "speed" in FLAGS.runs:
    # The same in-batch softmax (`--batch_size` columns per row) on both:
    # the mirrored global batch is split over its 2 replicas.
    one_process("speed_one_process", FLAGS.speed_items, [])
    one_process("speed_mirrored", FLAGS.speed_items,
                ["--strategy=mirrored", "--cpu_replicas=2"])
    ps_job("speed_parameter_server", FLAGS.speed_items)
  with open(path, "w") as f:
    json.dump(results, f, indent=2, sort_keys=True)
  with open(os.path.join(out, "results.md"), "w") as f:
    f.write(report(results))
  print(report(results))
  return 0


def rows_per_step(metrics: Dict[str, Any]) -> str:
  rows = metrics["flags"]["batch_size"]
  if metrics.get("strategy") == "parameter_server":
    return "%d per worker step, %d workers" % (rows,
                                                metrics["num_workers"])
  return "%d global, %d replica(s)" % (rows, metrics.get("num_replicas", 1))


def steady_examples_per_second(metrics: Dict[str, Any]) -> float:
  if metrics.get("strategy") == "parameter_server":
    return metrics["steady_examples_per_second"]
  return metrics["flags"]["batch_size"] / metrics["step_seconds"]


def _describe(run: Dict[str, Any]) -> str:
  st = run["settings"]
  table = (st["items"] + 1) * st["embedding_dim"] * 4
  return ("%s items x d=%d (item table %.2f GiB, with Adam's two slots "
          "%.2f GiB), %d users x %d interactions, batch %d, %d epoch(s)" % (
              "{:,}".format(st["items"]), st["embedding_dim"], table / _GIB,
              3 * table / _GIB, st["users"], st["interactions"],
              st["batch_size"], st["epochs"]))


def report(results: Dict[str, Any]) -> str:
  """The markdown tables of `results` (every run measured so far)."""
  lines = []
  capacity = [n for n in ("one_process", "one_process_limited",
                          "parameter_server", "parameter_server_limited")
              if n in results]
  if capacity:
    lines += ["Capacity: %s; LazyAdam, in_batch_logq_static." % _describe(
        results[capacity[0]]), "",
              "| run | limit MiB | exit | wall s | process | peak RSS GiB |",
              "|---|---:|---:|---:|---|---:|"]
    for name in capacity:
      run = results[name]
      peaks = run["metrics"].get("peak_memory_bytes_per_process")
      if not peaks:
        peaks = {"one process": run["peak_memory_bytes"]}
      limit = run["settings"]["memory_limit_mb"]
      for i, (process, peak) in enumerate(peaks.items()):
        head = ((name, "{:,}".format(limit) if limit else "none",
                 run["exit_code"], "%.0f" % run["seconds"]) if i == 0
                else ("", "", "", ""))
        lines.append("| %s | %s | %s | %s | %s | %.2f |"
                     % (head + (process, peak / _GIB)))
      if run["error"]:
        lines.append("| | | | | error: %s | |"
                     % run["error"].replace("|", "/"))
  speed = [results[n] for n in ("speed_one_process", "speed_mirrored",
                                "speed_parameter_server")
           if n in results and results[n]["metrics"]]
  if speed:
    lines += ["", "Speed: %s." % _describe(speed[0]), "",
              "| strategy | rows per step | train s (all epochs) | "
              "examples/s, steady |", "|---|---|---:|---:|"]
    for run in speed:
      m = run["metrics"]
      lines.append("| %s | %s | %.1f | %.0f |" % (
          m.get("strategy", "?"), rows_per_step(m), m["train_seconds"],
          steady_examples_per_second(m)))
    lines += ["", "Steady: one process and MirroredStrategy, the (global) "
              "batch over the median step time; the parameter-server job, "
              "an epoch's rows over the median epoch time after the first "
              "(the first traces the step on every worker)."]
  return "\n".join(lines) + "\n"


if __name__ == "__main__":
  common.run(main)
