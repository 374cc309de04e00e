r"""Answers a query from an exported SavedModel, importing only TF and ScaNN.

  python -m trainers.query --model_dir=/tmp/run/export --user_id=42 --k=10
  python -m trainers.query --model_dir=/tmp/run/history_export \
      --history=12,7,31 --k=10          # an export of a history tower

This is what a serving process does: it loads the SavedModel (query tower +
ScaNN index) in a fresh interpreter, without this package or Keras.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402  (absl only, no TFRS)

flags.DEFINE_string("model_dir", None, "Exported SavedModel folder.")
flags.DEFINE_list("user_id", ["0"], "User id(s) to answer for.")
flags.DEFINE_list("history", None,
                  "History tower exports: one user's item ids, oldest "
                  "first (unknown ids are ignored; the last L are used). "
                  "--user_id is passed too when the export takes it.")
flags.DEFINE_integer("k", 10, "How many items to print (<= the index's k).")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


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


def main(argv):
  del argv
  if not os.path.isfile(os.path.join(FLAGS.model_dir, "saved_model.pb")):
    raise common.UsageError("no SavedModel at --model_dir=%s (saved_model.pb"
                            " missing)" % FLAGS.model_dir)
  if FLAGS.k < 1:
    raise common.UsageError("--k must be >= 1, got %d" % FLAGS.k)
  tf, loaded = _load(FLAGS.model_dir)
  if "serving_default" not in loaded.signatures:
    raise common.UsageError("the SavedModel at --model_dir=%s has no "
                            "serving_default signature" % FLAGS.model_dir)
  signature = loaded.signatures["serving_default"]
  inputs = set(signature.structured_input_signature[1])
  if "history" in inputs:
    if not FLAGS.history:
      raise common.UsageError("this export takes a history: pass --history="
                           "<item ids, oldest first>, e.g. --history=12,7")
    queries = ["history %s" % ",".join(FLAGS.history)]
    kwargs = {"history": tf.constant([FLAGS.history])}
    if "user_id" in inputs:
      # Without --user_id: "", an unknown user (the history decides).
      user = FLAGS.user_id[0] if FLAGS["user_id"].present else ""
      kwargs["user_id"] = tf.constant([user])
      queries = ["user %r, %s" % (user, queries[0])]
  else:
    if FLAGS.history:
      raise common.UsageError("this export takes user ids, not a history: "
                           "drop --history and pass --user_id")
    queries = ["user %s" % u for u in FLAGS.user_id]
    kwargs = {"user_id": tf.constant(FLAGS.user_id)}
  out = signature(**kwargs)
  scores, ids = out["scores"], out["item_ids"]
  index_k = int(ids.shape[1])
  if not 1 <= FLAGS.k <= index_k:
    raise common.UsageError("--k must be in [1, %d] (the index's k), got %d"
                         % (index_k, FLAGS.k))
  for row, query in enumerate(queries):
    print("top-%d for %s (reloaded SavedModel, ScaNN):"
          % (FLAGS.k, query))
    for rank in range(FLAGS.k):
      print("  %2d. item %-8s score %.4f" % (
          rank + 1, ids[row, rank].numpy().decode(),
          float(scores[row, rank])))
  answer = ({"history": FLAGS.history} if FLAGS.history
            else {"user_id": FLAGS.user_id[0]})
  if "user_id" in kwargs and FLAGS.history:
    answer["user_id"] = kwargs["user_id"].numpy()[0].decode()
  answer["item_ids"] = [i.decode() for i in ids[0, :FLAGS.k].numpy()]
  print(json.dumps(answer))


if __name__ == "__main__":
  common.run(main)
