r"""Runs a multi-worker training job on this machine, one process per worker.

  python -m trainers.launch_local --workers=2 --max_restarts=1 -- \
      --dataset=movielens --data_path=../shared/data/movielens-100k \
      --sampler=cross_batch --output_dir=runs/mw --backup_dir=runs/mw/backup

Starts `--workers` processes of `python -m trainers.train` (or `--program`)
with the flags after `--`, plus `--strategy=multi_worker`. Each gets the
`TF_CONFIG` TensorFlow expects: the same cluster of free loopback ports and
its own task index (worker 0 is the chief). Their output is streamed line by
line with a `[worker i]` prefix. The exit code is the chief's (or, when
another worker fails first, that worker's).

When a worker dies (a crash, an out-of-memory kill, SIGKILL) the others
cannot go on: the collectives wait for the missing peer. The launcher stops
them and, with `--max_restarts=R`, starts the whole job again (new ports) up to
R times. Training resumes from the last `BackupAndRestore` checkpoint (model,
optimizer and sampler state) instead of from step 0; without `--backup_dir`
in the training flags the launcher adds a temporary one. On a real cluster
each host runs the same training command with its own `TF_CONFIG` (see
docs/guides/distributed.md) and the cluster manager plays this role.

With `--ps=M` (M >= 1) the job is a parameter-server job
(`--strategy=parameter_server`, added to the flags): one chief (the
coordinator, `[chief]`), `--workers` workers and M parameter servers
(`[ps i]`), each with its `TF_CONFIG` (chief, worker and ps jobs on free
loopback ports). Workers and parameter servers serve until the chief
finishes; then the launcher stops them and returns the chief's exit code.
A worker that dies is replaced alone, on the same address, and the
coordinator re-runs the steps it lost: training goes on. A chief or a
parameter server that dies ends the attempt; the whole job restarts and
resumes from the last epoch's checkpoint in `--backup_dir`. Each
replacement, of a worker or of the job, uses one of `--max_restarts`.
"""

import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional, Sequence

from trainers import console

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers.pipeline import cluster  # noqa: E402
from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("workers", 2, "Number of worker processes.")
flags.DEFINE_integer("ps", 0,
                     "Parameter servers: 0 runs a multi_worker job; M >= 1 "
                     "a parameter_server job (a chief, --workers workers, "
                     "M parameter servers).")
flags.DEFINE_integer("max_restarts", 0,
                     "Restarts of the whole job after a worker dies.")
flags.DEFINE_string("program", "trainers.train",
                    "Python module each worker runs (python -m PROGRAM).")
flags.DEFINE_string("host", "127.0.0.1", "Address the workers listen on.")
flags.DEFINE_integer("threads_per_worker", 0,
                     "TensorFlow intra-op threads per worker (0: this "
                     "machine's cores / workers, at least 1), so that the "
                     "workers do not oversubscribe the shared cores.")
flags.DEFINE_integer("memory_limit_mb", 0,
                     "Per task: the limit of its data segment (RLIMIT_DATA, "
                     "as `ulimit -d`: heap and private memory maps) in MiB; "
                     "an allocation past it fails. 0: no limit.")
flags.DEFINE_float("grace_seconds", 10.0,
                   "After a failure, how long the other workers get to stop "
                   "on SIGTERM before SIGKILL.")

_PREFIX = "[launch_local]"
# Other workers finish within moments of the chief; past this, they hang.
_CHIEF_DONE_WAIT = 120.0


def _say(message: str) -> None:
  print("%s %s" % (_PREFIX, message), flush=True)


def worker_flags(train_flags: Sequence[str], max_restarts: int,
                 scratch: str, strategy_name: str = "multi_worker"
                 ) -> List[str]:
  """The training flags with `--strategy=<strategy_name>` (and a backup)."""
  argv = list(train_flags)
  strategy = common.flag_value(argv, "strategy")
  if strategy not in (None, strategy_name):
    raise common.UsageError(
        "launch_local%s runs --strategy=%s jobs; the flags ask for "
        "--strategy=%s." % (" --ps=M" if strategy_name == "parameter_server"
                            else "", strategy_name, strategy))
  if strategy is None:
    argv.append("--strategy=%s" % strategy_name)
  if max_restarts and not common.flag_value(argv, "backup_dir"):
    backup = os.path.join(scratch, "backup")
    argv.append("--backup_dir=%s" % backup)
    _say("no --backup_dir in the training flags: restarts resume from %s "
         "(removed at the end)." % backup)
  return argv


def _load_libc():
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    return ctypes.CDLL(None, use_errno=True)
  except (OSError, ImportError):
    return None


_LIBC = _load_libc()  # loaded before any fork: the child only calls it
_PR_SET_PDEATHSIG = 1
# Set before the tasks start (`_limit_memory` runs in the forked child).
_MEMORY_LIMIT_BYTES = [0]


def limit_memory(limit_bytes: int) -> None:
  """In the child: `ulimit -d` (RLIMIT_DATA) of `limit_bytes` (0: none)."""
  if limit_bytes:
    resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))


def _die_with_launcher() -> None:
  """In the child: get SIGKILL when the launcher dies, even by SIGKILL.

  Workers run in their own sessions (so that a stop reaches their whole
  process group); without this, a launcher killed outright would leave them
  training, blocked in collectives.
  """
  if _LIBC is not None and sys.platform.startswith("linux"):
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _start_task() -> None:
  """In the child, before it runs the program."""
  _die_with_launcher()
  limit_memory(_MEMORY_LIMIT_BYTES[0])


class _Worker:
  """One task's process and the thread copying its output.

  `name` is the prefix of its lines (`worker i`, `chief`, `ps i`).
  """

  def __init__(self, index: int, command: List[str], env: dict,
               name: Optional[str] = None):
    self.index = index
    self.name = name or "worker %d" % index
    self.command = list(command)
    self.env = env
    self.process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=_start_task)
    self.thread = threading.Thread(target=self._copy, daemon=True)
    self.thread.start()

  def _copy(self) -> None:
    prefix = "[%s] " % self.name
    buffer = b""
    for chunk in iter(lambda: self.process.stdout.read1(4096), b""):
      # Progress bars rewrite their line with "\r": each rewrite is a line.
      buffer += chunk.replace(b"\r", b"\n")
      *lines, buffer = buffer.split(b"\n")
      for line in lines:
        if line.strip():
          sys.stdout.write(prefix + line.decode("utf-8", "replace") + "\n")
      sys.stdout.flush()
    if buffer.strip():
      sys.stdout.write(prefix + buffer.decode("utf-8", "replace") + "\n")
      sys.stdout.flush()

  def poll(self) -> Optional[int]:
    return self.process.poll()

  def signal(self, signum: int) -> None:
    if self.process.poll() is None:
      # ProcessLookupError: it exited between the poll and the kill.
      with contextlib.suppress(ProcessLookupError):
        os.killpg(self.process.pid, signum)

  def wait(self, timeout: float) -> Optional[int]:
    try:
      return self.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      return None


def _describe(code: int) -> str:
  if code < 0:
    return "killed by %s" % signal.Signals(-code).name
  return "exit code %d" % code


def _exit_code(code: int) -> int:
  """A shell-style exit code (128 + signal for a killed process)."""
  return 128 - code if code < 0 else code


def stop_all(workers: Sequence[_Worker], grace_seconds: float) -> None:
  """SIGTERM, then SIGKILL whoever is still running after the grace period."""
  for w in workers:
    w.signal(signal.SIGTERM)
  deadline = time.monotonic() + grace_seconds
  for w in workers:
    if w.wait(max(0.0, deadline - time.monotonic())) is None:
      w.signal(signal.SIGKILL)
      w.wait(grace_seconds)
  for w in workers:
    w.thread.join(timeout=5)


def run_attempt(num_workers: int, argv: Sequence[str], program: str,
                host: str, grace_seconds: float, threads: int = 0) -> int:
  """Runs the job once. Returns the chief's exit code (shell style)."""
  ports = cluster.free_ports(num_workers, host)
  addresses = ["%s:%d" % (host, p) for p in ports]
  workers = []
  for index in range(num_workers):
    env = dict(os.environ)
    env[cluster.ENV] = json.dumps(cluster.tf_config_for(addresses, index))
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    if threads:
      env["TF_NUM_INTRAOP_THREADS"] = str(threads)
    workers.append(_Worker(
        index, [sys.executable, "-m", program] + list(argv), env))
    _say("worker %d: pid %d, %s" % (index, workers[-1].process.pid,
                                    addresses[index]))
  chief_done = None
  try:
    while True:
      codes = [w.poll() for w in workers]
      failed = [i for i, c in enumerate(codes) if c not in (None, 0)]
      if failed:
        _say("worker %d stopped (%s); stopping the others."
             % (failed[0], _describe(codes[failed[0]])))
        stop_all(workers, grace_seconds)
        return _exit_code(codes[failed[0]]) or 1
      if all(c == 0 for c in codes):
        for w in workers:
          w.thread.join(timeout=5)
        return 0
      if codes[0] == 0 and chief_done is None:
        chief_done = time.monotonic()
      if chief_done and time.monotonic() - chief_done > _CHIEF_DONE_WAIT:
        _say("the chief finished %.0f s ago; stopping the other workers."
             % _CHIEF_DONE_WAIT)
        stop_all(workers, grace_seconds)
        return 0
      time.sleep(0.2)
  except BaseException:
    stop_all(workers, grace_seconds)
    raise


def _task_env(tf_config: dict, threads: int) -> dict:
  env = dict(os.environ)
  env[cluster.ENV] = json.dumps(tf_config)
  env.setdefault("TF_USE_LEGACY_KERAS", "1")
  if threads:
    env["TF_NUM_INTRAOP_THREADS"] = str(threads)
  return env


class Budget:
  """The restarts left (`--max_restarts`), shared by every replacement."""

  def __init__(self, restarts: int):
    self.left = restarts

  def take(self) -> bool:
    if self.left <= 0:
      return False
    self.left -= 1
    return True


def run_ps_attempt(num_workers: int, num_ps: int, argv: Sequence[str],
                   program: str, host: str, grace_seconds: float,
                   budget: Budget, threads: int = 0) -> int:
  """Runs a parameter-server job once; the chief's exit code (shell style).

  A worker that stops is started again with the same `TF_CONFIG` while
  `budget` allows; the chief's or a parameter server's stop ends the
  attempt (the caller may restart the job).
  """
  ports = cluster.free_ports(1 + num_workers + num_ps, host)
  addresses = ["%s:%d" % (host, p) for p in ports]
  chief, workers, ps = (addresses[0], addresses[1:1 + num_workers],
                        addresses[1 + num_workers:])
  command = [sys.executable, "-m", program] + list(argv)
  tasks = []

  def start(job, index, name, task_threads):
    config = cluster.ps_tf_config(chief, workers, ps, job, index)
    task = _Worker(index, command, _task_env(config, task_threads), name)
    _say("%s: pid %d, %s" % (name, task.process.pid,
                             config["cluster"][job][index]))
    return task

  try:
    for i in range(num_ps):
      tasks.append(start("ps", i, "ps %d" % i, 0))
    for i in range(num_workers):
      tasks.append(start("worker", i, "worker %d" % i, threads))
    tasks.append(start("chief", 0, "chief", 0))
    while True:
      the_chief = tasks[-1]
      code = the_chief.poll()
      if code is not None:
        if code:
          _say("chief stopped (%s); stopping the other tasks."
               % _describe(code))
        else:
          _say("chief finished; stopping the workers and parameter "
               "servers.")
        stop_all(tasks, grace_seconds)
        return _exit_code(code)
      for position, task in enumerate(tasks[:-1]):
        code = task.poll()
        if code is None:
          continue
        if task.name.startswith("worker") and budget.take():
          _say("%s stopped (%s); starting it again on the same address "
               "(%d restart(s) left)." % (task.name, _describe(code),
                                          budget.left))
          task.thread.join(timeout=5)
          tasks[position] = start("worker", task.index, task.name, threads)
          continue
        _say("%s stopped (%s); stopping the other tasks."
             % (task.name, _describe(code)))
        stop_all(tasks, grace_seconds)
        return _exit_code(code) or 1
      time.sleep(0.2)
  except BaseException:
    stop_all(tasks, grace_seconds)
    raise


def main(argv):
  train_flags = argv[1:]
  if FLAGS.memory_limit_mb < 0:
    raise common.UsageError("--memory_limit_mb must be >= 0, got %d."
                            % FLAGS.memory_limit_mb)
  _MEMORY_LIMIT_BYTES[0] = FLAGS.memory_limit_mb << 20
  if FLAGS.ps < 0:
    raise common.UsageError("--ps must be >= 0, got %d." % FLAGS.ps)
  if FLAGS.workers < 1:
    raise common.UsageError("--workers must be >= 1, got %d." % FLAGS.workers)
  if FLAGS.max_restarts < 0:
    raise common.UsageError("--max_restarts must be >= 0, got %d."
                            % FLAGS.max_restarts)
  if FLAGS.threads_per_worker < 0:
    raise common.UsageError("--threads_per_worker must be >= 0, got %d."
                            % FLAGS.threads_per_worker)
  threads = (FLAGS.threads_per_worker or
             max(1, (os.cpu_count() or 1) // FLAGS.workers))
  if FLAGS.ps:
    return _main_ps(train_flags, threads)
  scratch = tempfile.mkdtemp(prefix="launch_local_")
  try:
    argv = worker_flags(train_flags, FLAGS.max_restarts, scratch)
    for attempt in range(FLAGS.max_restarts + 1):
      _say("attempt %d of %d: %d workers, python -m %s %s"
           % (attempt + 1, FLAGS.max_restarts + 1, FLAGS.workers,
              FLAGS.program, " ".join(argv)))
      code = run_attempt(FLAGS.workers, argv, FLAGS.program, FLAGS.host,
                         FLAGS.grace_seconds, threads)
      if code == 0:
        _say("job finished.")
        return 0
      if attempt < FLAGS.max_restarts:
        _say("restarting the job (%d restart(s) left)."
             % (FLAGS.max_restarts - attempt))
    _say("job failed with exit code %d." % code)
    return code
  except KeyboardInterrupt as e:
    _say("%s: the workers are stopped." % (e or "interrupted"))
    return 130
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _main_ps(train_flags: Sequence[str], threads: int) -> int:
  """`main` for `--ps=M`: a parameter-server job (flags checked by `main`)."""
  scratch = tempfile.mkdtemp(prefix="launch_local_")
  budget = Budget(FLAGS.max_restarts)
  try:
    argv = worker_flags(train_flags, FLAGS.max_restarts, scratch,
                        "parameter_server")
    attempt = 0
    while True:
      attempt += 1
      _say("attempt %d: 1 chief, %d workers, %d parameter servers, python "
           "-m %s %s" % (attempt, FLAGS.workers, FLAGS.ps, FLAGS.program,
                         " ".join(argv)))
      code = run_ps_attempt(FLAGS.workers, FLAGS.ps, argv, FLAGS.program,
                            FLAGS.host, FLAGS.grace_seconds, budget, threads)
      if code == 0:
        _say("job finished.")
        return 0
      if not budget.take():
        break
      _say("restarting the job (%d restart(s) left)." % budget.left)
    _say("job failed with exit code %d." % code)
    return code
  except KeyboardInterrupt as e:
    _say("%s: the tasks are stopped." % (e or "interrupted"))
    return 130
  finally:
    shutil.rmtree(scratch, ignore_errors=True)


def _interrupt(signum, frame):
  del frame
  raise KeyboardInterrupt("launch_local got %s" % signal.Signals(signum).name)


if __name__ == "__main__":
  # A SIGTERM to the launcher stops its workers too (they run in their own
  # sessions, so they would outlive it otherwise).
  signal.signal(signal.SIGTERM, _interrupt)
  common.run(main)
