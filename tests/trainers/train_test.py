"""The trainer as a process: metrics.json, flags, and SIGKILL + resume."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
SMALL = ["--dataset=synthetic", "--synthetic_users=300",
         "--synthetic_items=200", "--synthetic_interactions=20",
         "--embedding_dim=16", "--batch_size=32", "--verbose=2",
         "--query_tower=id", "--validate_every=0"]


def _env():
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _train(args, **kw):
  return subprocess.run([sys.executable, "-m", "trainers.train"] + args,
                        cwd=ROOT, env=_env(), capture_output=True, text=True,
                        timeout=600, check=False, **kw)


def test_unknown_sampler_lists_the_valid_ones(tmp_path):
  out = _train(SMALL + ["--sampler=bogus", "--output_dir=%s" % tmp_path])
  assert out.returncode != 0
  assert "unknown sampler 'bogus'" in out.stderr
  assert "in_batch_logq" in out.stderr


def test_malformed_data_file_is_a_clear_error(tmp_path):
  bad = tmp_path / "log.csv"
  bad.write_text("user_id,item_id,timestamp\n1,2,100\n1,3,yesterday\n")
  out = _train(["--dataset=csv", "--data_path=%s" % bad,
                "--output_dir=%s" % tmp_path])
  assert out.returncode != 0
  assert "data error" in out.stderr
  assert "log.csv" in out.stderr and "line 3" in out.stderr
  assert "yesterday" in out.stderr


def test_metrics_json_and_query_from_the_export(tmp_path):
  out = _train(SMALL + ["--epochs=1", "--output_dir=%s" % tmp_path,
                        "--export_dir=%s" % (tmp_path / "export")])
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  for key in ("recall@10", "recall@50", "recall@100", "hr@10", "ndcg@10",
              "balance", "train_seconds", "examples_per_second", "flags"):
    assert key in metrics, key
  # Wall time split into phases that add up; the peak memory of the process.
  phases = metrics["phase_seconds"]
  assert set(phases) == {"data", "build", "training", "evaluation",
                         "export"}, phases
  assert all(v >= 0 for v in phases.values())
  assert abs(sum(phases.values()) - metrics["wall_seconds"]) < 1e-6
  assert phases["training"] >= metrics["train_seconds"] > 0
  assert 100 * 2**20 < metrics["peak_memory_bytes"] < 64 * 2**30
  assert "peak memory" in out.stderr
  for cohort in ("head", "mid", "tail"):
    assert {"hr@10", "ndcg@10"} <= set(metrics["cohorts"][cohort])
  assert metrics["flags"]["sampler"] == "in_batch_logq"
  assert 0.0 <= metrics["recall@50"] <= 1.0
  query = subprocess.run(
      [sys.executable, "-m", "trainers.query",
       "--model_dir=%s" % (tmp_path / "export"), "--user_id=3", "--k=10"],
      cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300,
      check=False)
  assert query.returncode == 0, query.stderr[-3000:]
  answer = json.loads(query.stdout.strip().splitlines()[-1])
  assert len(answer["item_ids"]) == 10
  assert len(set(answer["item_ids"])) == 10


def test_killed_run_resumes_from_its_backup(tmp_path):
  backup = tmp_path / "backup"
  args = SMALL + ["--epochs=4", "--backup_freq=10",
                  "--backup_dir=%s" % backup,
                  "--output_dir=%s" % (tmp_path / "out")]
  proc = subprocess.Popen([sys.executable, "-m", "trainers.train"] + args,
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  # Wait until a mid-run backup exists, then kill without warning.
  deadline = time.time() + 300
  found = False
  while time.time() < deadline and proc.poll() is None:
    ckpts = [f for _, _, fs in os.walk(backup) for f in fs
             if f.startswith("ckpt") and f.endswith(".index")]
    if ckpts:
      time.sleep(1.0)  # let it train past the backup
      found = True
      break
    time.sleep(0.2)
  assert found and proc.poll() is None, "no backup before the run ended"
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  assert not (tmp_path / "out" / "metrics.json").exists()

  out = _train(args)
  assert out.returncode == 0, out.stderr[-3000:]
  log = out.stdout + out.stderr
  assert "Resumed from backup at step" in log, log[-2000:]
  step = int(log.split("Resumed from backup at step ")[1].split(".")[0])
  assert step >= 10
  metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
  assert metrics["resumed_from_step"] == step
  # The sampler state came back with the model: the frequency estimator
  # advanced exactly once per optimizer step across both processes.
  assert metrics["optimizer_steps"] == step + metrics["steps"]
  assert metrics["estimator_step"] == metrics["optimizer_steps"]


if __name__ == "__main__":
  sys.exit(pytest.main([__file__]))


def test_mirrored_strategy_from_the_command_line(tmp_path):
  # The trainer splits the CPU before TensorFlow initialises its devices
  # (a check with list_logical_devices would initialise them first).
  out = _train(SMALL + ["--epochs=1", "--strategy=mirrored",
                        "--cpu_replicas=2", "--sampler=cross_batch",
                        "--output_dir=%s" % tmp_path])
  assert out.returncode == 0, out.stderr[-3000:]
  metrics = json.loads((tmp_path / "metrics.json").read_text())
  assert metrics["num_replicas"] == 2 and metrics["num_workers"] == 1
  assert metrics["gathered_bytes_per_step"] == 32 * (4 * 16 + 8)
