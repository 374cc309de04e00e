"""Parameter-server training: sharded tables, samplers, restore, export.

An in-process cluster (2 workers, 2 parameter servers, `ps_program.py`)
runs the checks in one subprocess (TensorFlow's remote devices cannot be
undone in the pytest process); the launcher tests start real processes on
loopback (`trainers.launch_local --ps=M`).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.distributed import multi_worker_test
from tests.distributed import ps_program

ROOT = multi_worker_test.ROOT
# The default tier checks CBNS (queue, estimator); the slow test all 16.
DEFAULT_SAMPLERS = ("cross_batch",)
ALL_SAMPLERS = ("adaptive", "adaptive_mixed", "balanced", "bir",
                "cross_batch", "full", "in_batch", "in_batch_logq",
                "in_batch_logq_static", "inverse_popularity", "mixed",
                "popularity", "two_stage", "two_stage_triplet", "uniform",
                "xir")


def _program(out, checks, samplers=DEFAULT_SAMPLERS):
  job = multi_worker_test._run(  # pylint: disable=protected-access
      ["tests.distributed.ps_program", "--out=%s" % out,
       "--checks=%s" % ",".join(checks),
       "--samplers=%s" % ",".join(samplers)], timeout=1500)
  assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-5000:]


def _load(out, name):
  return dict(np.load(os.path.join(out, name + ".npz"), allow_pickle=False))


def _result(out, name):
  return json.loads(str(_load(out, name)["result"]))


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  folder = tmp_path_factory.mktemp("parameter_server")
  _program(folder, ["tables", "first_loss", "samplers", "restore", "export",
                    "seeds"])
  return str(folder)


def test_each_table_is_a_sharded_variable_with_the_requested_shards(out):
  cases = _result(out, "tables")
  both_ps = ["/job:ps/replica:0/task:%d/device:CPU:0" % i for i in (0, 1)]
  for case, shards in (("id_2", 2), ("id_3", 3)):
    tables = cases[case]["tables"]
    assert sorted(tables) == ["item_embedding", "user_embedding"]
    for table in tables.values():
      assert table["sharded"] and table["shards"] == shards
      assert len(table["rows"]) == shards
      assert sum(table["rows"]) == table["total_rows"]
      assert max(table["rows"]) - min(table["rows"]) <= 1
      assert table["devices"] == both_ps  # spread over both servers
  # A history tower sharing the item table: one table, sharded once.
  assert cases["mean_shared_2"]["table_shards"] == {"item_embedding": 2}
  assert cases["mean_separate_2"]["table_shards"] == {
      "item_embedding": 2, "history_item_embedding": 2,
      "history_user_embedding": 2}


def test_first_step_loss_equals_the_one_device_loss(out):
  for name, losses in _result(out, "first_loss").items():
    assert losses["steps"] == 1, name
    np.testing.assert_allclose(losses["parameter_server"],
                               losses["one_device"], rtol=1e-6,
                               err_msg=name)


def check_sampler_state(npz, sampler):
  """Asserts the state of `sampler` after asynchronous steps is well-formed."""
  steps = int(npz["steps"])
  n = int(npz["num_items"])
  assert steps == int(npz["steps_per_epoch"]) > 5
  assert np.isfinite(float(npz["loss"]))
  state = {k.split("/", 2)[2].split(":")[0]: v for k, v in npz.items()
           if k.startswith("state/")}
  for key, value in ((k, v) for k, v in npz.items()
                     if k.startswith("state/")):
    if value.dtype.kind == "f":
      assert np.isfinite(value).all(), key
    if key.endswith("/step:0"):
      # Step counters advance by atomic increments: every step counted.
      assert int(value) == steps, (sampler, key, int(value))
  by_name = {k.rsplit("/", 1)[-1]: v for k, v in state.items()}
  batch, options = ps_program.BATCH, ps_program.OPTIONS
  if "queue_ids" in by_name:
    memory = options["memory_size"]
    head, filled = int(by_name["head"]), int(by_name["filled"])
    assert 0 <= head < memory, head
    # A write from a stale `filled` may count fewer slots than were
    # written (never more): at least one batch, at most the memory.
    assert batch <= filled <= memory, filled
    ids = by_name["queue_ids"][:filled]
    assert ((ids >= 1) & (ids <= n)).all(), ids  # every counted slot written
  if "cache_ids" in by_name:
    cache = by_name["cache_ids"]
    assert cache.shape == (options["cache_size"],)
    assert ((cache >= 1) & (cache <= n)).all()
    occurrence = by_name["occurrence"]
    assert (occurrence >= 1).all()
    # Every draw of every worker's step counted once (scatter_add).
    assert occurrence.sum() - (n + 1) == steps * batch * options[
        "num_resampled"]
  if "last_step" in by_name:
    last, count = by_name["last_step"], by_name["n_updates"]
    gap = by_name["avg_gap"]
    assert ((last >= 0) & (last <= steps)).all()
    assert ((count >= 0) & (count <= steps)).all()
    assert np.array_equal(count > 0, last > 0)  # hit buckets only
    assert (gap >= 0).all() and (gap[count > 0] > 0).all()
  if "item_table" in by_name:
    assert by_name["item_table"].shape == (n + 1, 16)


@pytest.mark.parametrize("sampler", DEFAULT_SAMPLERS)
def test_sampler_state_stays_well_formed(out, sampler):
  check_sampler_state(_load(out, "sampler_" + sampler), sampler)


@pytest.mark.slow
def test_every_sampler_trains_and_keeps_its_state_well_formed(tmp_path):
  _program(tmp_path, ["samplers"], ALL_SAMPLERS)
  for sampler in ALL_SAMPLERS:
    check_sampler_state(_load(tmp_path, "sampler_" + sampler), sampler)


def test_restore_into_the_same_and_other_shard_counts(out):
  result = _result(out, "restore")
  saved = _load(out, "restore")
  assert result["saved_shards"] == {"item_embedding": 2, "user_embedding": 2}
  # Tables, every optimizer variable (sharded slots too) and the sampler.
  assert any(k.startswith("saved/optimizer/") for k in saved)
  assert any(k.startswith("saved/sampler/") for k in saved)
  for shards in ("2", "3", "1"):
    restored = result["restored"][shards]
    assert restored["table_shards"] == {"item_embedding": int(shards),
                                        "user_embedding": int(shards)}
    assert restored["epochs_done"] == 1
    assert restored["iterations"] == result["iterations"] > 0
    assert restored["keys_match"]
    assert restored["unequal"] == [], (shards, restored["unequal"])


def test_restore_refuses_a_checkpoint_of_another_model(out):
  result = _result(out, "restore")
  assert "cannot restore" in result["refusal"]
  # The reason of the parameter server that refused a table's slice.
  assert re.search(r"\[\d+,8\] does not match the shape stored in "
                   r"checkpoint: \[\d+,16\]", result["refusal"])
  assert "Traceback" not in result["refusal"]
  assert "15 steps per epoch, these flags give 16" in result["steps_refusal"]


def test_export_from_sharded_tables_answers_in_a_fresh_process(out):
  export = _load(out, "export")
  assert json.loads(str(export["table_shards"])) == {
      "item_embedding": 2, "user_embedding": 2}
  assert bool(export["user_table_equal"]) and bool(export["queries_equal"])
  assert bool(export["local_unsharded"])
  # Only the query tower is copied; the chief holds item embeddings only.
  assert export["local_tables"].tolist() == ["user_embedding"]
  users = [str(u) for u in export["users"]]
  env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  fresh = subprocess.run(
      [sys.executable, "-c", _FRESH, os.path.join(out, "export"),
       json.dumps(users)], capture_output=True, text=True, env=env,
      timeout=300, check=False)
  assert fresh.returncode == 0, fresh.stderr[-3000:]
  ids = json.loads(fresh.stdout.strip().splitlines()[-1])
  assert ids == export["top"].tolist()


# A serving process: TensorFlow only, no Keras, no tfrs_negsamp.
_FRESH = r"""
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
_, ids = loaded(tf.constant(json.loads(sys.argv[2])))
print(json.dumps(ids.numpy().astype(str).tolist()))
"""


def test_seeds_fold_in_the_worker_index(out):
  seeds = _load(out, "seeds")
  workers, values = seeds["workers"], seeds["seeds"]
  assert set(workers) <= {0, 1}
  # [24 steps, top level / inside tf.cond, 2]: the same seed in both places,
  # one seed per worker, never the one-process seed.
  np.testing.assert_array_equal(values[:, 0], values[:, 1])
  for worker in set(workers):
    assert len({tuple(v) for v in values[workers == worker, 0]}) == 1
  assert len({tuple(v) for v in values[:, 0]}) == len(set(workers))
  assert not (values[:, 0] == seeds["unfolded"]).all(axis=1).any()


def test_launcher_with_ps_refuses_another_strategy():
  out = multi_worker_test._run(  # pylint: disable=protected-access
      ["trainers.launch_local", "--workers=2", "--ps=1", "--",
       "--strategy=multi_worker"], timeout=120)
  assert out.returncode == 2
  assert "--strategy=parameter_server" in out.stderr


def test_trainer_without_tf_config_is_a_clear_error():
  env = multi_worker_test._env()  # pylint: disable=protected-access
  env.pop("TF_CONFIG", None)
  out = subprocess.run(
      [sys.executable, "-m", "trainers.train",
       "--strategy=parameter_server", "--epochs=1"], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=300, check=False)
  assert out.returncode == 2
  assert "--strategy=parameter_server needs the environment variable" in (
      out.stderr)


@pytest.mark.slow
def test_killed_worker_is_replaced_and_the_job_finishes(tmp_path):
  out_dir = tmp_path / "run"
  epochs, batch = 4, 32
  args = ["--workers=2", "--ps=1", "--max_restarts=1", "--",
          "--dataset=synthetic", "--synthetic_users=300",
          "--synthetic_items=200", "--synthetic_interactions=20",
          "--embedding_dim=16", "--batch_size=%d" % batch,
          "--epochs=%d" % epochs, "--sampler=cross_batch", "--verbose=2",
          "--query_tower=id", "--validate_every=0",
          "--ps_min_shard_bytes=1024", "--output_dir=%s" % out_dir,
          "--export_dir=%s" % (out_dir / "export")]
  proc = subprocess.Popen(
      [sys.executable, "-m", "trainers.launch_local"] + args, cwd=ROOT,
      env=multi_worker_test._env(),  # pylint: disable=protected-access
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines = multi_worker_test._Lines(proc.stdout)  # pylint: disable=protected-access
  try:
    deadline = time.monotonic() + 600
    # Kill worker 1 once the first epoch is done: training is under way.
    while lines.find(r"\[chief\] Epoch 2/") is None:
      assert proc.poll() is None, "\n".join(lines.lines[-60:])
      assert time.monotonic() < deadline, "no second epoch after 600 s"
      time.sleep(0.1)
    pid = int(lines.find(r"\[launch_local\] worker 1: pid (\d+)").group(1))
    os.kill(pid, signal.SIGKILL)
    code = proc.wait(timeout=900)
  finally:
    if proc.poll() is None:
      proc.kill()
  lines.join()
  log = "\n".join(lines.lines)
  assert code == 0, log[-6000:]
  assert "worker 1 stopped (killed by SIGKILL); starting it again" in log
  assert len(re.findall(r"worker 1: pid \d+", log)) == 2
  assert "restarting the job" not in log  # the chief went on
  metrics = json.loads((out_dir / "metrics.json").read_text())
  steps_per_epoch = metrics["dataset_summary"]["train_rows"] // batch
  # Every scheduled step ran; a step the dead worker had in flight may
  # have been applied before it died and is run again.
  assert metrics["optimizer_steps"] >= epochs * steps_per_epoch
  assert metrics["optimizer_steps"] <= epochs * steps_per_epoch + 2
  assert metrics["strategy"] == "parameter_server"
  assert metrics["num_ps"] == 1 and metrics["num_workers"] == 2
  assert set(metrics["peak_memory_bytes_per_process"]) == {
      "chief/0", "ps/0", "worker/0", "worker/1"}
  assert (out_dir / "export" / "saved_model.pb").exists()
