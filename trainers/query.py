r"""Answers a query from an exported SavedModel, importing only TF and ScaNN.

  python -m trainers.query --model_dir=/tmp/run/export --user_id=42,7 --k=10
  python -m trainers.query --model_dir=/tmp/run/history_export \
      --history=12,7,31 --k=10          # an export of a history tower

This is what a serving process does: it loads the SavedModel (query tower +
index) in a fresh interpreter, without this package or Keras.

For each query it prints the items found, best first: only real items, so
fewer than --k when the index found fewer, followed by a line saying how
many and why. Then one JSON line per query, in order: `{"user_id": ...}` or
`{"history": [...]}`, `"item_ids"`, `"scores"`, `"count"` and, when there
is something to say, `"warnings"`.

Seen items are left out of the answer: the --history items, or for an id
export written with the training pairs the user's training items;
--keep_history_items keeps them. Unknown --history ids are ignored and
named on stderr (`warning: ...`); a --history whose ids are all unknown is
an error (exit status 2). Users an export knows to be unknown (one written
with the training pairs) are named on one `warning:` line and answered with
the generic list for unknown users.

A folder that is not a whole export of this version is refused with the
same line as `trainers.serve`.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# pylint: disable=g-import-not-at-top
import sys  # noqa: E402

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402  (absl only, no TFRS)
from trainers.serving import export_files  # noqa: E402  (files only)
from trainers.serving import rest  # noqa: E402  (pure Python)
# pylint: enable=g-import-not-at-top

flags.DEFINE_string("model_dir", None, "Exported SavedModel folder.")
flags.DEFINE_list("user_id", ["0"], "User id(s) to answer for.")
flags.DEFINE_list("history", None,
                  "History tower exports: one user's item ids, oldest "
                  "first (unknown ids are ignored; the last L are used). "
                  "--user_id is passed too when the export takes it.")
flags.DEFINE_integer("k", 10, "How many items to print (<= the export's k; "
                     "unset: 10 or the export's k if smaller).")
flags.DEFINE_boolean("keep_history_items", False,
                     "Keep the seen items (the --history items, or the "
                     "user's training items) in the answer; by default "
                     "they are left out.")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS
KEEP_SIGNATURE = "keep_history_items"


def _load(model_dir: str):
  """The SavedModel at `model_dir`, with the ScaNN ops registered if any."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    import scann  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    scann_error = None
  except Exception as e:  # pylint: disable=broad-except
    scann_error = e  # a brute-force export loads without it
  try:
    return tf, tf.saved_model.load(model_dir)
  except Exception as e:  # pylint: disable=broad-except
    if scann_error is not None and "Scann" in str(e):
      raise common.FatalError(
          "the SavedModel at --model_dir=%s holds a ScaNN index, but scann "
          "cannot be imported (%s: %s); install it (pip install "
          "scann==1.4.2) or export with --index=brute_force"
          % (model_dir, type(scann_error).__name__, scann_error)) from e
    raise common.UsageError("cannot load the SavedModel at --model_dir=%s: "
                            "%s" % (model_dir, str(e).splitlines()[0]
                                    if str(e) else type(e).__name__)
                            ) from e


def _check_list(name: str, values) -> None:
  """A list flag must name at least one id and no empty one."""
  example = {"user_id": "--user_id=42,7",
             "history": "--history=12,7 (item ids, oldest first)"}[name]
  if not values:
    raise common.UsageError("--%s is empty: pass one or more ids, e.g. %s"
                            % (name, example))
  if "" in values:
    raise common.UsageError("--%s=%s has an empty id (entry %d); e.g. %s"
                            % (name, ",".join(values),
                               values.index("") + 1, example))


def _check_flags() -> None:
  """The flag checks that need no export."""
  if FLAGS.k < 1:
    raise common.UsageError("--k must be >= 1, got %d" % FLAGS.k)
  _check_list("user_id", FLAGS.user_id)
  if FLAGS.history is not None:
    _check_list("history", FLAGS.history)


def main(argv):
  del argv
  _check_flags()
  model_dir = FLAGS.model_dir
  try:
    meta = export_files.read_export(model_dir, "--model_dir=%s" % model_dir)
  except export_files.ExportError as e:
    raise common.UsageError(str(e)) from e
  index_k = int(meta["k"])
  if not FLAGS["k"].present:
    FLAGS.k = min(FLAGS.k, index_k)  # the default fits any export
  if FLAGS.k > index_k:
    raise common.UsageError("--k must be in [1, %d] (the export's k), got %d"
                            % (index_k, FLAGS.k))
  inputs = list(meta.get("inputs") or ["user_id"])
  takes_history = "history" in inputs
  if takes_history:
    if not FLAGS.history:
      raise common.UsageError("this export takes a history: pass --history="
                              "<item ids, oldest first>, e.g. --history=12,7")
    if "user_id" in inputs and len(FLAGS.user_id) > 1:
      raise common.UsageError("--user_id=%s: a history export answers one "
                              "history, so pass one user id"
                              % ",".join(FLAGS.user_id))
  elif FLAGS.history:
    raise common.UsageError("this export takes user ids, not a history: "
                            "drop --history and pass --user_id")
  exclusion = meta.get("exclusion", "none")
  keep = FLAGS.keep_history_items or exclusion == "none"
  tf, loaded = _load(model_dir)
  name = KEEP_SIGNATURE if keep and exclusion != "none" else "serving_default"
  if name not in loaded.signatures:
    raise common.UsageError("the SavedModel at --model_dir=%s has no %s "
                            "signature" % (model_dir, name))
  signature = loaded.signatures[name]

  if takes_history:
    answers = [{"history": list(FLAGS.history)}]
    kwargs = {"history": tf.constant([FLAGS.history])}
    if "user_id" in inputs:
      # Without --user_id: "", an unknown user (the history decides).
      user = FLAGS.user_id[0] if FLAGS["user_id"].present else ""
      kwargs["user_id"] = tf.constant([user])
      answers[0]["user_id"] = user
  else:
    answers = [{"user_id": u} for u in FLAGS.user_id]
    kwargs = {"user_id": tf.constant(FLAGS.user_id)}
  out = {k: v.numpy() for k, v in signature(**kwargs).items()}

  warnings = [[] for _ in answers]
  if "unknown_history" in out:
    try:
      note = rest.history_check(FLAGS.history, out["unknown_history"][0],
                                "--history")
    except ValueError as e:
      raise common.UsageError(str(e)) from e
    if note:
      print("warning: %s" % note, file=sys.stderr)
      warnings[0].append(note)
  if "known_user" in out:
    unknown = [a["user_id"] for a, ok in zip(answers, out["known_user"])
               if not ok]
    if unknown:
      print("warning: not in this export's training data, answered with the "
            "list for unknown users: %s" % ", ".join(repr(u) for u in unknown),
            file=sys.stderr)
    for row, answer in enumerate(answers):
      if not out["known_user"][row]:
        warnings[row].append("user %r has no training items in this export"
                             % answer["user_id"])

  for row, answer in enumerate(answers):
    count = min(int(out["count"][row]), FLAGS.k)
    excluded = int(out["excluded"][row]) if "excluded" in out else 0
    query = ", ".join(
        (["user %s" % (answer["user_id"] or "''")]
         if "user_id" in answer else []) +
        (["history %s" % ",".join(answer["history"])]
         if "history" in answer else []))
    how = "%s index" % meta.get("index", "?")
    if not keep:
      how += "; %d seen item%s excluded" % (excluded,
                                            "" if excluded == 1 else "s")
    print("top-%d for %s (reloaded SavedModel, %s):" % (FLAGS.k, query, how))
    ids = [i.decode() for i in out["item_ids"][row, :count]]
    scores = [float(s) for s in out["scores"][row, :count]]
    for rank, (item, score) in enumerate(zip(ids, scores)):
      print("  %2d. item %-8s score %.4f" % (rank + 1, item, score))
    if count < FLAGS.k:
      note = "only %d of k=%d items: %s" % (count, FLAGS.k,
                                            rest.shortfall_reason(
                                                FLAGS.k, excluded,
                                                meta.get("num_items"),
                                                meta.get("index")))
      print("  (%s)" % note)
      warnings[row].append(note)
    answer.update(item_ids=ids, scores=scores, count=count)
    if warnings[row]:
      answer["warnings"] = warnings[row]
  for answer in answers:
    print(json.dumps(answer))


if __name__ == "__main__":
  common.run(main)
