r"""Benchmarks sequence-level training (issue 25): cost per trained target.

  python -m trainers.bench_sequence \
      --data_path=../shared/data/ml-1m-sasrec/ml1m.csv

Part `cost` (B = 256, L = 50 by default): one training step (forward,
backward and an Adam update) of

  * `id`: the user-id tower, one target per row;
  * `sasrec_window`: SASRec on next-item examples (`next_item_dataset`), one
    (window, target) example per row: the encoder runs once per target;
  * `sasrec_sequence`: SASRec on sequence rows (`sequence_dataset`), every
    valid position of a row is a target, from one pass of the encoder,

each with the same simple loss per target (softmax over the positive and
`--negatives` items shared by the batch), on the same batches every round,
rounds interleaved in one process. Reported: ms per step, targets per step,
microseconds per target and the ratio to `id` per target.

Part `epoch`: an ML-1M SASRec epoch with their configuration (L = 200,
d = 128, 2 blocks, 1 head, dropout 0.5, B = 128, raw dot products) and the
exact full-softmax loss over the catalog (`full_softmax.full_softmax_loss`,
chunked), as the median step time times the steps of an epoch. The queries
are the valid positions only (`valid`, gathered) or all `B x L` positions
with padding weighted 0 (`all`), interleaved; `loss_only` times the full
softmax alone on random queries of the `valid` size; `input` is the time
`tf.data` takes to produce one epoch of rows.

Part `crop` (not run by default): trains SASRec on sequence rows with the
full softmax twice, once with each crop of long users (`last`: their last
`L + 1` items every epoch; `random`: a random window per epoch), and
reports the validation Recall@10 / NDCG@10 (full ranking, the user's
training items excluded, leave-last-out with one validation item) every
`--crop_eval_every` epochs.

Wall times on a shared machine are noisy: compare ratios within one run.
A benchmark, not a test.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import statistics  # noqa: E402
import time  # noqa: E402
from typing import Callable, Dict, List, Sequence, Tuple  # noqa: E402

from absl import flags  # noqa: E402
import numpy as np  # noqa: E402

from trainers import common  # noqa: E402

flags.DEFINE_enum("dataset", "csv", ["csv", "movielens"],
                  "Data set loader (tfrs_negsamp.data.load_dataset).")
flags.DEFINE_string("data_path", "../shared/data/ml-1m-sasrec/ml1m.csv",
                    "The CSV file (csv) or MovieLens folder (movielens).")
flags.DEFINE_list("parts", ["cost", "epoch"], "Parts to run: cost, epoch.")
flags.DEFINE_integer("rounds", 3, "Timing rounds (configurations "
                     "interleaved; the median round is reported).")
flags.DEFINE_integer("steps_per_round", 4, "Steps per configuration and "
                     "round (distinct batches).")
flags.DEFINE_integer("seed", 0, "Seed of weights, batches and negatives.")
flags.DEFINE_integer("cost_batch_size", 256, "Part cost: rows per batch.")
flags.DEFINE_integer("cost_length", 50, "Part cost: L.")
flags.DEFINE_integer("cost_dim", 64, "Part cost: embedding width d.")
flags.DEFINE_integer("negatives", 255, "Part cost: shared negatives of the "
                     "simple loss.")
flags.DEFINE_integer("epoch_batch_size", 128, "Part epoch: rows per batch.")
flags.DEFINE_integer("epoch_length", 200, "Part epoch: L.")
flags.DEFINE_integer("epoch_dim", 128, "Part epoch: d.")
flags.DEFINE_integer("epoch_blocks", 2, "Part epoch: SASRec blocks.")
flags.DEFINE_float("epoch_dropout", 0.5, "Part epoch: dropout.")
flags.DEFINE_integer("crop_length", 50, "Part crop: L.")
flags.DEFINE_integer("crop_dim", 64, "Part crop: d.")
flags.DEFINE_integer("crop_batch_size", 128, "Part crop: rows per batch.")
flags.DEFINE_integer("crop_epochs", 20, "Part crop: epochs per crop.")
flags.DEFINE_integer("crop_eval_every", 5, "Part crop: epochs between "
                     "evaluations.")
flags.DEFINE_integer("chunk_size", 1024, "Part epoch: items per chunk of "
                     "the full softmax.")
FLAGS = flags.FLAGS

_PARTS = ("cost", "epoch", "crop")


def _check_flags() -> None:
  if not FLAGS.parts:
    raise common.UsageError("--parts is empty; valid parts: %s"
                            % ", ".join(_PARTS))
  for part in FLAGS.parts:
    if part not in _PARTS:
      raise common.UsageError("--parts=%s: unknown part %r; valid: %s"
                              % (",".join(FLAGS.parts), part,
                                 ", ".join(_PARTS)))
  for name in ("rounds", "steps_per_round", "cost_batch_size", "cost_length",
               "cost_dim", "negatives", "epoch_batch_size", "epoch_length",
               "epoch_dim", "epoch_blocks", "chunk_size", "crop_length",
               "crop_dim", "crop_batch_size", "crop_epochs",
               "crop_eval_every"):
    if getattr(FLAGS, name) < 1:
      raise common.UsageError("--%s=%s: must be >= 1"
                              % (name, getattr(FLAGS, name)))
  if not 0.0 <= FLAGS.epoch_dropout < 1.0:
    raise common.UsageError("--epoch_dropout=%s: must be in [0, 1)"
                            % FLAGS.epoch_dropout)


def _time_interleaved(configs: Dict[str, Tuple[Callable, List]],
                      rounds: int) -> Dict[str, Tuple[float, float]]:
  """Median over rounds of each configuration's (wall, CPU) s per step.

  Each configuration runs its batches once per round (after one untimed
  warm-up pass that traces and compiles); the order of the configurations
  rotates from round to round. CPU time is the process's (all threads):
  on a machine shared with other jobs it is the steadier measure.
  """
  names = list(configs)
  for name in names:
    step, batches = configs[name]
    for batch in batches:
      step(batch).numpy()
  times = {name: [] for name in names}
  for r in range(rounds):
    order = names[r % len(names):] + names[:r % len(names)]
    for name in order:
      step, batches = configs[name]
      wall, cpu = time.perf_counter(), time.process_time()
      for batch in batches:
        loss = step(batch)
      loss.numpy()
      times[name].append(((time.perf_counter() - wall) / len(batches),
                          (time.process_time() - cpu) / len(batches)))
  return {name: (statistics.median(w for w, _ in t),
                 statistics.median(c for _, c in t))
          for name, t in times.items()}


def _train_step(variables_fn: Callable[[], Sequence], loss_fn: Callable,
                optimizer):
  """A `tf.function` step: loss, gradients and an optimizer update."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  @tf.function(autograph=False)
  def step(batch):
    with tf.GradientTape() as tape:
      loss = loss_fn(batch, True)
    variables = variables_fn()
    grads = tape.gradient(loss, variables)
    optimizer.apply_gradients(
        [(g, v) for g, v in zip(grads, variables) if g is not None])
    return loss
  return step


def _cost_part(dataset) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.data import sequences  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.data import tf_dataset  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.models import query_towers  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.models import towers  # pylint: disable=g-import-not-at-top

  batch_size, length, dim = (FLAGS.cost_batch_size, FLAGS.cost_length,
                             FLAGS.cost_dim)
  catalog, train = dataset.catalog, dataset.train
  num_items = catalog.num_items
  users = np.unique(train.user_ids)
  steps = FLAGS.steps_per_round
  rng = np.random.default_rng(FLAGS.seed)

  def index(item_ids):
    ids = np.array([i.decode() for i in item_ids.numpy()])
    return tf.constant(catalog.index_of(ids) + 1, tf.int64)

  def negatives():
    return tf.constant(rng.integers(1, num_items + 1, FLAGS.negatives),
                       tf.int64)

  def shared_softmax(queries, positives, item_model, negative_ids):
    pos = tf.reduce_sum(queries * item_model(positives), axis=1)
    neg = tf.linalg.matmul(queries, item_model(negative_ids),
                           transpose_b=True)
    logits = tf.concat([pos[:, None], neg], axis=1)
    return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.zeros_like(positives), logits=logits))

  configs, targets = {}, {}

  # id tower.
  item_id = towers.ItemTower(num_items, dim)
  user_tower = towers.QueryTower(users, dim)
  ds = tf_dataset.training_batches(train, batch_size, 1, seed=FLAGS.seed)
  batches = [{"user_id": b["user_id"], "positive": index(b["item_id"]),
              "negatives": negatives()} for b in ds.take(steps)]

  def id_loss(b, training):
    del training
    return shared_softmax(user_tower(b["user_id"]), b["positive"], item_id,
                          b["negatives"])

  configs["id"] = (_train_step(
      lambda: user_tower.trainable_variables + item_id.trainable_variables,
      id_loss, tf.keras.optimizers.Adam(1e-3)), batches)
  targets["id"] = float(batch_size)

  def sasrec():
    item_model = towers.ItemTower(num_items, dim)
    tower = query_towers.create_query_tower(
        "sasrec", users, item_model, dim, max_history=length, dropout=0.2,
        num_blocks=2, num_heads=1, seed=FLAGS.seed)
    return item_model, tower

  # SASRec, window rows.
  item_w, tower_w = sasrec()
  ds = sequences.next_item_dataset(train, catalog, length, batch_size,
                                   seed=FLAGS.seed, epochs=1)
  batches = [{"history": b["history"], "positive": index(b["item_id"]),
              "negatives": negatives()} for b in ds.take(steps)]

  def window_loss(b, training):
    query = tower_w({"history": b["history"]}, training=training)
    return shared_softmax(query, b["positive"], item_w, b["negatives"])

  configs["sasrec_window"] = (_train_step(
      lambda: tower_w.trainable_variables + item_w.trainable_variables,
      window_loss, tf.keras.optimizers.Adam(1e-3)), batches)
  targets["sasrec_window"] = float(batch_size)

  # SASRec, sequence rows: the valid positions, gathered.
  item_s, tower_s = sasrec()
  ds = sequences.sequence_dataset(train, catalog, length, batch_size,
                                  seed=FLAGS.seed, epochs=1)
  batches = [{"history": b["history"], "targets": b["targets"],
              "negatives": negatives()} for b in ds.take(steps)]

  def sequence_loss(b, training):
    seq = tower_s.sequence_embeddings({"history": b["history"]},
                                      training=training)
    where = tf.where(b["targets"] > 0)
    return shared_softmax(tf.gather_nd(seq, where),
                          tf.gather_nd(b["targets"], where), item_s,
                          b["negatives"])

  configs["sasrec_sequence"] = (_train_step(
      lambda: tower_s.trainable_variables + item_s.trainable_variables,
      sequence_loss, tf.keras.optimizers.Adam(1e-3)), batches)
  targets["sasrec_sequence"] = float(np.mean(
      [np.count_nonzero(b["targets"].numpy()) for b in batches]))

  seconds = _time_interleaved(configs, FLAGS.rounds)
  print("\n== cost per trained target: B = %d, L = %d, d = %d, %d shared "
        "negatives, train step (forward, backward, Adam), %d rounds x %d "
        "steps ==" % (batch_size, length, dim, FLAGS.negatives,
                      FLAGS.rounds, steps))
  print("%-16s %9s %9s %13s %11s %11s %11s %11s" % (
      "config", "wall ms", "CPU ms", "targets/step", "wall us/t", "CPU us/t",
      "x id wall", "x id CPU"))
  for name in configs:
    wall, cpu = seconds[name]
    n = targets[name]
    print("%-16s %9.1f %9.1f %13.1f %11.2f %11.2f %11.2f %11.2f" % (
        name, 1e3 * wall, 1e3 * cpu, n, 1e6 * wall / n, 1e6 * cpu / n,
        (wall / n) / (seconds["id"][0] / targets["id"]),
        (cpu / n) / (seconds["id"][1] / targets["id"])))
  for i, kind in enumerate(("wall", "CPU")):
    print("sasrec_window / sasrec_sequence per target (%s): %.1fx" % (
        kind, (seconds["sasrec_window"][i] / targets["sasrec_window"]) /
        (seconds["sasrec_sequence"][i] / targets["sasrec_sequence"])))


def _epoch_part(dataset) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import full_softmax  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.data import sequences  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.models import query_towers  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.models import towers  # pylint: disable=g-import-not-at-top

  batch_size, length, dim = (FLAGS.epoch_batch_size, FLAGS.epoch_length,
                             FLAGS.epoch_dim)
  catalog, train = dataset.catalog, dataset.train
  num_items = catalog.num_items
  users = np.unique(train.user_ids)
  rows = sequences.sequence_rows(train, catalog, length)
  steps_per_epoch = rows.steps_per_epoch(batch_size)

  start = time.perf_counter()
  ds = sequences.sequence_dataset(train, catalog, length, batch_size,
                                  seed=FLAGS.seed, epochs=1)
  all_batches = list(ds)
  input_seconds = time.perf_counter() - start
  batches = all_batches[:FLAGS.steps_per_round]
  mean_targets = rows.num_targets / rows.num_rows * batch_size

  def model():
    item_model = towers.ItemTower(num_items, dim, normalize=False)
    tower = query_towers.create_query_tower(
        "sasrec", users, item_model, dim, normalize=False,
        max_history=length, dropout=FLAGS.epoch_dropout,
        num_blocks=FLAGS.epoch_blocks, num_heads=1, seed=FLAGS.seed)
    return item_model, tower

  configs = {}
  for positions in ("valid", "all"):
    item_model, tower = model()

    def loss(b, training, item_model=item_model, tower=tower,
             positions=positions):
      seq = tower.sequence_embeddings({"history": b["history"]},
                                      training=training)
      if positions == "valid":
        where = tf.where(b["targets"] > 0)
        queries = tf.gather_nd(seq, where)
        positives = tf.gather_nd(b["targets"], where)
      else:
        queries = tf.reshape(seq, [-1, dim])
        positives = tf.reshape(b["targets"], [-1])   # 0: no loss
      per_row = full_softmax.full_softmax_loss(
          queries, positives, item_model.id_embedding.embeddings,
          num_items=num_items, chunk_size=FLAGS.chunk_size)
      count = tf.reduce_sum(tf.cast(positives > 0, tf.float32))
      return tf.reduce_sum(per_row) / tf.maximum(count, 1.0)

    configs["sasrec_full_" + positions] = (_train_step(
        lambda t=tower, i=item_model: (t.trainable_variables +
                                       i.trainable_variables),
        loss, tf.keras.optimizers.Adam(1e-3)), batches)

  # The loss alone, on random queries of the mean valid size.
  table = tf.Variable(tf.random.normal([num_items + 1, dim], seed=1))
  queries = tf.Variable(tf.random.normal([int(mean_targets), dim], seed=2))
  positives = tf.constant(
      np.random.default_rng(FLAGS.seed).integers(1, num_items + 1,
                                                 int(mean_targets)),
      tf.int64)

  @tf.function(autograph=False)
  def loss_only(_):
    with tf.GradientTape() as tape:
      total = tf.reduce_sum(full_softmax.full_softmax_loss(
          queries, positives, table, chunk_size=FLAGS.chunk_size))
    grads = tape.gradient(total, [queries, table])
    return total + tf.reduce_sum(grads[0][0]) + tf.reduce_sum(grads[1][0])

  configs["loss_only"] = (loss_only, batches)
  seconds = _time_interleaved(configs, FLAGS.rounds)
  print("\n== ML-1M SASRec epoch estimate: B = %d, L = %d, d = %d, %d "
        "blocks, dropout %.2f, full softmax over %d items (chunk %d), %d "
        "steps per epoch, %.0f valid targets per step ==" % (
            batch_size, length, dim, FLAGS.epoch_blocks, FLAGS.epoch_dropout,
            num_items, FLAGS.chunk_size, steps_per_epoch, mean_targets))
  print("%-22s %9s %9s %14s %14s" % ("config", "wall ms", "CPU ms",
                                      "epoch wall s", "epoch CPU s"))
  for name, (wall, cpu) in seconds.items():
    print("%-22s %9.1f %9.1f %14.1f %14.1f" % (
        name, 1e3 * wall, 1e3 * cpu, wall * steps_per_epoch,
        cpu * steps_per_epoch))
  print("%-22s %9s %9s %14.1f" % ("input (tf.data epoch)", "", "",
                                  input_seconds))
  print("(an epoch's wall time on 2 otherwise idle cores is at least its CPU "
        "time / 2)")


def _validation_metrics(dataset, tower, item_model, length: int,
                        k: int = 10) -> Tuple[float, float]:
  """Validation Recall@k and NDCG@k: one held-out item per user, full
  ranking over the catalog with the user's training items excluded."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.data import sequences  # pylint: disable=g-import-not-at-top
  catalog = dataset.catalog
  users = dataset.validation.user_ids
  targets = catalog.index_of(dataset.validation.item_ids) + 1
  histories = sequences.evaluation_histories(dataset, users, "validation",
                                             max_history=length)
  items = item_model(tf.range(1, catalog.num_items + 1,
                              dtype=tf.int64)).numpy()
  train_users = {u: i for i, u in enumerate(users)}
  seen = [[] for _ in users]
  for u, j in zip(dataset.train.user_ids,
                  catalog.index_of(dataset.train.item_ids) + 1):
    if u in train_users:
      seen[train_users[u]].append(j)
  recall, ndcg = [], []
  for start in range(0, len(users), 1024):
    stop = min(start + 1024, len(users))
    q = tower({"history": tf.constant(histories[start:stop])}).numpy()
    scores = q @ items.T                                  # [U, I]
    for r in range(stop - start):
      scores[r, np.asarray(seen[start + r], np.int64) - 1] = -np.inf
    target = scores[np.arange(stop - start), targets[start:stop] - 1]
    rank = (scores > target[:, None]).sum(axis=1)
    recall.append(rank < k)
    ndcg.append(np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0))
  return (float(np.mean(np.concatenate(recall))),
          float(np.mean(np.concatenate(ndcg))))


def _crop_part(dataset) -> None:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import full_softmax  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.data import sequences  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.models import query_towers  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp.models import towers  # pylint: disable=g-import-not-at-top

  length, dim, batch_size = (FLAGS.crop_length, FLAGS.crop_dim,
                             FLAGS.crop_batch_size)
  catalog, train = dataset.catalog, dataset.train
  num_items = catalog.num_items
  users = np.unique(train.user_ids)
  rows = sequences.sequence_rows(train, catalog, length)
  steps = rows.steps_per_epoch(batch_size)
  results = {}
  for crop in sequences.CROPS:
    tf.keras.utils.set_random_seed(FLAGS.seed)
    item_model = towers.ItemTower(num_items, dim, normalize=False)
    tower = query_towers.create_query_tower(
        "sasrec", users, item_model, dim, normalize=False, max_history=length,
        dropout=0.2, num_blocks=2, num_heads=1, seed=FLAGS.seed)

    def loss(b, training, item_model=item_model, tower=tower):
      seq = tower.sequence_embeddings({"history": b["history"]},
                                      training=training)
      where = tf.where(b["targets"] > 0)
      per_row = full_softmax.full_softmax_loss(
          tf.gather_nd(seq, where), tf.gather_nd(b["targets"], where),
          item_model.id_embedding.embeddings, num_items=num_items,
          chunk_size=FLAGS.chunk_size)
      return tf.reduce_mean(per_row)

    step = _train_step(lambda t=tower, i=item_model: (
        t.trainable_variables + i.trainable_variables), loss,
                       tf.keras.optimizers.Adam(1e-3))
    ds = sequences.sequence_dataset(train, catalog, length, batch_size,
                                    seed=FLAGS.seed,
                                    epochs=FLAGS.crop_epochs, crop=crop)
    start = time.perf_counter()
    curve = []
    for i, batch in enumerate(ds):
      step(batch)
      epoch = (i + 1) // steps
      if (i + 1) % steps == 0 and (epoch % FLAGS.crop_eval_every == 0 or
                                   epoch == FLAGS.crop_epochs):
        recall, ndcg = _validation_metrics(dataset, tower, item_model,
                                           length)
        curve.append((epoch, recall, ndcg, time.perf_counter() - start))
        print("crop=%s epoch %d: validation Recall@10 %.4f NDCG@10 %.4f "
              "(%.0f s)" % ((crop,) + curve[-1][:3] + (curve[-1][3],)),
              flush=True)
    results[crop] = curve
  print("\n== crops of long users: SASRec, L = %d, d = %d, B = %d, full "
        "softmax, %d rows, %d of %d training targets in the last L + 1 =="
        % (length, dim, batch_size, rows.num_rows, rows.num_targets,
           int(np.sum(rows.lengths - 1))))
  print("%6s %18s %18s" % ("epoch", "last R@10 / N@10", "random R@10 / N@10"))
  for (epoch, r1, n1, _), (_, r2, n2, _) in zip(results["last"],
                                                results["random"]):
    print("%6d %9.4f %8.4f %9.4f %8.4f" % (epoch, r1, n1, r2, n2))


def main(argv):
  del argv
  _check_flags()
  from tfrs_negsamp import data as data_lib  # pylint: disable=g-import-not-at-top
  dataset = data_lib.load_dataset(FLAGS.dataset, FLAGS.data_path,
                                  split_kwargs={"num_validation": 1})
  print("%s: %d training rows, %d users, %d items" % (
      dataset.name, dataset.train.num_rows, np.unique(
          dataset.train.user_ids).size, dataset.catalog.num_items))
  if "cost" in FLAGS.parts:
    _cost_part(dataset)
  if "epoch" in FLAGS.parts:
    _epoch_part(dataset)
  if "crop" in FLAGS.parts:
    _crop_part(dataset)


if __name__ == "__main__":
  common.run(main)
