"""Two-tower retrieval models."""
from tfrs_negsamp.models.features import ItemFeatureTable, build_feature_table
from tfrs_negsamp.models.towers import ItemTower, QueryTower
from tfrs_negsamp.models.two_tower import TwoTowerModel
