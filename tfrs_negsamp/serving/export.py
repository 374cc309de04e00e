"""Export: a SavedModel with the query tower, a top-k index and clean answers.

The saved object is a `Retriever`: the trained query tower, a
`tfrs.layers.factorized_top_k` index (ScaNN or BruteForce) over every catalog
item and, optionally, each training user's items. A fresh process loads it
with only `tensorflow` and `scann` imported (`import scann` registers the
ScaNN ops) and calls it on a batch of user id strings:

    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](user_id=tf.constant(["42"]))
    scores, item_ids = loaded(tf.constant(["42"]))  # the same, as a pair

For a history query tower (`HistoryQueryModel` around it) the signature
takes the history as item id strings instead (and `user_id` too when the
tower reads it):

    out = loaded.signatures["serving_default"](
        history=tf.constant([["12", "7", "31"], ["", "", "5"]]))

Each row is mapped through the catalog vocabulary (unknown ids and "" are
dropped), its known ids are kept in order, right-aligned into the training
length L (left padding), and only the last L are kept when there are more.

Outputs (B rows; k is the export's k, `tfrs_negsamp.json` "k"):

    item_ids  string  [B, k]  best first; "" after the row's count
    scores    float32 [B, k]  <u, v> of those items; -inf after the count
    count     int32   [B]     how many real items the row has (<= k)
    excluded  int32   [B]     distinct seen items kept out of the answer

plus `unknown_history` (bool `[B, M]`: the history entries that are not
catalog ids; "" is padding, not unknown) for a history export, and
`known_user` (bool `[B]`: the user id has training items in the export) for
an export given `seen_items`. A row is short (count < k) only when the index
finds fewer items: ScaNN searches some of its leaves, and exclusion removes
some; a padding slot never holds a catalog id or a NaN score.

Seen items are excluded by default: a history export leaves every item of
the request's history out of its answer, an id export given `seen_items`
leaves out the user's training items. The index is asked for
`min(N, k + the row's distinct seen items)` neighbours (the batch's largest
such number), so that k items remain when the catalog and the index have
them. The second signature, `keep_history_items` (same inputs and
outputs), keeps them.

The export is written to a sibling folder `<path>.partial-<hex>` and
renamed into place when complete (its metadata, `tfrs_negsamp.json`, with
a size manifest of every file, is in it before the rename); a previous
export at `path` is replaced only then. So `path` holds a whole export or
none: `export_files.read_export` in the serving programs checks it.

Serving scores are the uncorrected dot products `<u, v>`.
"""

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import uuid
from typing import (Any, Callable, Dict, Iterator, List, Optional, Sequence,
                    Tuple)

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

INDEX_KINDS = ("auto", "scann", "brute_force")
# `kind="auto"` builds exact search up to this many items, ScaNN above. At
# 4096 items x 64 dims exact search serves single queries as fast as ScaNN
# (693 vs 691 queries/s, batch 1) and batch 256 at 0.57x ScaNN's rate, while
# ScaNN's derived setting searches only 10 of 64 leaves (~640 items, fewer
# in the small leaves of a trained table): with k = 100 plus the seen items
# excluded, such a search can come back with fewer than k items.
EXACT_INDEX_MAX_ITEMS = 4096
METADATA_FILE = "tfrs_negsamp.json"
# Bumped when the signature's outputs change; the serving programs refuse
# another format (`trainers/serving/export_files.py`).
FORMAT_VERSION = 2
# Query input kinds recorded in the metadata (`query_input`).
USER_ID = "user_id"
HISTORY = "history"
DEFAULT_SIGNATURE = "serving_default"
KEEP_SIGNATURE = "keep_history_items"
# Output names.
SCORES = "scores"
ITEM_IDS = "item_ids"
COUNT = "count"
EXCLUDED = "excluded"
UNKNOWN_HISTORY = "unknown_history"
KNOWN_USER = "known_user"
PADDING_ID = ""
# Exclusion kinds recorded in the metadata (`exclusion`).
EXCLUDE_HISTORY = "history"
EXCLUDE_TRAINING_ITEMS = "training_items"
EXCLUDE_NONE = "none"
# Sibling folders of an export being written / being replaced.
_PARTIAL = ".partial-"
_OLD = ".old-"


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


@dataclasses.dataclass(frozen=True)
class IndexSpec:
  """How `build_index` built an index (recorded in the export metadata).

  Attributes:
    kind: "scann" or "brute_force", what was built.
    requested: the `kind` asked for ("auto", "scann" or "brute_force").
    scann: the ScaNN parameters used (None for exact search).
  """
  kind: str
  requested: str
  scann: Optional[Dict[str, int]] = None


def resolve_index_kind(kind: str, num_items: int) -> str:
  """"scann" or "brute_force" for `kind` over a catalog of `num_items`.

  "auto" is exact search up to `EXACT_INDEX_MAX_ITEMS` items (as fast there,
  and it finds k items whenever the catalog has them), ScaNN above.

  Raises:
    ValueError: an unknown `kind`.
  """
  if kind not in INDEX_KINDS:
    raise ValueError("unknown index %r; valid: %s" % (kind,
                                                      ", ".join(INDEX_KINDS)))
  if kind == "auto":
    return "brute_force" if num_items <= EXACT_INDEX_MAX_ITEMS else "scann"
  return kind


def build_index(query_model: tf.keras.Model, item_ids: Sequence[str],
                item_embeddings: np.ndarray, kind: str = "auto",
                k: int = 100, scann_overrides: Optional[Dict[str, int]] = None
                ) -> tfrs.layers.factorized_top_k.TopK:
  """Builds a top-k index over `item_embeddings` `[N, d]` labelled `item_ids`.

  `kind` is "scann", "brute_force" or "auto" (`resolve_index_kind`); the
  index's `index_spec` attribute (`IndexSpec`) says what was built, and
  `export` records it.

  Raises:
    ValueError: unknown `kind`, mismatched sizes, `k` out of range, or an
      empty item id (reserved for padding).
  """
  item_embeddings = np.asarray(item_embeddings, np.float32)
  item_ids = np.asarray(item_ids).astype(str)
  if item_embeddings.ndim != 2 or len(item_ids) != item_embeddings.shape[0]:
    raise ValueError("item_ids (%d) and item_embeddings %s do not match."
                     % (len(item_ids), item_embeddings.shape))
  built = resolve_index_kind(kind, len(item_ids))
  if not 1 <= k <= len(item_ids):
    raise ValueError("k must be in [1, %d] (the catalog size), got %d."
                     % (len(item_ids), k))
  if np.any(item_ids == PADDING_ID):
    raise ValueError("item id %r (position %d) is reserved for padding; "
                     "give every item a non-empty id" % (
                         PADDING_ID, int(np.argmax(item_ids == PADDING_ID))))
  params = None
  if built == "scann":
    require_scann()
    params = scann_parameters(len(item_ids), k, scann_overrides)
    index = tfrs.layers.factorized_top_k.ScaNN(query_model, k=k, **params)
  else:
    index = tfrs.layers.factorized_top_k.BruteForce(query_model, k=k)
  index.index(tf.constant(item_embeddings), tf.constant(item_ids))
  index.index_spec = IndexSpec(kind=built, requested=kind, scann=params)
  return index


def seen_item_table(user_ids: Sequence[str], item_ids: Sequence[str],
                    catalog_ids: Sequence[str]
                    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Each user's distinct catalog positions, as a CSR table.

  Args:
    user_ids, item_ids: parallel `[n]` arrays of (user, item) pairs, e.g. a
      training split; items not in `catalog_ids` are dropped.
    catalog_ids: the catalog item ids in position order.

  Returns:
    `(users, row_splits, positions)`: the sorted distinct users `[U]`, int64
    `[U + 1]` row splits and int64 catalog positions, sorted per user, so
    that user `users[u]` has `positions[row_splits[u]:row_splits[u + 1]]`.
  """
  user_ids = np.asarray(user_ids).astype(str)
  item_ids = np.asarray(item_ids).astype(str)
  if user_ids.shape != item_ids.shape or user_ids.ndim != 1:
    raise ValueError("seen_items needs two 1-D arrays of the same length "
                     "(user ids, item ids), got shapes %s and %s"
                     % (user_ids.shape, item_ids.shape))
  if not user_ids.size:
    raise ValueError("seen_items is empty: pass the training pairs, or None "
                     "to exclude nothing")
  catalog_ids = np.asarray(catalog_ids).astype(str)
  order = np.argsort(catalog_ids, kind="stable")
  at = np.searchsorted(catalog_ids[order], item_ids)
  at = np.minimum(at, len(order) - 1)
  found = catalog_ids[order][at] == item_ids
  positions = order[at].astype(np.int64)
  users, user_index = np.unique(user_ids, return_inverse=True)
  codes = np.unique(user_index[found].astype(np.int64) * len(catalog_ids) +
                    positions[found])
  rows = codes // len(catalog_ids)
  splits = np.zeros(len(users) + 1, np.int64)
  splits[1:] = np.cumsum(np.bincount(rows, minlength=len(users)))
  return users, splits, codes % len(catalog_ids)


class Retriever(tf.Module):
  """The exported object: query -> the k best items not excluded.

  Wraps a `build_index` index (its query model, item ids and searcher):
  `answer(features, exclude)` gives the outputs listed in the module
  docstring. Exclusion compares catalog positions: the row's seen items are
  sorted once and each fetched neighbour is looked up with a binary search
  (`[B, F]` searches of `log E`), so long histories cost little.

  Args:
    index: a BruteForce or ScaNN layer with item identifiers and a query
      model (a user id tower or a `HistoryQueryModel`).
    seen_items: optional `(user ids, item ids)` pairs (id towers only): the
      items to exclude for each user, and the users `known_user` reports.
  """

  def __init__(self, index: tfrs.layers.factorized_top_k.TopK,
               seen_items: Optional[Tuple[Sequence[str], Sequence[str]]]
               = None):
    super().__init__(name="retriever")
    # pylint: disable=protected-access
    self.index = index
    self.k = int(index._k)
    if getattr(index, "_identifiers", None) is None:
      raise ValueError("the index has no item ids; build it with "
                       "build_index")
    self.item_ids = index._identifiers
    self.exact = isinstance(index, tfrs.layers.factorized_top_k.BruteForce)
    if not self.exact and not isinstance(
        index, tfrs.layers.factorized_top_k.ScaNN):
      raise ValueError("unsupported index %s: BruteForce or ScaNN"
                       % type(index).__name__)
    self.reorder = (None if self.exact else
                    index._num_reordering_candidates)
    # pylint: enable=protected-access
    self.num_items = int(self.item_ids.shape[0])
    query_model = index.query_model
    self.takes_history = isinstance(query_model, HistoryQueryModel)
    self.inputs = (tuple(query_model.query_inputs) if self.takes_history
                   else (USER_ID,))
    self.has_seen_items = seen_items is not None
    if self.has_seen_items:
      if self.takes_history:
        raise ValueError("seen_items is for a user id tower: a history "
                         "export excludes the request's history")
      users, splits, positions = seen_item_table(
          seen_items[0], seen_items[1], self.item_ids.numpy().astype(str))
      self.user_lookup = tf.keras.layers.StringLookup(
          vocabulary=list(users), mask_token=None, num_oov_indices=1)
      self.seen_splits = tf.Variable(splits, trainable=False,
                                     name="seen_row_splits")
      self.seen_positions = tf.Variable(positions, trainable=False,
                                        name="seen_positions")

  @property
  def exclusion(self) -> str:
    """What `serving_default` excludes (`EXCLUDE_*`)."""
    if self.takes_history:
      return EXCLUDE_HISTORY
    return EXCLUDE_TRAINING_ITEMS if self.has_seen_items else EXCLUDE_NONE

  @property
  def output_names(self) -> Tuple[str, ...]:
    names = (ITEM_IDS, SCORES, COUNT, EXCLUDED)
    if self.takes_history:
      names += (UNKNOWN_HISTORY,)
    if self.has_seen_items:
      names += (KNOWN_USER,)
    return names

  def _search(self, queries: tf.Tensor, fetch: tf.Tensor
              ) -> Tuple[tf.Tensor, tf.Tensor]:
    """`[B, W]` scores and int64 catalog positions, W <= `fetch`.

    ScaNN pads a row with NaN (position 0) when the leaves it searched hold
    fewer than `fetch` items, and its width is the batch's most found.
    """
    # pylint: disable=protected-access
    if self.exact:
      scores = tf.linalg.matmul(queries, self.index._candidates,
                                transpose_b=True)
      values, positions = tf.math.top_k(scores, k=fetch)
    else:
      # pylint: disable-next=g-import-not-at-top
      from scann.scann_ops.py import scann_ops
      searcher = scann_ops.searcher_from_module(
          self.index._serialized_searcher)
      # Re-score at least `fetch` candidates exactly, or only the default
      # number would come back.
      pre = fetch if self.reorder is None else tf.maximum(
          fetch, int(self.reorder))
      result = searcher.search_batched_parallel(
          queries, final_num_neighbors=fetch, pre_reorder_num_neighbors=pre)
      values, positions = result.distances, result.indices
    # pylint: enable=protected-access
    return values, tf.cast(positions, tf.int64)

  def _history_exclusions(self, history: tf.Tensor
                          ) -> Tuple[tf.Tensor, tf.Tensor]:
    """Catalog positions of a history `[B, M]` (-1: "" or unknown), and
    whether each entry is an unknown id."""
    history = tf.convert_to_tensor(history, tf.string)
    index = tf.cast(self.index.query_model.lookup(history), tf.int64)
    padding = tf.equal(history, PADDING_ID)
    index = tf.where(padding, tf.constant(0, tf.int64), index)
    unknown = tf.logical_and(tf.logical_not(padding), tf.equal(index, 0))
    return index - 1, unknown

  def _user_exclusions(self, user_ids: tf.Tensor
                       ) -> Tuple[tf.Tensor, tf.Tensor]:
    """The users' training positions `[B, E]` (-1 padding), and whether
    each user is in the table."""
    rows = tf.cast(self.user_lookup(user_ids), tf.int64) - 1
    known = rows >= 0
    table = tf.RaggedTensor.from_row_splits(
        self.seen_positions, self.seen_splits, validate=False)
    picked = tf.gather(table, tf.maximum(rows, 0)).to_tensor(
        default_value=-1)
    return tf.where(known[:, None], picked, tf.constant(-1, tf.int64)), known

  def answer(self, features: Dict[str, tf.Tensor], exclude: bool
             ) -> Dict[str, tf.Tensor]:
    """The outputs (module docstring) for `features` (the signature inputs).

    Args:
      features: `{"user_id": [B]}`, or `{"history": [B, M]}` (+ `user_id`).
      exclude: whether to leave the seen items out.
    """
    if self.takes_history:
      query_features = {name: features[name] for name in self.inputs}
      exclusions, unknown = self._history_exclusions(features[HISTORY])
    else:
      query_features = features[USER_ID]
      if self.has_seen_items:
        exclusions, known = self._user_exclusions(features[USER_ID])
      else:
        exclusions = tf.fill([tf.shape(query_features)[0], 0],
                             tf.constant(-1, tf.int64))
    queries = self.index.query_model(query_features)
    rows = tf.shape(queries)[0]
    if not exclude:
      exclusions = exclusions[:, :0]
    # One -1 column: every row has at least one (never matching) entry.
    exclusions = tf.sort(tf.concat(
        [tf.fill([rows, 1], tf.constant(-1, tf.int64)), exclusions], axis=1),
                         axis=1)
    distinct = tf.logical_and(exclusions >= 0, tf.concat(
        [tf.ones([rows, 1], tf.bool),
         tf.not_equal(exclusions[:, 1:], exclusions[:, :-1])], axis=1))
    excluded = tf.reduce_sum(tf.cast(distinct, tf.int32), axis=1)
    fetch = tf.minimum(self.num_items,
                       self.k + tf.reduce_max(tf.concat([excluded, [0]], 0)))
    scores, positions = self._search(queries, fetch)
    # Is each neighbour among the row's (sorted) exclusions?
    at = tf.searchsorted(exclusions, positions, side="left")
    at = tf.minimum(at, tf.shape(exclusions)[1] - 1)
    seen = tf.equal(tf.gather(exclusions, at, batch_dims=1), positions)
    valid = tf.logical_and(
        tf.logical_and(tf.math.is_finite(scores), tf.logical_not(seen)),
        tf.logical_and(positions >= 0, positions < self.num_items))
    # Column j of the answer is the row's (j+1)-th valid entry: the first
    # position where the running count of valid entries reaches j + 1. A
    # row with fewer valid entries (or a narrower ScaNN answer) is padded.
    # One invalid column more: no row is empty, even if the index found
    # nothing at all.
    valid = tf.pad(valid, [[0, 0], [0, 1]])
    scores = tf.pad(scores, [[0, 0], [0, 1]], constant_values=-np.inf)
    positions = tf.pad(positions, [[0, 0], [0, 1]])
    running = tf.cumsum(tf.cast(valid, tf.int32), axis=1)
    count = tf.minimum(running[:, -1], self.k)
    order = tf.searchsorted(
        running, tf.tile(tf.range(1, self.k + 1)[None, :], [rows, 1]),
        side="left")
    order = tf.minimum(order, tf.shape(scores)[1] - 1)
    real = tf.range(self.k)[None, :] < count[:, None]
    positions = tf.where(real, tf.gather(positions, order, batch_dims=1),
                         tf.constant(0, tf.int64))
    out = {
        SCORES: tf.where(real, tf.gather(scores, order, batch_dims=1),
                         tf.constant(-np.inf, scores.dtype)),
        ITEM_IDS: tf.where(real, tf.gather(self.item_ids, positions),
                           PADDING_ID),
        COUNT: count,
        EXCLUDED: excluded,
    }
    if self.takes_history:
      out[UNKNOWN_HISTORY] = unknown
    if self.has_seen_items:
      out[KNOWN_USER] = known
    return out

  def functions(self) -> Tuple[Dict[str, Callable], Callable]:
    """`({signature name: tf.function}, the __call__ tf.function)`.

    `serving_default` excludes the seen items; `keep_history_items` (when
    there is something to exclude) keeps them; `__call__` returns
    `(scores, item_ids)` of `serving_default`.
    """
    specs = {USER_ID: tf.TensorSpec([None], tf.string, name=USER_ID),
             HISTORY: tf.TensorSpec([None, None], tf.string, name=HISTORY)}
    signature = [specs[name] for name in self.inputs]

    def make(exclude: bool, pair: bool = False):
      def run(features):
        out = self.answer(features, exclude)
        return (out[SCORES], out[ITEM_IDS]) if pair else out
      if self.inputs == (USER_ID,):
        return tf.function(lambda user_id: run({USER_ID: user_id}),
                           input_signature=signature)
      if self.inputs == (HISTORY,):
        return tf.function(lambda history: run({HISTORY: history}),
                           input_signature=signature)
      return tf.function(
          lambda history, user_id: run({HISTORY: history, USER_ID: user_id}),
          input_signature=signature)

    signatures = {DEFAULT_SIGNATURE: make(True)}
    if self.exclusion != EXCLUDE_NONE:
      signatures[KEEP_SIGNATURE] = make(False)
    return signatures, make(True, pair=True)


def export(index: tfrs.layers.factorized_top_k.TopK, path: str,
           example_user_ids: Sequence[str],
           metadata: Optional[Dict[str, Any]] = None,
           seen_items: Optional[Tuple[Sequence[str], Sequence[str]]] = None
           ) -> str:
  """Saves `index` as a `Retriever` SavedModel, whole or not at all.

  For a user id tower the signatures take `user_id` (string `[B]`); when
  the index's query model is a `HistoryQueryModel` they take `history`
  (string `[B, M]`, any M) and, if the tower reads it, `user_id` (string
  `[B]`). The outputs, the exclusion and the second signature are in the
  module docstring. The metadata file records `format`, `k`, `index` (what
  was built) and `index_requested`, `scann` (its parameters), `num_items`,
  `query_input` ("user_id" or "history"), `inputs`, `outputs`,
  `signatures`, `exclusion` ("history", "training_items" or "none"),
  `history_length` (L, history exports), `files` (each file's size), then
  `metadata` (whose own `index` / `scann` keys the built index overrides).

  Args:
    index: from `build_index`.
    path: the export folder; replaced when the new export is complete.
    example_user_ids: a few user ids for one warm-up call.
    metadata: extra entries for the metadata file.
    seen_items: optional `(user ids, item ids)` training pairs of a user id
      tower: each user's items are then excluded by default.

  Raises:
    ValueError: `path` is a file or a folder of other files (not an
      export), or bad `seen_items`.
  """
  check_export_target(path)
  retriever = Retriever(index, seen_items=seen_items)
  users = tf.constant(np.asarray(example_user_ids).astype(str))
  example = {USER_ID: users, HISTORY: tf.fill([tf.shape(users)[0], 1], "")}
  # One call sets the layers' shapes before saving (TFRS issue #131).
  index(example[USER_ID] if retriever.inputs == (USER_ID,) else
        {name: example[name] for name in retriever.inputs})
  signatures, call = retriever.functions()
  retriever.__call__ = call
  meta: Dict[str, Any] = dict(metadata or {})
  requested = meta.pop("index", None)
  spec = getattr(index, "index_spec", None)
  built = "brute_force" if retriever.exact else "scann"
  if spec is not None:
    requested = spec.requested
    if spec.scann is not None:
      meta["scann"] = dict(spec.scann)
  if built != "scann":
    meta.pop("scann", None)
  meta.update(
      format=FORMAT_VERSION, k=retriever.k, index=built,
      index_requested=requested or built, num_items=retriever.num_items,
      query_input=HISTORY if retriever.takes_history else USER_ID,
      inputs=list(retriever.inputs), outputs=list(retriever.output_names),
      signatures=sorted(signatures), exclusion=retriever.exclusion)
  if requested == "auto":
    meta["exact_index_max_items"] = EXACT_INDEX_MAX_ITEMS
  if retriever.takes_history:
    meta["history_length"] = index.query_model.history_length
  with atomic_directory(path) as partial:
    tf.saved_model.save(
        retriever, partial, signatures=signatures,
        options=tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]))
    meta["files"] = file_sizes(partial)
    with open(os.path.join(partial, METADATA_FILE), "w") as f:
      json.dump(meta, f, indent=2)
  return path


def file_sizes(folder: str) -> Dict[str, int]:
  """`{relative path: size in bytes}` of every file under `folder`."""
  sizes = {}
  for root, _, files in os.walk(folder):
    for name in files:
      full = os.path.join(root, name)
      sizes[os.path.relpath(full, folder).replace(os.sep, "/")] = (
          os.path.getsize(full))
  return dict(sorted(sizes.items()))


# What `tf.saved_model.save` and `export` put in an export folder.
_EXPORT_ENTRIES = frozenset({
    "saved_model.pb", "saved_model.pbtxt", "fingerprint.pb",
    "keras_metadata.pb", "variables", "assets", METADATA_FILE})


def is_export_dir(path: str) -> bool:
  """Whether `path` is a folder holding an export (whole or not)."""
  return os.path.isdir(path) and any(
      os.path.exists(os.path.join(path, name))
      for name in (METADATA_FILE, "saved_model.pb"))


def check_export_target(path: str) -> None:
  """Raises ValueError unless `path` may take an export.

  It may when it does not exist, is an empty folder or holds an export and
  nothing else (the new export replaces the folder). A file, or a folder
  with other files, is refused, so that an export never deletes what it
  did not write.
  """
  if not path:
    raise ValueError("the export path is empty")
  if os.path.lexists(path) and not os.path.isdir(path):
    raise ValueError("cannot export to %s: it is a file, not a folder"
                     % path)
  if not os.path.isdir(path) or not os.listdir(path):
    return
  others = sorted(set(os.listdir(path)) - _EXPORT_ENTRIES)
  if not is_export_dir(path) or others:
    raise ValueError(
        "cannot export to %s: the folder holds %s, which an export would "
        "replace; pass a folder of its own (new, empty or a previous "
        "export)" % (path, ", ".join(others[:3]) + (
            " and %d more" % (len(others) - 3) if len(others) > 3 else "")
                     if others else "files that are not an export"))


def stale_siblings(path: str) -> List[str]:
  """Folders an interrupted `atomic_directory(path)` left next to `path`."""
  path = os.path.normpath(path)
  parent, base = os.path.split(os.path.abspath(path))
  pattern = re.compile(re.escape(base) + r"(%s|%s)[0-9a-f]{12}$" % (
      re.escape(_PARTIAL), re.escape(_OLD)))
  if not os.path.isdir(parent):
    return []
  return sorted(os.path.join(parent, name) for name in os.listdir(parent)
                if pattern.match(name))


@contextlib.contextmanager
def atomic_directory(path: str) -> Iterator[str]:
  """Yields a new sibling folder of `path`; renames it to `path` on success.

  Write the whole output into the yielded folder (`<path>.partial-<hex>`,
  on the same file system, so the rename is atomic). On success an
  existing `path` is moved aside (`<path>.old-<hex>`), the new folder takes
  its name and the old one is deleted; on an error the new folder is
  deleted and `path` is untouched. So `path` is always the previous folder,
  the new one, or (only if the process dies between the two renames)
  absent, never a mix; `stale_siblings` finds what a killed process left.
  """
  path = os.path.normpath(path)
  parent = os.path.dirname(os.path.abspath(path))
  os.makedirs(parent, exist_ok=True)
  partial = path + _PARTIAL + uuid.uuid4().hex[:12]
  os.mkdir(partial)
  try:
    yield partial
    if os.path.isdir(path):
      old = path + _OLD + uuid.uuid4().hex[:12]
      os.rename(path, old)
      try:
        os.rename(partial, path)
      except BaseException:
        os.rename(old, path)
        raise
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.rename(partial, path)
  except BaseException:
    shutil.rmtree(partial, ignore_errors=True)
    raise


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
