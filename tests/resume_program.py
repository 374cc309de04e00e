r"""Test program of `resume_test.py`: `trainers.train`, plus a state dump.

  python -m tests.resume_program --state_out=DIR [trainers.train flags]

Runs exactly what `trainers.train` runs (`experiment.run` with the same
flags) and then writes `DIR/state.<task>.npz`: every variable of the model
(weights, sampler and frequency-estimator state), of its optimizer (step
and slots) and of its metrics, one array per replica (`<i>/<name>/<r>`).

With `TFRS_NEGSAMP_TEST_PAUSE=STEP:MARKER` in the environment and no file
`MARKER.<task>` yet, the process writes its pid to that file right after
optimizer step STEP and then waits (for the test's SIGKILL). A restart finds
the marker and trains through.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402

from tests.distributed import state_program  # noqa: E402
from trainers import common  # noqa: E402

FLAGS = flags.FLAGS
PAUSE_ENV = "TFRS_NEGSAMP_TEST_PAUSE"


def _task(strategy) -> str:
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  resolver = getattr(strategy, "cluster_resolver", None)
  if strategies.num_workers(strategy) > 1:
    return "worker%d" % (resolver.task_id or 0)
  return "main"


def _pause_callback(task: str):
  """A callback that parks the process after step STEP (see the docstring)."""
  import time  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  spec = os.environ.get(PAUSE_ENV)
  if not spec:
    return None
  step, marker = spec.split(":", 1)
  marker = "%s.%s" % (marker, task)
  if os.path.exists(marker):
    return None

  class Pause(tf.keras.callbacks.Callback):

    def on_train_batch_end(self, batch, logs=None):
      if int(self.model.optimizer.iterations.numpy()) == int(step):
        with open(marker + ".tmp", "w") as f:
          f.write(str(os.getpid()))
        os.replace(marker + ".tmp", marker)
        while True:
          time.sleep(1.0)

  return Pause()


def _dump(model, strategy, path):
  import numpy as np  # pylint: disable=g-import-not-at-top
  arrays = {}
  groups = (("model", model.variables),
            ("optimizer", model.optimizer.variables()),
            ("metric", [v for m in model.metrics for v in m.variables]))
  for group, variables in groups:
    for i, v in enumerate(variables):
      state_program.check_replicas_agree(strategy, [v])
      for r, value in enumerate(strategy.experimental_local_results(v)):
        arrays["%s/%d/%s/%d" % (group, i, v.name, r)] = np.asarray(value)
  np.savez(path, **arrays)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = common.config_from_flags()
  from trainers.pipeline import assembly  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import experiment  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import fitting  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  strategy = strategies.make_strategy(config.strategy, config.cpu_replicas)
  task = _task(strategy)
  models = []
  create_model, train = assembly.create_model, fitting.train

  def capture(*args, **kwargs):
    models.append(create_model(*args, **kwargs))
    return models[-1]

  def train_with_pause(model, dataset, config, strategy, extra_callbacks=()):
    pause = _pause_callback(task)
    extra = list(extra_callbacks) + ([pause] if pause else [])
    return train(model, dataset, config, strategy, extra_callbacks=extra)

  assembly.create_model, fitting.train = capture, train_with_pause
  experiment.run(config, strategy=strategy)
  os.makedirs(FLAGS.state_out, exist_ok=True)
  _dump(models[-1], strategy,
        os.path.join(FLAGS.state_out, "state.%s.npz" % task))


if __name__ == "__main__":
  common.define_flags()
  flags.DEFINE_string("state_out", None, "Folder of the state dump.")
  flags.mark_flag_as_required("state_out")
  app.run(main)
