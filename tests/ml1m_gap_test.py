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
  assert min(users) >= 0 and max(users) < 6040
  # The same draw as the gSASRec split's (legacy RandomState, seed 42).
  again = np.random.RandomState(42).choice(6040, 512, replace=False)
  assert users == set(int(u) for u in again)


def test_read_sequences_orders_by_timestamp(gap, tmp_path):
  path = tmp_path / "log.csv"
  path.write_text("user_id,item_id,timestamp\n1,b,2\n1,a,0\n2,c,5\n1,c,1\n")
  assert gap.read_sequences(str(path)) == {1: ["a", "c", "b"], 2: ["c"]}


def test_read_sequences_names_file_and_line(gap, tmp_path):
  path = tmp_path / "log.csv"
  path.write_text("user_id,item_id,timestamp\n1,a,0\nx,b,1\n")
  with pytest.raises(ValueError, match=r"log.csv, line 3: user_id"):
    gap.read_sequences(str(path))
  path.write_text("user,item_id,timestamp\n1,a,0\n")
  with pytest.raises(ValueError, match="header lacks user_id"):
    gap.read_sequences(str(path))


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
