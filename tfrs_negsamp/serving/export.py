"""Export: a SavedModel holding the query tower and a top-k index.

The saved object is a `tfrs.layers.factorized_top_k` layer (ScaNN or
BruteForce) over every catalog item, whose query model is the trained query
tower. A fresh process loads it with only `tensorflow` and `scann` imported
(`import scann` registers the ScaNN ops) and calls it on a batch of user id
strings:

    loaded = tf.saved_model.load(path)
    scores, item_ids = loaded(tf.constant(["42"]))      # [B, k] each
    out = loaded.signatures["serving_default"](user_id=tf.constant(["42"]))

Serving scores are the uncorrected dot products `<u, v>`.
"""

import contextlib
import json
import math
import os
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

INDEX_KINDS = ("scann", "brute_force")
METADATA_FILE = "tfrs_negsamp.json"


SCANN_PARAMETERS = ("num_leaves", "num_leaves_to_search",
                    "num_reordering_candidates")


def scann_parameters(num_items: int, k: int,
                     overrides: Optional[Dict[str, int]] = None
                     ) -> Dict[str, int]:
  """ScaNN settings derived from the catalog size, then `overrides`.

  `num_leaves ~ sqrt(N)` partitions, searching ~15% of them (at least 8;
  10% gave recall@10 0.947-0.956 on 1M x 64, 15% gives 0.964-0.970),
  then exact re-scoring of `max(4k, 256)` candidates (capped by N). A value
  in `overrides` (keys of `SCANN_PARAMETERS`; None or 0: derived) replaces
  the derived one; when only `num_leaves` is given, the leaves to search
  follow it.

  Raises:
    ValueError: an unknown key, or values outside 1 <= leaves to search <=
      leaves <= N and k <= reordering candidates <= N.
  """
  if num_items < 1:
    raise ValueError("cannot build an index over an empty catalog.")
  overrides = {name: value for name, value in (overrides or {}).items()
               if value}
  unknown = sorted(set(overrides) - set(SCANN_PARAMETERS))
  if unknown:
    raise ValueError("unknown ScaNN parameter %r; valid: %s"
                     % (unknown[0], ", ".join(SCANN_PARAMETERS)))
  leaves = overrides.get("num_leaves") or int(
      min(max(1, round(math.sqrt(num_items))), 2000, num_items))
  to_search = overrides.get("num_leaves_to_search") or int(
      min(leaves, max(8, math.ceil(0.15 * leaves))))
  reorder = overrides.get("num_reordering_candidates") or int(
      min(num_items, max(4 * k, 256)))
  if not 1 <= leaves <= num_items:
    raise ValueError("num_leaves must be in [1, %d] (the catalog size), got "
                     "%d." % (num_items, leaves))
  if not 1 <= to_search <= leaves:
    raise ValueError("num_leaves_to_search must be in [1, %d] (num_leaves), "
                     "got %d." % (leaves, to_search))
  if not min(k, num_items) <= reorder <= num_items:
    raise ValueError("num_reordering_candidates must be in [%d, %d] (k, the "
                     "catalog size), got %d." % (min(k, num_items), num_items,
                                                 reorder))
  return {"num_leaves": int(leaves), "num_leaves_to_search": int(to_search),
          "num_reordering_candidates": int(reorder)}


def build_index(query_model: tf.keras.Model, item_ids: Sequence[str],
                item_embeddings: np.ndarray, kind: str = "scann",
                k: int = 100, scann_overrides: Optional[Dict[str, int]] = None
                ) -> tfrs.layers.factorized_top_k.TopK:
  """Builds a top-k index over `item_embeddings` `[N, d]` labelled `item_ids`.

  Raises:
    ValueError: unknown `kind`, mismatched sizes, or `k` out of range.
  """
  if kind not in INDEX_KINDS:
    raise ValueError("unknown index %r; valid: %s" % (kind,
                                                      ", ".join(INDEX_KINDS)))
  item_embeddings = np.asarray(item_embeddings, np.float32)
  if item_embeddings.ndim != 2 or len(item_ids) != item_embeddings.shape[0]:
    raise ValueError("item_ids (%d) and item_embeddings %s do not match."
                     % (len(item_ids), item_embeddings.shape))
  if not 1 <= k <= len(item_ids):
    raise ValueError("k must be in [1, %d] (the catalog size), got %d."
                     % (len(item_ids), k))
  if kind == "scann":
    require_scann()
    params = scann_parameters(len(item_ids), k, scann_overrides)
    index = tfrs.layers.factorized_top_k.ScaNN(query_model, k=k, **params)
  else:
    index = tfrs.layers.factorized_top_k.BruteForce(query_model, k=k)
  index.index(tf.constant(item_embeddings),
              tf.constant(np.asarray(item_ids).astype(str)))
  return index


def export(index: tfrs.layers.factorized_top_k.TopK, path: str,
           example_user_ids: Sequence[str],
           metadata: Optional[Dict[str, Any]] = None) -> str:
  """Saves `index` as a SavedModel with a `serving_default` signature.

  The signature takes `user_id` (string `[B]`) and returns `scores` and
  `item_ids` (`[B, k]`).
  """
  example = tf.constant(np.asarray(example_user_ids).astype(str))
  index(example)  # sets the shapes before saving (TFRS issue #131)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                              name="user_id")])
  def serve(user_id):
    scores, ids = index(user_id)
    return {"scores": scores, "item_ids": ids}

  index.serve = serve
  tf.saved_model.save(
      index, path, signatures={"serving_default": serve},
      options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
  meta = {"k": int(index._k)}  # pylint: disable=protected-access
  meta.update(metadata or {})
  with open(os.path.join(path, METADATA_FILE), "w") as f:
    json.dump(meta, f, indent=2)
  return path


def require_scann() -> None:
  """Imports ScaNN's TF ops, or raises an error naming both versions."""
  try:
    import scann  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    from scann.scann_ops.py import scann_ops  # noqa: F401  pylint: disable=g-import-not-at-top
  except Exception as e:  # pylint: disable=broad-except
    try:
      from importlib import metadata  # pylint: disable=g-import-not-at-top
      scann_version = metadata.version("scann")
    except Exception:  # pylint: disable=broad-except
      scann_version = "not installed"
    raise RuntimeError(
        "ScaNN's TensorFlow ops could not be loaded (%s: %s). scann %s is "
        "installed with tensorflow %s; scann 1.4.2 needs tensorflow 2.20.x. "
        "Install the pinned versions or use --index=brute_force."
        % (type(e).__name__, e, scann_version, tf.__version__)) from e


def load(path: str):
  """Loads an exported index (imports scann first if it is installed)."""
  with contextlib.suppress(ImportError):  # a BruteForce export needs none
    import scann  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  return tf.saved_model.load(path)
