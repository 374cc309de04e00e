"""tools/ml1m_gap.py: the users, the sequences and the hit arithmetic."""

import math

import numpy as np
import pytest

from tests import tool_modules


@pytest.fixture(scope="module")
def gap():
  return tool_modules.load("ml1m_gap")


def test_complete_users_are_gsasrec_validation_sample(gap):
  users = gap.complete_users()
  assert len(users) == 512
  assert all(0 <= int(u) < 6040 for u in users)
  # The same draw as the gSASRec split's (legacy RandomState, seed 42).
  again = np.random.RandomState(42).choice(6040, 512, replace=False)
  assert users == set(str(u) for u in again)


def test_read_sequences_orders_by_timestamp(gap, tmp_path):
  path = tmp_path / "log.csv"
  # Ties keep the file's order (d before e at timestamp 3).
  path.write_text("user_id,item_id,timestamp\n1,b,2\n1,a,0\n2,c,5\n1,c,1\n"
                  "2,d,3\n2,e,3\n")
  assert gap.read_sequences(str(path)) == {"1": ["a", "c", "b"],
                                           "2": ["d", "e", "c"]}


def test_bad_data_file_is_one_line_naming_file_and_line(gap, tmp_path,
                                                         capsys):
  path = tmp_path / "log.csv"
  path.write_text("user_id,item_id,timestamp\n1,a,0\n1,b,soon\n")
  code = gap.main(["--export=%s" % tmp_path, "--data_path=%s" % path])
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("%s, line 3: timestamp" % path)


def test_hits_hand_computed(gap):
  # Answers: the target first, third, and absent from the top 10.
  answers = {"a": ["t", "x", "y"], "b": ["x", "y", "t"], "c": ["x"] * 12}

  def answer(histories):
    rows = [answers[h[-1]] for h in histories]
    width = max(len(r) for r in rows)
    return np.array([[i.encode() for i in r] + [b""] * (width - len(r))
                     for r in rows])

  cases = [(["p", "a"], "t"), (["b"], "t"), (["c"], "t")]
  hr, ndcg = gap.hits(answer, cases, batch=2)
  np.testing.assert_allclose(hr, [1.0, 1.0, 0.0])
  np.testing.assert_allclose(ndcg, [1.0, 1.0 / math.log2(4), 0.0])


def test_missing_export_is_one_line(gap, tmp_path, capsys):
  code = gap.main(["--export=%s" % (tmp_path / "none"),
                   "--data_path=%s" % (tmp_path / "none.csv")])
  assert code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err == ["--export=%s: no such file or folder" % (tmp_path / "none")]
