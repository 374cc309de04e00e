"""Loss tasks."""
from tfrs_negsamp.tasks.retrieval import SampledRetrieval
