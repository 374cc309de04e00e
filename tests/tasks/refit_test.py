"""A model whose `fit` stopped early can be fit again.

When the input runs out inside `fit`, Keras stops the step where it is.
The trainer's CBNS + SASRec model (sequence rows: the loss is a sum over
13 blocks of positions) then had a per-step temporary of Grappler's add
rewrite left behind, and the next `fit` on the model failed with
`AlreadyExistsError` (tensorflow/tensorflow#33713). The task sums block and
group losses with one `AddN`, which the rewrite leaves alone.
"""

import numpy as np
import tensorflow as tf

from tests import helpers
from trainers.pipeline import assembly
from trainers.pipeline import inputs


class RefitTest(tf.test.TestCase):

  def test_fit_again_after_the_input_ran_out(self):
    # The sizes are the smallest found that reproduce the failure before
    # the fix (one batch of 256 sequence rows of 50 positions, d = 32).
    dataset = helpers.tiny_dataset(num_users=260, num_items=200, per_user=20)
    config = helpers.tiny_config(sampler="cross_batch", query_tower="sasrec",
                                 batch_size=256, embedding_dim=32,
                                 sampler_options={})
    model = assembly.create_model(dataset, config, tf.distribute.get_strategy())
    data = inputs.train_dataset(dataset, config)
    batches = sum(1 for _ in data)
    self.assertEqual(batches, 1)
    for _ in range(2):
      before = int(model.optimizer.iterations)
      # Two steps asked, one batch there: the second step finds no input.
      history = model.fit(data, epochs=1, steps_per_epoch=batches + 1,
                          verbose=0)
      self.assertTrue(np.isfinite(history.history["loss"][-1]))
      self.assertGreater(int(model.optimizer.iterations), before)


if __name__ == "__main__":
  tf.test.main()
