"""Writes the sampler tables of the docs from the sampler registry.

  python tools/docs_tables.py          # rewrite the tables in place
  python tools/docs_tables.py --check  # exit 1 if a table is out of date

The registry (`tfrs_negsamp.samplers.register_sampler` and each sampler's
options dataclass) is the one source of the samplers' names, summaries,
losses, options, defaults and help lines; the trainer's flags come from it
too. The tables live in docs/guides/trainer.md between
`<!-- samplers:start -->` / `<!-- samplers:end -->` and
`<!-- sampler-options:start -->` / `<!-- sampler-options:end -->`;
tests/docs_test.py fails when they differ from what this script writes.
"""

import os
import sys
from typing import Dict, List

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

TRAINER_GUIDE = os.path.join(ROOT, "docs", "guides", "trainer.md")


def _cell(text: str) -> str:
  return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value) -> str:
  if isinstance(value, bool):
    return "`%s`" % str(value).lower()
  if isinstance(value, str):
    return "`%s`" % value
  return "`%g`" % value if isinstance(value, float) else "`%s`" % value


def sampler_table() -> str:
  """One row per registered sampler: name, summary, loss, its options."""
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  rows = ["| `--sampler=` | what it trains with | loss | options |",
          "| --- | --- | --- | --- |"]
  for name in samplers.available_samplers():
    options = ", ".join("`--%s`" % o for o in samplers.option_names(name))
    rows.append("| `%s` | %s | %s | %s |" % (
        name, _cell(samplers.sampler_summary(name)),
        samplers.loss_kind(name), options or "none"))
  return "\n".join(rows)


def option_table() -> str:
  """One row per option flag: type, the samplers taking it (defaults), help."""
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  rows = ["| flag | type | samplers (default) | what it sets |",
          "| --- | --- | --- | --- |"]
  for name, info in sorted(samplers.option_table().items()):
    kind = info.kind.__name__
    if info.choices:
      kind = " \\| ".join(info.choices)
    takers = ", ".join("%s (%s)" % (s, _value(d))
                       for s, d in sorted(info.defaults.items()))
    rows.append("| `--%s` | %s | %s | %s |" % (
        name, kind, takers, _cell(info.help)))
  return "\n".join(rows)


def tables() -> Dict[str, str]:
  """{marker name: the table between its markers}."""
  return {"samplers": sampler_table(), "sampler-options": option_table()}


def render(text: str, blocks: Dict[str, str]) -> str:
  """`text` with each `<!-- NAME:start -->..<!-- NAME:end -->` replaced."""
  for name, body in blocks.items():
    start, end = "<!-- %s:start -->" % name, "<!-- %s:end -->" % name
    if text.count(start) != 1 or text.count(end) != 1:
      raise ValueError("expected one %s ... %s pair" % (start, end))
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    text = "%s%s\n%s\n%s%s" % (head, start, body, end, tail)
  return text


def main(argv: List[str]) -> int:
  with open(TRAINER_GUIDE, encoding="utf-8") as f:
    current = f.read()
  wanted = render(current, tables())
  if "--check" in argv[1:]:
    if wanted != current:
      print("%s: the sampler tables are out of date; run python "
            "tools/docs_tables.py" % os.path.relpath(TRAINER_GUIDE, ROOT),
            file=sys.stderr)
      return 1
    return 0
  if wanted != current:
    with open(TRAINER_GUIDE, "w", encoding="utf-8") as f:
      f.write(wanted)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
