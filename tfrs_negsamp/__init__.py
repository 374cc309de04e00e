"""tfrs-negsamp: negative-sampling strategies for two-tower retrieval (TFRS).

TFRS 0.7.7 is Keras-2 only, so the package selects the legacy Keras (`tf-keras`)
before TensorFlow is imported anywhere.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
if os.environ["TF_USE_LEGACY_KERAS"] not in ("1", "true", "True"):
  raise ImportError(
      "tfrs_negsamp needs Keras 2 (tf-keras): set TF_USE_LEGACY_KERAS=1 "
      "before importing TensorFlow (it is set to %r)."
      % os.environ["TF_USE_LEGACY_KERAS"])

del os

from tfrs_negsamp.version import __version__  # noqa: E402

# Public API, TFRS style (`import tfrs_negsamp as tn`;
# `tn.tasks.Retrieval(sampler=tn.samplers.XIRSampler(...))`). The
# subpackages load on first access (PEP 562), so `tfrs_negsamp.data` and
# `tfrs_negsamp.evaluation` stay free of TensorFlow. `__version__` comes from
# `tfrs_negsamp/version.py`, the one place the version is written.
__all__ = ["data", "evaluation", "frequency", "losses", "masking", "models",
           "samplers", "serving", "tasks"]


def __getattr__(name):
  if name in __all__:
    import importlib  # pylint: disable=g-import-not-at-top
    return importlib.import_module("tfrs_negsamp." + name)
  raise AttributeError("module 'tfrs_negsamp' has no attribute %r" % name)


def __dir__():
  return sorted(__all__ + ["__version__"])
