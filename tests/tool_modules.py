"""The scripts under `tools/` as modules (they are not a package)."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def load(name: str):
  """`tools/<name>.py`, imported."""
  spec = importlib.util.spec_from_file_location(
      name, ROOT / "tools" / ("%s.py" % name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
