"""Tests of next-item examples and evaluation histories (issue 13)."""

import numpy as np
import pytest

from tfrs_negsamp.data import errors
from tfrs_negsamp.data import interactions as lib
from tfrs_negsamp.data import sequences
from tfrs_negsamp.data import splits


def _tiny():
  # User "a" (rows in shuffled order, a tie at t=30: x3 row 2 before x4
  # row 5); user "b": 4 rows; user "c": a single row.
  inter = lib.Interactions(
      user_ids=["a", "b", "a", "b", "a", "a", "c", "b", "a", "b"],
      item_ids=["x1", "y1", "x3", "y2", "x2", "x4", "z1", "y3", "x5", "y4"],
      timestamps=[10, 5, 30, 6, 20, 30, 1, 7, 40, 8], source="tiny")
  catalog = lib.Catalog(np.array(["x1", "x2", "x3", "x4", "x5", "y1", "y2",
                                  "y3", "y4", "z1"]))
  return inter, catalog


def _index(catalog, ids):
  return [int(catalog.index_of([i])[0]) + 1 for i in ids]


def _all_examples(inter, catalog, max_history, batch_size=1):
  ds = sequences.next_item_dataset(inter, catalog, max_history,
                                   batch_size=batch_size, shuffle=False,
                                   drop_remainder=False)
  out = []
  for batch in ds:
    for u, t, h in zip(batch["user_id"].numpy(), batch["item_id"].numpy(),
                       batch["history"].numpy()):
      out.append((u.decode(), t.decode(), h.tolist()))
  return out


def test_user_sequences_are_chronological_ties_by_row_order():
  inter, catalog = _tiny()
  seqs = sequences.user_sequences(inter, catalog)
  assert seqs.user_ids.tolist() == ["a", "b", "c"]
  assert seqs.offsets.tolist() == [0, 5, 9, 10]
  assert seqs.item_ids.tolist() == ["x1", "x2", "x3", "x4", "x5",
                                    "y1", "y2", "y3", "y4", "z1"]
  assert seqs.items.tolist() == list(range(1, 11))
  # Each user's first position has no history.
  assert seqs.example_positions.tolist() == [1, 2, 3, 4, 6, 7, 8]


def test_histories_padding_and_targets():
  inter, catalog = _tiny()
  ix = lambda *ids: _index(catalog, ids)  # noqa: E731
  examples = _all_examples(inter, catalog, max_history=3)
  assert examples == [
      ("a", "x2", [0, 0] + ix("x1")),
      ("a", "x3", [0] + ix("x1", "x2")),
      ("a", "x4", ix("x1", "x2", "x3")),
      ("a", "x5", ix("x2", "x3", "x4")),
      ("b", "y2", [0, 0] + ix("y1")),
      ("b", "y3", [0] + ix("y1", "y2")),
      ("b", "y4", ix("y1", "y2", "y3")),
  ]
  for _, target, history in examples:
    # The target is never in its own window, and is the next item.
    assert ix(target)[0] not in history


def test_batches_are_static_shaped_shuffled_and_complete():
  inter, catalog = _tiny()
  ds = sequences.next_item_dataset(inter, catalog, 4, batch_size=3,
                                   shuffle=True, seed=1)
  spec = ds.element_spec
  assert spec["history"].shape.as_list() == [3, 4]
  assert spec["item_id"].shape.as_list() == [3]
  epochs = [[t for b in ds for t in b["item_id"].numpy().tolist()]
            for _ in range(3)]
  assert all(len(e) == 6 for e in epochs)  # 7 examples, drop_remainder
  assert len({tuple(e) for e in epochs}) > 1  # reshuffled per iteration
  for e in epochs:
    assert set(e) <= {b"x2", b"x3", b"x4", b"x5", b"y2", b"y3", b"y4"}


def test_too_few_examples_for_a_batch_is_an_error():
  inter, catalog = _tiny()
  with pytest.raises(errors.DataError, match="fewer than one batch"):
    sequences.next_item_dataset(inter, catalog, 4, batch_size=8)


def test_no_validation_or_test_item_leaks_into_training_examples():
  inter, catalog = _tiny()
  dataset = splits.leave_last_out(inter, catalog, num_validation=1)
  held_out = set()
  for part in (dataset.validation, dataset.test):
    held_out |= set(zip(part.user_ids.tolist(), part.item_ids.tolist()))
  ids = {i + 1: str(x) for i, x in enumerate(catalog.item_ids)}
  examples = _all_examples(dataset.train, catalog, max_history=5)
  assert examples  # a: x1 x2 x3 train; b: y1 y2 train
  for user, target, history in examples:
    assert (user, target) not in held_out
    for h in history:
      if h:
        assert (user, ids[h]) not in held_out


def test_evaluation_histories_test_and_validation():
  inter, catalog = _tiny()
  dataset = splits.leave_last_out(inter, catalog, num_validation=1)
  ix = lambda *ids: _index(catalog, ids)  # noqa: E731
  users = ["b", "a", "c", "unknown"]
  test = sequences.evaluation_histories(dataset, users, "test",
                                        max_history=4)
  # Test queries: train + validation items, chronological, last L.
  assert test.tolist() == [
      [0] + ix("y1", "y2", "y3"),
      ix("x1", "x2", "x3", "x4"),
      [0, 0, 0] + ix("z1"),
      [0, 0, 0, 0]]
  validation = sequences.evaluation_histories(dataset, users, "validation",
                                              max_history=4)
  assert validation.tolist() == [
      [0, 0] + ix("y1", "y2"),
      [0] + ix("x1", "x2", "x3"),
      [0, 0, 0] + ix("z1"),
      [0, 0, 0, 0]]
  # Without a validation split, test queries are the training items.
  no_val = splits.leave_last_out(inter, catalog, num_validation=0)
  assert sequences.evaluation_histories(
      no_val, ["a"], "test", max_history=2).tolist() == [ix("x3", "x4")]


def test_window_matches_a_python_reference():
  rng = np.random.default_rng(0)
  items = rng.integers(1, 50, size=30)
  starts = np.array([0, 0, 5, 10, 29, 30])
  ends = np.array([0, 3, 12, 30, 30, 30])
  got = sequences.window(items, starts, ends, 6)
  for row, (s, e) in enumerate(zip(starts, ends)):
    ref = items[max(s, e - 6):e].tolist()
    assert got[row].tolist() == [0] * (6 - len(ref)) + ref
