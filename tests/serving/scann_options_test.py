"""ScaNN parameter overrides: derivation, validation, flags, export."""

import pytest

from trainers.pipeline import configuration
from tfrs_negsamp.serving import export


def test_overrides_replace_the_derived_values():
  derived = export.scann_parameters(1_000_000, 10)
  assert derived == {"num_leaves": 1000, "num_leaves_to_search": 150,
                     "num_reordering_candidates": 256}
  assert export.scann_parameters(1_000_000, 10, {
      "num_leaves_to_search": 30}) == dict(derived, num_leaves_to_search=30)
  # Zero/None mean "derived"; leaves to search follow overridden leaves.
  assert export.scann_parameters(1_000_000, 10, {
      "num_leaves": 500, "num_leaves_to_search": 0,
      "num_reordering_candidates": None}) == {
          "num_leaves": 500, "num_leaves_to_search": 75,
          "num_reordering_candidates": 256}


@pytest.mark.parametrize("overrides,message", [
    ({"leaves": 3}, "unknown ScaNN parameter 'leaves'"),
    ({"num_leaves": 400}, r"num_leaves must be in \[1, 300\]"),
    ({"num_leaves": 10, "num_leaves_to_search": 11},
     r"num_leaves_to_search must be in \[1, 10\]"),
    ({"num_reordering_candidates": 5},
     r"num_reordering_candidates must be in \[10, 300\]"),
    ({"num_reordering_candidates": 301}, "got 301"),
])
def test_bad_overrides(overrides, message):
  with pytest.raises(ValueError, match=message):
    export.scann_parameters(300, 10, overrides)


def test_config_validates_overrides():
  config = configuration.ExperimentConfig(scann_overrides={"num_leaves": 4})
  config.validate()
  config.scann_overrides = {"num_leaves": -1}
  with pytest.raises(ValueError, match="bad ScaNN override num_leaves=-1"):
    config.validate()
  config.scann_overrides = {"leaves": 4}
  with pytest.raises(ValueError, match="bad ScaNN override leaves"):
    config.validate()


def test_flags_reach_the_config():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from trainers import common  # pylint: disable=g-import-not-at-top
  if "scann_leaves" not in flags.FLAGS:
    common.define_flags()
  try:
    flags.FLAGS(["test", "--scann_leaves=40", "--scann_reorder=64"])
    config = common.config_from_flags()
  finally:
    flags.FLAGS.unparse_flags()
  assert config.scann_overrides == {"num_leaves": 40,
                                    "num_leaves_to_search": 0,
                                    "num_reordering_candidates": 64}


def test_export_records_the_scann_parameters(tiny_export):
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  with open(os.path.join(tiny_export.path, export.METADATA_FILE)) as f:
    meta = json.load(f)
  assert meta["index"] == "scann" and meta["k"] == tiny_export.k
  assert meta["scann"] == export.scann_parameters(tiny_export.num_items,
                                                  tiny_export.k)
