"""Export and serving of trained retrievers.

`build_index` wraps a query tower and the catalog's embeddings in a TFRS
top-k layer (exact, ScaNN, or "auto": exact for small catalogs); `save`
writes it as a SavedModel (a `Retriever`: clean answers with a per-row
count, seen items excluded) that loads with only TensorFlow (and ScaNN for
a ScaNN index), whole or not at all (`atomic_directory`); `load` reads it
back; `HistoryQueryModel` gives a history tower a string-history signature.
The module `serving.export` holds them (`save` is `export.export`).
"""

from tfrs_negsamp.serving import export
from tfrs_negsamp.serving.export import atomic_directory
from tfrs_negsamp.serving.export import build_index
from tfrs_negsamp.serving.export import HistoryQueryModel
from tfrs_negsamp.serving.export import load
from tfrs_negsamp.serving.export import Retriever
from tfrs_negsamp.serving.export import scann_parameters

save = export.export

__all__ = ["HistoryQueryModel", "Retriever", "atomic_directory",
           "build_index", "export", "load", "save", "scann_parameters"]
