"""The programs' command line: --help, quiet logs, Ctrl-C, TensorBoard logs.

Real processes where the behaviour is the process's (`python -m
trainers.train`): the help, the stderr of a normal run, SIGINT; the log
filter and the help's grouping also in-process.
"""

import glob
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time

from absl import flags
import pytest
import tensorflow as tf

from tfrs_negsamp import samplers
from tfrs_negsamp.evaluation import full_corpus
from trainers import common
from trainers import console

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FLAGS = flags.FLAGS
if "sampler" not in FLAGS:
  common.define_flags()
SMALL = ["--dataset=synthetic", "--synthetic_users=300",
         "--synthetic_items=200", "--synthetic_interactions=20",
         "--embedding_dim=16", "--batch_size=32", "--verbose=0"]
# The lines a normal trainer run prints on stderr (protocol.summarize, the
# wall-time line, the lift line): nothing else.
RUN_LINES = (re.compile(r"in_batch_logq: recall@10=\S+ "),
             re.compile(r"wall time \S+ s \(data "),
             re.compile(r"(warning: below ranking by popularity: )?lift over "
                        r"popularity \S+x "))


def _env(quiet=True):
  env = dict(os.environ)
  # The programs choose the level themselves: no test-wide setting.
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)
  env.pop(console.TF_LOGS_ENV, None)
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  return env


def _train(args):
  return subprocess.run([sys.executable, "-m", "trainers.train"] + args,
                        cwd=ROOT, env=_env(), capture_output=True, text=True,
                        timeout=600, check=False)


def test_help_lists_the_flags_by_purpose_and_every_sampler():
  out = subprocess.run([sys.executable, "-m", "trainers.train", "--help"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True,
                       timeout=600, check=False)
  assert out.returncode == 0, out.stderr
  assert out.stderr == ""
  text = out.stdout
  assert text.startswith("Trains a two-tower retriever")
  assert "  --sampler=<string> (default: in_batch_logq)" in text
  for name in samplers.available_samplers():
    assert "  %s: %s" % (name, samplers.sampler_summary(name)[:30]) in text
  for name in ("popularity_baseline", "ease_baseline", "plain_tfrs"):
    assert "  %s: " % name in text
  titles = [t for t, _ in common.FLAG_GROUPS]
  titles.insert(titles.index("Sampler") + 1, common.SAMPLER_OPTIONS_GROUP)
  positions = [text.find("\n%s:\n" % t) for t in titles]
  assert -1 not in positions and positions == sorted(positions), titles
  # absl's own flags only with --helpfull.
  assert "logtostderr" not in text and "only_check_args" not in text


def test_helpfull_exits_0_with_the_built_in_flags(capsys):
  with pytest.raises(SystemExit) as stop:
    common.parse_flags(["train", "--helpfull"])
  assert stop.value.code == 0
  text = capsys.readouterr().out
  assert "\nBuilt-in flags (absl, TensorFlow):\n" in text
  assert "  --[no]logtostderr" in text
  assert "  --sampler=<string>" in text


def test_every_shared_flag_is_in_a_group():
  grouped = {n for _, names in common.FLAG_GROUPS for n in names}
  options = set(common.sampler_option_flags())
  defined = {f.name for f in FLAGS.flags_by_module_dict()["trainers.common"]}
  assert defined - grouped - options == set()
  assert grouped - defined == set()
  assert not grouped & options


def test_help_request_stops_at_the_double_dash():
  assert common.help_request(["p", "--help"]) == "short"
  assert common.help_request(["p", "-h"]) == "short"
  assert common.help_request(["p", "--helpfull"]) == "full"
  assert common.help_request(["p", "--", "--help"]) is None
  assert common.help_request(["p", "--helps"]) is None


# The filter (in-process, on a pipe).
NOISY = [
    b"2026-12-04 18:46:18.611649: E external/local_xla/xla/stream_executor/"
    b"cuda/cuda_platform.cc:51] failed call to cuInit: INTERNAL: CUDA error: "
    b"Failed call to cuInit: UNKNOWN ERROR (303)\n",
    b"2026-12-04 18:46:22.958050: E tensorflow/core/util/util.cc:131] oneDNN "
    b"supports DT_UINT8 only on platforms with AVX-512. Falling back to the "
    b"default Eigen-based implementation if present.\n",
    b"2026-12-04 21:19:37.506130: E tensorflow/core/util/util.cc:131] oneDNN "
    b"supports DT_INT64 only on platforms with AVX-512. Falling back to the "
    b"default Eigen-based implementation if present.\n",
    b"WARNING: All log messages before absl::InitializeLog() is called are "
    b"written to STDERR\n",
    b"I0000 00:00:1796409994.159615   31504 partitioner_factory_base.cc:58] "
    b"Size of sampled dataset for training partition: 50\n",
    b"W0000 00:00:1796409994.159888   31504 gmm_utils.cc:1026] Could not "
    b"normalize centroid due to zero norm or empty or zero-weight "
    b"partition.\n",
    b"I0000 00:00:1796409994.159979   31504 kmeans_tree_partitioner_utils.h:"
    b"90] PartitionerFactory ran in 311.626us.\n",
]
KEPT = [
    # A real TensorFlow error, an absl error, the program's own lines.
    b"2026-12-04 18:46:22.958050: E tensorflow/core/framework/op_kernel.cc:"
    b"1830] OP_REQUIRES failed at example.cc:1 : RESOURCE_EXHAUSTED: OOM\n",
    b"E0000 00:00:1796409994.159888   31504 scann.cc:1] bad index\n",
    b"error: --k must be >= 1, got 0\n",
    b"in_batch_logq: recall@10=0.2600  recall@50=1.0000\n",
    b"Fatal Python error: Segmentation fault\n",
    # Python logging in absl's format (a program's own records, e.g. the
    # server's): left to the loggers' levels.
    b"W1204 18:46:23.141146 140341684489088 server.py:316] client went "
    b"away\n",
]


def _filtered(chunks, pause=0.0):
  read_fd, write_fd = os.pipe()
  out_read, out_write = os.pipe()

  def feed():
    for chunk in chunks:
      os.write(write_fd, chunk)
      time.sleep(pause)
    os.close(write_fd)

  feeder = threading.Thread(target=feed)
  feeder.start()
  console.filter_stream(read_fd, out_write)
  feeder.join()
  os.close(read_fd)
  os.close(out_write)
  with os.fdopen(out_read, "rb") as f:
    return f.read()


def test_the_filter_drops_the_known_noise_and_keeps_the_rest():
  pairs = itertools.zip_longest(NOISY, KEPT, fillvalue=b"")
  lines = [line for pair in pairs for line in pair if line]
  assert len(lines) == len(NOISY) + len(KEPT)
  assert _filtered([b"".join(lines)]) == b"".join(KEPT)
  # Line by line, or split anywhere: the same.
  assert _filtered(lines) == b"".join(KEPT)
  data = b"".join(lines)
  assert _filtered([data[i:i + 7] for i in range(0, len(data), 7)]) == (
      b"".join(KEPT))


def test_the_filter_shows_a_progress_line_at_once():
  # "\r"-rewritten progress, and a partial line that waits for more: shown
  # after a short pause, not held until a line end that may never come.
  chunks = [b"\revaluate: 1/10 users ", b"\revaluate: 10/10 users ", b"\n",
            b"no line end"]
  assert _filtered(chunks, pause=0.3) == b"".join(chunks)


def test_third_party_records_below_error_are_dropped():
  keep = console.QuietThirdParty().filter

  def record(name, level):
    return logging.LogRecord(name, level, "x.py", 1, "message", None, None)

  # absl.logging's records (TensorFlow's SavedModel notes) and TensorFlow's.
  assert not keep(record("absl", logging.INFO))
  assert not keep(record("tensorflow", logging.WARNING))
  assert not keep(record("tf_keras.src.callbacks", logging.WARNING))
  assert keep(record("tensorflow", logging.ERROR))
  # The programs' own records (the server's) and other libraries' pass.
  assert keep(record("trainers.serving.server", logging.WARNING))
  assert keep(record("aiohttp.access", logging.INFO))
  assert keep(record("abslx", logging.INFO))


def test_tf_logs_flag_and_environment(monkeypatch):
  monkeypatch.delenv(console.TF_LOGS_ENV, raising=False)
  assert console.wants_tf_logs(["p", "--tf_logs"])
  assert console.wants_tf_logs(["p", "--tf_logs=true"])
  assert not console.wants_tf_logs(["p", "--tf_logs", "--notf_logs"])
  assert not console.wants_tf_logs(["p", "--", "--tf_logs"])
  assert not console.wants_tf_logs(["p"])
  monkeypatch.setenv(console.TF_LOGS_ENV, "1")
  assert console.wants_tf_logs(["p"])


def test_tf_logs_brings_tensorflow_s_lines_back(tmp_path):
  # A baseline run imports TensorFlow (which logs at INFO level on import)
  # but trains nothing: quick.
  args = ["--sampler=popularity_baseline", "--synthetic_users=100",
          "--synthetic_items=50"]
  out = _train(args + ["--tf_logs"])
  assert out.returncode == 0, out.stderr[-3000:]
  tsl = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] ", re.M)
  assert tsl.search(out.stderr), out.stderr


def _events(folder):
  """{tag: [steps]} of the event files in `folder`."""
  tags = {}
  for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  return {tag: sorted(steps) for tag, steps in tags.items()}


def test_ctrl_c_is_one_line_then_the_same_command_resumes_quietly(tmp_path):
  backup = tmp_path / "backup"
  # Batches of 8: 37 steps an epoch, so that the run is still training
  # well after its first backup (step 10) when the signal arrives.
  args = SMALL + ["--batch_size=8", "--epochs=2", "--backup_freq=10",
                  "--backup_dir=%s" % backup,
                  "--export_dir=%s" % (tmp_path / "export"),
                  "--tensorboard_dir=%s" % (tmp_path / "tb"),
                  "--output_dir=%s" % (tmp_path / "out")]
  proc = subprocess.Popen([sys.executable, "-m", "trainers.train"] + args,
                          cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline() == "Starting training at step 0.\n"
    deadline = time.time() + 300
    # The checkpoint state file names the backup once it is complete.
    while time.time() < deadline and proc.poll() is None and not (
        backup / "chief" / "checkpoint").exists():
      time.sleep(0.05)
    assert proc.poll() is None, "the run ended before its first backup"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == 130, stderr
  lines = stderr.splitlines()
  assert len(lines) == 1, stderr
  match = re.fullmatch(
      r"interrupted at step (\d+) of (\d+); run the same command to resume "
      r"from (.+) \(backed up at step (\d+)\)", lines[0])
  assert match, lines[0]
  step, total, folder, saved = match.groups()
  assert folder == str(backup)
  assert 10 <= int(saved) <= int(step) < int(total)
  assert int(saved) % 10 == 0
  assert "Traceback" not in stdout

  # The same command: resumes, and prints the package's lines only (no
  # cuInit, oneDNN, absl, ScaNN or Keras "unbuilt" line).
  out = _train(args)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "Resumed from backup at step %s." % saved in out.stdout
  lines = out.stderr.splitlines()
  assert len(lines) == len(RUN_LINES), out.stderr
  for pattern, line in zip(RUN_LINES, lines):
    assert pattern.match(line), line
  for word in ("cuInit", "oneDNN", "absl::", "unbuilt", "WARNING"):
    assert word not in out.stderr + out.stdout

  # TensorBoard: loss and step time per epoch, validation metrics per
  # epoch, the final test metrics at the last epoch.
  train = _events(tmp_path / "tb" / "train")
  for tag in ("epoch_loss", "epoch_loss_per_example", "epoch_step_seconds"):
    assert train.get(tag) == [0, 1], (tag, train)
  validation = _events(tmp_path / "tb" / "validation")
  final = _events(tmp_path / "tb" / "test")
  for name in full_corpus.quality_metric_names():
    assert validation.get("epoch_" + name) == [0, 1], (name, validation)
    assert final.get("final_" + name) == [1], (name, final)
  assert final["final_lift_over_popularity"] == [1]
