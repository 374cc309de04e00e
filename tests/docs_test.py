"""The docs build, their generated tables match the code, the release files
agree.

* `mkdocs build --strict` (what `make docs` and CI run): an unresolved API
  cross-reference, a broken link or anchor, or a docstring naming a
  parameter the signature lacks is an error. The build reads the sources
  statically (griffe), so it takes a few seconds of CPU.
* The sampler tables of docs/guides/trainer.md are what
  `tools/docs_tables.py` writes from the sampler registry.
* Every `##` heading of a design note carries an explicit anchor
  (`{#name}`), and every `docs/design/<page>.md#<anchor>` cited in the code,
  the notebooks or a Markdown file outside docs/ exists: the code's pointers
  into the design notes stay valid when a title is reworded. Nothing outside
  docs/ points to the design document the notes replace (it is not in the
  repository).
* Every relative link of the README names a file of the repository.
* The README's complete example (between the snippet markers) is one python
  block that sets `TF_USE_LEGACY_KERAS` before anything imports TensorFlow
  (`tests/wheel_test.py` runs it, slow tier).
* The version of `tfrs_negsamp/version.py` is the package's and has a
  CHANGELOG entry.
"""

import ast
import os
import pathlib
import re
import subprocess
import sys

import tfrs_negsamp
from tests import tool_modules
from tests import wheel_test

ROOT = pathlib.Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design"
# `docs/design/<page>.md#<anchor>` as the code cites it.
POINTER = re.compile(r"docs/design/([a-z_]+)\.md#([a-z0-9-]+)")
# Any pointer to a design page, with or without an anchor.
PAGE = re.compile(r"docs/design/([A-Za-z0-9_.-]+?)\.md\b")
ANCHOR = re.compile(r"\{#([a-z0-9-]+)\}")
# The external design document the notes replace (spelt in two pieces so
# that this file does not match itself).
EXTERNAL_SPEC = "SAMPLERS" + ".md"
# Folders that are not the project's sources: environments, build outputs,
# the docs site, caches, Bazel's output links.
SKIPPED_DIRS = {".venv", "venv", "site", "build", "dist", "runs", ".git",
                "node_modules", "__pycache__", ".pytest_cache",
                ".hypothesis", ".ipynb_checkpoints"}


def _load_tool():
  return tool_modules.load("docs_tables")


def test_mkdocs_build_is_strict_clean(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
       "--config-file", str(ROOT / "mkdocs.yml"),
       "--site-dir", str(tmp_path / "site")],
      cwd=ROOT, capture_output=True, text=True,
      env=dict(os.environ, NO_MKDOCS_2_WARNING="1"))
  assert result.returncode == 0, (
      "mkdocs build --strict failed (is the docs extra installed? pip "
      "install -e '.[docs]'):\n" + result.stdout[-3000:] +
      result.stderr[-6000:])
  api = tmp_path / "site" / "api" / "samplers" / "index.html"
  page = api.read_text(encoding="utf-8")
  # The reference is generated from the docstrings: a sampler's Example
  # block and a Google-style argument are on the page.
  assert 'id="tfrs_negsamp.samplers.XIRSampler"' in page
  assert "cache_weight" in page
  assert "candidate_model=movie_model" in page


def test_sampler_tables_match_the_registry():
  tool = _load_tool()
  text = pathlib.Path(tool.TRAINER_GUIDE).read_text(encoding="utf-8")
  assert tool.render(text, tool.tables()) == text, (
      "docs/guides/trainer.md: the sampler tables are out of date; run "
      "python tools/docs_tables.py")
  for name in tfrs_negsamp.samplers.available_samplers():
    assert "| `%s` |" % name in text, name


def test_design_notes_have_explicit_anchors():
  for page in sorted(DESIGN.glob("*.md")):
    for number, line in enumerate(
        page.read_text(encoding="utf-8").splitlines(), start=1):
      if line.startswith("## ") or line.startswith("### "):
        assert ANCHOR.search(line), (
            "%s:%d: a heading without an explicit {#anchor}: %s"
            % (page.relative_to(ROOT), number, line))


def _anchors(page: pathlib.Path):
  return set(ANCHOR.findall(page.read_text(encoding="utf-8")))


def _source_files():
  """The repository's .py, .md and .ipynb files outside docs/."""
  found = []
  for folder, dirs, files in os.walk(ROOT):
    here = pathlib.Path(folder)
    dirs[:] = sorted(
        d for d in dirs
        if d not in SKIPPED_DIRS and not d.startswith("bazel-") and
        not d.endswith(".egg-info") and
        not (here == ROOT and d == "docs"))
    found += [here / f for f in sorted(files)
              if f.endswith((".py", ".md", ".ipynb"))]
  return found


def test_source_files_cover_the_code_and_skip_docs():
  files = {p.relative_to(ROOT).as_posix() for p in _source_files()}
  for expected in ("tfrs_negsamp/samplers/xir.py", "trainers/train.py",
                   "tests/docs_test.py", "colab/quickstart.ipynb",
                   "README.md", "CHANGELOG.md"):
    assert expected in files, expected
  assert not any(f.startswith("docs/") for f in files)


def test_nothing_outside_docs_cites_the_external_design_document():
  offenders = []
  for path in _source_files():
    for number, line in enumerate(
        path.read_text(encoding="utf-8", errors="replace").splitlines(),
        start=1):
      if EXTERNAL_SPEC in line:
        offenders.append("%s:%d" % (path.relative_to(ROOT), number))
  assert not offenders, (
      "cite docs/design/<page>.md#<anchor> instead of %s: %s"
      % (EXTERNAL_SPEC, ", ".join(offenders)))


def test_code_pointers_into_the_design_notes_exist():
  cited = 0
  for path in _source_files():
    text = path.read_text(encoding="utf-8", errors="replace")
    where = path.relative_to(ROOT)
    for page in PAGE.findall(text):
      assert (DESIGN / (page + ".md")).exists(), (
          "%s cites missing docs/design/%s.md" % (where, page))
    for page, anchor in POINTER.findall(text):
      cited += 1
      assert anchor in _anchors(DESIGN / (page + ".md")), (
          "%s cites docs/design/%s.md#%s, which has no such anchor"
          % (where, page, anchor))
  # The code does cite the notes (the walk found its files).
  assert cited >= 40, cited
  # The form the module docstring names resolves.
  page, anchor = POINTER.search("docs/design/shared.md#count-trick").groups()
  assert anchor in _anchors(DESIGN / (page + ".md"))


def test_readme_links_name_existing_files():
  text = (ROOT / "README.md").read_text(encoding="utf-8")
  links = re.findall(r"\]\(([^)\s]+)\)", text)
  local = [l.split("#")[0] for l in links
           if not re.match(r"[a-z]+:", l) and not l.startswith("#")]
  assert local, "the README links no page of the repository"
  for link in local:
    assert (ROOT / link).exists(), "README.md links missing %s" % link


def test_readme_snippet_sets_up_keras_2_first():
  text = (ROOT / "README.md").read_text(encoding="utf-8")
  code = wheel_test.readme_snippet(text)
  tree = ast.parse(code)
  tf_modules = ("tensorflow", "tensorflow_recommenders", "tfrs_negsamp")
  first_import = setting = None
  for node in tree.body:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      names = ([a.name for a in node.names] if isinstance(node, ast.Import)
               else [node.module or ""])
      if first_import is None and any(
          n.split(".")[0] in tf_modules for n in names):
        first_import = node.lineno
    elif (setting is None and isinstance(node, ast.Assign) and
          "TF_USE_LEGACY_KERAS" in ast.unparse(node.targets[0])):
      setting = node.lineno
  assert setting is not None, "the snippet never sets TF_USE_LEGACY_KERAS"
  assert first_import is not None and setting < first_import, (
      "TF_USE_LEGACY_KERAS must be set before TensorFlow is imported")
  # Everything it uses is defined in it: it runs as a file of its own.
  compile(code, "README snippet", "exec")
  assert "query_ids=" in code and "ConsumedItems.from_interactions" in code


def test_one_version_with_a_changelog_entry():
  namespace = {}
  source = (ROOT / "tfrs_negsamp" / "version.py").read_text()
  exec(source, namespace)  # pylint: disable=exec-used
  version = namespace["__version__"]
  assert tfrs_negsamp.__version__ == version
  release = re.sub(r"\.dev\d+$", "", version)
  changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
  assert re.search(r"^## \[%s\]" % re.escape(release), changelog,
                   re.MULTILINE), "CHANGELOG.md has no entry for %s" % release
  setup = (ROOT / "setup.py").read_text(encoding="utf-8")
  assert not re.search(r"version=\"\d", setup), (
      "setup.py must read the version from tfrs_negsamp/version.py")


def test_every_public_sampler_class_is_in_the_api_reference():
  # The classes `tfrs_negsamp.samplers` imports from its modules (not the
  # contract's names from `base`), read from the package's __init__.
  tree = ast.parse((ROOT / "tfrs_negsamp" / "samplers" /
                    "__init__.py").read_text())
  public = {alias.name for node in tree.body
            if isinstance(node, ast.ImportFrom)
            and node.module != "tfrs_negsamp.samplers.base"
            for alias in node.names}
  page = (ROOT / "docs" / "api" / "samplers.md").read_text()
  listed = set(re.findall(r"^::: tfrs_negsamp\.samplers\.([A-Z]\w+)$", page,
                          re.M))
  assert "WarmupSampler" in public and "FullSoftmax" in public
  assert public <= listed, sorted(public - listed)
