r"""Executes the notebooks in place and saves their outputs.

  .venv/bin/python colab/refresh.py                      # all three, defaults
  .venv/bin/python colab/refresh.py --notebooks=serving \
      --data_path=../shared/data/movielens-100k

Each notebook runs top to bottom in a fresh kernel of this interpreter (its
own kernel spec, so no installed Jupyter kernel is needed), with the
parameters of its `parameters` cell; `--data_path` / `--output_dir` add an
`injected-parameters` cell after it (as papermill does). Outputs are
coalesced (progress bars keep their final line), native TensorFlow/ScaNN log
lines are dropped from stderr, and the notebook is written back only when
every cell succeeded. Exports and runs go to a temporary folder, removed at
the end unless `--output_dir` is given.

The notebook test (`tests/colab/notebooks_test.py`) calls `execute()` with
small parameters.
"""

import argparse
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from typing import Any, Callable, Dict, Optional

COLAB_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(COLAB_DIR)
NOTEBOOKS = ("quickstart", "compare_samplers", "serving")
KERNEL_NAME = "tfrs-negsamp-python"
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"


# Native (C++) log lines of TensorFlow and ScaNN that reach the kernel's
# stderr: timestamps and pids, nothing a reader needs.
_NATIVE_LOG = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] |[IWEF]\d{4} "
    r"\d\d:\d\d:\d+\.\d+ +\d+ |WARNING: All log messages before "
    r"absl::InitializeLog)")


class NotebookError(RuntimeError):
  """A cell failed: names the notebook, the cell and the error."""


def kernel_manager(workdir: str, env: Optional[Dict[str, str]] = None):
  """A kernel manager for `sys.executable`, from a spec under `workdir`.

  The kernel gets TF_USE_LEGACY_KERAS=1, the repository on PYTHONPATH and
  `env`.
  """
  # pylint: disable=g-import-not-at-top
  from jupyter_client.kernelspec import KernelSpecManager
  from jupyter_client.manager import AsyncKernelManager
  spec_dir = os.path.join(workdir, "kernels", KERNEL_NAME)
  os.makedirs(spec_dir, exist_ok=True)
  path = os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH"))
                         if p)
  kernel_env = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
                "PYTHONPATH": path}
  kernel_env.update(env or {})
  with open(os.path.join(spec_dir, "kernel.json"), "w") as f:
    json.dump({"argv": [sys.executable, "-m", "ipykernel_launcher", "-f",
                        "{connection_file}"],
               "display_name": "tfrs-negsamp (%s)" % sys.executable,
               "language": "python", "env": kernel_env}, f)
  specs = KernelSpecManager(kernel_dirs=[os.path.dirname(spec_dir)])
  return AsyncKernelManager(kernel_name=KERNEL_NAME,
                            kernel_spec_manager=specs)


def inject_parameters(nb, parameters: Dict[str, Any]) -> None:
  """Puts `NAME = value` lines in a cell right after the parameters cell."""
  from nbformat import v4  # pylint: disable=g-import-not-at-top
  nb.cells = [c for c in nb.cells
              if INJECTED_TAG not in c.metadata.get("tags", [])]
  tagged = [i for i, c in enumerate(nb.cells)
            if PARAMETERS_TAG in c.metadata.get("tags", [])]
  if len(tagged) != 1:
    raise ValueError("expected one cell tagged %r, found %d"
                     % (PARAMETERS_TAG, len(tagged)))
  if not parameters:
    return
  cell = v4.new_code_cell("# Parameters set by the executor.\n" + "\n".join(
      "%s = %r" % (k, v) for k, v in parameters.items()))
  cell.metadata["tags"] = [INJECTED_TAG]
  nb.cells.insert(tagged[0] + 1, cell)


def strip_native_logs(nb) -> None:
  """Drops native log lines from stderr outputs (and outputs left empty)."""
  for cell in nb.cells:
    outputs = []
    for output in cell.get("outputs", []):
      if output.get("output_type") == "stream" and output.name == "stderr":
        output.text = "".join(
            line for line in output.text.splitlines(keepends=True)
            if not _NATIVE_LOG.match(line))
        if not output.text.strip():
          continue
      outputs.append(output)
    if cell.cell_type == "code":
      cell.outputs = outputs


def execute(path: str, parameters: Optional[Dict[str, Any]] = None,
            output_path: Optional[str] = None, workdir: Optional[str] = None,
            env: Optional[Dict[str, str]] = None, timeout: int = 1800,
            log: Callable[[str], None] = lambda s: None):
  """Runs notebook `path` top to bottom; returns the executed notebook.

  Args:
    path: The .ipynb file.
    parameters: Values overriding the parameters cell.
    output_path: Where to write the executed notebook (also on failure).
    workdir: Scratch folder for the kernel spec (default: a temporary one).
    env: Extra kernel environment variables.
    timeout: Seconds allowed per cell.
    log: Called with one progress line per code cell.

  Raises:
    NotebookError: A cell raised; the message names notebook, cell, error.
  """
  # pylint: disable=g-import-not-at-top
  import nbformat
  from nbclient import NotebookClient
  from nbclient.exceptions import CellExecutionError
  name = os.path.basename(path)
  nb = nbformat.read(path, as_version=4)
  inject_parameters(nb, parameters or {})
  scratch = workdir or tempfile.mkdtemp(prefix="nbkernel_")
  client = NotebookClient(
      nb, km=kernel_manager(scratch, env), timeout=timeout,
      coalesce_streams=True, record_timing=False,
      resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}})
  code_cells = sum(c.cell_type == "code" for c in nb.cells)
  done = 0
  try:
    with client.setup_kernel(cleanup_kc=True):
      for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
          continue
        start = time.time()
        try:
          client.execute_cell(cell, index)
        except CellExecutionError as e:
          first = cell.source.strip().splitlines()[0] if cell.source else ""
          raise NotebookError(
              "%s: cell %d (code cell %d of %d, starting %r) failed:\n%s"
              % (name, index, done + 1, code_cells, first, e)) from None
        done += 1
        log("%s: cell %d/%d done in %.1fs" % (name, done, code_cells,
                                               time.time() - start))
  finally:
    if output_path:
      nbformat.write(nb, output_path)
    if workdir is None:
      shutil.rmtree(scratch, ignore_errors=True)
  return nb


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--notebooks", default=",".join(NOTEBOOKS),
                      help="Comma-separated names (default: all).")
  parser.add_argument("--data_path", default=None,
                      help="ML-100K folder (default: the notebooks' "
                           "../../shared/data/movielens-100k).")
  parser.add_argument("--output_dir", default=None,
                      help="Keep exports and runs here (default: a "
                           "temporary folder, removed at the end).")
  parser.add_argument("--timeout", type=int, default=3600,
                      help="Seconds allowed per cell.")
  args = parser.parse_args(argv)
  names = [n.strip().replace(".ipynb", "") for n in args.notebooks.split(",")
           if n.strip()]
  unknown = [n for n in names if n not in NOTEBOOKS]
  if unknown:
    parser.error("unknown notebook %s; valid: %s"
                 % (", ".join(unknown), ", ".join(NOTEBOOKS)))
  # SIGTERM ends the run through the `finally` below (kernel, scratch).
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
  scratch = tempfile.mkdtemp(prefix="tfrs_negsamp_refresh_")
  failed = []
  try:
    for i, name in enumerate(names, 1):
      parameters = {}
      if args.data_path:
        parameters["DATA_PATH"] = os.path.abspath(args.data_path)
      if args.output_dir:
        parameters["OUTPUT_DIR"] = os.path.join(
            os.path.abspath(args.output_dir), name)
      path = os.path.join(COLAB_DIR, name + ".ipynb")
      start = time.time()
      print("[%d/%d] %s ..." % (i, len(names), name), flush=True)
      try:
        nb = execute(path, parameters, workdir=os.path.join(scratch, name),
                     env={"TMPDIR": scratch}, timeout=args.timeout,
                     log=lambda s: print("  " + s, flush=True))
      except Exception as e:  # pylint: disable=broad-except
        print("  FAILED, %s left unchanged: %s" % (path, e), flush=True)
        failed.append(name)
        continue
      import nbformat  # pylint: disable=g-import-not-at-top
      strip_native_logs(nb)
      nbformat.write(nb, path)
      print("[%d/%d] %s written in %.1f min" % (i, len(names), name,
                                               (time.time() - start) / 60),
            flush=True)
  finally:
    shutil.rmtree(scratch, ignore_errors=True)
  if failed:
    print("failed: %s" % ", ".join(failed))
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
