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
import collections
import csv
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


def complete_users():
  """User ids (ints) of gSASRec's validation sample: whole sequences."""
  rng = np.random.RandomState(GSASREC_VALIDATION_SEED)
  return set(int(u) for u in rng.choice(NUM_USERS, GSASREC_VALIDATION_USERS,
                                        replace=False))


COLUMNS = ("user_id", "item_id", "timestamp")


def read_sequences(path):
  """{user id: [item id strings]} in timestamp order.

  Raises:
    ValueError: naming the file, and the line when a value is bad.
  """
  rows = collections.defaultdict(list)
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError("%s: the header lacks %s (needs %s)" % (
          path, ", ".join(missing), ",".join(COLUMNS)))
    for row in reader:
      try:
        user, when = int(row["user_id"]), int(row["timestamp"])
      except (TypeError, ValueError):
        raise ValueError("%s, line %d: user_id and timestamp must be "
                         "integers" % (path, reader.line_num)) from None
      rows[user].append((when, row["item_id"]))
  return {u: [i for _, i in sorted(r)] for u, r in rows.items()}


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

  try:
    sequences = read_sequences(args.data_path)
  except ValueError as e:
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
  rows = [
      ("test, complete users (the published protocol)",
       [(s[:-1], s[-1]) for u, s in sequences.items() if u in whole]),
      ("test, users missing the item before the target",
       [(s[:-1], s[-1]) for u, s in sequences.items() if u not in whole]),
      ("test, every user (the package's number)",
       [(s[:-1], s[-1]) for s in sequences.values()]),
      ("validation, every user (the package's split)",
       [(s[:-2], s[-2]) for s in sequences.values()]),
      ("validation, complete users",
       [(s[:-2], s[-2]) for u, s in sequences.items() if u in whole]),
      ("validation, input without its last item",
       [(s[:-3], s[-2]) for s in sequences.values()]),
  ]
  print("| evaluation | users | HR@10 | NDCG@10 |")
  print("| --- | ---: | ---: | ---: |")
  for label, cases in rows:
    hr, ndcg = hits(answer, cases)
    print("| %s | %d | %.4f ± %.4f | %.4f ± %.4f |" % (
        label, hr.size, hr.mean(), hr.std(ddof=1) / math.sqrt(hr.size),
        ndcg.mean(), ndcg.std(ddof=1) / math.sqrt(ndcg.size)))
  print("\n± is one standard error over users.")
  return 0


if __name__ == "__main__":
  sys.exit(main())
