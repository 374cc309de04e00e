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

__version__ = "0.1.0"
