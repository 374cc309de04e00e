"""Tests of sequence-level training rows (issue 25, SAMPLERS.md 12.1)."""

import numpy as np
import pytest
import tensorflow as tf

from tfrs_negsamp.data import errors
from tfrs_negsamp.data import interactions as lib
from tfrs_negsamp.data import sequences
from tfrs_negsamp.data import splits


def _log():
  """User a: a1..a7 (shuffled rows), b: b1..b3, c: c1 (one item)."""
  users = ["a", "b", "a", "a", "c", "a", "b", "a", "a", "b", "a"]
  items = ["a3", "b1", "a1", "a2", "c1", "a5", "b2", "a4", "a6", "b3", "a7"]
  times = [3, 1, 1, 2, 9, 5, 2, 4, 6, 3, 7]
  inter = lib.Interactions(user_ids=users, item_ids=items, timestamps=times,
                           source="tiny")
  catalog = lib.Catalog(np.array(sorted(set(items))))
  return inter, catalog


def _ix(catalog, *ids):
  return [int(catalog.index_of([i])[0]) + 1 for i in ids]


def _rows(ds):
  out = []
  for batch in ds:
    for u, h, t in zip(batch["user_id"].numpy(), batch["history"].numpy(),
                       batch["targets"].numpy()):
      out.append((u.decode(), h.tolist(), t.tolist()))
  return out


def _one_pass(inter, catalog, length, **kwargs):
  return _rows(sequences.sequence_dataset(
      inter, catalog, length, batch_size=1, shuffle=False,
      drop_remainder=False, **kwargs))


def test_rows_are_the_last_items_and_targets_the_next_items():
  inter, catalog = _log()
  ix = lambda *ids: _ix(catalog, *ids)  # noqa: E731
  rows = _one_pass(inter, catalog, 4)
  # L = 4: the last 5 items; user c (one item) has no row.
  assert rows == [
      ("a", ix("a3", "a4", "a5", "a6"), ix("a4", "a5", "a6", "a7")),
      ("b", [0, 0] + ix("b1", "b2"), [0, 0] + ix("b2", "b3")),
  ]
  # Longer than the user: the first item is an input without a target.
  rows = _one_pass(inter, catalog, 8)
  assert rows[0] == ("a", [0, 0] + ix("a1", "a2", "a3", "a4", "a5", "a6"),
                     [0, 0] + ix("a2", "a3", "a4", "a5", "a6", "a7"))


def test_no_target_in_its_prefix_and_padding_has_no_target():
  inter, catalog = _log()
  seqs = sequences.user_sequences(inter, catalog)
  first_items = set(seqs.items[seqs.offsets[:-1]].tolist())
  for length in (1, 2, 4, 6, 9):
    for _, history, targets in _one_pass(inter, catalog, length):
      for j, (h, t) in enumerate(zip(history, targets)):
        if h == 0:
          assert t == 0  # padding carries no target
        else:
          assert t != 0
          assert t not in history[:j + 1]  # no repeats in this log
        assert t not in first_items  # a first item has no history


def test_counts_rows_and_targets():
  inter, catalog = _log()
  for length in (1, 3, 6, 10):
    rows = sequences.sequence_rows(inter, catalog, length)
    assert rows.user_ids.tolist() == ["a", "b"]
    assert rows.lengths.tolist() == [7, 3]
    got = _one_pass(inter, catalog, length)
    assert rows.num_rows == len(got)
    assert rows.num_targets == sum(np.count_nonzero(t) for _, _, t in got)
    assert rows.num_targets == min(7, length + 1) - 1 + min(3, length + 1) - 1
    assert rows.steps_per_epoch(2) == 1


def test_no_validation_or_test_item_in_training_rows():
  inter, catalog = _log()
  dataset = splits.leave_last_out(inter, catalog, num_validation=1)
  held_out = set()
  for part in (dataset.validation, dataset.test):
    held_out |= set(zip(part.user_ids.tolist(), part.item_ids.tolist()))
  assert held_out  # a6, a7, b2, b3
  names = {i + 1: str(x) for i, x in enumerate(catalog.item_ids)}
  for crop, epochs in (("last", None), ("random", 4)):
    ds = sequences.sequence_dataset(dataset.train, catalog, 3, batch_size=1,
                                    shuffle=False, drop_remainder=False,
                                    epochs=epochs, crop=crop)
    rows = _rows(ds)
    assert rows
    for user, history, targets in rows:
      for i in history + targets:
        if i:
          assert (user, names[i]) not in held_out


def _long_log(num_users=5, seed=0):
  """Users of 2..40 distinct items each (no repeats within a user)."""
  rng = np.random.default_rng(seed)
  users, items, times = [], [], []
  for u in range(num_users):
    n = int(rng.integers(2, 41))
    for k, item in enumerate(rng.choice(60, size=n, replace=False)):
      users.append("u%d" % u)
      items.append("i%d" % item)
      times.append(k)
  inter = lib.Interactions(user_ids=users, item_ids=items, timestamps=times)
  catalog = lib.Catalog(np.array(sorted(set(items))))
  return inter, catalog


@pytest.mark.parametrize("crop", ["last", "random"])
def test_exact_resume(crop):
  inter, catalog = _long_log(num_users=9)

  def batches(start_step):
    ds = sequences.sequence_dataset(inter, catalog, 6, batch_size=2,
                                    shuffle=True, seed=3, epochs=3,
                                    start_step=start_step, crop=crop)
    return [{k: v.numpy().tolist() for k, v in b.items()} for b in ds]

  full = batches(0)
  assert len(full) == 3 * (9 // 2)
  for start in (1, 4, 5, 9):
    assert batches(start) == full[start:]
  # Epochs are reshuffled.
  assert [b["user_id"] for b in full[:4]] != [b["user_id"] for b in full[4:8]]


def _crops(inter, catalog, seed, epochs, length=5):
  """`{(epoch, user): first target}` of the random crops."""
  rows = sequences.sequence_rows(inter, catalog, length)
  ds = sequences.sequence_dataset(inter, catalog, length,
                                  batch_size=rows.num_rows, shuffle=True,
                                  seed=seed, epochs=epochs, crop="random")
  out = {}
  for epoch, batch in enumerate(ds):
    for u, h, t in zip(batch["user_id"].numpy(), batch["history"].numpy(),
                       batch["targets"].numpy()):
      out[(epoch, u.decode())] = (h.tolist(), t.tolist())
  return out


def test_random_crops_are_windows_deterministic_given_the_seed():
  inter, catalog = _long_log(num_users=6, seed=1)
  seqs = sequences.user_sequences(inter, catalog)
  items = {u: seqs.items[seqs.offsets[i]:seqs.offsets[i + 1]].tolist()
           for i, u in enumerate(seqs.user_ids)}
  a = _crops(inter, catalog, seed=7, epochs=12)
  assert a == _crops(inter, catalog, seed=7, epochs=12)
  assert a != _crops(inter, catalog, seed=8, epochs=12)
  ends = {}
  for (epoch, user), (history, targets) in a.items():
    seq = items[user]
    # Targets are the inputs shifted by one.
    assert targets[:-1] == [n if h else 0 for h, n in zip(history[:-1],
                                                          history[1:])]
    window = [i for i in history if i] + targets[-1:]
    if len(seq) <= 6:  # short users: the whole sequence, every epoch
      assert window == seq
    else:  # L + 1 consecutive items of the user
      start = seq.index(window[0])
      assert window == seq[start:start + 6]
      ends.setdefault(user, set()).add(start + 6)
  # Long users get other crops in other epochs.
  assert ends and all(len(e) > 1 for e in ends.values())


def test_random_crop_ends_are_uniform():
  # One user of 9 items at L = 3: ends e in {4..9}, 6 windows.
  inter = lib.Interactions(user_ids=["u"] * 9 + ["v"] * 2,
                           item_ids=["i%02d" % k for k in range(11)],
                           timestamps=list(range(11)))
  catalog = lib.Catalog(np.array(sorted(set(inter.item_ids.tolist()))))
  ds = sequences.sequence_dataset(inter, catalog, 3, batch_size=2,
                                  shuffle=False, seed=2, epochs=600,
                                  crop="random")
  # Item i<k> has index k + 1: the last target's index is the end e.
  ends = [int(b["targets"].numpy()[0, -1]) for b in ds]
  counts = np.bincount(ends, minlength=10)[1:]
  assert counts[:3].sum() == 0  # e >= L + 1 = 4
  assert counts.sum() == 600
  # 100 expected per end; a binomial sd is 9.1: within 4 sd.
  assert np.all(np.abs(counts[3:] - 100) < 37), counts


def test_crop_uniforms_are_a_function_of_seed_epoch_row():
  rows = tf.range(20000, dtype=tf.int64)
  u = sequences.crop_uniforms(5, tf.constant(3, tf.int64), rows).numpy()
  assert u.dtype == np.float64 and u.min() >= 0.0 and u.max() < 1.0
  # Uniform: 10 bins of 2,000 expected (sd 42), within 5 sd.
  assert np.all(np.abs(np.histogram(u, bins=10, range=(0, 1))[0] - 2000)
                < 210)
  # A row's value does not depend on the other rows of its batch.
  some = tf.constant([17, 3, 19999], tf.int64)
  assert np.array_equal(
      sequences.crop_uniforms(5, tf.constant(3, tf.int64), some).numpy(),
      u[[17, 3, 19999]])
  for seed, epoch in ((6, 3), (5, 4)):
    other = sequences.crop_uniforms(seed, tf.constant(epoch, tf.int64),
                                    rows).numpy()
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.05


def test_static_shapes_and_errors():
  inter, catalog = _log()
  ds = sequences.sequence_dataset(inter, catalog, 4, batch_size=2, epochs=2)
  spec = ds.element_spec
  assert spec["history"].shape.as_list() == [2, 4]
  assert spec["targets"].shape.as_list() == [2, 4]
  assert spec["user_id"].shape.as_list() == [2]
  assert ds.cardinality().numpy() == 2
  with pytest.raises(errors.DataError, match="fewer than one batch"):
    sequences.sequence_dataset(inter, catalog, 4, batch_size=3)
  with pytest.raises(ValueError, match="crop must be one of"):
    sequences.sequence_dataset(inter, catalog, 4, batch_size=1, crop="first")
  with pytest.raises(ValueError, match="needs `epochs`"):
    sequences.sequence_dataset(inter, catalog, 4, batch_size=1,
                               crop="random")
  with pytest.raises(ValueError, match="max_length"):
    sequences.sequence_rows(inter, catalog, 0)
