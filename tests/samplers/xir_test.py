"""XIR: NumPy reference of the cache, loss, gradients, replicas, checkpoints."""

from absl.testing import parameterized
import numpy as np
import tensorflow as tf

from tests import helpers
from tests.samplers import goodness_of_fit as gof
from tests.samplers import importance_resampling_test as ir_test
from trainers.pipeline import assembly
from trainers.pipeline import fitting
from trainers.pipeline import strategies
from tfrs_negsamp import frequency
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import importance_resampling as ir
from tfrs_negsamp.samplers import xir
from tfrs_negsamp.tasks import retrieval


def np_resample(logits, valid, uniforms):
  """Inverse-CDF draws in float32 NumPy (the rule of the docstring)."""
  logits = np.asarray(logits, np.float32)
  masked = np.where(valid, logits, np.float32(-np.inf))
  row_max = masked.max(axis=1, keepdims=True)
  row_max = np.where(np.isfinite(row_max), row_max, np.float32(0))
  cdf = ir.prefix_sums(np.exp(masked - row_max)).numpy()
  total = cdf[:, -1:]
  targets = np.minimum(uniforms * total, np.nextafter(total, np.float32(0)))
  idx = np.stack([np.searchsorted(cdf[r], targets[r], side="right")
                  for r in range(len(cdf))])
  idx = np.minimum(idx, logits.shape[1] - 1)
  return idx, np.take_along_axis(valid, idx, axis=1)


def uniforms(seed, step, stream, rows, cols):
  """The sorted uniforms: with `ir.prefix_sums` the only pieces shared with
  TF (both tested on their own in importance_resampling_test)."""
  return ir.sorted_uniforms(cols, ir.step_seed(seed, step, stream),
                            num_rows=rows).numpy()


class NumpyXIR:
  """Pure-NumPy XIR (docs/design/bir_xir.md#xir-step) on one device."""

  def __init__(self, table, counts, cache_size, num_resampled, tau, decay,
               seed):
    self.table, self.tau, self.decay, self.seed = table, tau, decay, seed
    self.log_f = np.log(np.maximum(counts / counts.sum(), 1e-12)).astype(
        np.float32)
    num_items = len(counts) - 1
    self.cache = np.random.RandomState(seed).randint(
        1, num_items + 1, size=cache_size)
    self.occurrence = np.ones(num_items + 1, np.float32)
    self.k_batch = num_resampled // 2
    self.k_cache = num_resampled - self.k_batch
    self.step = 0

  def train_step(self, queries, ids):
    b = len(ids)
    log_q = lambda x: self.log_f[x] + np.float32(np.log(b))  # noqa: E731
    cands = self.table[ids]
    a = queries @ cands.T / self.tau - log_q(ids)[None, :]
    valid = ~np.eye(b, dtype=bool) & (ids[:, None] != ids[None, :])
    idx_b, ok_b = np_resample(a, valid, uniforms(
        self.seed, self.step, ir.STREAM_BATCH, b, self.k_batch))
    a_c = (queries @ self.table[self.cache].T / self.tau
           - log_q(self.cache)[None, :])
    valid_c = ids[:, None] != self.cache[None, :]
    idx_c, ok_c = np_resample(a_c, valid_c, uniforms(
        self.seed, self.step, ir.STREAM_CACHE, b, self.k_cache))
    batch_counts = np.stack([np.bincount(idx_b[r][ok_b[r]], minlength=b)
                             for r in range(b)])
    cache_counts = np.stack([np.bincount(idx_c[r][ok_c[r]],
                                         minlength=len(self.cache))
                             for r in range(b)])
    # D, the step's drawn multiset, as (id, draws) per column: in-batch
    # columns, then cache slots; distinct ids in first-occurrence order.
    column_ids = np.concatenate([ids, self.cache])
    draws = np.concatenate([batch_counts.sum(0), cache_counts.sum(0)])
    _, first = np.unique(column_ids, return_index=True)
    vals = column_ids[np.sort(first)]
    cnts = np.array([draws[column_ids == v].sum() for v in vals], np.float32)
    vals, cnts = vals[cnts > 0], cnts[cnts > 0]
    self.check_multiset(ids, idx_b, ok_b, idx_c, ok_c, vals, cnts)
    if self.decay > 0:
      self.occurrence *= np.float32(1 - self.decay)
    self.occurrence[vals] += cnts
    idx, _ = np_resample(np.log(self.occurrence[vals])[None, :],
                         np.ones((1, len(vals)), bool),
                         uniforms(self.seed, self.step, ir.STREAM_REFRESH, 1,
                                  len(self.cache)))
    self.cache = vals[idx[0]]
    self.step += 1
    return batch_counts, cache_counts


  def check_multiset(self, ids, idx_b, ok_b, idx_c, ok_c, vals, cnts):
    """The per-column totals give the multiset of all B x K drawn ids."""
    flat = np.concatenate([ids[idx_b][ok_b], self.cache[idx_c][ok_c]])
    unique, counts = np.unique(flat, return_counts=True)
    order = np.argsort(vals)
    np.testing.assert_array_equal(vals[order], unique)
    np.testing.assert_array_equal(cnts[order], counts)


def group_counts(group, positive_columns):
  n = np.where(group.score_mask.numpy(), np.exp(group.logit_offset.numpy()),
               0.0)
  rows = np.arange(n.shape[0])
  n[rows, positive_columns] -= 1.0
  return np.rint(n).astype(np.int64)


def _mirrored():
  assert len(tf.config.list_logical_devices("CPU")) >= 2
  return strategies.make_strategy("mirrored", 2)


class XIRTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(0.0, 0.3)
  def test_cache_after_scripted_batches_equals_numpy_reference(self, decay):
    rng = np.random.RandomState(5)
    num_items, batch, dim = 12, 6, 3
    table = rng.randn(num_items + 1, dim).astype(np.float32)
    counts = np.concatenate([[0.], rng.randint(1, 30, num_items)])
    sampler = xir.XIRSampler(
        num_items=num_items, item_model=lambda i: tf.gather(table, i),
        cache_size=5, num_resampled=6, temperature=0.5, cache_decay=decay,
        seed=11, frequency=frequency.StaticItemProbability(counts))
    reference = NumpyXIR(table, counts, cache_size=5, num_resampled=6,
                         tau=0.5, decay=decay, seed=11)
    step = tf.function(lambda q, c, i: sampler(q, c, i, training=True))
    for _ in range(6):
      ids = rng.randint(1, num_items + 1, batch)  # repeats: accidental hits
      queries = rng.randn(batch, dim).astype(np.float32)
      cache_group, batch_group = step(tf.constant(queries),
                                      tf.constant(table[ids]),
                                      tf.constant(ids, tf.int64))
      want_batch, want_cache = reference.train_step(queries, ids)
      self.assertAllEqual(group_counts(batch_group, np.arange(batch)),
                          want_batch)
      self.assertAllEqual(group_counts(cache_group, 0)[:, 1:], want_cache)
      self.assertAllEqual(sampler.cache_ids.numpy(), reference.cache)
      self.assertAllClose(sampler.occurrence.numpy(), reference.occurrence,
                          rtol=1e-6)
    self.assertEqual(int(sampler.step.numpy()), 6)
    self.assertGreater(len(set(reference.cache)), 1)

  def test_count_vectors_of_both_groups_and_the_refresh_are_multinomial(
      self):
    # Goodness of fit of whole outcomes, each also rejecting the law with
    # 0.03 of mass moved. A fixed cache of 3 items, 4 queries over 4
    # in-batch columns, K = 6: 3 draws per row from each group, 2500 steps
    # (the step counter set, training off, so the cache stays). Batch
    # group: the 3 columns other than the row's, p ~ exp(s / tau - log q).
    # Cache group: the 3 slots (no cache item is a positive), p ~ exp(<u,
    # e_c> / tau - log q(c)). Refresh: the C = 3 new slots are
    # Multinomial(3, w) over the step's drawn ids, w = occurrence + draws.
    rng = np.random.RandomState(9)
    table = (0.6 * rng.randn(9, 3)).astype(np.float32)
    counts = np.concatenate([[0.], rng.randint(1, 30, 8)]).astype(np.float64)
    sampler = xir.XIRSampler(
        num_items=8, item_model=lambda i: tf.gather(table, i), cache_size=3,
        num_resampled=6, temperature=0.5, seed=4,
        frequency=frequency.StaticItemProbability(counts))
    sampler.build(None)
    cache = np.array([5, 7, 8], np.int64)
    sampler.cache_ids.assign(cache)
    ids = np.array([1, 2, 3, 4], np.int64)
    q = (0.6 * rng.randn(4, 3)).astype(np.float32)
    call = tf.function(lambda: sampler(
        tf.constant(q), tf.constant(table[ids]), tf.constant(ids),
        training=False))
    batch_draws, cache_draws = [], []
    for t in range(2500):
      sampler.step.assign(t)
      cache_group, batch_group = call()
      batch_draws.append(group_counts(batch_group, np.arange(4)))
      cache_draws.append(group_counts(cache_group, 0)[:, 1:])
    self.assertAllEqual(sampler.cache_ids.numpy(), cache)
    log_f = np.log(np.maximum(counts, 1e-12) / counts.sum())
    batch_law = ir_test.softmax_masked(
        q @ table[ids].T / 0.5 - log_f[ids], ~np.eye(4, dtype=bool))
    cache_law = ir_test.softmax_masked(
        q @ table[cache].T / 0.5 - log_f[cache], np.ones((4, 3), bool))
    batch_draws, cache_draws = np.stack(batch_draws), np.stack(cache_draws)
    for row in range(4):
      keep = np.arange(4) != row
      law = batch_law[row][keep]
      gof.check_fit(self, batch_draws[:, row][:, keep], law, 3,
                    wrong_probs=gof.perturbed(law), msg="batch row %d" % row)
      gof.check_fit(self, cache_draws[:, row], cache_law[row], 3,
                    wrong_probs=gof.perturbed(cache_law[row]),
                    msg="cache row %d" % row)
    # Refresh from occurrence 1: ids 2, 6, 1 drawn 4, 1, 9 times.
    refresh = tf.function(sampler.refresh_cache)
    column_ids = tf.constant([2, 6, 2, 1], tf.int64)
    column_draws = tf.constant([3., 1., 1., 9.])
    new = []
    for t in range(3000):
      sampler.occurrence.assign(tf.ones([9]))
      refresh(column_ids, column_draws, tf.constant(t, tf.int64))
      new.append([np.sum(sampler.cache_ids.numpy() == v) for v in (2, 6, 1)])
    law = np.array([5., 2., 10.]) / 17.
    gof.check_fit(self, np.array(new), law, 3, wrong_probs=gof.perturbed(law),
                  msg="refresh")

  def test_loss_and_state_on_a_fixed_example_match_hand_computation(self):
    # Items 1..3: e_1 = [2, 0], e_2 = [0, 3], e_3 = [1, 1]; queries
    # u_0 = [1, 0], u_1 = [0, 1] with positives 1, 2; cache = [3, 3]; no
    # correction, tau = 1, K = 4 -> 2 batch + 2 cache draws per row.
    # Batch: each row's only valid negative is the other positive:
    #   l_0 = -2 + log(e^2 + 2 e^0), l_1 = -3 + log(e^3 + 2 e^0).
    # Cache: both slots hold item 3 (s = 1 for both rows): 2 draws of it:
    #   l_0 = -2 + log(e^2 + 2 e^1), l_1 = -3 + log(e^3 + 2 e^1).
    table = tf.Variable([[0., 0.], [2., 0.], [0., 3.], [1., 1.]])
    q = tf.Variable([[1., 0.], [0., 1.]])
    ids = tf.constant([1, 2], tf.int64)
    sampler = xir.XIRSampler(num_items=3,
                             item_model=lambda i: tf.gather(table, i),
                             cache_size=2, num_resampled=4,
                             cache_weight=0.25)
    sampler.build(None)
    sampler.cache_ids.assign([3, 3])
    with tf.GradientTape() as tape:
      c = tf.gather(table, ids)
      groups = sampler(q, c, ids, training=True)
      loss = retrieval.Retrieval().groups_loss(q, c, groups, candidate_ids=ids)
    self.assertEqual([g.weight for g in groups], [0.25, 0.75])
    e = np.exp
    batch_loss = (-2 + np.log(e(2) + 2)) + (-3 + np.log(e(3) + 2))
    cache_loss = (-2 + np.log(e(2) + 2 * e(1))) + (-3 + np.log(e(3)
                                                              + 2 * e(1)))
    self.assertAllClose(loss, 0.25 * cache_loss + 0.75 * batch_loss,
                        atol=1e-5)
    # The cache item gets gradient through the cache columns only:
    # d/de_3 = 0.25 * sum_i P_i(cache) u_i, P_i = 2e^1 / (e^{s_ii} + 2e^1).
    p = [2 * e(1) / (e(2) + 2 * e(1)), 2 * e(1) / (e(3) + 2 * e(1))]
    grad = tf.convert_to_tensor(tape.gradient(loss, table))
    self.assertAllClose(grad[3], [0.25 * p[0], 0.25 * p[1]], atol=1e-5)
    # Refresh: draws row 0 [2, 2 | 3, 3], row 1 [1, 1 | 3, 3] ->
    # vals [1, 2, 3] with counts [2, 2, 4]; occurrence = 1 + counts.
    self.assertAllEqual(sampler.occurrence.numpy(), [1., 3., 3., 5.])
    self.assertContainsSubset(set(sampler.cache_ids.numpy()), {1, 2, 3})

  def test_gradients_flow_through_positive_and_drawn_scores_only(self):
    # Tape gradient == finite-difference gradient of the NumPy two-group
    # loss with the drawn counts held fixed (so nothing flows through the
    # resampling), for the queries and the item table (batch + cache rows).
    rng = np.random.RandomState(6)
    table0 = rng.randn(9, 3)
    q0 = rng.randn(4, 3)
    ids = np.array([1, 2, 3, 1])
    table, q = tf.Variable(table0, dtype=tf.float32), tf.Variable(
        q0, dtype=tf.float32)
    sampler = xir.XIRSampler(num_items=8,
                             item_model=lambda i: tf.gather(table, i),
                             cache_size=4, num_resampled=6, temperature=0.5,
                             cache_weight=0.4, seed=2)
    task = retrieval.Retrieval(temperature=0.5)
    with tf.GradientTape() as tape:
      c = tf.gather(table, ids)
      groups = sampler(q, c, tf.constant(ids, tf.int64), training=False)
      loss = task.groups_loss(q, c, groups, candidate_ids=tf.constant(ids, tf.int64))
    cache = sampler.cache_ids.numpy()
    n_c = group_counts(groups[0], 0)[:, 1:]
    n_b = group_counts(groups[1], np.arange(4))
    self.assertGreater(n_c.sum(), 0)

    def np_loss(qv, tv):
      total = 0.0
      for weight, cols, n in ((0.4, tv[cache], n_c), (0.6, tv[ids], n_b)):
        for i in range(4):
          pos = qv[i] @ tv[ids[i]] / 0.5
          neg = cols @ qv[i] / 0.5
          total += weight * (-pos + np.log(
              np.exp(pos) + np.sum(n[i] * np.exp(neg))))
      return total

    self.assertAllClose(loss, np_loss(q0, table0), atol=1e-4)

    def numeric(fn, x):
      grad = np.zeros_like(x)
      for index in np.ndindex(*x.shape):
        d = np.zeros_like(x)
        d[index] = 1e-6
        grad[index] = (fn(x + d) - fn(x - d)) / 2e-6
      return grad

    grad_q, grad_t = tape.gradient(loss, [q, table])
    self.assertAllClose(grad_q, numeric(lambda x: np_loss(x, table0), q0),
                        atol=1e-3)
    self.assertAllClose(tf.convert_to_tensor(grad_t),
                        numeric(lambda x: np_loss(q0, x), table0), atol=1e-3)
    # Rows of items neither in the batch nor drawn from the cache: no grad.
    untouched = set(range(9)) - set(ids) - set(cache[n_c.sum(0) > 0])
    for item in untouched:
      self.assertAllEqual(tf.convert_to_tensor(grad_t)[item], [0., 0., 0.])

  @parameterized.parameters(("bir", "multinomial"), ("xir", "multinomial"),
                            ("xir", "poisson"))
  def test_mirrored_equals_single_device_and_cache_is_replica_identical(
      self, name, resampling):
    # Two replicas of 4 rows = one device on the 8-row global batch: same
    # draws (rows keep their global index), loss, gradients and state.
    dataset = helpers.tiny_dataset()
    # Unmasked: with history masking the gradient sums differ by float noise
    # only (masking_test checks mirrored == single with masking on).
    config = helpers.tiny_config(sampler=name, mask_history=False)
    config.sampler_options.update(num_resampled=6, cache_size=5,
                                  temperature=config.temperature,
                                  resampling=resampling,
                                  warmup_epochs=0.0)  # XIR itself
    strategy = _mirrored()
    single, mirrored = helpers.single_and_mirrored(dataset, config, strategy)

    helpers.check_mirrored_matches_single(self, strategy, single, mirrored,
                                          dataset, steps=3)
    names = ["step"] + (["cache_ids", "occurrence"] if name == "xir" else [])
    if resampling == "poisson":
      # Real-valued weights: the replicas' occurrence sums may round in
      # another order than one device's (identical on both replicas).
      names.remove("occurrence")
      copies = [v.numpy() for v in mirrored.sampler.occurrence.values]
      self.assertAllEqual(copies[0], copies[1])
      self.assertAllClose(copies[0], single.sampler.occurrence.numpy(),
                          rtol=1e-5)
    helpers.check_replicas_match(self, mirrored.sampler, single.sampler,
                                 names, exact=True)
    self.assertEqual(int(mirrored.sampler.step.values[0].numpy()), 3)

  def test_fit_then_checkpoint_restores_into_every_replica(self):
    # Keras fit (graph mode) on one device, then a restore into a fresh
    # two-replica model: the cache survives and both copies hold it.
    # (Training updates under the strategy: the test above.)
    dataset = helpers.tiny_dataset(num_users=20)
    # Unmasked: with history masking a row may have no column to draw.
    config = helpers.tiny_config(sampler="xir", mask_history=False)
    config.sampler_options.update(temperature=config.temperature,
                                  warmup_epochs=0.0)  # XIR itself
    model = assembly.create_model(dataset, config,
                                    tf.distribute.get_strategy())
    stats = fitting.train(model, dataset, config,
                             tf.distribute.get_strategy())
    sampler = model.sampler
    self.assertEqual(int(sampler.step.numpy()), stats["steps"])
    # Each step adds G * K = 8 * 8 draws (every row of the tiny batches has
    # a valid column).
    self.assertEqual(sampler.occurrence.numpy().sum(),
                     dataset.catalog.num_items + 1 + 64 * stats["steps"])

    path = tf.train.Checkpoint(model=model).save(
        self.get_temp_dir() + "/ckpt")
    fresh = assembly.create_model(dataset, config, _mirrored())
    self.assertNotAllEqual(fresh.sampler.occurrence.values[0].numpy(),
                           sampler.occurrence.numpy())
    tf.train.Checkpoint(model=fresh).restore(
        path).assert_existing_objects_matched()
    for var_name in ("step", "cache_ids", "occurrence"):
      for copy in getattr(fresh.sampler, var_name).values:
        self.assertAllEqual(copy.numpy(),
                            getattr(sampler, var_name).numpy(),
                            msg=var_name)
    for var_name in ("avg_gap", "last_step"):
      self.assertAllEqual(
          getattr(fresh.sampler.frequency, var_name).values[1].numpy(),
          getattr(sampler.frequency, var_name).numpy(), msg=var_name)

  def test_config_round_trip_and_item_model_reattachment(self):
    table = tf.constant(np.eye(5, 2, dtype=np.float32))
    sampler = xir.XIRSampler(
        num_items=4, item_model=lambda i: tf.gather(table, i), cache_size=3,
        cache_weight=0.7, cache_decay=0.01, num_resampled=4,
        temperature=0.2, seed=9,
        frequency=frequency.StaticItemProbability([0., 1., 2., 3., 4.]))
    config = sampler.get_config()
    for key in ("num_items", "cache_size", "cache_weight", "cache_decay",
                "num_resampled", "temperature", "seed", "frequency",
                "remove_accidental_hits"):
      self.assertIn(key, config)
    self.assertNotIn("item_model", config)
    clone = helpers.check_config_round_trip(self, sampler)
    q, ids = tf.constant([[1., 0.]]), tf.constant([1], tf.int64)
    with self.assertRaisesRegex(ValueError, "needs an item_model"):
      clone(q, tf.gather(table, ids), ids)
    clone.item_model = lambda i: tf.gather(table, i)
    self.assertLen(clone(q, tf.gather(table, ids), ids), 2)

  def test_invalid_values_are_rejected(self):
    ok = dict(num_items=5, item_model=lambda i: i)
    cases = [
        (dict(num_items=0), "num_items must be an integer >= 1"),
        (dict(cache_size=0), "cache_size must be an integer >= 1"),
        (dict(cache_size=2.0), "cache_size must be an integer"),
        (dict(cache_weight=-0.1), r"cache_weight \(lambda\) must be in"),
        (dict(cache_weight=1.5), r"cache_weight \(lambda\) must be in"),
        (dict(cache_decay=1.0), r"cache_decay must be in \[0, 1\)"),
        (dict(cache_decay=-0.5), r"cache_decay must be in \[0, 1\)"),
        (dict(num_resampled=1), "num_resampled must be >= 2 for XIR"),
        (dict(num_resampled=0), "num_resampled must be an integer >= 1"),
        (dict(temperature=-1.0), "temperature must be > 0"),
    ]
    for overrides, message in cases:
      with self.assertRaisesRegex(ValueError, message, msg=str(overrides)):
        xir.XIRSampler(**dict(ok, **overrides))
    with self.assertRaisesRegex(TypeError, "item_model must be callable"):
      xir.XIRSampler(num_items=5, item_model=3)

  def test_registered_factory_reads_the_options(self):
    item_model = lambda i: i  # noqa: E731
    ctx = base.SamplerContext(
        item_counts=np.array([0., 3., 1., 2.]), item_model=item_model,
        global_batch_size=32, seed=4,
        options={"cache_size": 0, "num_resampled": 0, "cache_weight": 0.5,
                 "cache_decay": 0.1, "frequency": "static",
                 "warmup_epochs": 0.0}, temperature=0.3)
    sampler = base.create_sampler("xir", ctx)
    self.assertIsInstance(sampler, xir.XIRSampler)
    self.assertEqual((sampler.num_items, sampler.cache_size,
                      sampler.cache_weight, sampler.cache_decay,
                      sampler.num_resampled, sampler.temperature,
                      sampler.seed),
                     (3, 32, 0.5, 0.1, None, 0.3, 4))
    self.assertIs(sampler.item_model, item_model)
    self.assertIsInstance(sampler.frequency, frequency.StaticItemProbability)
    sampler = base.create_sampler("xir", ctx._replace(
        options={"cache_size": 7, "num_resampled": 10,
                 "warmup_epochs": 0.0}))
    self.assertEqual((sampler.cache_size, sampler.num_resampled,
                      sampler.cache_weight), (7, 10, 0.2))
    with self.assertRaisesRegex(ValueError, "needs context.item_model"):
      base.create_sampler("xir", ctx._replace(item_model=None))
    with self.assertRaisesRegex(ValueError, "cache_weight must be"):
      base.create_sampler("xir", ctx._replace(options={"cache_weight": 2.0}))


if __name__ == "__main__":
  tf.test.main()
