"""Export: a SavedModel holding the query tower and a top-k index.

The saved object is a `tfrs.layers.factorized_top_k` layer (ScaNN or
BruteForce) over every catalog item, whose query model is the trained query
tower. A fresh process loads it with only `tensorflow` and `scann` imported
(`import scann` registers the ScaNN ops) and calls it on a batch of user id
strings:

    loaded = tf.saved_model.load(path)
    scores, item_ids = loaded(tf.constant(["42"]))      # [B, k] each
    out = loaded.signatures["serving_default"](user_id=tf.constant(["42"]))

For a history query tower (`HistoryQueryModel` around it) the signature
takes the history as item id strings instead (and `user_id` too when the
tower reads it):

    out = loaded.signatures["serving_default"](
        history=tf.constant([["12", "7", "31"], ["", "", "5"]]))

Each row is mapped through the catalog vocabulary (unknown ids and "" are
dropped), its known ids are kept in order, right-aligned into the training
length L (left padding), and only the last L are kept when there are more.

Serving scores are the uncorrected dot products `<u, v>`.
"""

import contextlib
import json
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

INDEX_KINDS = ("scann", "brute_force")
METADATA_FILE = "tfrs_negsamp.json"
# Query input kinds recorded in the metadata (`query_input`).
USER_ID = "user_id"
HISTORY = "history"


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


def compact_history(indices: tf.Tensor, length: int) -> tf.Tensor:
  """Right-aligns each row's known items into `[B, length]`, left-padded.

  `indices` `[B, M]` int64 model item indices (0 = padding or unknown, at
  any position). Row b's non-zero entries keep their order; with `n_b` of
  them, the last `min(n_b, length)` land in columns
  `length - min(n_b, length) .. length - 1` and the rest of the row is 0.
  So padding may be anywhere in a request, an unknown id takes no slot, and
  a history longer than `length` keeps its `length` most recent items (the
  training convention: most recent last).
  """
  indices = tf.cast(indices, tf.int64)
  valid = indices > 0
  # 1 for the most recent known item of a row, 2 for the one before, ...
  rank = tf.cumsum(tf.cast(valid, tf.int64), axis=1, reverse=True)
  keep = tf.logical_and(valid, rank <= length)
  cells = tf.where(keep)  # [n, 2] (row, column) of the kept entries
  columns = length - tf.gather_nd(rank, cells)
  out = tf.scatter_nd(
      tf.stack([cells[:, 0], columns], axis=1), tf.gather_nd(indices, cells),
      tf.stack([tf.shape(indices, out_type=tf.int64)[0],
                tf.constant(length, tf.int64)]))
  return tf.ensure_shape(out, [None, length])


class HistoryQueryModel(tf.keras.Model):
  """Item id strings (+ user ids) -> the query of a history tower.

  Maps `inputs["history"]` (string `[B, M]`, "" padding) to model item
  indices with the catalog vocabulary (position + 1; unknown ids and "" ->
  0), compacts them to the training length (`compact_history`) and calls
  `tower({"history": int64 [B, L], "user_id": string [B]})`, passing
  `user_id` only when `use_user_id`.

  Args:
    tower: a history query tower (dict input, `[B, d]` output).
    item_vocabulary: the catalog item ids, in model index order.
    history_length: the L the tower was trained with.
    use_user_id: whether the tower also reads `user_id`.
  """

  def __init__(self, tower: tf.keras.Model, item_vocabulary: Sequence[str],
               history_length: int, use_user_id: bool = False,
               **kwargs) -> None:
    super().__init__(**kwargs)
    if history_length < 1:
      raise ValueError("history_length must be >= 1, got %r"
                       % history_length)
    self.tower = tower
    self.lookup = tf.keras.layers.StringLookup(
        vocabulary=list(np.asarray(item_vocabulary).astype(str)),
        mask_token=None, num_oov_indices=1)
    self.history_length = int(history_length)
    self.use_user_id = bool(use_user_id)

  @property
  def query_inputs(self) -> Tuple[str, ...]:
    return (HISTORY, USER_ID) if self.use_user_id else (HISTORY,)

  def call(self, inputs: Dict[str, tf.Tensor]) -> tf.Tensor:
    history = tf.convert_to_tensor(inputs[HISTORY], tf.string)
    indices = tf.where(history == "", tf.constant(0, tf.int64),
                       tf.cast(self.lookup(history), tf.int64))
    features = {HISTORY: compact_history(indices, self.history_length)}
    if self.use_user_id:
      features[USER_ID] = tf.convert_to_tensor(inputs[USER_ID], tf.string)
    return self.tower(features)


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

  For a user id tower the signature takes `user_id` (string `[B]`); when
  the index's query model is a `HistoryQueryModel` it takes `history`
  (string `[B, M]`, any M) and, if the tower reads it, `user_id` (string
  `[B]`). Both return `scores` and `item_ids` (`[B, k]`). The metadata file
  records `k`, `query_input` ("user_id" or "history"), `inputs` (the
  signature's input names) and, for a history, `history_length` (L).
  """
  users = tf.constant(np.asarray(example_user_ids).astype(str))
  query_model = index.query_model
  k = int(index._k)  # pylint: disable=protected-access
  meta: Dict[str, Any] = {"k": k}
  if isinstance(query_model, HistoryQueryModel):
    example = {HISTORY: tf.fill([tf.shape(users)[0], 1], "")}
    specs = {HISTORY: tf.TensorSpec([None, None], tf.string, name=HISTORY)}
    if query_model.use_user_id:
      example[USER_ID] = users
      specs[USER_ID] = tf.TensorSpec([None], tf.string, name=USER_ID)
    index(example)  # sets the shapes before saving (TFRS issue #131)

    if query_model.use_user_id:
      @tf.function(input_signature=[specs[HISTORY], specs[USER_ID]])
      def serve(history, user_id):
        scores, ids = index({HISTORY: history, USER_ID: user_id})
        return {"scores": scores, "item_ids": ids}
    else:
      @tf.function(input_signature=[specs[HISTORY]])
      def serve(history):
        scores, ids = index({HISTORY: history})
        return {"scores": scores, "item_ids": ids}
    meta.update(query_input=HISTORY, inputs=list(query_model.query_inputs),
                history_length=query_model.history_length)
  else:
    index(users)  # sets the shapes before saving (TFRS issue #131)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string,
                                                name=USER_ID)])
    def serve(user_id):
      scores, ids = index(user_id)
      return {"scores": scores, "item_ids": ids}
    meta.update(query_input=USER_ID, inputs=[USER_ID])

  index.serve = serve
  tf.saved_model.save(
      index, path, signatures={"serving_default": serve},
      options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
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
