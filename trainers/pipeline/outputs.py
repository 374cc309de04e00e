"""A run's outputs are whole and current, or absent.

Files (`metrics.json`) are written to a temporary sibling and renamed into
place (`write_text`, `write_json`): a reader sees the previous file or the
new one, never half of one. A folder is written the same way with
`atomic_directory` (the export's mechanism, from
`tfrs_negsamp.serving.export`, which the core library needs itself).

At the start of a run, `clear_stale_outputs` removes what an earlier run
left in the same places (its `metrics.json`, its export, and the temporary
siblings of a run that was killed), so that a run that fails does not leave
an earlier run's results looking like its own. Call it on the chief only,
before any work, after the flags are checked.
"""

import contextlib
import json
import os
import re
import shutil
import uuid
from typing import Any, Iterator, List, Optional, Sequence

from tfrs_negsamp.serving import export as export_lib

METRICS_FILE = "metrics.json"
_PARTIAL = ".partial-"

atomic_directory = export_lib.atomic_directory


@contextlib.contextmanager
def _atomic_file(path: str) -> Iterator[str]:
  """Yields a temporary sibling of `path`; renames it to `path` on success."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  partial = path + _PARTIAL + uuid.uuid4().hex[:12]
  try:
    yield partial
    os.replace(partial, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(partial)
    raise


def write_text(path: str, text: str) -> str:
  """Writes `text` to `path` atomically (flushed to disk first)."""
  with _atomic_file(path) as partial:
    with open(partial, "w", encoding="utf-8") as f:
      f.write(text)
      f.flush()
      os.fsync(f.fileno())
  return path


def write_json(path: str, value: Any, **dump_options) -> str:
  """Writes `json.dumps(value, **dump_options)` to `path` atomically.

  The value is serialised before anything is written, so an unserialisable
  value leaves `path` as it was.
  """
  return write_text(path, json.dumps(value, **dump_options))


def _partial_files(path: str) -> List[str]:
  folder, base = os.path.split(os.path.abspath(path))
  if not os.path.isdir(folder):
    return []
  pattern = re.compile(re.escape(base) + re.escape(_PARTIAL) +
                       r"[0-9a-f]{12}$")
  return sorted(os.path.join(folder, n) for n in os.listdir(folder)
                if pattern.match(n))


def clear_stale_outputs(output_dir: Optional[str],
                        export_dir: Optional[str] = None,
                        files: Sequence[str] = (METRICS_FILE,)
                        ) -> List[str]:
  """Removes an earlier run's outputs from where this run writes its own.

  Args:
    output_dir: the run's output folder (None: none); `files` in it, and
      their temporary siblings, are removed.
    export_dir: the run's export folder (None: none): removed when it holds
      an export (and nothing else), with the `.partial-` / `.old-` folders
      an interrupted export left next to it.
    files: the file names of `output_dir` a run writes.

  Returns:
    The paths removed.

  Raises:
    ValueError: `export_dir` is a file or a folder holding other files than
      an export (nothing is removed then, so a wrong flag deletes nothing).
  """
  if export_dir:
    export_lib.check_export_target(export_dir)  # before removing anything
  removed = []
  for name in files if output_dir else ():
    path = os.path.join(output_dir, name)
    for stale in ([path] if os.path.isfile(path) else []) + _partial_files(
        path):
      os.remove(stale)
      removed.append(stale)
  if export_dir:
    for stale in export_lib.stale_siblings(export_dir):
      shutil.rmtree(stale, ignore_errors=True)
      removed.append(stale)
    if os.path.isdir(export_dir) and export_lib.is_export_dir(export_dir):
      shutil.rmtree(export_dir)
      removed.append(export_dir)
  return removed
