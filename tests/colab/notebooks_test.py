"""The notebooks in colab/: executed top to bottom with small parameters.

Each notebook runs in a fresh kernel of the test's interpreter (a kernel spec
written under tmp_path, see `colab/refresh.py`), reading MovieLens 100K from
../shared/data/movielens-100k, for 1 epoch with small embeddings; any cell
error fails the test with the notebook, the cell and the traceback. A quick
check also verifies that the committed notebooks carry the outputs of a run.
"""

import importlib.util
import json
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
COLAB_DIR = os.path.join(REPO_ROOT, "colab")

# Small values for each notebook's parameters cell (DATA_PATH and OUTPUT_DIR
# are added by the test).
SMALL = {
    "quickstart": {"USE_TFDS": False, "EPOCHS": 1, "BATCH_SIZE": 512,
                   "EMBEDDING_DIM": 16, "TOP_K": 20},
    "compare_samplers": {"SAMPLERS": ["in_batch", "in_batch_logq",
                                      "uniform"],
                         "EPOCHS": 1, "BATCH_SIZE": 512,
                         "EMBEDDING_DIM": 16, "SEEDS": [0]},
    "serving": {"EPOCHS": 1, "BATCH_SIZE": 512, "EMBEDDING_DIM": 16,
                "TOP_K": 20, "TIMED_QUERIES": 20},
}
# Notebooks whose committed outputs must include plots.
WITH_PLOTS = ("compare_samplers", "serving")


def _refresh_module():
  spec = importlib.util.spec_from_file_location(
      "colab_refresh", os.path.join(COLAB_DIR, "refresh.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_every_notebook_is_covered():
  found = sorted(f[:-len(".ipynb")] for f in os.listdir(COLAB_DIR)
                 if f.endswith(".ipynb"))
  assert found == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_committed_notebook_has_outputs(name):
  with open(os.path.join(COLAB_DIR, name + ".ipynb")) as f:
    nb = json.load(f)
  code = [c for c in nb["cells"] if c["cell_type"] == "code"]
  assert "pip install" in "".join(code[0]["source"]), "first cell installs"
  tagged = [c for c in code if "parameters" in c["metadata"].get("tags", [])]
  assert len(tagged) == 1, "one cell tagged `parameters`"
  outputs = [o for c in code for o in c.get("outputs", [])]
  errors = [o for o in outputs if o["output_type"] == "error"]
  assert not errors, "committed with an error: %s" % errors[0]["ename"]
  assert all(c.get("execution_count") for c in code), (
      "%s.ipynb is not fully executed: run colab/refresh.py" % name)
  kinds = {k for o in outputs for k in o.get("data", {})}
  assert "text/html" in kinds, "no table in the outputs"
  if name in WITH_PLOTS:
    assert "image/png" in kinds, "no plot in the outputs"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_notebook_executes(name, tmp_path, ml100k_path):
  refresh = _refresh_module()
  parameters = dict(SMALL[name], DATA_PATH=ml100k_path,
                    OUTPUT_DIR=str(tmp_path / "output"))
  try:
    nb = refresh.execute(
        os.path.join(COLAB_DIR, name + ".ipynb"), parameters,
        output_path=str(tmp_path / (name + ".ipynb")),
        workdir=str(tmp_path / "kernel"), env={"TMPDIR": str(tmp_path)},
        timeout=600)
  except refresh.NotebookError as e:
    pytest.fail(str(e), pytrace=False)
  executed = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count for c in executed)
  assert os.listdir(tmp_path / "output"), "nothing written to OUTPUT_DIR"
