"""The multi-worker cluster as TensorFlow defines it: `TF_CONFIG`.

`MultiWorkerMirroredStrategy` reads the environment variable `TF_CONFIG`, a
JSON object

    {"cluster": {"worker": ["host0:port", "host1:port", ...]},
     "task": {"type": "worker", "index": i}}

(optionally with a `"chief"` job of one address). Without a `chief` job,
worker 0 is the chief: it writes the outputs (metrics, export, the backup
checkpoint); the other workers write theirs to temporary folders that are
removed. This module validates `TF_CONFIG` before TensorFlow sees it, so that
a typo gives an error naming the problem instead of a hang, and builds it for
the local launcher (`trainers/launch_local.py`).

`ParameterServerStrategy` (`--strategy=parameter_server`) reads a cluster of
three jobs: one `chief` (the coordinator: it builds the model, schedules the
steps, evaluates and writes the outputs), `worker`s (they run the steps) and
`ps` (parameter servers: they hold the variables); `parse_tf_config(text,
parameter_server=True)` checks that shape and `ps_tf_config` builds it.
"""

import contextlib
import json
import os
import shutil
import socket
import tempfile
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence

ENV = "TF_CONFIG"
JOBS = ("chief", "worker")
PS_JOBS = ("chief", "worker", "ps")


class ClusterError(ValueError):
  """`TF_CONFIG` is missing or malformed."""


def tf_config_for(addresses: Sequence[str], index: int) -> Dict[str, Any]:
  """The `TF_CONFIG` of worker `index` in a cluster of `addresses`."""
  if not 0 <= index < len(addresses):
    raise ClusterError("worker index %d outside a cluster of %d workers."
                       % (index, len(addresses)))
  return {"cluster": {"worker": list(addresses)},
          "task": {"type": "worker", "index": index}}


def ps_tf_config(chief: str, workers: Sequence[str], ps: Sequence[str],
                 job: str, index: int) -> Dict[str, Any]:
  """The `TF_CONFIG` of task `job:index` of a parameter-server cluster."""
  cluster = {"chief": [chief], "worker": list(workers), "ps": list(ps)}
  if job not in cluster or not 0 <= index < len(cluster[job]):
    raise ClusterError("no task %s:%d in a cluster of 1 chief, %d workers "
                       "and %d parameter servers."
                       % (job, index, len(workers), len(ps)))
  return {"cluster": cluster, "task": {"type": job, "index": index}}


def parse_tf_config(text: Optional[str],
                    parameter_server: bool = False) -> Dict[str, Any]:
  """Parses and validates a `TF_CONFIG` string; raises `ClusterError`.

  Args:
    text: the `TF_CONFIG` value.
    parameter_server: validate a `ParameterServerStrategy` cluster (one
      chief, workers and ps) instead of a `MultiWorkerMirroredStrategy` one.
  """
  if not text:
    if parameter_server:
      raise ClusterError(
          "--strategy=parameter_server needs the environment variable "
          'TF_CONFIG, e.g. {"cluster": {"chief": ["host0:2222"], "worker": '
          '["host1:2222", "host2:2222"], "ps": ["host3:2222"]}, "task": '
          '{"type": "chief", "index": 0}} (python -m trainers.launch_local '
          "--ps=M sets it for tasks on this machine).")
    raise ClusterError(
        "--strategy=multi_worker needs the environment variable TF_CONFIG, "
        'e.g. {"cluster": {"worker": ["host0:12345", "host1:12345"]}, '
        '"task": {"type": "worker", "index": 0}} (python -m '
        "trainers.launch_local sets it for workers on this machine).")
  try:
    config = json.loads(text)
  except ValueError as e:
    raise ClusterError("TF_CONFIG is not valid JSON: %s" % e) from e
  if not isinstance(config, dict):
    raise ClusterError("TF_CONFIG must be a JSON object, got %r." % config)
  cluster, task = config.get("cluster"), config.get("task")
  if not isinstance(cluster, dict) or not cluster:
    raise ClusterError('TF_CONFIG has no "cluster" object of jobs.')
  jobs = PS_JOBS if parameter_server else JOBS
  for job, addresses in cluster.items():
    if job not in JOBS + ("evaluator", "ps"):
      raise ClusterError("TF_CONFIG: unknown job %r in the cluster; valid: "
                         "%s." % (job, ", ".join(jobs)))
    if job not in jobs:
      raise ClusterError(
          "TF_CONFIG: job %r is not used by %s; list only %s." % (
              job, "ParameterServerStrategy" if parameter_server
              else "MultiWorkerMirroredStrategy", ", ".join(jobs)))
    if (not isinstance(addresses, list) or not addresses or not all(
        isinstance(a, str) and _valid_address(a) for a in addresses)):
      raise ClusterError("TF_CONFIG: job %r needs a non-empty list of "
                         "host:port strings, got %r." % (job, addresses))
  if parameter_server:
    for job in PS_JOBS:
      if job not in cluster:
        raise ClusterError(
            "TF_CONFIG: --strategy=parameter_server needs a %r job (one "
            "chief, one or more workers, one or more ps)." % job)
  if "worker" not in cluster and "chief" not in cluster:
    raise ClusterError('TF_CONFIG: the cluster needs a "worker" job.')
  if len(cluster.get("chief", [])) > 1:
    raise ClusterError("TF_CONFIG: at most one chief, got %d."
                       % len(cluster["chief"]))
  if not isinstance(task, dict):
    raise ClusterError('TF_CONFIG has no "task" object {"type", "index"}.')
  job, index = task.get("type"), task.get("index", 0)
  if job not in cluster:
    raise ClusterError("TF_CONFIG: task type %r is not a job of the cluster "
                       "(%s)." % (job, ", ".join(sorted(cluster))))
  if (isinstance(index, bool) or not isinstance(index, int)
      or not 0 <= index < len(cluster[job])):
    raise ClusterError("TF_CONFIG: task index %r outside job %r of %d "
                       "tasks." % (index, job, len(cluster[job])))
  return config


def _valid_address(address: str) -> bool:
  host, _, port = address.rpartition(":")
  return bool(host) and port.isdigit() and 0 < int(port) < 65536


def read_tf_config(environ: Optional[Mapping[str, str]] = None,
                   parameter_server: bool = False) -> Dict[str, Any]:
  """The validated `TF_CONFIG` of this process (see `parse_tf_config`)."""
  environ = os.environ if environ is None else environ
  return parse_tf_config(environ.get(ENV), parameter_server=parameter_server)


def num_workers(config: Mapping[str, Any]) -> int:
  return sum(len(config["cluster"].get(job, [])) for job in JOBS)


def is_chief(config: Optional[Mapping[str, Any]]) -> bool:
  """Whether this task writes the outputs (no config: a single process)."""
  if config is None:
    return True
  job, index = config["task"]["type"], config["task"].get("index", 0)
  if "chief" in config["cluster"]:
    return job == "chief"
  return job == "worker" and index == 0


def free_ports(count: int, host: str = "127.0.0.1") -> List[int]:
  """`count` distinct ports free on `host` now (bound together, then freed)."""
  sockets = []
  try:
    for _ in range(count):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind((host, 0))
      sockets.append(s)
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


@contextlib.contextmanager
def chief_path(path: str, chief: bool) -> Iterator[str]:
  """`path` on the chief; elsewhere a temporary folder removed on exit.

  For saves that every worker must take part in (their collectives need all
  workers) while only the chief's copy is kept. Enter it just around the
  save, so that a worker killed at any other time leaves nothing behind.
  """
  if chief:
    yield path
    return
  scratch = tempfile.mkdtemp(prefix="tfrs_negsamp_worker_")
  try:
    yield os.path.join(scratch, os.path.basename(path.rstrip("/")) or "out")
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
