"""How much of ML-1M's test gap is the file's missing interaction.

`../shared/data/ml-1m-sasrec/ml1m.csv` lacks, for the 5,528 users outside
gSASRec's 512-user validation sample, each user's real second-to-last
interaction (its README). The published protocol predicts the last item
from every item before it; on this file the test input of those users
misses the item just before the target, so the test asks for the item two
steps ahead. This tool measures that with a trained history export
(`trainers.train --export_dir=...`, a SASRec or other history tower), in a
fresh process, by exact top-10 of the export's `serving_default` signature
(the request's history excluded, as the published protocol excludes the
rated items):

- test, complete users: the 512 users of gSASRec's validation sample
  (`numpy.random.RandomState(42).choice(6040, 512, replace=False)`, user ids
  as in the file), whose sequences are whole: the published protocol;
- test, the other users: the target two steps after the last input;
- validation (the package's split: input all but the last two, target the
  second-to-last), every user and the complete users;
- validation with the input's last item dropped: the same targets, one step
  further, which is what the missing interaction does to the test.

  python tools/ml1m_gap.py --export=runs/ml1m_export \
      --data_path=../shared/data/ml-1m-sasrec/ml1m.csv

Prints HR@10 (= Recall@10, one target) and NDCG@10 with their standard
errors and the number of users of each row.
"""

import argparse
import math
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top

GSASREC_VALIDATION_SEED = 42
GSASREC_VALIDATION_USERS = 512
NUM_USERS = 6040
K = 10


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)


def complete_users():
  """User ids (strings, as in the file) of gSASRec's validation sample."""
  rng = np.random.RandomState(GSASREC_VALIDATION_SEED)
  return set(str(u) for u in rng.choice(NUM_USERS, GSASREC_VALIDATION_USERS,
                                        replace=False))


def read_sequences(path):
  """{user id: [item ids]} in timestamp order (ties: file order).

  Read by the package's CSV loader, whose errors name the file and line.
  """
  from tfrs_negsamp.data import csv_loader  # pylint: disable=g-import-not-at-top
  log, _ = csv_loader.load_csv(path)
  order = np.lexsort((log.timestamps, log.user_ids))  # stable
  users, items = log.user_ids[order], log.item_ids[order]
  starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
  ends = np.r_[starts[1:], users.size]
  return {str(users[a]): [str(i) for i in items[a:b]]
          for a, b in zip(starts, ends)}


def hits(answer_fn, cases, batch=256):
  """(HR@10, NDCG@10) arrays over `cases` = [(history list, target)]."""
  hr, ndcg = [], []
  for start in range(0, len(cases), batch):
    part = cases[start:start + batch]
    width = max(len(h) for h, _ in part)
    histories = np.array([[""] * (width - len(h)) + h for h, _ in part],
                         dtype=object)
    items = answer_fn(histories)
    for (_, target), row in zip(part, items[:, :K]):
      where = np.flatnonzero(row == target.encode())
      hr.append(1.0 if where.size else 0.0)
      ndcg.append(1.0 / math.log2(where[0] + 2) if where.size else 0.0)
  return np.array(hr), np.array(ndcg)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--export", required=True,
                      help="a history-tower export of trainers.train")
  parser.add_argument("--data_path", required=True, help="ml1m.csv")
  args = parser.parse_args(argv)
  for path, what in ((args.export, "--export"), (args.data_path,
                                                 "--data_path")):
    if not os.path.exists(path):
      print("%s=%s: no such file or folder" % (what, path), file=sys.stderr)
      return 2

  from tfrs_negsamp.data import errors  # pylint: disable=g-import-not-at-top
  try:
    sequences = read_sequences(args.data_path)
  except errors.DataError as e:
    print(e, file=sys.stderr)
    return 2

  import scann  # pylint: disable=g-import-not-at-top,unused-import
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(args.export)
  serve = loaded.signatures["serving_default"]

  def answer(histories):
    out = serve(history=tf.constant(histories.astype(str)))
    return out["item_ids"].numpy()

  whole = complete_users()
  test = {w: [(s[:-1], s[-1]) for u, s in sequences.items()
              if (u in whole) == w] for w in (True, False)}
  validation = {w: [(s[:-2], s[-2]) for u, s in sequences.items()
                    if (u in whole) == w] for w in (True, False)}
  scored = {"test": {w: hits(answer, c) for w, c in test.items()},
            "validation": {w: hits(answer, c) for w, c in validation.items()}}

  def both(split):  # every user: the two groups' scores together
    return tuple(np.concatenate([scored[split][True][k],
                                 scored[split][False][k]]) for k in (0, 1))

  rows = [
      ("test, complete users (the published protocol)", scored["test"][True]),
      ("test, users missing the item before the target",
       scored["test"][False]),
      ("test, every user (the package's number)", both("test")),
      ("validation, every user (the package's split)", both("validation")),
      ("validation, complete users", scored["validation"][True]),
      ("validation, input without its last item",
       hits(answer, [(s[:-3], s[-2]) for s in sequences.values()])),
  ]
  print("| evaluation | users | HR@10 | NDCG@10 |")
  print("| --- | ---: | ---: | ---: |")
  for label, (hr, ndcg) in rows:
    print("| %s | %d | %.4f ± %.4f | %.4f ± %.4f |" % (
        label, hr.size, hr.mean(), hr.std(ddof=1) / math.sqrt(hr.size),
        ndcg.mean(), ndcg.std(ddof=1) / math.sqrt(ndcg.size)))
  print("\n± is one standard error over users.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
