"""Two-tower retrieval models."""
from tfrs_negsamp.models.features import ItemFeatureTable, build_feature_table
from tfrs_negsamp.models.towers import ItemTower, QueryTower
from tfrs_negsamp.models.gru import GRUQueryTower
from tfrs_negsamp.models.history import HistoryQueryTower
from tfrs_negsamp.models.mean_pool import MeanPoolQueryTower
from tfrs_negsamp.models.query_towers import QUERY_TOWERS, create_query_tower
from tfrs_negsamp.models.sasrec import SASRecQueryTower
from tfrs_negsamp.models.two_tower import TwoTowerModel
