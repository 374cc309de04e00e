"""Multi-worker training: two worker processes on loopback, one CPU each.

The job is started by `trainers.launch_local` exactly as a user would; the
reference is one process with `MirroredStrategy` over two logical CPUs on
the same data and seed (`state_program.py` writes both).
"""

import collections
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.distributed import state_program

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SAMPLERS = ("cross_batch", "xir")


def _env(**extra):
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.update(extra)
  return env


def _run(args, timeout=900, **kw):
  return subprocess.run([sys.executable, "-m"] + args, cwd=ROOT, env=_env(),
                        capture_output=True, text=True, timeout=timeout,
                        check=False, **kw)


@pytest.fixture(scope="module")
def states(tmp_path_factory):
  """`{sampler: (worker0, worker1, mirrored)}` npz contents."""
  out = tmp_path_factory.mktemp("multi_worker_state")
  job = _run(["trainers.launch_local", "--workers=2",
              "--program=tests.distributed.state_program", "--",
              "--out=%s" % out])
  assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-2000:]
  ref = _run(["tests.distributed.state_program", "--strategy=mirrored",
              "--out=%s" % out])
  assert ref.returncode == 0, ref.stderr[-4000:]
  return {s: tuple(dict(np.load(out / ("%s.%s.npz" % (s, task)),
                                allow_pickle=True))
                   for task in ("worker0", "worker1", "mirrored"))
          for s in SAMPLERS}


def _state_keys(npz):
  return [k for k in npz if k.startswith("sampler/")]


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_sampler_state_is_identical_on_both_workers(states, sampler):
  w0, w1, _ = states[sampler]
  keys = _state_keys(w0)
  assert sorted(keys) == sorted(_state_keys(w1))
  for key in keys:
    np.testing.assert_array_equal(w0[key], w1[key], err_msg=key)
  steps = int(w0["steps"])
  assert steps > 5
  step_key = [k for k in keys if k.endswith("/step:0")][0]
  assert int(w0[step_key]) == steps  # the state really moved every step
  if sampler == "cross_batch":
    filled = [k for k in keys if k.endswith("/filled:0")][0]
    assert int(w0[filled]) == state_program.OPTIONS["memory_size"]
    queue_ids = [k for k in keys if k.endswith("/queue_ids:0")][0]
    assert (w0[queue_ids] > 0).all()
  else:
    occurrence = [k for k in keys if k.endswith("/occurrence:0")][0]
    assert w0[occurrence].sum() > 0


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_two_workers_equal_one_mirrored_process(states, sampler):
  w0, _, mirrored = states[sampler]
  keys = [k for k in w0 if k.startswith(("sampler/", "weight/"))]
  assert sorted(keys) == sorted(k for k in mirrored
                                if k.startswith(("sampler/", "weight/")))
  for key in keys:
    np.testing.assert_allclose(w0[key].astype(np.float64),
                               mirrored[key].astype(np.float64),
                               rtol=1e-5, atol=1e-6, err_msg=key)


def test_every_example_once_per_epoch_across_workers(states):
  w0, w1, mirrored = states["cross_batch"]
  rows0, rows1, ref = w0["rows"], w1["rows"], mirrored["rows"]
  # [steps, local replicas, rows]: one replica per worker, two in mirrored.
  assert rows0.shape[1] == rows1.shape[1] == 1 and ref.shape[1] == 2
  # Worker w takes block w of every global batch: the mirrored split.
  np.testing.assert_array_equal(rows0[:, 0], ref[:, 0])
  np.testing.assert_array_equal(rows1[:, 0], ref[:, 1])
  seen = collections.Counter(list(rows0.ravel()) + list(rows1.ravel()))
  train = collections.Counter(list(w0["train_rows"]))
  global_batch = state_program.BATCH  # the global batch, 16 per worker
  n = sum(train.values())
  # No row twice; all but the last partial global batch (drop_remainder).
  assert not seen - train
  assert sum(seen.values()) == n - n % global_batch
  assert rows0.shape[0] == n // global_batch == int(w0["steps"])


def test_launcher_refuses_another_strategy():
  out = _run(["trainers.launch_local", "--workers=2", "--",
              "--strategy=mirrored"], timeout=120)
  assert out.returncode != 0
  assert "--strategy=multi_worker" in out.stderr


def test_trainer_without_tf_config_is_a_clear_error():
  env = _env()
  env.pop("TF_CONFIG", None)
  out = subprocess.run(
      [sys.executable, "-m", "trainers.train", "--strategy=multi_worker",
       "--epochs=1"], cwd=ROOT, env=env, capture_output=True, text=True,
      timeout=300, check=False)
  assert out.returncode != 0
  assert "needs the environment variable TF_CONFIG" in out.stderr


class _Lines:
  """Collects a process's output lines in a thread."""

  def __init__(self, stream):
    self.lines = []
    self._thread = threading.Thread(target=self._read, args=(stream,),
                                    daemon=True)
    self._thread.start()

  def _read(self, stream):
    for line in stream:
      self.lines.append(line.rstrip("\n"))

  def find(self, pattern):
    for line in list(self.lines):
      m = re.search(pattern, line)
      if m:
        return m
    return None

  def join(self):
    self._thread.join(timeout=30)


@pytest.mark.slow
def test_sigkilled_worker_restarts_the_job_from_the_last_backup(tmp_path):
  out_dir, backup = tmp_path / "run", tmp_path / "backup"
  worker_tmp = tmp_path / "worker_tmp"
  worker_tmp.mkdir()
  epochs, batch = 3, 32
  args = ["--workers=2", "--max_restarts=1", "--",
          "--dataset=synthetic", "--synthetic_users=300",
          "--synthetic_items=200", "--synthetic_interactions=20",
          "--embedding_dim=16", "--batch_size=%d" % batch,
          "--epochs=%d" % epochs, "--sampler=cross_batch", "--verbose=2",
          "--query_tower=id", "--validate_every=0",
          "--backup_freq=5", "--backup_dir=%s" % backup,
          "--output_dir=%s" % out_dir,
          "--export_dir=%s" % (out_dir / "export")]
  proc = subprocess.Popen(
      [sys.executable, "-m", "trainers.launch_local"] + args, cwd=ROOT,
      env=_env(TMPDIR=str(worker_tmp)), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  out = _Lines(proc.stdout)
  try:
    deadline = time.monotonic() + 600
    # Kill worker 1 once a backup exists and training has gone past it.
    while not (backup / "chief" / "checkpoint").exists():
      assert proc.poll() is None, "\n".join(out.lines[-60:])
      assert time.monotonic() < deadline, "no backup after 600 s"
      time.sleep(0.2)
    time.sleep(2.0)
    pid = int(out.find(r"\[launch_local\] worker 1: pid (\d+)").group(1))
    os.kill(pid, signal.SIGKILL)
    code = proc.wait(timeout=900)
  finally:
    if proc.poll() is None:
      proc.kill()
  out.join()
  log = "\n".join(out.lines)
  assert code == 0, log[-6000:]
  assert "worker 1 stopped (killed by SIGKILL)" in log
  assert "attempt 2 of 2" in log
  resumed = [int(s) for s in re.findall(
      r"\[worker 0\] Resumed from backup at step (\d+)", log)]
  assert len(resumed) == 1 and resumed[0] > 0, log[-6000:]
  assert "[worker 1] Resumed from backup at step %d" % resumed[0] in log

  import json  # pylint: disable=g-import-not-at-top
  metrics = json.loads((out_dir / "metrics.json").read_text())
  rows = metrics["dataset_summary"]["train_rows"]
  steps_per_epoch = rows // batch
  assert metrics["resumed_from_step"] == resumed[0]
  assert metrics["optimizer_steps"] == epochs * steps_per_epoch
  assert metrics["steps"] == epochs * steps_per_epoch - resumed[0]
  assert metrics["num_workers"] == 2
  assert (out_dir / "export" / "saved_model.pb").exists()
  # Only the chief wrote outputs; the other worker's scratch is gone.
  assert sorted(os.listdir(out_dir)) == ["export", "metrics.json"]
  assert not [p for p in os.listdir(worker_tmp)
              if p.startswith("tfrs_negsamp_worker_")]


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  # A zombie (exited, not yet reaped by its dead parent) counts as gone.
  try:
    with open("/proc/%d/stat" % pid) as f:
      return f.read().split(")")[-1].split()[0] != "Z"
  except OSError:
    return False


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_stopping_the_launcher_stops_its_workers(signum):
  proc = subprocess.Popen(
      [sys.executable, "-m", "trainers.launch_local", "--workers=2",
       "--grace_seconds=5", "--", "--epochs=100", "--synthetic_users=300",
       "--synthetic_items=100", "--verbose=0"],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)
  out = _Lines(proc.stdout)
  try:
    deadline = time.monotonic() + 300
    while out.find(r"\[worker \d\] Starting training") is None:
      assert proc.poll() is None and time.monotonic() < deadline, (
          "\n".join(out.lines[-40:]))
      time.sleep(0.2)
    pids = [int(out.find(r"worker %d: pid (\d+)" % i).group(1))
            for i in (0, 1)]
    proc.send_signal(signum)
    code = proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
      time.sleep(0.2)
    assert not any(_alive(p) for p in pids), "workers outlived the launcher"
  finally:
    if proc.poll() is None:
      proc.kill()
  out.join()
  if signum == signal.SIGTERM:
    assert code == 130
    assert out.find("the workers are stopped") is not None
  else:
    assert code == -signal.SIGKILL
