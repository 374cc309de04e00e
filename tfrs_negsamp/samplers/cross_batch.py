"""Cross-batch negative sampling (CBNS): a FIFO memory of past candidates.

Once warmed up, an item encoder changes slowly, so the candidate embeddings
of the last few mini-batches are still good negatives. The sampler keeps the
last `M` in-batch candidate embeddings in a FIFO queue and adds them, as
constants, to the in-batch columns of every row's softmax. This multiplies
the number of negatives without encoding a single extra item.

Logits of row `i` (query `u_i`, positive at column `i`) over the columns
`[v_1 .. v_G | e_1 .. e_M]` (the global batch's candidates, then the queue):

    z_ij = <u_i, c_j> / tau - log Q_j                      (all columns j)
    z_ij = MASK   if  cid_j == id_i, j != i                (accidental hit)
    z_ij = MASK   if  j is a queue slot and (slot empty or step < W)

    l_i  = -z_ii + logsumexp_j z_ij

`log Q_j` is the log expected number of columns showing the item per global
step (docs/design/shared.md#logq-units), from the sampler's `frequency`
source; without one
there is no correction. In-batch and queue items are both past positives,
drawn from the same distribution, so both parts use the same source.
A queue slot keeps the `log Q` its row had when it was an in-batch column
(stored at enqueue time, not looked up again at read time): it is the
proposal probability of the step that drew the row, which is the right one
under drift, and it costs no hashing of `M` ids per step. With a fixed
source both give the same value. No gradient flows into queue embeddings;
gradients reach the query tower through every column and the item tower
through the in-batch columns only.

Gradient path of the queue columns: `d l_i / d e_j` is cut (stop-gradient),
so a queue column's gradient is `d l_i / d u_i` alone. With an id query
tower that updates user vectors only. With a history tower that reads the
item table (`--query_tower=mean|gru|sasrec`, `--share_item_embeddings`,
the CBNS paper's setting), `u_i = f(E[s_1..s_L])` and the queue columns
update the table rows of the row's history items through the query side.

Per training step: (1) snapshot the queue (read before write); (2) update the
frequency source with the global batch's ids, then look up `log Q`; (3) build
the group; (4) enqueue the global batch's candidates (stop-gradient), ids and
`log Q` at slots `(head + range(G)) % M`; (5) `step += 1`. The current batch
is thus never in the queue while its own loss is computed, and enqueueing
continues during warm-up, so the queue is full and fresh when it switches on.

State (non-trainable, ON_WRITE / ONLY_FIRST_REPLICA, see `memory.RingBuffer`):
`queue_emb` float32 `[M, d]` (init 0), `queue_ids` int64 `[M]` (init -1),
`queue_logq` float32 `[M]` (init 0), `head` int64 (next slot, the oldest
once full), `filled` int64 (written slots), `step` int64 (training steps,
the warm-up clock). The frequency source keeps its own sketch. All of it is
checkpointed with the model.

Any `M >= 1` is valid: a batch that crosses the end of the array wraps
around, and with `M < G` only the last `M` candidates of the batch are kept,
so the queue always holds the last `min(M, rows seen)` candidates.

Distribution (tf.distribute.MirroredStrategy): the model gathers the
candidates of all replicas (local block first), so every replica's rows see
the whole global batch plus the queue. The queue is written with the
gathered candidates put back in replica-id order
(`distribute.to_replica_order`), so every replica writes the same rows at the
same slots and the queues stay identical on every replica after every step;
the loss equals a single-device run on the global batch.

Paper's towers: YouTubeDNN / GRU4Rec / MIND, user side built from the
shared item table (`--query_tower=mean|gru|sasrec`).

References:
  Wang, Zhu, He. Cross-Batch Negative Sampling for Training Two-Tower
  Recommenders. SIGIR 2021 (arXiv 2110.15154).
"""

import dataclasses
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf

from tfrs_negsamp import distribute
from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import in_batch
from tfrs_negsamp.samplers import memory
from tfrs_negsamp.samplers import warmup


@tf.keras.utils.register_keras_serializable(package="tfrs_negsamp")
class CrossBatchSampler(base.NegativeSampler):
  """In-batch negatives plus a FIFO queue of recent candidate embeddings.

  Returns one `CandidateGroup` whose extra columns are the queue snapshot
  (`[M, d]`, stop-gradient) with its ids, `column_log_q` over all `G + M`
  columns, and a `[G + M]` `score_mask` that hides empty slots and, before
  `warmup_steps` training steps, the whole queue (the loss then equals the
  in-batch loss: masked columns get zero softmax mass).

  Args:
    memory_size: `M`, number of queue slots (any positive integer; a
      multiple of the global batch `G` is the usual choice).
    warmup_steps: `W`, training steps before the queue joins the softmax.
      Enqueueing runs from the first step.
    frequency: optional `FrequencySource` for the logQ correction of batch
      and queue columns (None: no correction).
    remove_accidental_hits: mask batch and queue columns whose id equals the
      row's positive id.
    fresh_queue: a diagnostic, not CBNS: the queue keeps its ids and log Q
      but its columns are re-embedded by `item_model` at every step
      (stop-gradient), which removes the staleness of the cached
      embeddings and costs `M` extra item-tower passes.
    fresh_queue_gradient: with `fresh_queue`, keep the gradient of the
      re-embedded queue columns (they then push the item tower like
      in-batch columns): the second half of the diagnostic.
    item_model: callable int64 ids `[M]` -> `[M, d]`, needed with
      `fresh_queue` (not part of the config).
    **kwargs: Keras layer arguments.

  Raises:
    ValueError: for a non-positive `memory_size` or a negative
      `warmup_steps`.

  Example:

  >>> import tensorflow as tf
  >>> import tfrs_negsamp as tn
  >>> sampler = tn.samplers.CrossBatchSampler(memory_size=4)
  >>> task = tn.tasks.Retrieval(sampler=sampler)
  >>> _ = task(tf.eye(2), tf.eye(2), candidate_ids=tf.constant(["a", "b"]))
  >>> int(sampler.filled)  # the batch is now in the queue
  2
  """

  needs_embedding_dim = True

  def __init__(self, memory_size: int, warmup_steps: int = 0,
               frequency: Optional[frequency_lib.FrequencySource] = None,
               remove_accidental_hits: bool = True,
               fresh_queue: bool = False, fresh_queue_gradient: bool = False,
               item_model=None, **kwargs) -> None:
    super().__init__(frequency=frequency,
                     remove_accidental_hits=remove_accidental_hits, **kwargs)
    self.memory_size = memory.check_capacity(memory_size, "memory_size")
    self.fresh_queue = bool(fresh_queue)
    self.fresh_queue_gradient = bool(fresh_queue_gradient)
    catalog.set_item_model(self, item_model)
    if (isinstance(warmup_steps, bool) or
        not isinstance(warmup_steps, (int, np.integer)) or warmup_steps < 0):
      raise ValueError("warmup_steps must be an integer >= 0, got %r."
                       % (warmup_steps,))
    self.warmup_steps = int(warmup_steps)
    self._queue = None

  def build(self, input_shape):
    dim = tf.TensorShape(input_shape)[-1]
    if dim is None:
      raise ValueError("CrossBatchSampler needs a known embedding dimension, "
                       "got query shape %s." % (input_shape,))
    self._queue = memory.RingBuffer(self, self.memory_size, [
        memory.Field("queue_emb", [int(dim)], tf.float32, 0.0),
        memory.Field("queue_ids", [], tf.int64, -1),
        memory.Field("queue_logq", [], tf.float32, 0.0),
    ])
    self.step = distribute.add_state(self, "step", [], tf.int64)
    super().build(input_shape)

  # The queue's variables, for inspection and tests.
  @property
  def queue(self) -> memory.RingBuffer:
    if self._queue is None:
      raise RuntimeError("the queue of %s is created on its first call."
                         % self.name)
    return self._queue

  @property
  def queue_emb(self) -> tf.Variable:
    return self.queue.arrays["queue_emb"]

  @property
  def queue_ids(self) -> tf.Variable:
    return self.queue.arrays["queue_ids"]

  @property
  def queue_logq(self) -> tf.Variable:
    return self.queue.arrays["queue_logq"]

  @property
  def head(self) -> tf.Variable:
    return self.queue.head

  @property
  def filled(self) -> tf.Variable:
    return self.queue.filled

  def sample(self, query_embeddings, candidate_embeddings, candidate_ids,
             positive_ids, training, consumed=None):
    del positive_ids  # hits are found from the column ids
    del consumed  # the task masks consumed batch and queue columns
    local_batch = query_embeddings.shape[0]
    num_columns = candidate_embeddings.shape[0]
    _, num_replicas = distribute.replica_info()
    if (num_replicas > 1 and local_batch is not None and
        num_columns is not None and num_columns != local_batch * num_replicas):
      raise ValueError(
          "CrossBatchSampler needs the candidates of the whole global batch "
          "(%d replicas x %d rows), got %d; build the model with "
          "global_negatives=True." % (num_replicas, local_batch, num_columns))

    # 1. Snapshot before any write of this step.
    snapshot = self._queue.read()
    use_queue = self.step >= self.warmup_steps
    queue_mask = tf.logical_and(self._queue.valid(), use_queue)

    # 2. log Q of the batch (the source is updated first when training).
    batch_log_q = self.in_batch_log_q(candidate_ids, training)
    column_log_q = None
    if batch_log_q is not None:
      batch_log_q = tf.cast(batch_log_q, tf.float32)
      column_log_q = tf.concat([batch_log_q, snapshot["queue_logq"]], axis=0)

    # 3. One softmax over [in-batch | queue].
    score_mask = tf.concat(
        [tf.ones(tf.shape(candidate_ids), tf.bool), queue_mask], axis=0)
    queue_emb = snapshot["queue_emb"]
    if self.fresh_queue:
      queue_emb = tf.cast(catalog.embed(
          self, tf.maximum(snapshot["queue_ids"], 0)), queue_emb.dtype)
      if not self.fresh_queue_gradient:
        queue_emb = tf.stop_gradient(queue_emb)
    group = base.CandidateGroup(
        extra_embeddings=queue_emb,
        extra_ids=snapshot["queue_ids"],
        column_log_q=column_log_q,
        score_mask=score_mask,
        remove_accidental_hits=self.remove_accidental_hits)

    # 4-5. Enqueue the global batch in replica order, advance the clock.
    if training:
      if local_batch is None:
        local_batch = tf.shape(query_embeddings)[0]
      log_q = (batch_log_q if batch_log_q is not None
               else tf.zeros(tf.shape(candidate_ids), tf.float32))
      self._queue.write({
          "queue_emb": distribute.to_replica_order(
              tf.stop_gradient(candidate_embeddings), local_batch),
          "queue_ids": distribute.to_replica_order(candidate_ids,
                                                   local_batch),
          "queue_logq": distribute.to_replica_order(log_q, local_batch),
      })
      self.step.assign_add(1)
    return [group]

  def get_config(self) -> Dict[str, Any]:
    config = super().get_config()
    config.update({"memory_size": self.memory_size,
                   "warmup_steps": self.warmup_steps,
                   "fresh_queue": self.fresh_queue,
                   "fresh_queue_gradient": self.fresh_queue_gradient})
    return config


@dataclasses.dataclass(frozen=True)
class CrossBatchOptions(in_batch.LogQOptions):
  """Options of `--sampler=cross_batch` (and the `log Q` source's)."""
  memory_size: int = base.option(
      0, low=0, help="CBNS queue size M (0: 4x the global batch)",
      tune=base.Tune("categorical", choices=(1, 4, 16), per_batch=True))
  warmup_steps: int = base.option(
      0, low=0, help=warmup.WARMUP_HELP,
      tune=base.Tune("categorical", choices=(0, 300, 1000)))
  fresh_queue: bool = base.option(
      False, help="CBNS diagnostic: re-embed the queue's ids at every step "
      "(no stale embeddings; not the paper's method)")
  fresh_queue_gradient: bool = base.option(
      False, help="CBNS diagnostic, with --fresh_queue: keep the gradient "
      "of the re-embedded queue columns")


@base.register_sampler("cross_batch", options=CrossBatchOptions)
def _cross_batch(context: base.SamplerContext,
                 options: CrossBatchOptions) -> CrossBatchSampler:
  """CBNS: in-batch plus a FIFO queue of recent item embeddings (Wang et al. 2021)."""
  return CrossBatchSampler(
      memory_size=options.memory_size or 4 * context.global_batch_size,
      warmup_steps=options.warmup_steps,
      frequency=in_batch.frequency_from_options(context, options),
      fresh_queue=options.fresh_queue,
      fresh_queue_gradient=options.fresh_queue_gradient,
      item_model=context.item_model)
