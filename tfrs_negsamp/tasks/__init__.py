"""Loss tasks: `Retrieval`, a drop-in for `tfrs.tasks.Retrieval`."""
from tfrs_negsamp.tasks.retrieval import Retrieval
