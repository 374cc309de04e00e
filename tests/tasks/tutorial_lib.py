"""The TFRS basic-retrieval tutorial model, tiny and in memory (no download).

Shared by `tfrs_tutorial_test.py`: `TASKS[name](movies, movie_model,
metrics)` is the only line that differs between the sampler families; the
data, towers, metrics and `MovielensModel` are the tutorial's.
"""

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfrs_negsamp as tn

NUM_USERS, NUM_MOVIES, NUM_RATINGS, DIM = 12, 20, 64, 8


def ratings_and_movies(seed: int = 0):
  """`(ratings, movies)` datasets: string user ids and movie titles."""
  rng = np.random.RandomState(seed)
  titles = np.array(["movie %02d" % i for i in range(NUM_MOVIES)])
  users = np.array(["user %02d" % i for i in range(NUM_USERS)])
  # Popular movies first: a skewed, tutorial-like interaction log.
  p = 1.0 / np.arange(1, NUM_MOVIES + 1)
  ratings = tf.data.Dataset.from_tensor_slices({
      "user_id": users[rng.randint(0, NUM_USERS, NUM_RATINGS)],
      "movie_title": titles[rng.choice(NUM_MOVIES, NUM_RATINGS,
                                       p=p / p.sum())]})
  movies = tf.data.Dataset.from_tensor_slices(titles)
  return ratings, movies, users, titles


def towers(users, titles):
  """The tutorial's towers: StringLookup + Embedding."""
  user_model = tf.keras.Sequential([
      tf.keras.layers.StringLookup(vocabulary=users, mask_token=None),
      tf.keras.layers.Embedding(len(users) + 1, DIM)])
  movie_model = tf.keras.Sequential([
      tf.keras.layers.StringLookup(vocabulary=titles, mask_token=None),
      tf.keras.layers.Embedding(len(titles) + 1, DIM)])
  return user_model, movie_model


class MovielensModel(tfrs.Model):
  """The tutorial's model; `candidate_ids` are the movie titles."""

  def __init__(self, user_model, movie_model, task):
    super().__init__()
    self.movie_model = movie_model
    self.user_model = user_model
    self.task = task

  def compute_loss(self, features, training=False):
    user_embeddings = self.user_model(features["user_id"])
    positive_movie_embeddings = self.movie_model(features["movie_title"])
    # With a table of the training pairs, the rows' user ids let the task
    # mask each user's own items among the negatives.
    extra = ({"query_ids": features["user_id"]}
             if getattr(self.task, "consumed_items", None) is not None
             else {})
    return self.task(user_embeddings, positive_movie_embeddings,
                     candidate_ids=features["movie_title"],
                     compute_metrics=not training, training=training,
                     **extra)


def _freq():
  return tn.frequency.StreamingFrequencyEstimator(num_buckets=256)


def consumed_items(seed: int = 0):
  """The training pairs of `ratings_and_movies(seed)` as a masking table."""
  ratings, _, _, _ = ratings_and_movies(seed)
  rows = list(ratings.as_numpy_iterator())
  return tn.masking.ConsumedItems.from_interactions(
      [r["user_id"] for r in rows], [r["movie_title"] for r in rows])


# name -> the `task = ...` line of each family (everything else is equal).
TASKS = {
    "tfrs": lambda movies, movie_model, metrics: tfrs.tasks.Retrieval(
        metrics=metrics),
    "in_batch_logq": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics,
        sampler=tn.samplers.InBatchSampler(frequency=_freq())),
    "cbns": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics, sampler=tn.samplers.CrossBatchSampler(
            memory_size=16, frequency=_freq())),
    "xir": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics, sampler=tn.samplers.XIRSampler(
            candidates=movies.batch(8), candidate_model=movie_model,
            cache_size=8)),
    # Two steps of in-batch + log Q, then XIR (4 steps of `fit`).
    "xir_warmup": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics, sampler=tn.samplers.WarmupSampler(
            tn.samplers.XIRSampler(candidates=movies.batch(8),
                                   candidate_model=movie_model,
                                   cache_size=8),
            warmup_steps=2, frequency=_freq())),
    "uniform": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics, sampler=tn.samplers.UniformSampler(
            candidates=movies.batch(8), candidate_model=movie_model,
            num_negatives=4)),
    "mixed": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics, sampler=tn.samplers.MixedSampler(
            candidates=movies.batch(8), candidate_model=movie_model,
            num_uniform=4)),
    "composed": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics, sampler=tn.samplers.Compose([
            tn.samplers.CrossBatchSampler(memory_size=16),
            tn.samplers.MixedSampler(candidates=movies.batch(8),
                                     candidate_model=movie_model,
                                     num_uniform=4)],
            frequency=_freq())),
    # The rows' users' own titles masked among the negatives.
    "in_batch_logq_masked": lambda movies, movie_model, metrics:
        tn.tasks.Retrieval(
            metrics=metrics,
            sampler=tn.samplers.InBatchSampler(frequency=_freq()),
            consumed_items=consumed_items()),
    "xir_masked": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics, sampler=tn.samplers.XIRSampler(
            candidates=movies.batch(8), candidate_model=movie_model,
            cache_size=8), consumed_items=consumed_items()),
    # Deterministic (no stateful uniform draws): for the mirrored check.
    "composed_queue": lambda movies, movie_model, metrics: tn.tasks.Retrieval(
        metrics=metrics, sampler=tn.samplers.Compose(
            [tn.samplers.InBatchSampler(),
             tn.samplers.CrossBatchSampler(memory_size=16)],
            frequency=_freq())),
}


def build(name: str, seed: int = 0, loss_metrics=None):
  """`(model, ratings, movies)` of the family `name`, seeded weights."""
  tf.keras.utils.set_random_seed(seed)
  ratings, movies, users, titles = ratings_and_movies(seed)
  user_model, movie_model = towers(users, titles)
  metrics = tfrs.metrics.FactorizedTopK(
      candidates=movies.batch(8).map(lambda t: (t, movie_model(t))),
      ks=[1, 5])
  task = TASKS[name](movies, movie_model, metrics)
  if loss_metrics is not None:
    task._loss_metrics = loss_metrics  # pylint: disable=protected-access
  model = MovielensModel(user_model, movie_model, task)
  user_model(tf.constant(users[:1]))  # create the weights now (tests
  movie_model(tf.constant(titles[:1]))  # compare them before fit)
  model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate=0.1))
  return model, ratings, movies


def fit_summed(name: str, strategy, steps: int = 4, batch: int = 8):
  """`(initial weights, summed loss of the steps, trained weights)`."""
  with strategy.scope():
    model, ratings, _ = build(
        name, loss_metrics=[tf.keras.metrics.Sum("loss_sum")])
  initial = [w.numpy().copy() for w in model.trainable_weights]
  history = model.fit(ratings.batch(batch, drop_remainder=True).take(steps),
                      epochs=1, verbose=0)
  # The comparison is of `steps` trained steps, not of a shorter epoch.
  done = int(model.optimizer.iterations.numpy())
  assert done == steps, "trained %d steps, expected %d" % (done, steps)
  return (initial, history.history["loss_sum"][0],
          [w.numpy() for w in model.trainable_weights])


if __name__ == "__main__":
  # `python -m tests.tasks.tutorial_lib NAME`: one device vs two logical
  # CPUs in a fresh process; prints a JSON summary.
  import json  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  cpus = tf.config.list_physical_devices("CPU")
  tf.config.set_logical_device_configuration(
      cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
  one = fit_summed(sys.argv[1], tf.distribute.get_strategy())
  two = fit_summed(sys.argv[1],
                   tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
  print(json.dumps({
      "same_start": all(np.array_equal(a, b) for a, b in zip(one[0], two[0])),
      "loss_one": float(one[1]), "loss_two": float(two[1]),
      "max_weight_diff": max(float(np.max(np.abs(a - b)))
                             for a, b in zip(one[2], two[2]))}))
