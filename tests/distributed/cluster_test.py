"""TF_CONFIG parsing, the chief rule, scratch folders and the launcher's flags."""

import json
import os

import pytest
from absl import app

from trainers.pipeline import cluster
from trainers import launch_local


def _config(**task):
  return json.dumps({"cluster": {"worker": ["127.0.0.1:1000",
                                            "127.0.0.1:1001"]},
                     "task": task or {"type": "worker", "index": 1}})


def test_tf_config_for_round_trips_through_the_parser():
  config = cluster.tf_config_for(["h0:1", "h1:2", "h2:3"], 2)
  parsed = cluster.parse_tf_config(json.dumps(config))
  assert parsed["task"] == {"type": "worker", "index": 2}
  assert cluster.num_workers(parsed) == 3
  assert not cluster.is_chief(parsed)
  assert cluster.is_chief(cluster.tf_config_for(["h0:1", "h1:2"], 0))


def test_an_explicit_chief_job_is_the_chief():
  config = {"cluster": {"chief": ["c:1"], "worker": ["w:1"]},
            "task": {"type": "worker", "index": 0}}
  assert not cluster.is_chief(config)
  config["task"] = {"type": "chief", "index": 0}
  assert cluster.is_chief(config)
  assert cluster.num_workers(config) == 2


@pytest.mark.parametrize("text,message", [
    (None, "needs the environment variable TF_CONFIG"),
    ("{not json", "not valid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('{"task": {"type": "worker", "index": 0}}', 'no "cluster"'),
    ('{"cluster": {"worker": ["a:1"]}}', 'no "task"'),
    ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker"}}',
     "host:port"),
    ('{"cluster": {"worker": ["a:99999"]}, "task": {"type": "worker"}}',
     "host:port"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief"}}',
     "not a job of the cluster"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
     '"index": 1}}', "outside job 'worker' of 1"),
    ('{"cluster": {"worker": ["a:1"], "ps": ["b:1"]}, "task": {"type": '
     '"worker"}}', "not used by MultiWorkerMirroredStrategy"),
    ('{"cluster": {"chief": ["a:1", "b:1"]}, "task": {"type": "chief"}}',
     "at most one chief"),
])
def test_bad_tf_config_names_the_problem(text, message):
  with pytest.raises(cluster.ClusterError, match=message):
    cluster.parse_tf_config(text)


def test_read_tf_config_uses_the_environment():
  assert cluster.read_tf_config({"TF_CONFIG": _config()})["task"][
      "index"] == 1
  with pytest.raises(cluster.ClusterError):
    cluster.read_tf_config({})


def test_free_ports_are_distinct_and_bindable():
  ports = cluster.free_ports(3)
  assert len(set(ports)) == 3 and all(p > 0 for p in ports)


def test_chief_path_is_real_on_the_chief_and_removed_elsewhere(tmp_path):
  target = str(tmp_path / "export")
  with cluster.chief_path(target, chief=True) as path:
    assert path == target
  with cluster.chief_path(target, chief=False) as path:
    assert path != target and not path.startswith(str(tmp_path))
    os.makedirs(path)
    open(os.path.join(path, "f"), "w").close()
    scratch = os.path.dirname(path)
  assert not os.path.exists(scratch)
  assert not os.path.exists(target)


def test_launcher_adds_the_strategy_and_a_backup_for_restarts(tmp_path):
  argv = launch_local.worker_flags(["--epochs=1"], 0, str(tmp_path))
  assert argv == ["--epochs=1", "--strategy=multi_worker"]
  argv = launch_local.worker_flags(["--strategy=multi_worker"], 2,
                                   str(tmp_path))
  assert argv[-1] == "--backup_dir=%s" % (tmp_path / "backup")
  argv = launch_local.worker_flags(["--backup_dir", "/b"], 2, str(tmp_path))
  assert argv == ["--backup_dir", "/b", "--strategy=multi_worker"]
  with pytest.raises(app.UsageError, match="--strategy=default"):
    launch_local.worker_flags(["--strategy=default"], 0, str(tmp_path))


def test_exit_codes_follow_the_shell_convention():
  assert launch_local._exit_code(0) == 0
  assert launch_local._exit_code(3) == 3
  assert launch_local._exit_code(-9) == 137
  assert "SIGKILL" in launch_local._describe(-9)


def test_parameter_server_tf_config_round_trips_through_the_parser():
  config = cluster.ps_tf_config("c:1", ["w:1", "w:2"], ["p:1"], "ps", 0)
  parsed = cluster.parse_tf_config(json.dumps(config), parameter_server=True)
  assert parsed["cluster"] == {"chief": ["c:1"], "worker": ["w:1", "w:2"],
                               "ps": ["p:1"]}
  assert parsed["task"] == {"type": "ps", "index": 0}
  assert not cluster.is_chief(parsed)
  assert cluster.is_chief(
      cluster.ps_tf_config("c:1", ["w:1"], ["p:1"], "chief", 0))
  with pytest.raises(cluster.ClusterError, match="no task worker:2"):
    cluster.ps_tf_config("c:1", ["w:1", "w:2"], ["p:1"], "worker", 2)


@pytest.mark.parametrize("config,message", [
    (None, "parameter_server needs the environment variable TF_CONFIG"),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"]},
      "task": {"type": "chief"}}, "needs a 'ps' job"),
    ({"cluster": {"worker": ["b:1"], "ps": ["c:1"]},
      "task": {"type": "worker"}}, "needs a 'chief' job"),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"],
                  "evaluator": ["d:1"]}, "task": {"type": "chief"}},
     "not used by ParameterServerStrategy"),
    ({"cluster": {"chief": ["a:1"], "worker": ["b:1"], "ps": ["c:1"]},
      "task": {"type": "ps", "index": 1}}, "outside job 'ps' of 1"),
])
def test_bad_parameter_server_tf_config_names_the_problem(config, message):
  text = None if config is None else json.dumps(config)
  with pytest.raises(cluster.ClusterError, match=message):
    cluster.parse_tf_config(text, parameter_server=True)


def test_launcher_adds_the_parameter_server_strategy(tmp_path):
  argv = launch_local.worker_flags(["--epochs=1"], 0, str(tmp_path),
                                   "parameter_server")
  assert argv == ["--epochs=1", "--strategy=parameter_server"]
  with pytest.raises(app.UsageError, match="--ps=M runs --strategy="
                     "parameter_server jobs"):
    launch_local.worker_flags(["--strategy=mirrored"], 0, str(tmp_path),
                              "parameter_server")


def test_restart_budget_is_shared_and_runs_out():
  budget = launch_local.Budget(2)
  assert budget.take() and budget.take()
  assert not budget.take() and budget.left == 0
