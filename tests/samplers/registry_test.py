"""The registry is the one source of a sampler's configuration.

A sampler registered here, in a test module and not in the package, gets its
trainer flags (name, type, help, "the sampler's default"), its tuning space
and its task loss from `register_sampler` and its options dataclass, with no
edit in `trainers/`; and every option of the package's samplers is named as
the constructor argument it sets.
"""

import dataclasses
import inspect

from absl import flags
import tensorflow as tf

from tfrs_negsamp import frequency as frequency_lib
from tfrs_negsamp import losses
from tfrs_negsamp import samplers
from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import in_batch
from trainers import common
from trainers.pipeline import assembly
from trainers.pipeline import configuration
from trainers.pipeline import tuning

from tests import helpers

NAME = "registry_test_sampler"


class _TestSampler(in_batch.InBatchSampler):
  """In-batch columns; `spread` is stored to show it arrived."""

  def __init__(self, spread: float = 1.0, **kwargs):
    super().__init__(**kwargs)
    self.spread = spread


@dataclasses.dataclass(frozen=True)
class _TestOptions:
  spread: float = base.option(
      0.5, low=0, help="test sampler: how far the columns spread",
      tune=base.Tune("float", 0.1, 2.0, log=True))
  margin: float = base.option(0.75, low=0, help="test sampler: hinge margin")


def _register():
  base.unregister_sampler(NAME)

  @base.register_sampler(
      NAME, options=_TestOptions,
      loss=lambda options: losses.CMLTripletLoss(margin=options.margin))
  def _factory(context, options):
    """A sampler registered by a test module."""
    del context
    return _TestSampler(spread=options.spread)


class RegistryIsTheOneSourceTest(tf.test.TestCase):

  def setUp(self):
    super().setUp()
    _register()
    self.addCleanup(base.unregister_sampler, NAME)

  def test_flags_come_from_the_options(self):
    values = flags.FlagValues()
    common.define_sampler_flags(values)
    self.assertIn("spread", values)
    self.assertIsNone(values["spread"].default)  # the sampler's default
    self.assertIn("how far the columns spread", values["spread"].help)
    self.assertIn("%s (0.5)" % NAME, values["spread"].help)
    values(["prog", "--spread=0.25"])
    self.assertEqual(values["spread"].value, 0.25)
    self.assertEqual(common.sampler_options_from_flags(values)["spread"],
                     0.25)
    with self.assertRaises(flags.IllegalFlagValueError):
      values(["prog", "--spread=abc"])

  def test_the_config_builds_it_with_its_options_and_loss(self):
    config = helpers.tiny_config(sampler=NAME,
                                 sampler_options={"spread": 0.25})
    config.validate()
    model = assembly.build_model(helpers.tiny_dataset(), config, 8)
    self.assertIsInstance(model.sampler, _TestSampler)
    self.assertEqual(model.sampler.spread, 0.25)
    # The task's loss is the registry's: the hinge with the default margin.
    self.assertIsInstance(model.task.pairwise_loss, losses.CMLTripletLoss)
    self.assertEqual(model.task.pairwise_loss.margin, 0.75)
    bad = helpers.tiny_config(sampler=NAME, sampler_options={"spread": -1})
    with self.assertRaisesRegex(configuration.ConfigError,
                                "^--spread must be a finite number >= 0"):
      bad.validate()

  def test_the_tuning_space_comes_from_the_options(self):
    space = {p.name: p for p in tuning.space_for(NAME)}
    self.assertEqual((space["spread"].kind, space["spread"].low,
                      space["spread"].high, space["spread"].log),
                     ("float", 0.1, 2.0, True))
    self.assertNotIn("margin", space)  # declared without a search range
    self.assertIn("learning_rate", space)
    # A hinge has no softmax: no temperature is searched for it.
    self.assertNotIn("temperature", space)
    self.assertEqual(samplers.loss_kind(NAME), "triplet")


class OptionNamesAreConstructorArgumentsTest(tf.test.TestCase):

  def test_every_option_sets_the_argument_of_its_name(self):
    estimator = set(inspect.signature(
        frequency_lib.StreamingFrequencyEstimator).parameters)
    for name in samplers.available_samplers():
      # With a warm-up where the sampler takes one: the factory then wraps
      # it in a `WarmupSampler`, whose argument `warmup_steps` is.
      options = ({"warmup_steps": 1} if "warmup_steps" in
                 samplers.option_names(name) else {})
      sampler = samplers.create_sampler(name, base.SamplerContext(
          item_counts=[0.0, 1.0, 2.0, 3.0], item_model=lambda i: i,
          options=options))
      # The classes' arguments and those they pass on through **kwargs.
      arguments = set()
      for layer in (sampler, getattr(sampler, "sampler", sampler)):
        for cls in type(layer).__mro__:
          if "__init__" in vars(cls):
            arguments |= set(inspect.signature(cls.__init__).parameters)
      for option in samplers.option_names(name):
        known = (option in arguments or option in estimator or
                 option.replace("estimator_", "", 1) in estimator)
        self.assertTrue(known, "%s: option %s is no constructor argument of "
                        "%s or of its log Q estimator"
                        % (name, option, type(sampler).__name__))

  def test_one_option_name_has_one_type(self):
    table = samplers.option_table()  # raises on a clash
    self.assertIs(table["pool_size"].kind, int)
    self.assertEqual(set(table["pool_size"].defaults),
                     {"adaptive", "adaptive_mixed", "two_stage",
                      "two_stage_triplet"})


if __name__ == "__main__":
  tf.test.main()
