"""The trainer's defaults, in one place (no TensorFlow: the flags read them).

A default is a claim that a setting works on data nobody tuned it on. Each
value below was chosen across the three development sets (ML-100K, ML-1M in
the SASRec version, Amazon Video Games) by the rule of
docs/design/defaults.md#defaults-that-transfer: the setting with the largest
minimum over the sets of (validation recall@50 / that set's best validation
recall@50). The measurements and the commands that give them are in
docs/results/defaults.md.

`ExperimentConfig` (trainers/pipeline/configuration.py) and the trainer's
flags (trainers/common.py) both take their defaults from here.
"""

from typing import Dict, Optional

# SASRec over each user's last MAX_HISTORY training items, trained on
# sequence rows (every position a target): above EASE^R's recall@50 on all
# three sets, where the id tower reaches about half of it on the sparse one.
QUERY_TOWER = "sasrec"
MAX_HISTORY = 50
BATCH_SIZE = 256

# Adam's learning rate per query tower. The id tower's was tuned in earlier
# rounds; the mean and SASRec towers' were measured at 1e-3 and 5e-3 (5e-3
# reaches the same validation peak in fewer epochs on every set); the GRU's
# at 2e-3, 5e-3, 1e-2 and 2e-2 (1e-2: the best validation recall@50 on
# ML-100K and Amazon, 0.95 of the best on ML-1M; docs/results/defaults.md).
LEARNING_RATE: Dict[str, float] = {
    "id": 0.01, "mean": 0.005, "gru": 0.01, "sasrec": 0.005}

# Epochs are an upper bound: the run evaluates the validation split every
# VALIDATE_EVERY epochs and stops after PATIENCE evaluations without an
# improvement of MONITOR, keeping the best weights. The best epoch differs
# by an order of magnitude between the sets (6 to 60); a fixed count
# either under-trains the large sets or over-fits the small ones.
EPOCHS = 100
VALIDATE_EVERY = 2
PATIENCE = 2
MONITOR = "recall@50"


def learning_rate(query_tower: str, given: Optional[float] = None) -> float:
  """`given`, or the default learning rate of `query_tower`."""
  if given is not None:
    return given
  return LEARNING_RATE[query_tower]


def validate_every(given: Optional[int], num_validation: int,
                   baseline: bool) -> int:
  """`given`, or VALIDATE_EVERY when there is a validation split to use.

  Model-free baselines and runs without a validation slice
  (`--num_validation=0`) train without validation.
  """
  if given is not None:
    return given
  return 0 if baseline or num_validation < 1 else VALIDATE_EVERY


def patience(given: Optional[int], every: int) -> int:
  """`given`, or PATIENCE when validation runs during training."""
  if given is not None:
    return given
  return PATIENCE if every else 0
