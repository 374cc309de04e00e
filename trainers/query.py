r"""Answers a query from an exported SavedModel, importing only TF and ScaNN.

  python -m trainers.query --model_dir=/tmp/run/export --user_id=42 --k=10

This is what a serving process does: it loads the SavedModel (query tower +
ScaNN index) in a fresh interpreter, without this package or Keras.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

flags.DEFINE_string("model_dir", None, "Exported SavedModel folder.")
flags.DEFINE_list("user_id", ["0"], "User id(s) to answer for.")
flags.DEFINE_integer("k", 10, "How many items to print (<= the index's k).")
flags.mark_flag_as_required("model_dir")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import scann  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  if not os.path.isdir(FLAGS.model_dir):
    raise app.UsageError("no SavedModel at --model_dir=%s" % FLAGS.model_dir)
  loaded = tf.saved_model.load(FLAGS.model_dir)
  scores, ids = loaded(tf.constant(FLAGS.user_id))
  index_k = int(ids.shape[1])
  if not 1 <= FLAGS.k <= index_k:
    raise app.UsageError("--k must be in [1, %d] (the index's k), got %d"
                         % (index_k, FLAGS.k))
  for row, user in enumerate(FLAGS.user_id):
    print("top-%d for user %s (reloaded SavedModel, ScaNN):"
          % (FLAGS.k, user))
    for rank in range(FLAGS.k):
      print("  %2d. item %-8s score %.4f" % (
          rank + 1, ids[row, rank].numpy().decode(),
          float(scores[row, rank])))
  print(json.dumps({"user_id": FLAGS.user_id[0], "item_ids": [
      i.decode() for i in ids[0, :FLAGS.k].numpy()]}))


if __name__ == "__main__":
  app.run(main)
