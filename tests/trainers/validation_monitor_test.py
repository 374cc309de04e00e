"""Validation during training: the curve, early stopping, best weights.

A tiny run validated every epoch records one curve point per epoch; with
`eval_split=validation` its final metrics are those of the best epoch (the
best weights are put back); patience stops it early; the monitor's state
written beside a backup is read back by a resumed run.
"""

import json
import os
from unittest import mock

import tensorflow as tf

from tests import helpers
from trainers.pipeline import experiment
from trainers.pipeline import validation


def _config(**overrides):
  options = dict(epochs=4, validate_every=1, monitor="recall@50", patience=0)
  options.update(overrides)
  config = helpers.tiny_config(**options)
  config.synthetic = {"num_users": 60, "num_items": 40,
                      "interactions_per_user": 12}
  return config


class ValidationMonitorTest(tf.test.TestCase):

  def test_curve_and_best_weights(self):
    metrics = experiment.run(_config(eval_split="validation",
                                     learning_rate=0.05))
    curve = metrics["validation_curve"]
    self.assertEqual([p["epoch"] for p in curve], [1, 2, 3, 4])
    best = max(curve, key=lambda p: p["recall@50"])
    self.assertEqual(metrics["best_epoch"], best["epoch"])
    # The final evaluation sees the best epoch's weights.
    self.assertAllClose(metrics["recall@50"], best["recall@50"])
    self.assertEqual(metrics["stopped_reason"], "epochs")
    times = [p["train_seconds"] for p in curve]
    self.assertEqual(times, sorted(times))

  def test_patience_stops_training(self):
    # A learning rate of ~0 cannot improve after the first evaluation
    # (no popularity floor here: patience counts from the first one).
    with mock.patch.object(experiment, "patience_floor", return_value=-1.0):
      metrics = experiment.run(_config(learning_rate=1e-12, patience=1))
    self.assertEqual(len(metrics["validation_curve"]), 2)
    self.assertEqual(metrics["best_epoch"], 1)
    self.assertIn("no improvement", metrics["stopped_reason"])

  def test_patience_counts_only_once_the_floor_is_beaten(self):
    # Validation values 0.01, 0.005, 0.004, 0.3, 0.2, 0.1 with floor 0.1
    # (popularity) and patience 2: the two evaluations without improvement
    # below the floor do not count; 0.3 beats it, then 0.2 and 0.1 make
    # two evaluations without improvement: stop after six (best: the
    # fourth). Without a floor: stop after three (best: the first).

    class Model:
      stop_training = False

      class optimizer:  # pylint: disable=invalid-name
        iterations = tf.Variable(0, dtype=tf.int64)

      def get_weights(self):
        return []

    def fake_evaluate(model, sets, progress):
      del model, sets, progress
      return {"recall@50": next(values)}

    for floor, stops_after, best in ((0.1, 6, 4), (None, 3, 1)):
      values = iter([0.01, 0.005, 0.004, 0.3, 0.2, 0.1, 0.9])
      monitor = validation.ValidationMonitor(
          sets=None, metric="recall@50", patience=2, verbose=False,
          floor=floor)
      monitor.model = Model()
      with mock.patch.object(validation.protocol, "evaluate_model",
                             fake_evaluate):
        epoch = 0
        while not monitor.model.stop_training:
          monitor._evaluate(epoch)  # pylint: disable=protected-access
          epoch += 1
      self.assertEqual(epoch, stops_after, msg=floor)
      self.assertIn("no improvement in 2", monitor.stopped_reason)
      self.assertEqual(monitor.report()["best_epoch"], best)

  def test_state_is_saved_and_read_back(self):
    state_dir = self.get_temp_dir()
    monitor = validation.ValidationMonitor(sets=None, state_dir=state_dir)
    monitor.curve = [{"epoch": 1, "steps": 5, "train_seconds": 1.0,
                      "recall@50": 0.5}]
    monitor.best_value, monitor.best_epoch, monitor._waited = 0.5, 1, 0  # pylint: disable=protected-access
    monitor._best_weights = [tf.ones([2]).numpy()]  # pylint: disable=protected-access
    monitor._save_state()  # pylint: disable=protected-access
    with open(os.path.join(state_dir, monitor.STATE)) as f:
      self.assertEqual(json.load(f)["best_epoch"], 1)

    class Model:
      class optimizer:  # pylint: disable=invalid-name
        iterations = tf.Variable(7, dtype=tf.int64)

    resumed = validation.ValidationMonitor(sets=None, state_dir=state_dir)
    resumed.model = Model()
    resumed._load_state()  # pylint: disable=protected-access
    self.assertEqual((resumed.best_epoch, resumed.best_value), (1, 0.5))
    self.assertAllEqual(resumed._best_weights[0], [1.0, 1.0])  # pylint: disable=protected-access
    # A backup older than the last evaluation: the monitor starts over.
    Model.optimizer.iterations.assign(3)
    older = validation.ValidationMonitor(sets=None, state_dir=state_dir)
    older.model = Model()
    older._load_state()  # pylint: disable=protected-access
    self.assertEqual(older.curve, [])


if __name__ == "__main__":
  tf.test.main()
