"""The wheel installs in a fresh virtual environment and runs the README.

`pip wheel . --no-deps` builds the wheel from a copy of the sources (so the
checkout gets no `build/` folder), a new virtual environment installs it,
and the README's drop-in snippet (the block between `<!-- snippet:start -->`
and `<!-- snippet:end -->`), copied into a file of an empty folder, runs
there with the folder as its working directory and without
`TF_USE_LEGACY_KERAS` or `PYTHONPATH` in its environment: the snippet must
set up Keras 2 itself and find the package in the environment, not in the
checkout.

The environment does not download the dependencies. A full install of the
wheel with its dependencies (TensorFlow, ScaNN, TFRS: about 2.6 GB) took 3.7
to 5.5 minutes here, nearly all of it downloads, so the wheel is installed
with `--no-deps` into a venv made `--without-pip` whose site-packages holds
a `.pth` file naming this interpreter's site-packages: the dependencies come
from there, while `tfrs_negsamp` and `trainers` come from the wheel (paths
listed in a `.pth` file are appended to `sys.path` after the venv's own
site-packages, and the `.pth` files inside them, such as an editable
install's, are not run). The test checks that the installed package is the
wheel's, at the version of `tfrs_negsamp/version.py`, and that every
dependency the wheel declares is installed at a version it accepts.

Slow tier (`pytest -m slow`): it trains the snippet's model for its three
epochs on MovieLens 100K.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
START, END = "<!-- snippet:start -->", "<!-- snippet:end -->"
# What a release build needs: the packages, the metadata files setup.py reads.
SOURCES = ("setup.py", "README.md", "LICENSE", "tfrs_negsamp", "trainers")


def readme_snippet(text: str) -> str:
  """The code of the fenced python block between the snippet markers."""
  if text.count(START) != 1 or text.count(END) != 1:
    raise ValueError("README.md must hold one %s ... %s block" % (START, END))
  block = text.split(START, 1)[1].split(END, 1)[0]
  match = re.fullmatch(r"\s*```python\n(.*?)```\s*", block, re.DOTALL)
  if match is None:
    raise ValueError("the snippet markers must enclose one ```python block")
  return match.group(1)


def _run(args, **kwargs):
  result = subprocess.run(args, capture_output=True, text=True, **kwargs)
  assert result.returncode == 0, "%s failed:\n%s\n%s" % (
      " ".join(map(str, args)), result.stdout[-3000:], result.stderr[-5000:])
  return result


def _build_wheel(tmp: pathlib.Path) -> pathlib.Path:
  source = tmp / "source"
  for name in SOURCES:
    path = ROOT / name
    if path.is_dir():
      shutil.copytree(path, source / name, ignore=shutil.ignore_patterns(
          "__pycache__", "*.pyc"))
    else:
      source.mkdir(exist_ok=True)
      shutil.copy2(path, source / name)
  out = tmp / "dist"
  _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-q",
        "-w", str(out)], cwd=source)
  wheels = list(out.glob("tfrs_negsamp-*.whl"))
  assert len(wheels) == 1, wheels
  return wheels[0]


def _fresh_venv(tmp: pathlib.Path, wheel: pathlib.Path) -> pathlib.Path:
  """A venv with the wheel (no deps) and this interpreter's site-packages."""
  venv = tmp / "venv"
  _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
  python = venv / "bin" / "python"
  site = _run([str(python), "-c",
               "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
              ).stdout.strip()
  ours = dict.fromkeys([sysconfig.get_paths()["purelib"],
                        sysconfig.get_paths()["platlib"]])
  pathlib.Path(site, "zz_dependencies.pth").write_text(
      "".join(p + "\n" for p in ours))
  _run([sys.executable, "-m", "pip", "--python", str(python), "install",
        "--no-deps", "-q", str(wheel)])
  return python


def _clean_env(ml100k_path: str) -> dict:
  env = {k: v for k, v in os.environ.items()
         if k not in ("TF_USE_LEGACY_KERAS", "PYTHONPATH", "PYTHONHOME")}
  env["TFRS_NEGSAMP_ML100K"] = ml100k_path
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  return env


# Run inside the venv: where the package comes from, and whether every
# dependency the wheel declares is installed at an accepted version.
_INSPECT = textwrap.dedent("""
    import json, sys
    from importlib import metadata
    from packaging.requirements import Requirement
    import tfrs_negsamp, trainers
    bad = []
    for text in metadata.requires("tfrs-negsamp") or []:
      req = Requirement(text)
      if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
      try:
        version = metadata.version(req.name)
      except metadata.PackageNotFoundError:
        bad.append("%s: not installed" % req)
        continue
      if not req.specifier.contains(version, prereleases=True):
        bad.append("%s: found %s" % (req, version))
    print(json.dumps({"package": tfrs_negsamp.__file__,
                      "trainers": trainers.__file__,
                      "version": tfrs_negsamp.__version__,
                      "unmet": bad}))
""")


@pytest.mark.slow
def test_wheel_runs_the_readme_snippet(tmp_path, ml100k_path):
  wheel = _build_wheel(tmp_path)
  python = _fresh_venv(tmp_path, wheel)
  work = tmp_path / "work"
  work.mkdir()
  env = _clean_env(ml100k_path)

  info = json.loads(_run([str(python), "-c", _INSPECT], cwd=work,
                         env=env).stdout.strip().splitlines()[-1])
  venv = str(tmp_path / "venv")
  assert info["package"].startswith(venv), info
  assert info["trainers"].startswith(venv), info
  version = {}
  source = (ROOT / "tfrs_negsamp" / "version.py").read_text()
  exec(source, version)  # pylint: disable=exec-used
  assert info["version"] == version["__version__"]
  assert wheel.name.startswith("tfrs_negsamp-%s-" % version["__version__"])
  assert info["unmet"] == [], info["unmet"]

  snippet = readme_snippet((ROOT / "README.md").read_text(encoding="utf-8"))
  (work / "snippet.py").write_text(snippet, encoding="utf-8")
  result = _run([str(python), "snippet.py"], cwd=work, env=env)
  # Its last line is `model.evaluate(..., return_dict=True)`: trained
  # scores rank the held-out movie in the top 100 of 1,664 titles far more
  # often than chance (100 / 1664 = 0.06).
  metrics = result.stdout.strip().splitlines()[-1]
  top100 = float(re.search(r"'factorized_top_k/top_100_categorical_accuracy'"
                           r": ([0-9.e-]+)", metrics).group(1))
  assert top100 > 0.12, metrics
