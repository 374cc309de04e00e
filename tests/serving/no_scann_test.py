"""`trainers.query` / `trainers.serve` on a ScaNN export without scann.

A fake `scann` package that fails to import is put first on PYTHONPATH of
the subprocess: the program must end with one clear line (exit status 1,
an environment problem), no stack trace.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.fixture
def no_scann_env(tmp_path):
  fake = tmp_path / "fake" / "scann"
  fake.mkdir(parents=True)
  (fake / "__init__.py").write_text(
      "raise ImportError(\"No module named 'scann' (simulated)\")\n")
  env = dict(os.environ)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env.pop("TFRS_NEGSAMP_TRACEBACK", None)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(tmp_path / "fake"), ROOT, env.get("PYTHONPATH", "")])
  return env


@pytest.mark.parametrize("program, expected", [
    ("query", "error: the SavedModel at --model_dir={path} holds a ScaNN "
              "index, but scann cannot be imported (ImportError: No module "
              "named 'scann' (simulated)); install it (pip install "
              "scann==1.4.2) or export with --index=brute_force"),
    ("serve", "error: the SavedModel at --model_dir={path} holds a ScaNN "
              "index; install scann (pip install scann==1.4.2)"),
])
def test_missing_scann_is_one_line(tiny_export, no_scann_env, program,
                                   expected):
  argv = ["--model_dir=%s" % tiny_export.path]
  if program == "serve":
    argv.append("--port=0")
  out = subprocess.run([sys.executable, "-m", "trainers." + program] + argv,
                       cwd=ROOT, env=no_scann_env, capture_output=True,
                       text=True, timeout=300, check=False)
  assert out.returncode == 1, out.stderr[-2000:]
  assert "Traceback" not in out.stderr
  lines = [l for l in out.stderr.strip().splitlines()
           if l.startswith("error: ")]
  assert lines == [expected.format(path=tiny_export.path)], out.stderr
