"""Is a folder a whole export this version serves? Files only, no TensorFlow.

`trainers.query` and `trainers.serve` call `read_export` before loading
anything, so both say the same one line about a folder that is not a
servable export. An export (`tfrs_negsamp/serving/export.py`) is written to
a sibling folder and renamed into place when complete, with its metadata
`tfrs_negsamp.json` holding the size of every file (`files`); so a folder
with a `saved_model.pb` and no metadata, or with a file missing or of
another size, was cut short (an export from before that rule killed while
writing, or a partial copy) and is refused instead of answering from half a
model.
"""

import json
import os
from typing import Any, Dict, Optional

# The names and format of `tfrs_negsamp.serving.export` (not imported from
# there: it needs TensorFlow Recommenders, which serving does not; a test
# checks they agree).
METADATA_FILE = "tfrs_negsamp.json"
SAVED_MODEL_FILE = "saved_model.pb"
FORMAT_VERSION = 2
_AGAIN = "export it again (python -m trainers.train ... --export_dir=...)"


class ExportError(ValueError):
  """A folder that is not a servable export; the message names the problem."""


def read_export(path: str, label: Optional[str] = None) -> Dict[str, Any]:
  """The metadata of the whole export at `path`; ExportError otherwise.

  Args:
    path: the export folder.
    label: how messages name the folder (default: the path), e.g.
      "--model_dir=/tmp/run/export".

  Returns:
    The parsed `tfrs_negsamp.json`.

  Raises:
    ExportError: no SavedModel there, a cut-short export (metadata missing
      or unreadable, a file missing or of another size than recorded), or
      an export of another format.
  """
  where = label or path
  pb = os.path.join(path, SAVED_MODEL_FILE)
  meta_path = os.path.join(path, METADATA_FILE)
  if not os.path.isfile(meta_path):
    if not os.path.isfile(pb):
      raise ExportError("no SavedModel at %s (%s missing)"
                        % (where, SAVED_MODEL_FILE))
    raise ExportError(
        "incomplete export at %s: %s without %s (a whole export is renamed "
        "into place with both, so this folder was cut short: a run stopped "
        "while writing it, or a partial copy); %s"
        % (where, SAVED_MODEL_FILE, METADATA_FILE, _AGAIN))
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
  except (OSError, ValueError) as e:
    raise ExportError("incomplete export at %s: %s cannot be read (%s); %s"
                      % (where, METADATA_FILE, e, _AGAIN)) from e
  if not isinstance(meta, dict):
    raise ExportError("incomplete export at %s: %s is not a JSON object; %s"
                      % (where, METADATA_FILE, _AGAIN))
  if meta.get("format") != FORMAT_VERSION:
    raise ExportError(
        "the export at %s has format %s but this version serves format %d "
        "(answers with a count of real items and the seen items excluded); "
        "%s" % (where, meta.get("format", "1 (none recorded)"),
                FORMAT_VERSION, _AGAIN))
  files = meta.get("files")
  if not isinstance(files, dict) or SAVED_MODEL_FILE not in files:
    raise ExportError("incomplete export at %s: %s lists no files; %s"
                      % (where, METADATA_FILE, _AGAIN))
  for name, size in sorted(files.items()):
    full = os.path.join(path, *name.split("/"))
    if not os.path.isfile(full):
      raise ExportError("incomplete export at %s: %s is missing (%s "
                        "bytes); %s" % (where, name, size, _AGAIN))
    actual = os.path.getsize(full)
    if actual != size:
      raise ExportError("incomplete export at %s: %s has %d bytes, the "
                        "export wrote %s; %s" % (where, name, actual, size,
                                                 _AGAIN))
  return meta
