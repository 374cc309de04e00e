"""Typed per-sampler options: one frozen dataclass per registered sampler.

`create_sampler(name, context)` builds the sampler's options dataclass from
`context.options`: a key the sampler does not declare, a value of the wrong
type or out of range is a `ValueError` naming it. The trainer passes each
sampler only its own options and takes its range checks from the same
dataclasses; a benchmark variant spec refuses an option its sampler lacks.
"""

import dataclasses
import math

from absl import flags
import numpy as np
import tensorflow as tf

from tfrs_negsamp.samplers import base
from tfrs_negsamp.samplers import catalog
from tfrs_negsamp.samplers import cross_batch
from tfrs_negsamp.samplers import in_batch
from tfrs_negsamp.samplers import xir
from trainers import common
from trainers.pipeline import benchmarking
from trainers.pipeline import configuration

from tests import helpers

FLAGS = flags.FLAGS
if "sampler" not in FLAGS:
  common.define_flags()

N, B, D = 40, 8, 4
COUNTS = np.concatenate([[0.0], np.arange(1, N + 1, dtype=np.float64)])
TABLE = np.random.RandomState(0).normal(size=(N + 1, D)).astype(np.float32)


def _context(**options):
  return base.SamplerContext(
      item_counts=COUNTS, item_model=lambda i: tf.gather(TABLE, i),
      global_batch_size=B, seed=3, options=options)


class SamplerOptionsTest(tf.test.TestCase):

  def test_a_misspelt_option_names_it_and_suggests_the_right_one(self):
    with self.assertRaisesRegex(
        ValueError, r"sampler 'cross_batch' has no option 'memry_size' "
        r"\(did you mean 'memory_size'\?\); its options: .*memory_size.*"
        r"warmup_steps"):
      base.create_sampler("cross_batch", _context(memry_size=5))
    # No close match: no suggestion, still the valid options.
    with self.assertRaisesRegex(ValueError,
                                r"no option 'zzz'; its options: none$"):
      base.create_sampler("in_batch", _context(zzz=1))

  def test_an_option_of_another_sampler_is_an_error(self):
    with self.assertRaisesRegex(ValueError, "'uniform' has no option "
                                "'memory_size'"):
      base.create_sampler("uniform", _context(memory_size=16))

  def test_a_bad_value_names_the_option(self):
    cases = [
        ("cross_batch", "memory_size", -1,
         r"memory_size must be an integer >= 0 \(0: the default\), got -1"),
        ("cross_batch", "warmup_steps", 2.5, "warmup_steps must be an "
         "integer"),
        ("cross_batch", "fresh_queue", "yes",
         "fresh_queue must be True or False"),
        ("in_batch_logq", "num_hashes", 0,
         "num_hashes must be an integer >= 1, got 0"),
        ("in_batch_logq", "estimator_alpha", 0.0,
         r"estimator_alpha must be a finite number in \(0, 1\], got 0.0"),
        ("in_batch_logq", "estimator_update_rule", "fast",
         "estimator_update_rule must be one of paper, first_gap, debiased"),
        ("xir", "cache_weight", 1.5,
         r"cache_weight must be a finite number in \[0, 1\], got 1.5"),
        ("xir", "cache_decay", 1.0,
         r"cache_decay must be a finite number in \[0, 1\), got 1.0"),
        ("xir", "num_resampled", 1, "num_resampled must be 0 .* or >= 2"),
        ("bir", "frequency", "dynamic", "frequency must be one of streaming, "
         "static, none"),
        ("popularity", "alpha", math.inf,
         "alpha must be a finite number, got inf"),
        ("uniform", "num_negatives", True, "num_negatives must be an integer"),
        ("two_stage", "rule", "best", "rule must be one "
         "of reference, query_score"),
        ("two_stage", "refresh_steps", 0,
         "refresh_steps must be an integer >= 1, got 0"),
        ("two_stage_triplet", "margin", -1.0,
         "margin must be a finite number >= 0, got -1.0"),
        ("mixed", "num_uniform", "8", "num_uniform must be an integer"),
    ]
    for name, option, value, message in cases:
      with self.assertRaisesRegex(ValueError, "^" + message,
                                  msg="%s %s=%r" % (name, option, value)):
        base.create_sampler(name, _context(**{option: value}))

  def test_every_sampler_builds_from_defaults_and_empty_options(self):
    names = base.available_samplers()
    self.assertGreaterEqual(len(names), 15)
    for name in names:
      options_cls = base.sampler_options(name)
      self.assertTrue(dataclasses.is_dataclass(options_cls), name)
      defaults = options_cls()  # every field has its default
      self.assertEqual(base.build_options(name, {}), defaults, name)
      self.assertEqual(base.option_names(name), tuple(
          f.name for f in dataclasses.fields(options_cls)))
      for field in dataclasses.fields(options_cls):
        with self.assertRaises(dataclasses.FrozenInstanceError, msg=name):
          setattr(defaults, field.name, field.default)
        self.assertIn("spec", field.metadata, "%s.%s" % (name, field.name))
      sampler = base.create_sampler(name, _context())
      self.assertIsInstance(sampler, base.NegativeSampler, name)

  def test_defaults_are_read_from_the_dataclass(self):
    self.assertEqual(cross_batch.CrossBatchOptions().memory_size, 0)
    # memory_size 0 -> 4 x the global batch.
    sampler = base.create_sampler("cross_batch", _context())
    self.assertEqual(sampler.memory_size, 4 * B)
    self.assertEqual(base.create_sampler(
        "cross_batch", _context(memory_size=12)).memory_size, 12)
    # 0 (the flags' "the default") and None (unset) give the field default.
    default = catalog.CatalogOptions().num_negatives
    self.assertEqual(default, 32)
    for value in (0, None):
      self.assertEqual(base.create_sampler(
          "uniform", _context(num_negatives=value)).num_negatives, default)
    # One option, a default per sampler.
    self.assertEqual(base.build_options("adaptive", {}).pool_size, 100)
    self.assertEqual(
        base.build_options("adaptive_mixed", {}).pool_size, 10)
    self.assertTrue(base.build_options("mixed", {"logq": None})
                    .logq)
    self.assertFalse(base.build_options("adaptive_mixed",
                                        {"logq": None}).logq)
    sampler = base.create_sampler("xir", _context()).sampler  # warmed up
    self.assertEqual((sampler.cache_size, sampler.cache_weight),
                     (B, xir.XIROptions().cache_weight))

  def test_values_get_the_field_type(self):
    options = base.build_options("xir", {"cache_weight": 1, "cache_size":
                                         np.int64(6), "frequency": "none"})
    self.assertIsInstance(options.cache_weight, float)
    self.assertIsInstance(options.cache_size, int)
    self.assertEqual((options.cache_weight, options.cache_size), (1.0, 6))
    self.assertIs(base.build_options(
        "cross_batch", {"fresh_queue": 1}).fresh_queue, True)
    self.assertIsNone(in_batch.frequency_from_options(_context(), options))

  def test_register_sampler_checks_the_options_class(self):

    class NotADataclass:
      pass

    with self.assertRaisesRegex(TypeError, "must be a dataclass"):
      base.register_sampler("bad_options_test", options=NotADataclass)

    @dataclasses.dataclass(frozen=True)
    class BadDefault:
      size: int = base.option(-1, low=0)

    with self.assertRaisesRegex(ValueError, "size must be an integer >= 0"):
      base.register_sampler("bad_default_test", options=BadDefault)
    self.assertNotIn("bad_default_test", base.available_samplers())


class TrainerOptionsTest(tf.test.TestCase):

  def test_each_sampler_gets_only_its_own_options(self):
    shared = {"memory_size": 24, "num_negatives": 5, "cache_size": 3,
              "num_buckets": 256}
    self.assertEqual(configuration.sampler_options_for("cross_batch", shared),
                     {"memory_size": 24, "num_buckets": 256})
    self.assertEqual(configuration.sampler_options_for("uniform", shared),
                     {"num_negatives": 5})
    self.assertEqual(configuration.sampler_options_for("in_batch", shared), {})
    self.assertEqual(
        configuration.sampler_options_for("ease_baseline", shared), {})

  def test_an_option_the_run_ignores_is_an_error(self):
    # Not a silent no-op: the option names the samplers that take it.
    config = helpers.tiny_config(sampler="in_batch",
                                 sampler_options={"cache_weight": 0.5})
    with self.assertRaisesRegex(
        configuration.ConfigError,
        r"^--cache_weight does not apply to --sampler=in_batch \(an option "
        r"of xir\); it takes no sampler option$"):
      config.validate()

  def test_the_trainer_checks_come_from_the_dataclasses(self):
    config = helpers.tiny_config(sampler="xir",
                                 sampler_options={"cache_weight": 1.5})
    with self.assertRaisesRegex(configuration.ConfigError,
                                r"^--cache_weight must be a finite number in "
                                r"\[0, 1\], got 1.5$"):
      config.validate()
    config = helpers.tiny_config(sampler="cross_batch",
                                 sampler_options={"memry_size": 5})
    with self.assertRaisesRegex(
        configuration.ConfigError, r"unknown sampler option --memry_size "
        r"\(did you mean --memory_size\?\); --sampler=cross_batch: it "
        r"takes: "):
      config.validate()

  def test_flag_defaults_mean_the_dataclass_defaults(self):
    # An unset flag is None: each declaring sampler gets its dataclass
    # default, and no option is passed on.
    declared = set()
    flag_names = common.sampler_option_flags()
    for name in base.available_samplers():
      options_cls = base.sampler_options(name)
      defaults = options_cls()
      for option in base.option_names(name):
        declared.add(option)
        self.assertIn(option, flag_names)
        self.assertIsNone(FLAGS[option].default)
        self.assertEqual(base.check_option(options_cls, option, None),
                         getattr(defaults, option), "%s --%s" % (name,
                                                                  option))
    self.assertEqual(set(flag_names), declared)

  def test_a_variant_option_its_sampler_lacks_is_refused(self):
    with self.assertRaisesRegex(
        ValueError, r"bad variant 'cross_batch:memry_size=5': 'memry_size' "
        r"is neither a setting nor an option of sampler cross_batch "
        r"\(did you mean 'memory_size'\?\)"):
      benchmarking.parse_variant("cross_batch:memry_size=5")
    with self.assertRaisesRegex(ValueError, "'cache_size' is neither"):
      benchmarking.parse_variant("cb=cross_batch:cache_size=5")
    with self.assertRaisesRegex(ValueError, "its options: none"):
      benchmarking.parse_variant("in_batch:memory_size=5")
    variant = benchmarking.parse_variant(
        "cb=cross_batch:memory_size=16:batch_size=8")
    config = benchmarking.apply_variant(helpers.tiny_config(), variant, 0)
    self.assertEqual(config.sampler_options["memory_size"], 16)
    # Shared (tuned) settings: an option the sampler lacks is dropped.
    variant = benchmarking.Variant("u", "uniform", {"memory_size": 16,
                                                    "num_negatives": 4})
    config = benchmarking.apply_variant(helpers.tiny_config(), variant, 0)
    self.assertNotIn("memory_size", config.sampler_options)
    self.assertEqual(config.sampler_options["num_negatives"], 4)


if __name__ == "__main__":
  tf.test.main()
