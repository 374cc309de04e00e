"""Export of a trained model: query tower + top-k index as a SavedModel."""

from typing import Dict, Optional, Sequence, Tuple

from tfrs_negsamp import data as data_lib
from tfrs_negsamp.models import two_tower
from tfrs_negsamp.serving import export as export_lib


def export_model(model: two_tower.TwoTowerModel, dataset: data_lib.Dataset,
                 path: str, kind: str = "auto", k: int = 100,
                 scann_overrides: Optional[Dict[str, int]] = None,
                 history_length: Optional[int] = None,
                 use_user_id: Optional[bool] = None,
                 seen_items: Optional[Tuple[Sequence[str],
                                            Sequence[str]]] = None) -> str:
  """Exports `model`'s query tower and a top-k index over the catalog.

  A history tower (its `uses_history` attribute, or `history_length`
  given) is wrapped in `export.HistoryQueryModel`, so the signature takes
  item id strings, compacted to `history_length` (default: the tower's
  `history_length`, the L it was trained with); `use_user_id` (default: the
  tower's `use_user_id`, else False) adds the `user_id` input.
  `seen_items` (an id tower's `(user ids, item ids)` training pairs, e.g.
  `(dataset.train.user_ids, dataset.train.item_ids)`) makes the export
  leave each user's training items out of its answers.

  Raises:
    ValueError: a history tower without a known history length.
  """
  k = min(k, dataset.catalog.num_items)
  query_model = model.query_model
  if history_length is None:
    history_length = getattr(query_model, "history_length", None)
  if getattr(query_model, "uses_history", False) and not history_length:
    raise ValueError("cannot export a history tower without its history "
                     "length: pass history_length (the training L).")
  if history_length:
    if use_user_id is None:
      use_user_id = bool(getattr(query_model, "use_user_id", False))
    query_model = export_lib.HistoryQueryModel(
        query_model, dataset.catalog.item_ids, int(history_length),
        use_user_id=use_user_id)
  index = export_lib.build_index(query_model, dataset.catalog.item_ids,
                                 model.catalog_embeddings(), kind=kind, k=k,
                                 scann_overrides=scann_overrides)
  metadata = {"index": kind, "dataset": dataset.name,
              "num_items": dataset.catalog.num_items}
  if kind == "scann":
    metadata["scann"] = export_lib.scann_parameters(
        dataset.catalog.num_items, k, scann_overrides)
  return export_lib.export(index, path, dataset.users[:1], metadata=metadata,
                           seen_items=seen_items)
