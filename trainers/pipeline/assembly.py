"""Model assembly: towers, sampler and task, built in a strategy's scope."""

import functools

import numpy as np
import tensorflow as tf

from tfrs_negsamp import data as data_lib
from tfrs_negsamp import losses
from tfrs_negsamp import masking
from tfrs_negsamp import optimizers as optimizers_lib
from tfrs_negsamp import samplers as samplers_lib
from tfrs_negsamp.models import features as features_lib
from tfrs_negsamp.models import query_towers
from tfrs_negsamp.models import towers
from tfrs_negsamp.models import two_tower
from trainers.pipeline import configuration
from trainers.pipeline import defaults
from trainers.pipeline import inputs


def build_model(dataset: data_lib.Dataset, config: configuration.ExperimentConfig,
                global_batch_size: int) -> two_tower.TwoTowerModel:
  """Towers, sampler and model (call inside the strategy's scope)."""
  catalog = dataset.catalog
  table = None
  if config.item_features:
    table = features_lib.build_feature_table(catalog.titles, catalog.genres)
  item_model = towers.ItemTower(catalog.num_items, config.embedding_dim,
                                feature_table=table,
                                hidden=config.item_hidden,
                                normalize=config.normalize)
  query_model = query_towers.create_query_tower(
      config.query_tower, dataset.users, item_model, config.embedding_dim,
      hidden=config.query_hidden, normalize=config.normalize,
      max_history=config.max_history,
      share_item_embeddings=config.share_item_embeddings,
      history_user_id=config.history_user_id, num_blocks=config.num_blocks,
      num_heads=config.num_heads, dropout=config.dropout, seed=config.seed)
  counts = np.concatenate([[0], dataset.item_counts]).astype(np.float64)
  temperature = config.temperature if config.normalize else None
  options = configuration.sampler_options_for(config.sampler,
                                              config.sampler_options)
  context = samplers_lib.SamplerContext(
      item_counts=counts, item_model=item_model,
      global_batch_size=global_batch_size, seed=config.seed,
      options=options, temperature=temperature,
      sampler_calls_per_epoch=sampler_calls_per_epoch(dataset, config))
  sampler = samplers_lib.create_sampler(config.sampler, context)
  # The task's loss comes from the registry (e.g. the CML hinge with the
  # options' margin for two_stage_triplet).
  task_loss = samplers_lib.task_loss(
      config.sampler, samplers_lib.build_options(config.sampler, options))
  if config.loss == "gbce":
    task_loss = losses.GBCE(t=config.gbce_t, num_items=catalog.num_items)
  elif config.loss == "softmax":
    task_loss = losses.SOFTMAX
  model = two_tower.TwoTowerModel(
      query_model, item_model, catalog.item_ids, sampler, loss=task_loss,
      temperature=temperature, rows_per_block=config.rows_per_block,
      consumed_items=(consumed_items(dataset) if config.mask_history
                      else None))
  if query_towers.uses_history(config.query_tower):
    model.history_source = functools.partial(
        inputs._evaluation_histories, dataset, config.max_history)
  return model


def sampler_calls_per_epoch(dataset: data_lib.Dataset,
                            config: configuration.ExperimentConfig) -> int:
  """Training calls of the sampler per epoch: one per step on flat rows;
  on sequence rows one per block of `rows_per_block` of the step's
  `B x L` positions (`tasks.Retrieval`'s blocks, counted globally)."""
  steps = inputs.train_steps_per_epoch(dataset, config)
  if not configuration.sequence_rows(config):
    return steps
  positions = config.batch_size * config.max_history
  return steps * -(-positions // config.rows_per_block)


def consumed_items(dataset: data_lib.Dataset) -> masking.ConsumedItems:
  """The training (user, item) pairs of `dataset` as a membership table.

  Users: `dataset.users`; items: model indices (catalog position + 1).
  Only the training split: validation and test items stay possible
  negatives, as they are unknown at training time.
  """
  train = dataset.train
  item_index = dataset.catalog.index_of(train.item_ids) + 1
  return masking.ConsumedItems.from_pairs(
      dataset.users, train.user_ids, item_index, dataset.catalog.num_items,
      name="consumed_items")


def create_model(dataset: data_lib.Dataset, config: configuration.ExperimentConfig,
                         strategy: tf.distribute.Strategy):
  """Builds, compiles and builds the variables of a model in `strategy`."""
  tf.keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    model = build_model(dataset, config, config.batch_size)
    model.compile(optimizer=optimizers_lib.make_optimizer(
        config.optimizer,
        defaults.learning_rate(config.query_tower, config.learning_rate)))
    # Create every variable (sampler state included) before fit, so that
    # BackupAndRestore can restore it: one forward pass, no state update.
    first = next(iter(strategy.experimental_distribute_dataset(
        inputs.train_dataset(dataset, config, shuffle=False))))
    strategy.run(lambda x: model.compute_loss(x, training=False),
                 args=(first,))
    model.loss_per_example.reset_state()
    # Keras never marks the model built (a tfrs.Model has no `call`); its
    # variables exist, so BackupAndRestore restores them
    # (`fitting.BackupAndRestore` drops Keras's "unbuilt" warning).
  return model
