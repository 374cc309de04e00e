"""Errors raised by the data loaders and splits."""


class DataError(ValueError):
  """Input data is missing, malformed or unusable.

  Messages name the offending file (or data source) and, where it applies,
  the 1-based line number and the problem.
  """
