"""The TFRS basic-retrieval tutorial, trained with every sampler family.

`tutorial_lib` builds the tutorial's model (StringLookup + Embedding towers,
string movie titles as candidate ids, `FactorizedTopK` metrics) on a tiny
in-memory log; only its `task = ...` line differs between families
(`tutorial_lib.TASKS`). Each family trains with `model.fit`, its sampler
state and the factorized metrics are checked against NumPy, and the
deterministic families give the same summed loss and weights under
`MirroredStrategy` on two logical CPUs (split in `tests/conftest.py`) as on
one device.
"""

import json
import os
import subprocess
import sys

from absl.testing import parameterized
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

import tfrs_negsamp as tn
from tests.tasks import tutorial_lib as tl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FAMILIES = ("in_batch_logq", "cbns", "xir", "uniform", "mixed", "composed",
            "in_batch_logq_masked", "xir_masked", "xir_warmup")


def _fingerprints(titles):
  return tf.strings.to_hash_bucket_fast(titles, 2**63 - 1).numpy()


def _top_k_accuracy(model, ratings, k):
  """Share of rows whose title is in the user's top `k` (NumPy)."""
  rows = list(ratings.as_numpy_iterator())
  users = np.array([r["user_id"] for r in rows])
  truth = np.array([r["movie_title"] for r in rows])
  _, _, _, titles = tl.ratings_and_movies()
  titles = titles.astype(bytes)
  scores = (model.user_model(users).numpy() @
            model.movie_model(titles).numpy().T)
  top = np.argsort(-scores, axis=1)[:, :k]
  return np.mean([t in titles[idx] for t, idx in zip(truth, top)])


class TutorialTest(tf.test.TestCase, parameterized.TestCase):

  @parameterized.parameters(*FAMILIES)
  def test_fit_and_evaluate(self, name):
    model, ratings, _ = tl.build(name)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(ratings.batch(16, drop_remainder=True), epochs=1,
                        verbose=0)
    self.assertTrue(np.isfinite(history.history["loss"][0]))
    changed = [not np.allclose(a, b.numpy())
               for a, b in zip(before, model.trainable_weights)]
    self.assertTrue(all(changed), "every tower must get a gradient")
    result = model.evaluate(ratings.batch(16), return_dict=True, verbose=0)
    # The factorized metric runs on the in-batch positives and string ids.
    self.assertAllClose(result["factorized_top_k/top_5_categorical_accuracy"],
                        _top_k_accuracy(model, ratings, 5), atol=1e-6)

  def test_in_batch_without_correction_is_tfrs(self):
    losses = {}
    for name, line in (
        ("tfrs", tl.TASKS["tfrs"]),
        ("ours", lambda movies, movie_model, metrics: tn.tasks.Retrieval(
            metrics=metrics, sampler=tn.samplers.InBatchSampler(
                remove_accidental_hits=False)))):
      tl.TASKS["_probe"] = line
      model, ratings, _ = tl.build("_probe")
      losses[name] = model.fit(ratings.batch(16, drop_remainder=True),
                               epochs=2, verbose=0).history["loss"]
    del tl.TASKS["_probe"]
    self.assertAllClose(losses["ours"], losses["tfrs"], rtol=1e-5)

  def test_cbns_queue_holds_the_last_titles(self):
    model, ratings, _ = tl.build("cbns")
    model.fit(ratings.batch(16, drop_remainder=True), epochs=1, verbose=0)
    sampler = model.task.sampler
    titles = np.array([r["movie_title"]
                       for r in ratings.as_numpy_iterator()])
    self.assertEqual(int(sampler.filled.numpy()), 16)
    self.assertCountEqual(sampler.queue_ids.numpy().tolist(),
                          _fingerprints(titles[-16:]).tolist())
    self.assertAllClose(sampler.queue_emb.numpy()[
        np.argsort(sampler.queue_ids.numpy())],
                        model.movie_model(titles[-16:]).numpy()[
                            np.argsort(_fingerprints(titles[-16:]))],
                        atol=0.5)  # enqueued before the last updates

  def test_xir_cache_encodes_titles_with_the_movie_tower(self):
    model, ratings, _ = tl.build("xir")
    model.fit(ratings.batch(16, drop_remainder=True), epochs=1, verbose=0)
    sampler = model.task.sampler
    cache = sampler.cache_ids.numpy()
    self.assertTrue(np.all((cache >= 1) & (cache <= tl.NUM_MOVIES)))
    catalog = sampler.candidate_catalog
    _, _, _, titles = tl.ratings_and_movies()
    self.assertAllClose(catalog.embed(tf.constant(cache)),
                        model.movie_model(titles[cache - 1]))
    # A title's key is its catalog index, exactly.
    self.assertAllEqual(sampler.id_keys(tf.constant(titles[[3, 0]])),
                        [4, 1])


MIRRORED = {
    "in_batch_logq": "in_batch_logq",
    "in_batch_logq_masked": "in_batch_logq_masked",
    "cbns": "cbns",
    "xir": "xir",
    "xir_warmup": "xir_warmup",
    "composed": "composed_queue",
}


def check_mirrored_in_fresh_process(test, family):
  """Runs `tutorial_lib`'s one-device vs two-CPU comparison of `family`.

  In a fresh process: a Keras `fit` under a new `MirroredStrategy` reuses
  collective instance keys of an earlier strategy of the same process, and
  a clash aborts every later collective of the process (other test files'
  mirrored tests included).
  """
  out = subprocess.run(
      [sys.executable, "-m", "tests.tasks.tutorial_lib", MIRRORED[family]],
      cwd=ROOT, capture_output=True, text=True, check=False, timeout=900)
  test.assertEqual(out.returncode, 0, out.stderr[-3000:])
  summary = json.loads(out.stdout.strip().splitlines()[-1])
  test.assertTrue(summary["same_start"])  # same seeded weights
  test.assertAllClose(summary["loss_two"], summary["loss_one"], rtol=1e-5)
  test.assertLess(summary["max_weight_diff"], 1e-4)


class MirroredTutorialTest(tf.test.TestCase):
  """Two replicas of 4 rows = one device on the global batch of 8 (4 steps
  of `fit`, summed loss and trained weights compared)."""

  def test_mirrored_equals_one_device_cbns(self):
    check_mirrored_in_fresh_process(self, "cbns")

  def test_mirrored_equals_one_device_with_history_masking(self):
    # The drop-in task's masking (a table of the training pairs, the
    # rows' user ids) under two replicas: each replica masks its own rows'
    # users against the gathered columns.
    check_mirrored_in_fresh_process(self, "in_batch_logq_masked")


@pytest.mark.slow
class SlowMirroredTutorialTest(tf.test.TestCase, parameterized.TestCase):
  """The other families (each ~1-4 min on a loaded 2-core machine)."""

  @parameterized.parameters("in_batch_logq", "xir", "xir_warmup", "composed")
  def test_mirrored_equals_one_device(self, family):
    check_mirrored_in_fresh_process(self, family)


if __name__ == "__main__":
  tf.test.main()
