# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create the virtual environment (.venv) with the pinned dependencies
# when it is missing. `make docs` builds the documentation site.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo
DATA ?= ../shared/data/movielens-100k

.PHONY: demo test test-all venv clean docs

venv: $(VENV)/.installed

$(VENV)/.installed: setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[apps,test,docs]"
	touch $@

# Train on the embedded synthetic data with the defaults (a SASRec query
# tower, early stopping on validation), evaluate on the full corpus, export
# the query tower + index (exact search for this small catalog, ScaNN above
# 4096 items), then answer a history of three items from a fresh process
# that loads the SavedModel with only tensorflow and scann.
demo: venv
	$(PY) -m trainers.train --dataset=synthetic --sampler=in_batch_logq \
	  --output_dir=$(RUN) --export_dir=$(RUN)/export --verbose=2
	$(PY) -m trainers.query --model_dir=$(RUN)/export --history=12,7,31 --k=10

# The default suite (well under 20 minutes on 2 cores).
test: venv
	$(PY) -m pytest tests -q -m "not slow"

# Everything, including end-to-end tests marked slow.
test-all: venv
	$(PY) -m pytest tests -q

# The documentation site (mkdocs.yml, docs/) into site/: guides, design
# notes and the API reference generated from the docstrings. --strict makes
# a broken cross-reference, link or anchor an error. The sampler tables of
# docs/guides/trainer.md come from the registry (tools/docs_tables.py).
SITE ?= site
docs: venv
	$(PY) tools/docs_tables.py --check
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir $(SITE)

# The suite as Bazel py_test targets (Bazel from apt: docs/guides/development.md).
.PHONY: bazel-test
bazel-test: venv
	tools/bazel_test.sh

clean:
	rm -rf $(RUN) .pytest_cache $(SITE)
