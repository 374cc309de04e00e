"""`--strategy=parameter_server` settings and the tasks' memory reports."""

import json

import pytest

from tests import helpers
from trainers.pipeline import configuration
from trainers.pipeline import parameter_server


def test_ps_flags_are_validated():
  config = helpers.tiny_config(strategy="parameter_server", ps_shards=-1)
  with pytest.raises(configuration.ConfigError, match="--ps_shards must be"):
    config.validate()
  config = helpers.tiny_config(strategy="parameter_server",
                               ps_min_shard_bytes=0)
  with pytest.raises(configuration.ConfigError,
                     match="--ps_min_shard_bytes must be >= 1"):
    config.validate()


def test_baselines_do_not_run_on_parameter_servers():
  config = helpers.tiny_config(strategy="parameter_server",
                               sampler="popularity_baseline")
  with pytest.raises(configuration.ConfigError, match="trains no model"):
    parameter_server.check_config(config)


def test_memory_reports_keep_each_task_peak_within_a_cluster(tmp_path):
  folder = str(tmp_path / parameter_server.MEMORY_SUBDIR)
  spec = {"chief": ["h:1"], "worker": ["h:2"], "ps": ["h:3", "h:4"]}
  key = parameter_server.cluster_key(spec)
  assert key == parameter_server.cluster_key(dict(reversed(spec.items())))
  own = parameter_server.peak_memory_bytes()
  parameter_server.write_memory_report(folder, "ps", 1, key)
  reports = parameter_server.read_memory_reports(folder, key)
  assert list(reports) == ["ps/1"] and reports["ps/1"] >= own
  # A task replaced in the same cluster keeps its predecessor's peak.
  with open(tmp_path / parameter_server.MEMORY_SUBDIR / "ps-1.json", "w") as f:
    json.dump({"job": "ps", "index": 1, "pid": 1, "cluster": key,
               "peak_memory_bytes": own * 10}, f)
  parameter_server.write_memory_report(folder, "ps", 1, key)
  parameter_server.write_memory_report(folder, "worker", 0, key)
  reports = parameter_server.read_memory_reports(folder, key)
  assert reports["ps/1"] == own * 10
  assert sorted(reports) == ["ps/1", "worker/0"]
  # Another job (other addresses) in the same folder: neither sees the other.
  other = parameter_server.cluster_key(dict(spec, worker=["h:5"]))
  assert parameter_server.read_memory_reports(folder, other) == {}
  parameter_server.write_memory_report(folder, "ps", 1, other)
  assert parameter_server.read_memory_reports(folder, other)["ps/1"] < own * 10
  assert parameter_server.read_memory_reports(str(tmp_path / "none"),
                                              key) == {}
