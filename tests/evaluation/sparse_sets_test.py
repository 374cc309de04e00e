"""Tests for tfrs_negsamp.evaluation.sparse_sets."""

from absl.testing import parameterized
import numpy as np

from tfrs_negsamp.evaluation.sparse_sets import SparseSets


class SparseSetsTest(parameterized.TestCase):

  def test_from_pairs_sorts_and_drops_duplicates(self):
    # Row 0: {4, 1, 4} -> [1, 4]; row 1: empty; row 2: {0, 2}.
    sets = SparseSets.from_pairs(rows=[2, 0, 0, 2, 0], cols=[2, 4, 1, 0, 4],
                                 num_rows=3)
    self.assertEqual(sets.to_lists(), [[1, 4], [], [0, 2]])
    np.testing.assert_array_equal(sets.indptr, [0, 2, 2, 4])
    np.testing.assert_array_equal(sets.row_lengths(), [2, 0, 2])
    np.testing.assert_array_equal(sets.row_ids(), [0, 0, 2, 2])
    self.assertEqual(sets.nnz, 4)
    self.assertLen(sets, 3)

  def test_from_lists_round_trip(self):
    lists = [[3], [], [5, 0], [1, 2, 7]]
    self.assertEqual(SparseSets.from_lists(lists).to_lists(),
                     [[3], [], [0, 5], [1, 2, 7]])

  def test_slice_and_select_rows(self):
    sets = SparseSets.from_lists([[0], [1, 2], [], [3, 4, 5]])
    self.assertEqual(sets.slice_rows(1, 4).to_lists(), [[1, 2], [], [3, 4, 5]])
    self.assertEqual(sets.slice_rows(2, 2).to_lists(), [])
    self.assertEqual(sets.select_rows([3, 0, 3]).to_lists(),
                     [[3, 4, 5], [0], [3, 4, 5]])
    self.assertEqual(
        sets.select_rows(np.array([False, True, False, True])).to_lists(),
        [[1, 2], [3, 4, 5]])

  def test_canonical_of_unsorted_csr(self):
    sets = SparseSets(indptr=[0, 3, 4], indices=[5, 2, 5, 1])
    self.assertEqual(sets.canonical().to_lists(), [[2, 5], [1]])

  def test_callers_arrays_stay_writable(self):
    indptr = np.array([0, 1], np.int64)
    indices = np.array([3], np.int64)
    sets = SparseSets(indptr, indices)
    indptr[0] = 0  # Would raise if the constructor froze the caller's array.
    self.assertFalse(sets.indptr.flags.writeable)

  @parameterized.named_parameters(
      ("indptr_start", [1, 2], [0, 1], "indptr\\[0\\] must be 0"),
      ("decreasing", [0, 2, 1], [0, 1], "non-decreasing"),
      ("nnz", [0, 1], [0, 1], "must equal len\\(indices\\)"),
      ("negative", [0, 1], [-1], "non-negative"),
      ("float", [0, 1], [0.5], "integers"),
  )
  def test_invalid_csr_raises(self, indptr, indices, message):
    with self.assertRaisesRegex(ValueError, message):
      SparseSets(indptr, indices)

  def test_invalid_pairs_raise(self):
    with self.assertRaisesRegex(ValueError, "same length"):
      SparseSets.from_pairs([0, 1], [0], 2)
    with self.assertRaisesRegex(ValueError, "rows must lie in"):
      SparseSets.from_pairs([0, 2], [0, 1], 2)
    with self.assertRaisesRegex(ValueError, "cols must be non-negative"):
      SparseSets.from_pairs([0, 1], [0, -3], 2)
