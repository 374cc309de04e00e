"""An export is whole or absent; the serving programs refuse half of one.

`export.export` writes to a sibling folder and renames it into place, so a
failure (or a kill) mid-export leaves the previous export or none. A folder
cut short anyway (an older export killed while writing, a partial copy) is
refused by `trainers.query` and `trainers.serve` with the same one line.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import tensorflow as tf

from tests.serving import stand_ins
from tfrs_negsamp.serving import export
from trainers.serving import export_files

_VARIABLES = os.path.join("variables", "variables.data-00000-of-00001")


@pytest.fixture(scope="module")
def model():
  return stand_ins.user_model(num_items=20)


@pytest.fixture(scope="module")
def good(model, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("export_files") / "good")
  stand_ins.user_export(path, model, k=5)
  return path


def _digest(folder):
  """{relative path: sha256} of every file under `folder`."""
  out = {}
  for root, _, files in os.walk(folder):
    for name in files:
      full = os.path.join(root, name)
      with open(full, "rb") as f:
        out[os.path.relpath(full, folder)] = hashlib.sha256(
            f.read()).hexdigest()
  return out


def _copy(good, tmp_path, name="cut"):
  path = str(tmp_path / name)
  shutil.copytree(good, path)
  return path


def _error(path):
  with pytest.raises(export_files.ExportError) as info:
    export_files.read_export(path, "--model_dir=%s" % path)
  return str(info.value)


_AGAIN = "export it again (python -m trainers.train ... --export_dir=...)"


def test_a_whole_export_reads(good):
  meta = export_files.read_export(good)
  assert meta["format"] == export.FORMAT_VERSION == export_files.FORMAT_VERSION
  assert set(meta["files"]) == {
      "saved_model.pb", "fingerprint.pb", "variables/variables.index",
      "variables/variables.data-00000-of-00001"}


def test_cut_short_exports_are_named(good, tmp_path):
  missing = str(tmp_path / "none")
  assert _error(missing) == ("no SavedModel at --model_dir=%s "
                             "(saved_model.pb missing)" % missing)
  # A run killed just after saved_model.pb was written (older exporter).
  path = _copy(good, tmp_path, "no_meta")
  os.remove(os.path.join(path, export.METADATA_FILE))
  assert _error(path) == (
      "incomplete export at --model_dir=%s: saved_model.pb without "
      "tfrs_negsamp.json (a whole export is renamed into place with both, "
      "so this folder was cut short: a run stopped while writing it, or a "
      "partial copy); %s" % (path, _AGAIN))
  path = _copy(good, tmp_path, "short_file")
  full = os.path.join(path, _VARIABLES)
  size = os.path.getsize(full)
  with open(full, "r+b") as f:
    f.truncate(size // 2)
  assert _error(path) == (
      "incomplete export at --model_dir=%s: %s has %d bytes, the export "
      "wrote %d; %s" % (path, "variables/variables.data-00000-of-00001",
                        size // 2, size, _AGAIN))
  path = _copy(good, tmp_path, "no_index")
  os.remove(os.path.join(path, "variables", "variables.index"))
  assert "variables/variables.index is missing" in _error(path)
  path = _copy(good, tmp_path, "bad_json")
  with open(os.path.join(path, export.METADATA_FILE), "r+") as f:
    f.truncate(20)
  assert "tfrs_negsamp.json cannot be read" in _error(path)
  path = _copy(good, tmp_path, "old")
  meta_path = os.path.join(path, export.METADATA_FILE)
  with open(meta_path) as f:
    meta = json.load(f)
  del meta["format"]
  with open(meta_path, "w") as f:
    json.dump(meta, f)
  assert _error(path).startswith(
      "the export at --model_dir=%s has format 1 (none recorded) but this "
      "version serves format 2" % path)


@pytest.mark.parametrize("damage", ["no_metadata", "short_variables"])
def test_query_and_serve_say_the_same_line(good, tmp_path, damage):
  path = _copy(good, tmp_path)
  if damage == "no_metadata":
    os.remove(os.path.join(path, export.METADATA_FILE))
  else:
    with open(os.path.join(path, _VARIABLES), "r+b") as f:
      f.truncate(3)
  lines = []
  for program, extra in (("query", ["--user_id=u1"]),
                         ("serve", ["--port=0"])):
    out = stand_ins.program(program, ["--model_dir=%s" % path] + extra,
                            timeout=120)
    assert out.returncode == 2, (program, out.stderr[-2000:])
    assert "Traceback" not in out.stderr and not out.stdout
    lines.append([l for l in out.stderr.splitlines() if l.strip()])
  assert lines[0] == lines[1] and len(lines[0]) == 1, lines
  assert lines[0][0].startswith("error: incomplete export at --model_dir=%s: "
                                % path)


def test_a_failed_export_leaves_the_previous_one(model, tmp_path,
                                                 monkeypatch):
  path = str(tmp_path / "export")
  stand_ins.user_export(path, model, k=5)
  before = _digest(path)

  def fail_after_saving(folder):
    assert os.path.isfile(os.path.join(folder, "saved_model.pb"))
    raise OSError("disk full (simulated)")

  monkeypatch.setattr(export, "file_sizes", fail_after_saving)
  with pytest.raises(OSError, match="disk full"):
    stand_ins.user_export(path, model, k=6)
  monkeypatch.undo()
  assert _digest(path) == before
  assert export_files.read_export(path)["k"] == 5
  assert export.stale_siblings(path) == []

  def fail_while_saving(obj, folder, **kwargs):
    del obj, kwargs
    with open(os.path.join(folder, "saved_model.pb"), "wb") as f:
      f.write(b"half")
    raise RuntimeError("killed (simulated)")

  monkeypatch.setattr(tf.saved_model, "save", fail_while_saving)
  with pytest.raises(RuntimeError, match="killed"):
    stand_ins.user_export(path, model, k=6)
  # Without a previous export: none.
  with pytest.raises(RuntimeError, match="killed"):
    stand_ins.user_export(str(tmp_path / "new"), model, k=6)
  monkeypatch.undo()
  assert _digest(path) == before
  assert not os.path.exists(tmp_path / "new")
  assert sorted(os.listdir(tmp_path)) == ["export"]
  # A complete export replaces the previous one and leaves nothing else.
  stand_ins.user_export(path, model, k=6)
  assert export_files.read_export(path)["k"] == 6
  assert sorted(os.listdir(tmp_path)) == ["export"]


_KILLED = r"""
import os, sys, time
sys.path.insert(0, sys.argv[2])
os.environ["TF_USE_LEGACY_KERAS"] = "1"
from tests.serving import stand_ins
from tfrs_negsamp.serving import export

def stall(folder):  # the SavedModel is written, the metadata is not
  print("saved", folder, flush=True)
  time.sleep(600)

export.file_sizes = stall
stand_ins.user_export(sys.argv[1], stand_ins.user_model(num_items=20), k=7)
"""


def test_a_run_killed_mid_export_leaves_the_previous_one(good, tmp_path):
  path = _copy(good, tmp_path, "export")
  before = _digest(path)
  proc = subprocess.Popen(
      [sys.executable, "-c", _KILLED, path, stand_ins.ROOT],
      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
      env=stand_ins.env())
  try:
    line = proc.stdout.readline()
    assert line.startswith("saved "), line
    partial = line.split(" ", 1)[1].strip()
    assert os.path.isfile(os.path.join(partial, "saved_model.pb"))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert _digest(path) == before
  assert export_files.read_export(path)["k"] == 5
  assert export.stale_siblings(path) == [partial]
  # What a reader pointed at the leftover gets: the one-line refusal.
  assert _error(partial).startswith("incomplete export at")
  out = stand_ins.program("query", ["--model_dir=%s" % path,
                                    "--user_id=u1", "--k=5"])
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads(out.stdout.strip().splitlines()[-1])["count"] == 5


def test_export_refuses_to_replace_other_files(model, tmp_path):
  folder = tmp_path / "results"
  folder.mkdir()
  (folder / "metrics.json").write_text("{}")
  (folder / export.METADATA_FILE).write_text("{}")
  with pytest.raises(ValueError, match="holds metrics.json, which an export "
                     "would replace"):
    stand_ins.user_export(str(folder), model)
  assert sorted(os.listdir(folder)) == ["metrics.json", export.METADATA_FILE]
  (tmp_path / "file").write_text("x")
  with pytest.raises(ValueError, match="it is a file"):
    stand_ins.user_export(str(tmp_path / "file"), model)
  empty = tmp_path / "empty"
  empty.mkdir()
  stand_ins.user_export(str(empty), model)
  assert export_files.read_export(str(empty))["k"] == 10


def test_atomic_directory_swaps_whole_folders(tmp_path):
  """A reader sees the old folder or the new one, whole."""
  path = str(tmp_path / "out")
  with export.atomic_directory(path) as partial:
    with open(os.path.join(partial, "a"), "w") as f:
      f.write("1")
    assert not os.path.exists(path)
  with export.atomic_directory(path) as partial:
    with open(os.path.join(partial, "b"), "w") as f:
      f.write("2")
    time.sleep(0.01)
    assert os.listdir(path) == ["a"]
  assert os.listdir(path) == ["b"]
  assert sorted(os.listdir(tmp_path)) == ["out"]
