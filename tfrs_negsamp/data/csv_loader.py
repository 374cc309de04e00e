"""Loads an interaction log from a CSV file with a header."""

import csv
import io
import math
import os

import numpy as np

from tfrs_negsamp.data.errors import DataError
from tfrs_negsamp.data.interactions import Catalog
from tfrs_negsamp.data.interactions import Interactions

REQUIRED_COLUMNS = ("user_id", "item_id", "timestamp")


def _parse_timestamp(value: str) -> int:
  """An integer timestamp from "123" or a finite number like "123.0"."""
  try:
    result = int(value)
  except ValueError:
    number = float(value)  # Raises ValueError if not numeric.
    if not math.isfinite(number):
      raise ValueError(value) from None
    result = int(number)
  if not -2**63 <= result < 2**63:
    raise OverflowError(value)
  return result


def _clip(value: str, limit: int = 40) -> str:
  return value if len(value) <= limit else value[:limit] + "..."


def load_csv(path: str, delimiter: str = ",") -> tuple[Interactions,
                                                       Catalog]:
  """Reads `user_id`, `item_id` and `timestamp` columns from a CSV file.

  The header names the columns, in any order; other columns are ignored,
  but every row must have as many fields as the header. Blank lines are
  skipped. Timestamps must be numbers (whole seconds; a
  fractional part is dropped). The catalog is the sorted unique item ids of
  the file, without titles.

  Args:
    path: The CSV file (UTF-8, an optional byte-order mark is ignored).
    delimiter: The field separator.

  Returns:
    (interactions, catalog).

  Raises:
    DataError: If the file is missing, empty or malformed; the message names
      the file, the 1-based line number (the header is line 1) and the
      problem.
  """
  if not os.path.isfile(path):
    raise DataError("%s: file not found" % path)
  users, items, times, lines = [], [], [], []
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
    raise DataError("%s, line %d: not valid UTF-8 (byte 0x%02x at column "
                    "%d)" % (path, line, raw[e.start], column)) from None
  del raw
  with io.StringIO(text, newline="") as f:
    reader = csv.reader(f, delimiter=delimiter)
    try:
      header = next(reader)
    except StopIteration:
      raise DataError("%s: the file is empty (expected a header line with "
                      "columns %s)" % (path, ", ".join(REQUIRED_COLUMNS))
                      ) from None
    except (csv.Error, UnicodeDecodeError) as e:
      raise DataError("%s, line 1: cannot read the header: %s"
                      % (path, e)) from None
    names = [name.strip() for name in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
      raise DataError(
          "%s, line %d: the header is missing column(s) %s (found: %s)"
          % (path, reader.line_num, ", ".join(missing),
             ", ".join(repr(n) for n in names) or "none"))
    user_col, item_col, time_col = (names.index(c) for c in REQUIRED_COLUMNS)
    min_fields = max(user_col, item_col, time_col) + 1
    try:
      for row in reader:
        line = reader.line_num
        if not row or (len(row) == 1 and not row[0].strip()):
          continue  # Blank line.
        if len(row) < min_fields:
          raise DataError(
              "%s, line %d: too few fields: expected at least %d (for "
              "columns %s), found %d"
              % (path, line, min_fields, ", ".join(REQUIRED_COLUMNS),
                 len(row)))
        if len(row) != len(names):
          raise DataError(
              "%s, line %d: too %s fields: expected %d as in the header, "
              "found %d" % (path, line,
                            "many" if len(row) > len(names) else "few",
                            len(names), len(row)))
        user, item = row[user_col].strip(), row[item_col].strip()
        for column, value in (("user_id", user), ("item_id", item)):
          if not value:
            raise DataError("%s, line %d: empty %s" % (path, line, column))
          if "\x00" in value:  # numpy str arrays would drop it
            raise DataError("%s, line %d: %s contains a NUL character: %r"
                            % (path, line, column, _clip(value)))
        value = row[time_col].strip()
        try:
          timestamp = _parse_timestamp(value)
        except ValueError:
          raise DataError("%s, line %d: timestamp is not a number: %r"
                          % (path, line, _clip(value))) from None
        except OverflowError:
          raise DataError("%s, line %d: timestamp out of range [-2^63, "
                          "2^63): %r" % (path, line, _clip(value))) from None
        users.append(user)
        items.append(item)
        times.append(timestamp)
        lines.append(line)
    except csv.Error as e:
      raise DataError("%s, line %d: cannot parse the line: %s"
                      % (path, reader.line_num, e)) from None
    except UnicodeDecodeError as e:
      raise DataError("%s: not valid UTF-8 after line %d: %s"
                      % (path, reader.line_num, e)) from None
  if not users:
    raise DataError("%s: no data rows after the header" % path)
  interactions = Interactions(
      user_ids=np.asarray(users, dtype=str),
      item_ids=np.asarray(items, dtype=str),
      timestamps=np.asarray(times, dtype=np.int64), source=path,
      lines=np.asarray(lines, dtype=np.int64))
  return interactions, Catalog(item_ids=interactions.items)
