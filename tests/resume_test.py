"""Exact resume: a SIGKILLed run restarted with the same flags ends bit-identical.

The subprocess cases run `tests/resume_program.py` (`trainers.train` plus a
dump of every model, sampler, optimizer and metric variable), once
uninterrupted and once parked after a chosen step (`TFRS_NEGSAMP_TEST_PAUSE`),
SIGKILLed by its pid and restarted with the same flags; the dumps and
metrics.json must be equal bit for bit (timings aside).
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.resume_program import PAUSE_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 120 users x 10 interactions -> 940 training rows: S = 29 steps of 32 per
# epoch, 87 steps in 3 epochs. Backups every 5 steps (counted from the
# start of each process).
FLAGS = ["--dataset=synthetic", "--synthetic_users=120",
         "--synthetic_items=80", "--synthetic_interactions=10",
         "--embedding_dim=8", "--batch_size=32", "--epochs=3",
         "--sampler=cross_batch", "--memory_size=64", "--backup_freq=5",
         "--verbose=0", "--seed=7", "--query_tower=id", "--validate_every=0"]
STEPS_PER_EPOCH, TOTAL_STEPS = 29, 87
# What may differ between an uninterrupted and a resumed run.
TIMING_KEYS = {"train_seconds", "step_seconds", "examples_per_second",
               "steps", "resumed_from_step", "phase_seconds", "wall_seconds",
               "peak_memory_bytes"}
PATH_FLAGS = {"output_dir", "backup_dir"}


def _env(**extra):
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.pop(PAUSE_ENV, None)
  env.update(extra)
  return env


def _args(run_dir, extra=()):
  flags = FLAGS
  if any(f.startswith("--sampler=") for f in extra):
    # Another sampler: cross_batch's flags would be refused for it.
    flags = [f for f in FLAGS if not f.startswith(("--sampler=",
                                                   "--memory_size="))]
  return flags + list(extra) + [
      "--backup_dir=%s" % (run_dir / "backup"),
      "--output_dir=%s" % (run_dir / "out"),
      "--state_out=%s" % (run_dir / "state")]


def _program(args, **kw):
  return [sys.executable, "-m", "tests.resume_program"] + args


def _wait_for(path, proc, timeout=600):
  deadline = time.monotonic() + timeout
  while not path.exists():
    assert proc.poll() is None, "exited before the pause: %s" % (
        proc.stdout.read()[-3000:] if proc.stdout else "")
    assert time.monotonic() < deadline, "no pause marker after %d s" % timeout
    time.sleep(0.2)
  return int(path.read_text())


def _outputs(run_dir, task="main"):
  state = dict(np.load(run_dir / "state" / ("state.%s.npz" % task)))
  metrics = json.loads((run_dir / "out" / "metrics.json").read_text())
  return state, metrics


def _assert_identical(reference, resumed, sampler_state="queue_emb",
                      total_steps=TOTAL_STEPS):
  (state_a, metrics_a), (state_b, metrics_b) = reference, resumed
  assert sorted(state_a) == sorted(state_b)
  # Weights, optimizer step and slots, sampler state (the cross-batch queue,
  # pointers and step), the frequency estimator and the loss metric, per
  # replica.
  for group in ("model/", "optimizer/", "metric/"):
    assert any(k.startswith(group) for k in state_a), group
  assert any(sampler_state in k for k in state_a), sampler_state
  differing = [k for k in state_a
               if state_a[k].dtype != state_b[k].dtype
               or not np.array_equal(state_a[k], state_b[k])]
  assert not differing, differing
  metrics_a, metrics_b = dict(metrics_a), dict(metrics_b)  # fixtures: copy
  flags_a, flags_b = metrics_a.pop("flags"), metrics_b.pop("flags")
  assert {k for k in flags_a if flags_a[k] != flags_b[k]} <= PATH_FLAGS
  assert set(metrics_a) == set(metrics_b)
  differing = {k: (metrics_a[k], metrics_b[k]) for k in metrics_a
               if k not in TIMING_KEYS and metrics_a[k] != metrics_b[k]}
  assert not differing, differing
  assert metrics_a["optimizer_steps"] == total_steps
  assert np.isfinite(metrics_a["final_loss_per_example"])


def _reference(tmp_path_factory, extra):
  run_dir = tmp_path_factory.mktemp("reference")
  out = subprocess.run(_program(_args(run_dir, extra)), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=900,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Starting training at step 0." in out.stdout
  return _outputs(run_dir)


def _killed_and_resumed(run_dir, extra, kill_after, total_steps=TOTAL_STEPS):
  """Pauses after step `kill_after`, SIGKILLs by pid, restarts; outputs."""
  args = _args(run_dir, extra)
  marker = run_dir / "pause"
  proc = subprocess.Popen(
      _program(args), cwd=ROOT,
      env=_env(**{PAUSE_ENV: "%d:%s" % (kill_after, marker)}),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    pid = _wait_for(run_dir / "pause.main", proc)
    assert pid == proc.pid
    os.kill(pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
    proc.stdout.close()
  assert not (run_dir / "out" / "metrics.json").exists()
  # The restart: the same flags (the marker is there, so no pause).
  out = subprocess.run(_program(args), cwd=ROOT, env=_env(),
                       capture_output=True, text=True, timeout=900,
                       check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  # The last backup before the kill: every 5 steps from step 0.
  resumed_at = kill_after // 5 * 5
  assert "Resumed from backup at step %d." % resumed_at in out.stdout
  state, metrics = _outputs(run_dir)
  assert metrics["resumed_from_step"] == resumed_at
  assert metrics["steps"] == total_steps - resumed_at
  return state, metrics


def _batches(ds):
  return [b.tolist() for b in ds.as_numpy_iterator()]


def test_epoch_batches_are_a_function_of_the_global_step():
  from tfrs_negsamp.data import tf_dataset  # pylint: disable=g-import-not-at-top
  # n = 10 rows, B = 3: S = 3 steps per epoch, row 9 (one per epoch) dropped.
  full = _batches(tf_dataset.epoch_batches(10, 3, epochs=3, seed=7))
  assert len(full) == 9 and all(len(b) == 3 for b in full)
  epochs = [sum(full[3 * e:3 * e + 3], []) for e in range(3)]
  for order in epochs:
    assert len(set(order)) == 9 and set(order) <= set(range(10))
  assert epochs[0] != epochs[1] != epochs[2] != epochs[0]
  # A restart at any step reads exactly the rest of the stream.
  for start in range(10):
    assert _batches(tf_dataset.epoch_batches(
        10, 3, epochs=3, seed=7, start_step=start)) == full[start:]
  # The same seed, the same stream in any process; another seed differs.
  assert _batches(tf_dataset.epoch_batches(10, 3, epochs=3, seed=7)) == full
  assert _batches(tf_dataset.epoch_batches(10, 3, epochs=3, seed=8)) != full
  assert _batches(tf_dataset.epoch_batches(
      10, 3, epochs=2, seed=7, shuffle=False)) == [
          [0, 1, 2], [3, 4, 5], [6, 7, 8]] * 2
  with pytest.raises(ValueError, match="start_step must be in"):
    tf_dataset.epoch_batches(10, 3, epochs=3, start_step=10)
  with pytest.raises(ValueError, match="batch_size must be in"):
    tf_dataset.epoch_batches(10, 11, epochs=1)


def test_next_item_batches_resume_at_any_step():
  from tests import helpers  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.data import sequences  # pylint: disable=g-import-not-at-top
  dataset = helpers.tiny_dataset()

  def targets(start):
    ds = sequences.next_item_dataset(
        dataset.train, dataset.catalog, 4, batch_size=8, seed=3, epochs=2,
        start_step=start)
    return [b["item_id"].tolist() for b in ds.as_numpy_iterator()]

  full = targets(0)
  assert len(full) >= 4
  assert targets(3) == full[3:]


def test_backup_position_continues_where_keras_does(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import fitting  # pylint: disable=g-import-not-at-top
  assert fitting.backup_position(str(tmp_path / "none"), 10) == 0
  cases = {(1, 4): 15,    # step 4 of epoch 1 done -> global step 15
           (1, 9): 20,    # the epoch's last step done -> epoch 2, step 0
           (2, -1): 30,   # an epoch-end save of epoch 2
           (-1, -1): 0}   # saved before any epoch began
  for (epoch, batch), expected in cases.items():
    folder = tmp_path / ("%d_%d" % (epoch, batch))
    checkpoint = tf.train.Checkpoint(
        ckpt_saved_epoch=tf.Variable(epoch, dtype=tf.int64),
        ckpt_saved_batch=tf.Variable(batch, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, str(folder / "chief"),
                               max_to_keep=1).save()
    assert fitting.backup_position(str(folder), 10) == expected


@pytest.fixture(scope="module")
def single_reference(tmp_path_factory):
  return _reference(tmp_path_factory, [])


# Step 72 is step 14 of epoch 3: the restart resumes at 70, inside the last
# epoch (its loss mean must include the 12 steps before the kill). Step 41
# is step 12 of epoch 2: the restart must read epoch 2's order from step
# 40 on, then epoch 3's.
@pytest.mark.parametrize("kill_after", [72, pytest.param(
    41, marks=pytest.mark.slow)])
def test_single_device_resume_is_bit_identical(single_reference, tmp_path,
                                               kill_after):
  _assert_identical(single_reference,
                    _killed_and_resumed(tmp_path, [], kill_after))


@pytest.mark.slow
def test_xir_resume_is_bit_identical(tmp_path_factory, tmp_path):
  # XIR's cache refresh draws stateless uniforms seeded by (seed, step).
  extra = ["--sampler=xir"]
  _assert_identical(_reference(tmp_path_factory, extra),
                    _killed_and_resumed(tmp_path, extra, 41),
                    sampler_state="cache_ids")


@pytest.mark.slow
@pytest.mark.parametrize("sampler,state", [("uniform", "cdf"),
                                           ("two_stage", "item_table")])
def test_catalog_sampler_resume_is_bit_identical(tmp_path_factory, tmp_path,
                                                 sampler, state):
  # Catalog draws are stateless, seeded by (seed, step, replica, draw), with
  # the step counter in the sampler's checkpointed state.
  extra = ["--sampler=%s" % sampler]
  _assert_identical(_reference(tmp_path_factory, extra),
                    _killed_and_resumed(tmp_path, extra, 41),
                    sampler_state=state)


# SASRec's dropout masks are stateless, seeded by (seed, training call,
# dropout site) with the call counter in the backup. Next-item examples skip
# each user's first interaction: 820 rows, 25 steps per epoch, 75 in all;
# the kill after step 41 resumes at 40, inside epoch 2.
SASREC_FLAGS = ["--query_tower=sasrec", "--dropout=0.2", "--max_history=5",
                "--num_blocks=1", "--training_rows=window"]
SASREC_STEPS = 75


@pytest.mark.slow
def test_sasrec_dropout_resume_is_bit_identical(tmp_path_factory, tmp_path):
  reference = _reference(tmp_path_factory, SASREC_FLAGS)
  assert any("dropout_step" in k for k in reference[0])
  _assert_identical(reference,
                    _killed_and_resumed(tmp_path, SASREC_FLAGS, 41,
                                        total_steps=SASREC_STEPS),
                    total_steps=SASREC_STEPS)


def test_mirrored_resume_is_bit_identical(tmp_path_factory, tmp_path):
  extra = ["--strategy=mirrored", "--cpu_replicas=2"]
  reference = _reference(tmp_path_factory, extra)
  resumed = _killed_and_resumed(tmp_path, extra, 72)
  _assert_identical(reference, resumed)
  # Two replicas' copies, all dumped; the metric lives on replica 0 only.
  state = reference[0]
  assert any(k.endswith("/1") for k in state)
  totals = sorted(k for k in state if k.startswith("metric/")
                  and "/total" in k)
  assert [float(state[k]) != 0 for k in totals] == [True, False]


def _launch(run_dir, **env):
  """`trainers.launch_local` running two workers of the test program."""
  return subprocess.Popen(
      [sys.executable, "-m", "trainers.launch_local", "--workers=2",
       "--max_restarts=1", "--program=tests.resume_program", "--"]
      + _args(run_dir), cwd=ROOT, env=_env(**env), stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_two_worker_resume_is_bit_identical(tmp_path):
  reference_dir, killed_dir = tmp_path / "reference", tmp_path / "killed"
  job = _launch(reference_dir)
  log = job.communicate(timeout=1800)[0]
  assert job.returncode == 0, log[-6000:]
  job = _launch(killed_dir, **{PAUSE_ENV: "72:%s" % (killed_dir / "pause")})
  try:
    # Both workers park after step 72; worker 1 is killed by its pid.
    pid = _wait_for(killed_dir / "pause.worker1", job)
    os.kill(pid, signal.SIGKILL)
    log = job.communicate(timeout=1800)[0]
  finally:
    if job.poll() is None:
      job.kill()
      job.communicate()
  assert job.returncode == 0, log[-6000:]
  assert "worker 1 stopped (killed by SIGKILL)" in log, log[-6000:]
  assert "attempt 2 of 2" in log
  for worker in (0, 1):
    assert "[worker %d] Resumed from backup at step 70." % worker in log
  for task in ("worker0", "worker1"):
    state, metrics = _outputs(killed_dir, task)
    reference = _outputs(reference_dir, task)
    assert metrics["num_workers"] == 2
    assert metrics["resumed_from_step"] == 70
    assert metrics["steps"] == TOTAL_STEPS - 70
    _assert_identical(reference, (state, metrics))
