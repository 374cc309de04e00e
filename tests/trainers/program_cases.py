r"""Runs many command lines of one program in one process (for the tests).

  python -m tests.trainers.program_cases trainers.tune '[["--trials=0"]]'

Imports the program (its flags, its `refuse_flags`), then for each argument
list parses the flags and runs `main` as `common.run` does (`parse_flags`,
then `common.guard`), with `strategies.make_strategy`, the first step of
any real work, replaced by a stop. Prints one JSON list: per command line
`{"code": exit status, "stdout": ..., "stderr": ..., "started": whether
it passed every check and got to work}`. One process instead of one per
command line: each import of TensorFlow takes seconds.
"""

import contextlib
import importlib
import io
import json
import sys


class Started(SystemExit):
  """Raised where the program would start working (`common.guard` passes
  `SystemExit` through)."""


def _stop(*args, **kwargs):
  del args, kwargs
  raise Started()


def main():
  program, cases = sys.argv[1], json.loads(sys.argv[2])
  sys.argv = [program]
  module = importlib.import_module(program)
  # `--help` shows the program's docstring and its own flags.
  sys.modules["__main__"] = module
  from absl import flags  # pylint: disable=g-import-not-at-top
  from trainers import common  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  strategies.make_strategy = _stop
  results = []
  for args in cases:
    flags.FLAGS.unparse_flags()
    out, err = io.StringIO(), io.StringIO()
    code, started = 0, False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
      try:
        argv = common.parse_flags([program] + list(args))
        common.guard(module.main)(argv)
      except Started:
        started = True
      except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    results.append({"code": code, "stdout": out.getvalue(),
                    "stderr": err.getvalue(), "started": started})
  sys.stdout.write(json.dumps(results) + "\n")


if __name__ == "__main__":
  main()
