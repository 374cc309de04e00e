"""Runs one pytest module as a Bazel py_test: `pytest_runner.py MODULE [ARG...]`.

Bazel starts a test in the runfiles root of the workspace, which holds the
module, the `tests` package with its conftest.py files, `pytest.ini` and the
libraries, so pytest sees the same layout as in a checkout.
"""

import os
import sys

import pytest


def main(argv):
  # Keep runfiles free of __pycache__ (they mirror the source tree).
  sys.dont_write_bytecode = True
  args = [argv[1], "-q", "-m", "not slow", "-p", "no:cacheprovider",
          "--rootdir", os.getcwd()]
  xml = os.environ.get("XML_OUTPUT_FILE")
  if xml:  # per-case results in Bazel's test.xml
    args.append("--junitxml=" + xml)
  # Later arguments (`bazel test --test_arg=...`) win, e.g. `-m slow`.
  rc = pytest.main(args + argv[2:])
  # 5 = no test selected: a module whose tests are all marked slow.
  return 0 if rc == pytest.ExitCode.NO_TESTS_COLLECTED else int(rc)


if __name__ == "__main__":
  sys.exit(main(sys.argv))
