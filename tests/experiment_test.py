"""ExperimentConfig's validation split and the split it evaluates."""

import pytest

from trainers.pipeline import configuration
from trainers.pipeline import experiment
from trainers.pipeline import inputs

SYNTHETIC = {"num_users": 80, "num_items": 30, "interactions_per_user": 8}


def _config(**overrides):
  config = configuration.ExperimentConfig(
      sampler="popularity_baseline", verbose=0, synthetic=dict(SYNTHETIC),
      query_tower="id", epochs=5, validate_every=0)
  for k, v in overrides.items():
    setattr(config, k, v)
  return config


def test_default_holds_out_each_users_second_to_last_for_validation():
  dataset = inputs.load_data(_config())
  assert dataset.validation.num_rows == dataset.test.num_rows > 0
  assert inputs.load_data(
      _config(num_validation=0)).validation.num_rows == 0
  assert inputs.load_data(
      _config(num_validation=2)).validation.num_rows > (
          dataset.validation.num_rows)


def test_temporal_split_keeps_its_validation_fraction():
  assert inputs.split_kwargs(_config(split="temporal")) == {}
  assert inputs.split_kwargs(
      _config(split="temporal", num_validation=0)) == {
          "validation_fraction": 0.0}
  assert inputs.load_data(
      _config(split="temporal")).validation.num_rows > 0


def test_eval_split_validation_evaluates_the_validation_targets():
  dataset = inputs.load_data(_config())
  val = experiment.run(_config(eval_split="validation"), dataset=dataset)
  test = experiment.run(_config(), dataset=dataset)
  assert val["eval_split"] == "validation" and test["eval_split"] == "test"
  assert val["num_targets"] == dataset.validation.num_rows
  assert test["num_targets"] == dataset.test.num_rows
  assert val["recall@10"] != test["recall@10"]


@pytest.mark.parametrize("overrides, message", [
    ({"eval_split": "train"}, "unknown eval_split"),
    ({"num_validation": -1}, "num_validation must be >= 0"),
    ({"eval_split": "validation", "num_validation": 0}, "needs"),
    ({"ease_lambda": -1.0}, "ease_lambda must be >= 0"),
])
def test_bad_settings_are_clear_errors(overrides, message):
  with pytest.raises(ValueError, match=message):
    _config(**overrides).validate()


def test_a_top_k_above_the_catalog_is_said_before_work():
  config = _config(sampler="in_batch_logq", export_dir="/tmp/unused_export")
  dataset = inputs.load_data(config)
  n = dataset.catalog.num_items
  config.top_k = n + 1
  assert configuration.notes(config, dataset) == [
      "--top_k=%d is more than the %d items of %s: the export answers at "
      "most %d" % (n + 1, n, dataset.name, n)]
  config.top_k = n
  assert configuration.notes(config, dataset) == []
  config.top_k, config.export_dir = n + 1, None  # no export: nothing to say
  assert configuration.notes(config, dataset) == []


def test_the_lift_line_warns_below_popularity_and_says_why_on_synthetic():
  metrics = {"lift_over_popularity": 0.5, "recall@50": 0.1,
             "popularity_recall@50": 0.2}
  below = experiment.lift_line(metrics, _config(sampler="in_batch_logq",
                                                query_tower="sasrec"))
  assert below.startswith("warning: below ranking by popularity: lift over "
                          "popularity 0.50x (recall@50 0.1000 vs 0.2000")
  assert "no order in time" in below
  real = experiment.lift_line(metrics, _config(
      sampler="in_batch_logq", query_tower="sasrec", dataset="movielens"))
  assert real.startswith("warning: ") and "no order in time" not in real
  metrics["lift_over_popularity"] = 2.0
  assert not experiment.lift_line(metrics, _config()).startswith("warning")
