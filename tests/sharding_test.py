"""The table partitioner: which variables are sharded, and into how many.

The partitioner is exercised here without a cluster: a variable creator
below its scope calls it as `ParameterServerStrategy` would. The cluster
tests (`tests/distributed/parameter_server_test.py`) check the resulting
`ShardedVariable`s.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import inputs
from tfrs_negsamp import sharding


def test_shard_count_respects_the_minimum_shard_size():
  p = sharding.TablePartitioner(num_shards=4, min_shard_bytes=1000)
  # 100 x 8 float32 = 3,200 bytes: 3 shards of >= 1,000 bytes, not 4.
  assert p.shards_for([100, 8], tf.float32) == 3
  # 10,000 bytes: the requested 4.
  assert p.shards_for([125, 20], tf.float32) == 4
  # Smaller than one shard: whole; never more shards than rows.
  assert p.shards_for([10, 8], tf.float32) == 1
  assert sharding.TablePartitioner(8, 1).shards_for([3, 64], tf.float32) == 3
  # float64 doubles the bytes.
  assert p.shards_for([50, 8], tf.float64) == 3


def test_only_the_id_tables_are_tables():
  p = sharding.TablePartitioner(2)
  assert p.is_table("item_tower/item_embedding/embeddings")
  assert p.is_table("query_tower/user_embedding/embeddings:0")
  assert p.is_table("mean_pool_query_tower/history_user_embedding/embeddings")
  assert not p.is_table("item_tower/title_embedding/embeddings")
  assert not p.is_table("item_tower/item_embedding/kernel")
  assert not p.is_table("cross_batch_sampler/queue_emb")
  assert not p.is_table("embeddings")


def _partitions_of_model(partitioner, config):
  """`{variable name: partitioner answer}` while building the model."""
  answers = {}

  def strategy_like(next_creator, **kwargs):
    # What ParameterServerStrategy asks, below the partitioner's creator.
    shape = kwargs.get("shape")
    if shape is not None and tf.TensorShape(shape).rank:
      answers[partitioner._local.name] = partitioner(  # pylint: disable=protected-access
          shape, kwargs.get("dtype") or tf.float32)
    return next_creator(**kwargs)

  dataset = helpers.tiny_dataset(num_users=40, num_items=30)
  with tf.variable_creator_scope(strategy_like), partitioner.scope():
    model = assembly.build_model(dataset, config, config.batch_size)
    model.compute_loss(next(iter(inputs.train_dataset(
        dataset, config, shuffle=False, epochs=1))), training=False)
  return answers


@pytest.mark.parametrize("tower,tables", [
    ("id", {"user_embedding", "item_embedding"}),
    # The history tower builds the shared item table (in its own scope).
    ("mean", {"item_embedding"}),
])
def test_the_scope_names_every_variable_and_only_tables_are_split(
    tower, tables):
  partitioner = sharding.TablePartitioner(num_shards=2, min_shard_bytes=1)
  config = helpers.tiny_config(sampler="cross_batch", query_tower=tower,
                               max_history=4)
  answers = _partitions_of_model(partitioner, config)
  def layer(name):
    return name.split("/")[-2]

  split = {name for name, parts in answers.items() if parts[0] > 1}
  assert {layer(name) for name in split} == tables
  assert len(split) == len(tables)  # each table once
  assert all(answers[name] == [2, 1] for name in split)
  # Everything else, sampler state and dense layers included, stays whole.
  assert any("queue_emb" in name for name in answers)
  assert all(parts == [1] * len(parts) for name, parts in answers.items()
             if name not in split)


def test_table_shards_and_values_of_an_unsharded_model():
  dataset = helpers.tiny_dataset(num_users=40, num_items=30)
  config = helpers.tiny_config()
  model = assembly.create_model(dataset, config, tf.distribute.get_strategy())
  assert sharding.table_shards(model) == {"user_embedding": 1,
                                          "item_embedding": 1}
  values = sharding.table_values(model)
  np.testing.assert_array_equal(
      values["item_embedding"],
      model.item_model.id_embedding.embeddings.numpy())
  assert not sharding.is_sharded(model.item_model.id_embedding.embeddings)


def test_bad_partitioner_arguments():
  with pytest.raises(ValueError, match="num_shards"):
    sharding.TablePartitioner(0)
  with pytest.raises(ValueError, match="min_shard_bytes"):
    sharding.TablePartitioner(2, min_shard_bytes=0)
