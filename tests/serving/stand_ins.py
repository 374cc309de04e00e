"""Stand-in towers and exports for serving tests (no training, seconds).

`UserTower` is a user id embedding (the shape of the real id tower);
`fresh_outputs` calls a signature of an export in a fresh interpreter that
imports only TensorFlow and ScaNN, and returns every output as NumPy.
"""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tfrs_negsamp.serving import export

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# Runs in a fresh interpreter that imports only tensorflow and scann.
_FRESH = r"""
import json, sys
import tensorflow as tf
import scann  # registers the ScaNN ops
loaded = tf.saved_model.load(sys.argv[1])
inputs = {k: tf.constant(v) for k, v in json.loads(sys.argv[2]).items()}
signature = loaded.signatures[sys.argv[3]]
out = signature(**inputs)
answer = {k: (v.numpy().astype(str) if v.dtype == tf.string
              else v.numpy()).tolist() for k, v in out.items()}
answer["__inputs__"] = sorted(signature.structured_input_signature[1])
if sys.argv[4] == "call":
  scores, ids = loaded(*[inputs[k] for k in answer["__inputs__"]])
  answer["__call__"] = [scores.numpy().tolist(),
                        ids.numpy().astype(str).tolist()]
print(json.dumps(answer))
"""


def env():
  """The environment of a serving subprocess (no legacy Keras flag)."""
  out = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
  out["TF_CPP_MIN_LOG_LEVEL"] = "3"
  out.pop("TFRS_NEGSAMP_TRACEBACK", None)
  out["PYTHONPATH"] = ROOT + os.pathsep + out.get("PYTHONPATH", "")
  return out


def fresh_outputs(path, inputs, signature="serving_default", call=False):
  """`signature(**inputs)` in a fresh process: {output: np.ndarray}.

  With `call`, `"__call__"` holds the `(scores, item_ids)` of `loaded(...)`
  on the same inputs (positional, in input-name order).
  """
  out = subprocess.run(
      [sys.executable, "-c", _FRESH, path, json.dumps(inputs), signature,
       "call" if call else "-"], capture_output=True, text=True, env=env(),
      timeout=300, check=False)
  assert out.returncode == 0, out.stderr[-3000:]
  answer = json.loads(out.stdout.strip().splitlines()[-1])
  inputs_seen = answer.pop("__inputs__")
  pair = answer.pop("__call__", None)
  result = {k: np.array(v) for k, v in answer.items()}
  result["__inputs__"] = inputs_seen
  if pair is not None:
    result["__call__"] = (np.array(pair[0]), np.array(pair[1]))
  return result


def program(name, argv, timeout=300):
  """`python -m trainers.<name> argv` from the worktree: CompletedProcess."""
  return subprocess.run([sys.executable, "-m", "trainers." + name] + argv,
                        cwd=ROOT, env=env(), capture_output=True, text=True,
                        timeout=timeout, check=False)


class UserTower(tf.keras.Model):
  """Stand-in id tower: user id string -> embedding (OOV: row 0)."""

  def __init__(self, users, dim):
    super().__init__()
    self.lookup = tf.keras.layers.StringLookup(
        vocabulary=list(users), mask_token=None, num_oov_indices=1)
    self.embedding = tf.keras.layers.Embedding(len(users) + 1, dim)

  def call(self, user_ids):
    return self.embedding(self.lookup(user_ids))


def user_model(num_users=6, num_items=40, dim=8, seed=0):
  """A stand-in id tower and catalog: (tower, item ids, item vectors)."""
  tf.keras.utils.set_random_seed(seed)
  users = ["u%d" % i for i in range(num_users)]
  tower = UserTower(users, dim)
  tower(tf.constant(users))
  item_ids = np.array(["i%d" % p for p in range(num_items)])
  items = np.random.default_rng(seed).normal(
      size=(num_items, dim)).astype(np.float32)
  return tower, item_ids, items


def user_export(path, model, kind="brute_force", k=10, seen_items=None,
                scann_overrides=None):
  """Exports a `user_model`; returns (path, tower, item ids, item vectors)."""
  tower, item_ids, items = model
  index = export.build_index(tower, item_ids, items, kind=kind, k=k,
                             scann_overrides=scann_overrides)
  export.export(index, path, ["u0"], metadata={"dataset": "stand-in"},
                seen_items=seen_items)
  return (path,) + tuple(model)


def exact_top(tower, users, items, item_ids, k, exclude=None):
  """The exact top-k (ids, scores) per user, `exclude[u]` ids left out."""
  scores = tower(tf.constant(users)).numpy() @ items.T
  ids, values = [], []
  for row, user in enumerate(users):
    s = scores[row].copy()
    for item in (exclude or {}).get(user, ()):
      s[list(item_ids).index(item)] = -np.inf
    order = [p for p in np.argsort(-s, kind="stable") if np.isfinite(s[p])]
    ids.append([str(item_ids[p]) for p in order[:k]])
    values.append([float(s[p]) for p in order[:k]])
  return ids, values
