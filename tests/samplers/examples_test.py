"""Every public sampler's docstring has an `Example:` block, and it runs."""

import doctest

from absl.testing import parameterized
import tensorflow as tf

from tfrs_negsamp import samplers
from tfrs_negsamp.samplers import catalog

PUBLIC = sorted(
    name for name in dir(samplers)
    if isinstance(getattr(samplers, name), type) and
    issubclass(getattr(samplers, name), samplers.NegativeSampler) and
    getattr(samplers, name) is not samplers.NegativeSampler)


class ExamplesTest(tf.test.TestCase, parameterized.TestCase):

  def test_every_sampler_is_listed(self):
    self.assertContainsSubset(
        ["Compose", "CrossBatchSampler", "FullSoftmax", "InBatchSampler",
         "MixedSampler", "UniformSampler", "WarmupSampler", "XIRSampler"],
        PUBLIC)
    self.assertLen(PUBLIC, 15)

  @parameterized.parameters(*PUBLIC)
  def test_example_runs(self, name):
    cls = getattr(samplers, name)
    self.assertIn("Example", cls.__doc__, name)
    # The catalog samplers' examples start from the set-up of
    # `CatalogSampler`'s example (movies, movie_model, titles, queries).
    globs = _run(catalog.CatalogSampler, "CatalogSampler", {}, 6)
    _run(cls, name, globs, 2)

  def test_the_shared_set_up_is_documented_once(self):
    # The set-up lines live in `CatalogSampler`'s example only.
    setup = "movie_model = tf.keras.Sequential(["
    owners = [name for name in PUBLIC + ["CatalogSampler"]
              if setup in (getattr(samplers, name, None) or
                           catalog.CatalogSampler).__doc__]
    self.assertEqual(owners, ["CatalogSampler"])


def _run(obj, name, globs, min_examples):
  """Runs `obj`'s docstring example with `globs`; returns the globals after."""
  tests = [t for t in doctest.DocTestFinder(recurse=False).find(
      obj, name, globs=dict(globs)) if t.examples]
  assert len(tests) == 1, name
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
  runner.run(tests[0], clear_globs=False)
  result = runner.summarize(verbose=False)
  assert result.failed == 0, name
  assert result.attempted >= min_examples, name
  return tests[0].globs


if __name__ == "__main__":
  tf.test.main()
