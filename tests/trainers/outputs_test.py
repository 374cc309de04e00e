"""A run's outputs: written whole, and an earlier run's removed at the start."""

import json
import os

import pytest

from tfrs_negsamp.serving import export
from trainers.pipeline import outputs


def test_write_json_replaces_whole_or_not_at_all(tmp_path):
  path = str(tmp_path / "run" / "metrics.json")
  outputs.write_json(path, {"hr@10": 0.5}, indent=2)
  assert json.loads(open(path).read()) == {"hr@10": 0.5}
  with pytest.raises(TypeError):
    outputs.write_json(path, {"bad": object()})
  assert json.loads(open(path).read()) == {"hr@10": 0.5}
  outputs.write_text(path, '{"hr@10": 0.7}')
  assert json.loads(open(path).read()) == {"hr@10": 0.7}
  assert os.listdir(tmp_path / "run") == ["metrics.json"]


def _fake_export(path):
  os.makedirs(os.path.join(path, "variables"))
  for name in ("saved_model.pb", export.METADATA_FILE,
               os.path.join("variables", "variables.index")):
    with open(os.path.join(path, name), "w") as f:
      f.write("x")


def test_clear_stale_outputs_removes_an_earlier_runs_outputs(tmp_path):
  out, exp = tmp_path / "run", str(tmp_path / "run" / "export")
  _fake_export(exp)
  (out / "metrics.json").write_text("{}")
  (out / "metrics.json.partial-0123456789ab").write_text("{")
  (out / "notes.txt").write_text("mine")
  # What killed exports leave next to the export folder.
  os.mkdir(exp + ".partial-0123456789ab")
  os.mkdir(exp + ".old-ba9876543210")
  removed = outputs.clear_stale_outputs(str(out), exp)
  assert sorted(os.path.basename(p) for p in removed) == [
      "export", "export.old-ba9876543210", "export.partial-0123456789ab",
      "metrics.json", "metrics.json.partial-0123456789ab"]
  assert sorted(os.listdir(out)) == ["notes.txt"]
  assert outputs.clear_stale_outputs(str(out), exp) == []  # nothing left
  assert outputs.clear_stale_outputs(None, None) == []


def test_clear_stale_outputs_deletes_nothing_on_a_wrong_export_dir(tmp_path):
  (tmp_path / "metrics.json").write_text("{}")
  (tmp_path / "data.csv").write_text("user_id,item_id\n")
  with pytest.raises(ValueError, match="holds data.csv, metrics.json"):
    outputs.clear_stale_outputs(str(tmp_path), str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["data.csv", "metrics.json"]
  # An export folder that also holds other files is not removed either.
  exp = str(tmp_path / "export")
  _fake_export(exp)
  with open(os.path.join(exp, "backup.ckpt"), "w") as f:
    f.write("x")
  with pytest.raises(ValueError, match="holds backup.ckpt"):
    outputs.clear_stale_outputs(None, exp)
  assert os.path.isfile(os.path.join(exp, "saved_model.pb"))


def test_atomic_directory_is_the_exports(tmp_path):
  assert outputs.atomic_directory is export.atomic_directory
  path = str(tmp_path / "folder")
  with pytest.raises(RuntimeError):
    with outputs.atomic_directory(path) as partial:
      open(os.path.join(partial, "half"), "w").close()
      raise RuntimeError("stopped")
  assert os.listdir(tmp_path) == []
