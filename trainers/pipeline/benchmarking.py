"""Side-by-side benchmark runs: variants x seeds in one process.

A *variant* is a label plus overrides of an `ExperimentConfig` (fields such
as `batch_size`, or sampler options such as `memory_size`), written
`label=sampler[:key=value...]`, e.g. `cbns_4B=cross_batch:memory_size=512`.
Every finished run leaves `OUTPUT/runs/LABEL/seedS/metrics.json`; a re-run of
the same command skips those, so an interrupted benchmark resumes.

Outputs: `results.csv` (one row per variant x seed), `results.md` (mean ± std
per variant, step-time ratio to the reference variant) and PNG plots.

The *floor* (`FLOOR`, issue 17) is a plain TFRS tutorial two-tower
(`PlainTFRSModel`: id embeddings, `tfrs.tasks.Retrieval`) with the variants'
batch, optimizer, temperature and normalisation: a variant labelled
`plain_tfrs` runs it (full runs), and `time_steps` interleaves it with the
variants' models in rounds and reports each step time as a ratio to it.
`time_steps` also builds the floor of in-batch + logQ (`LOGQ_FLOOR`, issue
27): TFRS doing the same arithmetic (`TFRSLogQFloor`: the variant's own
towers, `tfrs.tasks.Retrieval(remove_accidental_hits=True)` with the
batch's sampling probabilities), and for CBNS the same at `[B, B + M]`.
"""

import contextlib
import copy
import csv
import dataclasses
import difflib
import inspect
import json
import math
import os
import shutil
import sys
import time
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple)

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from trainers.pipeline import assembly
from trainers.pipeline import configuration
from trainers.pipeline import defaults
from trainers.pipeline import experiment
from trainers.pipeline import fitting
from trainers.pipeline import inputs
from trainers.pipeline import outputs
from trainers.pipeline import strategies
from tfrs_negsamp import optimizers as optimizers_lib
from tfrs_negsamp import protocol
from tfrs_negsamp import samplers as samplers_lib
from tfrs_negsamp.models import query_towers

# Label and pseudo-sampler of the plain-TFRS floor.
FLOOR = "plain_tfrs"
# Label prefix of the TFRS + logQ floors (`TFRSLogQFloor`).
LOGQ_FLOOR = "tfrs_logq"

COHORTS = ("head", "mid", "tail")
TABLE_COLUMNS = (
    ("recall@10", "recall@10"), ("recall@50", "recall@50"),
    ("recall@100", "recall@100"), ("hr@10", "hr@10"),
    ("ndcg@10", "ndcg@10"), ("head hr@10", "cohorts.head.hr@10"),
    ("mid hr@10", "cohorts.mid.hr@10"), ("tail hr@10", "cohorts.tail.hr@10"),
    ("balance", "balance"), ("step ms", "step_ms"),
    ("examples/s", "examples_per_second"))


@dataclasses.dataclass(frozen=True)
class Variant:
  label: str
  sampler: str
  overrides: Dict[str, Any]


def _convert(value: str) -> Any:
  for cast in (int, float):
    with contextlib.suppress(ValueError):  # not that type: try the next
      return cast(value)
  if value.lower() in ("true", "false"):
    return value.lower() == "true"
  return value


def parse_variant(spec: str) -> Variant:
  """`label=sampler:key=value:...` (or just `sampler`) -> `Variant`."""
  spec = spec.strip()
  label, _, rest = spec.partition("=") if "=" in spec.split(":")[0] else (
      None, None, spec)
  parts = rest.split(":")
  sampler = parts[0]
  overrides = {}
  for part in parts[1:]:
    key, sep, value = part.partition("=")
    if not sep or not key:
      raise ValueError("bad variant %r: expected key=value after ':', got %r"
                       % (spec, part))
    overrides[key] = _convert(value)
  fields = [f.name for f in dataclasses.fields(configuration.ExperimentConfig)]
  options = _option_names(sampler)
  for key in overrides:
    if key not in fields and options is not None and key not in options:
      close = difflib.get_close_matches(key, list(options) + fields, n=1)
      raise ValueError(
          "bad variant %r: %r is neither a setting nor an option of sampler "
          "%s%s; its options: %s"
          % (spec, key, sampler,
             " (did you mean %r?)" % close[0] if close else "",
             ", ".join(sorted(options)) or "none"))
  return Variant(label or sampler, sampler, overrides)


def _option_names(sampler: str) -> Optional[Tuple[str, ...]]:
  """The options `sampler` declares; None for a name the config refuses."""
  if sampler == FLOOR:
    return ()
  try:
    return configuration.sampler_option_names(sampler)
  except ValueError:
    return None


def apply_variant(base: configuration.ExperimentConfig, variant: Variant,
                  seed: int) -> configuration.ExperimentConfig:
  """A copy of `base` with the variant's sampler, overrides and seed.

  An override that is no `ExperimentConfig` field is a sampler option; one
  that the variant's sampler does not declare is dropped: it comes from
  settings shared by several samplers (a tuner's search space, `best.json`),
  since `parse_variant` refuses it in a written spec. Likewise `base`'s
  sampler options (shared flags) reach the variants whose sampler declares
  them.
  """
  config = copy.deepcopy(base)
  config.sampler = variant.sampler
  config.seed = seed
  fields = {f.name for f in dataclasses.fields(config)}
  options = _option_names(variant.sampler)
  if options is not None:
    config.sampler_options = {k: v for k, v in config.sampler_options.items()
                              if k in options}
  for key, value in variant.overrides.items():
    if key in fields:
      setattr(config, key, value)
    elif options is None or key in options:
      config.sampler_options[key] = value
  if variant.sampler == FLOOR:  # Not a registered sampler: check the rest.
    check_floor(config)
  else:
    config.validate()
  return config


def load_best_settings(path: str) -> Dict[str, Dict[str, Any]]:
  """`best.json` of `trainers.tune`: {sampler: {"params": {...}, ...}}."""
  with open(path) as f:
    best = json.load(f)
  if not isinstance(best, dict) or not all(
      isinstance(v, dict) and isinstance(v.get("params"), dict)
      for v in best.values()):
    raise ValueError("%s is not a best.json of trainers.tune "
                     "({sampler: {\"params\": {...}}})." % path)
  return {sampler: dict(entry["params"]) for sampler, entry in best.items()}


def with_best_settings(variants: Sequence[Variant],
                       best: Dict[str, Dict[str, Any]]) -> List[Variant]:
  """Each variant with the tuned settings of its sampler underneath.

  A variant's own overrides win over the tuned values (so a suite can still
  pin, e.g., the batch size); samplers without tuned settings are unchanged.
  """
  return [Variant(v.label, v.sampler,
                  dict(best.get(v.sampler, {}), **v.overrides))
          for v in variants]


def flatten(metrics: Dict[str, Any]) -> Dict[str, Any]:
  """Nested metrics -> flat `a.b.c` keys (lists dropped)."""
  flat = {}

  def walk(prefix, value):
    if isinstance(value, dict):
      for k, v in value.items():
        walk(prefix + "." + k if prefix else k, v)
    elif not isinstance(value, (list, tuple)):
      flat[prefix] = value
  walk("", metrics)
  if "step_seconds" in flat and flat["step_seconds"] is not None:
    flat["step_ms"] = 1000.0 * flat["step_seconds"]
  return flat


class Progress:
  """One line per run: `[i/n] label seed s ... elapsed, ETA`."""

  def __init__(self, total: int):
    self.total, self.done, self.start = total, 0, time.time()

  def report(self, text: str) -> None:
    self.done += 1
    elapsed = time.time() - self.start
    eta = elapsed / self.done * (self.total - self.done)
    print("[%d/%d] %s  (elapsed %.0fs, eta %.0fs)"
          % (self.done, self.total, text, elapsed, eta), file=sys.stderr,
          flush=True)


# Fields of a config that do not change what a run computes (outputs, the
# export's index, verbosity, where the data file sits).
_NOT_SETTINGS = ("output_dir", "export_dir", "backup_dir", "backup_freq",
                 "tensorboard_dir", "verbose", "data_path", "index", "top_k",
                 "scann_overrides")


def _settings(flags: Dict[str, Any]) -> Dict[str, Any]:
  """`flags` (a config as a dict) as JSON values, without `_NOT_SETTINGS`;
  `sampler_options` keeps only the options its sampler declares."""
  flags = json.loads(json.dumps(flags, default=_json_default))
  settings = {k: v for k, v in flags.items() if k not in _NOT_SETTINGS}
  options = settings.get("sampler_options")
  sampler = settings.get("sampler")
  # The floor and a sampler that no longer exists keep every option.
  if isinstance(options, dict) and (
      sampler in configuration.BASELINES
      or sampler in samplers_lib.available_samplers()):
    settings["sampler_options"] = configuration.sampler_options_for(
        sampler, options)
  return settings


def _json_default(value):
  if isinstance(value, (np.integer, np.floating)):
    return value.item()
  if isinstance(value, tuple):
    return list(value)
  return str(value)


def same_settings(saved: Optional[Dict[str, Any]],
                  config: configuration.ExperimentConfig) -> bool:
  """Whether a finished run's `metrics.json` flags are `config`'s settings.

  Compares the fields both sides have (a field added since is not a
  difference); a run without flags counts as matching.
  """
  if not isinstance(saved, dict):
    return True
  have = _settings(saved)
  # A run records its settings as given or with the unset defaults filled
  # (`ExperimentConfig.resolved`): either counts.
  given = _settings(dataclasses.asdict(config))
  filled = _settings(dataclasses.asdict(config.resolved()))
  return all(have[k] in (given[k], filled[k])
             for k in have.keys() & given.keys())


def run_grid(base: configuration.ExperimentConfig, variants: Sequence[Variant],
             seeds: Sequence[int], output_dir: str,
             run_fn: Optional[Callable[..., Dict[str, Any]]] = None,
             dataset=None) -> List[Dict[str, Any]]:
  """Runs every variant with every seed (skipping finished ones)."""
  run_fn = run_fn or experiment.run
  labels = [v.label for v in variants]
  if len(set(labels)) != len(labels):
    raise ValueError("variant labels must be unique: %s" % labels)
  if dataset is None:
    dataset = inputs.load_data(base)
  rows = []
  progress = Progress(len(variants) * len(seeds))
  for variant in variants:
    for seed in seeds:
      run_dir = os.path.join(output_dir, "runs", variant.label,
                             "seed%d" % seed)
      path = os.path.join(run_dir, "metrics.json")
      config = apply_variant(base, variant, seed)
      metrics, status = None, ""
      if os.path.exists(path):
        with open(path) as f:
          metrics = json.load(f)
        status = "done before, skipped"
        if not same_settings(metrics.get("flags"), config):
          # E.g. a tuned setting changed since: the old run does not count.
          metrics, status = None, "re-run (settings changed)"
      if metrics is None:
        config.output_dir = run_dir
        trains = (variant.sampler != FLOOR and
                  variant.sampler not in configuration.BASELINES)
        if trains:
          # An interrupted run resumes from its last epoch (weights,
          # sampler state, the validation monitor's clock and best).
          config.backup_dir = os.path.join(run_dir, "backup")
        fn = run_floor if variant.sampler == FLOOR else run_fn
        metrics = fn(config, dataset=dataset)
        if trains:
          shutil.rmtree(config.backup_dir, ignore_errors=True)
        status = ("%srecall@50=%.4f step=%.1fms" % (
            "re-run: " if status.startswith("re-run") else "",
            metrics["recall@50"], 1000 * (metrics.get("step_seconds") or 0)))
      progress.report("%s seed %d: %s" % (variant.label, seed, status))
      row = flatten(metrics)
      row.update({"variant": variant.label, "sampler": variant.sampler,
                  "seed": seed})
      rows.append(row)
  return rows


def best_by_validation(rows: List[Dict[str, Any]],
                       variants: Sequence[Variant]) -> Optional[Variant]:
  """The variant with the best mean `best_validation` over its seeds.

  Variants without a validation value (baselines, the floor) are left
  out; None when no variant has one. Ties go to the first listed.
  """
  best, best_value = None, -math.inf
  for variant in variants:
    values = [r["best_validation"] for r in rows
              if r["variant"] == variant.label
              and isinstance(r.get("best_validation"), (int, float))
              and math.isfinite(r["best_validation"])]
    if values and float(np.mean(values)) > best_value:
      best, best_value = variant, float(np.mean(values))
  return best


def run_best_to_convergence(
    base: configuration.ExperimentConfig, rows: List[Dict[str, Any]],
    variants: Sequence[Variant], seed: int, output_dir: str,
    minutes: float, patience: int,
    run_fn: Optional[Callable[..., Dict[str, Any]]] = None, dataset=None
) -> Tuple[Optional[Variant], List[Dict[str, Any]]]:
  """Trains the grid's best variant again, until it stops improving.

  The variant with the best mean validation metric (`best_by_validation`)
  runs as `<label>_to_convergence` with `seed`, from scratch, with a
  budget of `minutes` training minutes and early stopping after
  `patience` evaluations without improvement; resumable like `run_grid`.

  Returns:
    `(variant, rows)` of that run, or `(None, [])` when no variant has a
    validation metric.
  """
  best = best_by_validation(rows, variants)
  if best is None:
    return None, []
  long_run = Variant(best.label + "_to_convergence", best.sampler,
                     dict(best.overrides, time_budget_minutes=float(minutes),
                          patience=int(patience)))
  print("then: %s (the best mean validation %s) until it stops improving "
        "(%d evaluations) or for %g training minutes"
        % (best.label, base.resolved().monitor, patience, minutes))
  return long_run, run_grid(base, [long_run], [seed], output_dir,
                            run_fn=run_fn, dataset=dataset)


def _mean_std(values: List[float]):
  values = [v for v in values if v is not None and not (
      isinstance(v, float) and math.isnan(v))]
  if not values:
    return float("nan"), float("nan")
  return float(np.mean(values)), float(np.std(values))


def summarize(rows: List[Dict[str, Any]],
              reference: Optional[str] = None) -> List[Dict[str, Any]]:
  """Mean and std of every table column per variant (in first-seen order)."""
  order = []
  for row in rows:
    if row["variant"] not in order:
      order.append(row["variant"])
  summary = []
  for label in order:
    mine = [r for r in rows if r["variant"] == label]
    entry = {"variant": label, "sampler": mine[0]["sampler"],
             "runs": len(mine)}
    for name, key in TABLE_COLUMNS:
      entry[name] = _mean_std([r.get(key) for r in mine])
    summary.append(entry)
  ref = next((s for s in summary if s["variant"] == reference), None)
  for entry in summary:
    if ref and not math.isnan(ref["step ms"][0]) and ref["step ms"][0] > 0:
      entry["step ratio"] = entry["step ms"][0] / ref["step ms"][0]
    else:
      entry["step ratio"] = float("nan")
  return summary


def write_csv(rows: List[Dict[str, Any]], path: str) -> None:
  keys = ["variant", "sampler", "seed"]
  for row in rows:
    keys += [k for k in row if k not in keys]
  with open(path, "w", newline="") as f:
    writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
      writer.writerow(row)


def _fmt(mean_std, digits=4):
  mean, std = mean_std
  if math.isnan(mean):
    return "–"
  if abs(mean) >= 100:
    return "%.0f ± %.0f" % (mean, std)
  return ("%.*f ± %.*f" % (digits, mean, digits, std))


def markdown_table(summary: List[Dict[str, Any]], title: str = "",
                   reference: Optional[str] = None) -> str:
  names = [n for n, _ in TABLE_COLUMNS]
  header = ["variant", "runs"] + names + ["step ratio"]
  lines = []
  if title:
    lines += ["## " + title, ""]
  lines.append("| " + " | ".join(header) + " |")
  lines.append("|" + "---|" * len(header))
  for s in summary:
    cells = [s["variant"], str(s["runs"])]
    for name in names:
      cells.append(_fmt(s[name], 1 if name in ("step ms", "examples/s")
                        else 4))
    ratio = s["step ratio"]
    cells.append("–" if math.isnan(ratio) else "%.2f" % ratio)
    lines.append("| " + " | ".join(cells) + " |")
  lines.append("")
  lines.append("Mean ± std over seeds. Metrics: full-corpus ranking, "
               "training items excluded, averaged per user; cohorts are "
               "equal-interaction-mass tertiles of training counts; balance "
               "= 1 − Gini(head/mid/tail HR@10). step ms: median wall time "
               "of a training step; step ratio: to `%s`, measured in the "
               "same process." % (reference or "–"))
  return "\n".join(lines) + "\n"


def plot(summary: List[Dict[str, Any]], output_dir: str,
         prefix: str = "") -> List[str]:
  """PNG plots: balance vs HR@10, per-cohort HR@10 bars, recall@50 vs step."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  paths = []

  def scatter(xkey, ykey, xlabel, ylabel, name):
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    for s in summary:
      (x, xe), (y, ye) = s[xkey], s[ykey]
      if math.isnan(x) or math.isnan(y):
        continue
      ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", capsize=3)
      ax.annotate(s["variant"], (x, y), textcoords="offset points",
                  xytext=(4, 4), fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = os.path.join(output_dir, prefix + name)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    paths.append(path)

  scatter("hr@10", "balance", "HR@10", "balance (1 − Gini of cohort HR@10)",
          "balance_vs_hr10.png")
  scatter("step ms", "recall@50", "training step time (ms)", "recall@50",
          "recall50_vs_step_time.png")

  fig, ax = plt.subplots(figsize=(max(6.4, 0.9 * len(summary) + 2), 4.8))
  width = 0.8 / len(COHORTS)
  x = np.arange(len(summary))
  for i, cohort in enumerate(COHORTS):
    means = [s["%s hr@10" % cohort][0] for s in summary]
    stds = [s["%s hr@10" % cohort][1] for s in summary]
    ax.bar(x + (i - 1) * width, means, width, yerr=stds, capsize=2,
           label=cohort)
  ax.set_xticks(x)
  ax.set_xticklabels([s["variant"] for s in summary], rotation=30,
                     ha="right", fontsize=8)
  ax.set_ylabel("HR@10")
  ax.legend()
  ax.grid(axis="y", alpha=0.3)
  fig.tight_layout()
  path = os.path.join(output_dir, prefix + "cohort_hr10.png")
  fig.savefig(path, dpi=120)
  plt.close(fig)
  paths.append(path)
  return paths


def write_report(rows: List[Dict[str, Any]], output_dir: str,
                 title: str = "", reference: Optional[str] = None,
                 preamble: str = "") -> Dict[str, Any]:
  """results.csv, results.md and the plots; returns the summary."""
  os.makedirs(output_dir, exist_ok=True)
  write_csv(rows, os.path.join(output_dir, "results.csv"))
  summary = summarize(rows, reference)
  with open(os.path.join(output_dir, "results.md"), "w") as f:
    if preamble:
      f.write(preamble.rstrip() + "\n\n")
    f.write(markdown_table(summary, title, reference))
  plot(summary, output_dir)
  return {"summary": summary}


class PlainTFRSModel(tfrs.Model):
  """The floor: the TFRS tutorial two-tower with `tfrs.tasks.Retrieval`.

  `u = E_user[lookup(user_id)]`, `v = E_item[lookup(item_id)]` (`[B, d]`,
  L2-normalised when `normalize`), loss = in-batch softmax CE of
  `u v^T / temperature` with SUM reduction (no sampler, no logQ, no masking,
  no metrics during training).
  """

  def __init__(self, user_vocabulary, item_vocabulary, embedding_dim: int,
               temperature: Optional[float] = 0.05, normalize: bool = True,
               **kwargs):
    super().__init__(**kwargs)
    self.user_model = tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=list(user_vocabulary),
                                     mask_token=None),
        tf.keras.layers.Embedding(len(user_vocabulary) + 1, embedding_dim)])
    self.item_model = tf.keras.Sequential([
        tf.keras.layers.StringLookup(vocabulary=list(item_vocabulary),
                                     mask_token=None),
        tf.keras.layers.Embedding(len(item_vocabulary) + 1, embedding_dim)])
    self.item_vocabulary = np.asarray(item_vocabulary, dtype=object)
    self.normalize = normalize
    self.task = tfrs.tasks.Retrieval(temperature=temperature)

  def _tower(self, tower, ids):
    x = tower(ids)
    return tf.math.l2_normalize(x, axis=-1) if self.normalize else x

  def compute_loss(self, features, training=False):
    return self.task(self._tower(self.user_model, features["user_id"]),
                     self._tower(self.item_model, features["item_id"]),
                     compute_metrics=not training)

  def _embed(self, tower, ids, batch_size: int = 4096) -> np.ndarray:
    ids = np.asarray(ids, dtype=object)
    return np.concatenate(
        [self._tower(tower, tf.constant(ids[i:i + batch_size],
                                        tf.string)).numpy()
         for i in range(0, len(ids), batch_size)], axis=0)

  def query_embeddings(self, user_ids, batch_size: int = 4096) -> np.ndarray:
    return self._embed(self.user_model, user_ids, batch_size)

  def catalog_embeddings(self, batch_size: int = 4096) -> np.ndarray:
    return self._embed(self.item_model, self.item_vocabulary, batch_size)


class TFRSLogQFloor(tfrs.Model):
  """The floor of in-batch + logQ: TFRS doing the same arithmetic.

  The towers are those of the variant (`towers`: a `TwoTowerModel` built
  from the variant's config, whose sampler and task are not used: its query
  tower, id or history, and item tower). The loss is TFRS's own
  `tfrs.tasks.Retrieval(remove_accidental_hits=True)` over the global
  batch's candidates, with `candidate_ids` (the item indices) and
  `candidate_sampling_probability` from the batch's frequency,
  `p_j = (rows of the batch with item j) / B`, so the logits are
  `u v^T / tau - log p_j`, accidental hits masked. No user-history mask.

  With `memory_size = M >= B` the candidates also hold a FIFO of the last
  `M` candidate embeddings (no gradient), ids and probabilities, written
  every training step: the `[B, B + M]` arithmetic of CBNS. Empty slots
  hold zero embeddings and id -1 (never an accidental hit).
  """

  def __init__(self, towers, temperature: Optional[float] = 0.05,
               memory_size: int = 0, **kwargs):
    super().__init__(**kwargs)
    self.towers = towers
    self.task = tfrs.tasks.Retrieval(temperature=temperature,
                                     remove_accidental_hits=True)
    self.memory_size = memory_size
    if memory_size:
      dim = int(towers.item_model.id_embedding.output_dim)
      self.memory = tf.Variable(tf.zeros([memory_size, dim]),
                                trainable=False)
      self.memory_ids = tf.Variable(-tf.ones([memory_size], tf.int64),
                                    trainable=False)
      self.memory_probability = tf.Variable(tf.ones([memory_size]),
                                            trainable=False)
      self.head = tf.Variable(0, dtype=tf.int64, trainable=False)

  def compute_loss(self, features, training=False):
    query = self.towers.query(features, training=training)
    ids = self.towers.item_index(features["item_id"])
    candidates = self.towers.item_model(ids)
    _, position, count = tf.unique_with_counts(ids)
    probability = (tf.cast(tf.gather(count, position), tf.float32)
                   / tf.cast(tf.size(ids), tf.float32))
    if not self.memory_size:
      return self.task(query, candidates, candidate_ids=ids,
                       candidate_sampling_probability=probability,
                       compute_metrics=not training)
    loss = self.task(
        query, tf.concat([candidates, self.memory.read_value()], axis=0),
        candidate_ids=tf.concat([ids, self.memory_ids.read_value()], axis=0),
        candidate_sampling_probability=tf.concat(
            [probability, self.memory_probability.read_value()], axis=0),
        compute_metrics=not training)
    if training:
      slots = (self.head + tf.range(tf.size(ids, out_type=tf.int64))
               ) % self.memory_size
      with tf.control_dependencies([loss]):
        self.memory.scatter_nd_update(slots[:, None],
                                      tf.stop_gradient(candidates))
        self.memory_ids.scatter_nd_update(slots[:, None], ids)
        self.memory_probability.scatter_nd_update(slots[:, None],
                                                  probability)
        self.head.assign((self.head + tf.size(ids, out_type=tf.int64))
                         % self.memory_size)
    return loss


def _training_data(dataset, config: configuration.ExperimentConfig,
                   epochs: int):
  """`inputs.train_dataset` holding `epochs` epochs."""
  if "epochs" in inspect.signature(inputs.train_dataset).parameters:
    return inputs.train_dataset(dataset, config, epochs=epochs)
  return inputs.train_dataset(dataset, config).repeat(epochs)


def create_floor(dataset, config: configuration.ExperimentConfig
                 ) -> PlainTFRSModel:
  """A compiled `PlainTFRSModel` with `config`'s dim, optimizer, scale."""
  tf.keras.utils.set_random_seed(config.seed)
  model = PlainTFRSModel(
      dataset.users, dataset.catalog.item_ids, config.embedding_dim,
      temperature=config.temperature if config.normalize else None,
      normalize=config.normalize)
  # The tutorial's towers are id towers: the id tower's rate when unset.
  model.compile(optimizer=optimizers_lib.make_optimizer(
      config.optimizer, defaults.learning_rate("id", config.learning_rate)))
  return model


def create_logq_floor(dataset, config: configuration.ExperimentConfig,
                      memory_size: int = 0) -> TFRSLogQFloor:
  """A compiled `TFRSLogQFloor` with `config`'s towers, optimizer, scale.

  The towers come from `assembly.build_model` on `config` with the plain
  in-batch sampler and no history mask (neither is used by the floor).
  """
  check_logq_floor(config)
  if memory_size and memory_size < config.batch_size:
    raise ValueError("the [B, B + M] floor needs M >= B, got M = %d, B = %d"
                     % (memory_size, config.batch_size))
  tf.keras.utils.set_random_seed(config.seed)
  towers_config = copy.deepcopy(config)
  towers_config.sampler = "in_batch"
  towers_config.sampler_options = {}
  towers_config.mask_history = False
  towers = assembly.build_model(dataset, towers_config, config.batch_size)
  model = TFRSLogQFloor(
      towers, temperature=config.temperature if config.normalize else None,
      memory_size=memory_size)
  model.compile(optimizer=optimizers_lib.make_optimizer(
      config.optimizer,
      defaults.learning_rate(config.query_tower, config.learning_rate)))
  return model


def check_logq_floor(config: configuration.ExperimentConfig) -> None:
  """Raises `ValueError` (naming the setting) if `TFRSLogQFloor` cannot
  do `config`'s arithmetic.

  The floor takes one query per row (`[B, B]` logits): a history tower
  must train on window rows (`training_rows=window`), not on sequence rows
  (every position a query, `tasks.Retrieval`'s sequence mode).
  """
  if configuration.sequence_rows(config):
    raise ValueError(
        "the TFRS + logQ floor takes one query per row: --query_tower=%s "
        "needs --training_rows=window beside it (sequence rows make every "
        "position a query)" % config.query_tower)


def check_floor(config: configuration.ExperimentConfig) -> None:
  """Raises `ValueError` (naming the setting) if the floor cannot run it.

  The floor takes every shared setting a sampler takes (data, batch, dim,
  optimizer, temperature, strategy); it has an id query tower and no export.
  """
  check = copy.deepcopy(config)
  check.sampler = "in_batch"
  check.validate()
  if config.strategy == "parameter_server":
    raise ValueError("the %s floor runs on one process or a mirrored "
                     "strategy, not --strategy=parameter_server" % FLOOR)
  if query_towers.uses_history(config.query_tower):
    raise ValueError("the %s floor has an id query tower; got "
                     "query_tower=%s: pass --query_tower=id"
                     % (FLOOR, config.query_tower))
  if config.export_dir:
    raise ValueError("the %s floor is not exported; drop --export_dir"
                     % FLOOR)


def run_floor(config: configuration.ExperimentConfig, dataset=None,
              strategy: Optional[tf.distribute.Strategy] = None
              ) -> Dict[str, Any]:
  """`experiment.run` for the floor: train `config.epochs`, evaluate.

  Under `strategy` (default: `config.strategy`) as a sampler's run is: the
  model is built in its scope and `fit` splits each global batch over the
  replicas (TFRS's task then scores each replica's block on its own, as
  plain TFRS does). In a multi-worker job only the chief evaluates and
  writes `metrics.json`.
  """
  clock = experiment.PhaseClock()
  if strategy is None:
    strategy = strategies.make_strategy(config.strategy, config.cpu_replicas)
  if dataset is None:
    dataset = inputs.load_data(config)
  configuration.check_dataset(config, dataset, strategy.num_replicas_in_sync)
  chief = strategies.is_chief(strategy)
  clock.lap("data")
  with strategy.scope():
    model = create_floor(dataset, config)
  clock.lap("build")
  timer = fitting.StepTimer()
  model.fit(_training_data(dataset, config, config.epochs),
            epochs=config.epochs,
            steps_per_epoch=inputs.train_steps_per_epoch(dataset, config),
            callbacks=[timer], verbose=config.verbose)
  seconds = timer.end - timer.start
  clock.lap("training")
  metrics = {}
  if chief:
    sets = protocol.evaluation_sets(dataset, config.eval_split)
    metrics = protocol.evaluate_model(model, sets,
                                      progress=config.verbose > 0)
  clock.lap("evaluation")
  metrics.update(clock.report())
  metrics.update({
      "train_seconds": seconds, "steps": timer.steps,
      "step_seconds": timer.step_seconds,
      "examples_per_second": (timer.steps * config.batch_size / seconds
                              if seconds > 0 else float("nan")),
      "num_replicas": strategy.num_replicas_in_sync,
      "num_workers": strategies.num_workers(strategy),
      "eval_split": config.eval_split,
      "dataset_summary": dataset.summary(),
      "flags": {k: v for k, v in dataclasses.asdict(config).items()
                if isinstance(v, (str, int, float, bool, type(None)))}})
  if config.output_dir and chief:
    os.makedirs(config.output_dir, exist_ok=True)
    outputs.write_json(os.path.join(config.output_dir, "metrics.json"),
                       metrics, indent=2, sort_keys=True, default=float)
  if chief:
    print("%s: %s" % (FLOOR, protocol.summarize(metrics)), file=sys.stderr,
          flush=True)
  return metrics


def _floor_key(config: configuration.ExperimentConfig):
  return (config.batch_size, config.embedding_dim, config.optimizer,
          defaults.learning_rate("id", config.learning_rate),
          config.temperature, config.normalize)


def _logq_floor_key(config: configuration.ExperimentConfig, memory: int = 0):
  """What a `TFRSLogQFloor` depends on: the plain key, towers, memory."""
  return _floor_key(config) + (
      config.query_tower, config.item_features, tuple(config.item_hidden),
      tuple(config.query_hidden), config.max_history,
      config.share_item_embeddings, config.history_user_id, config.num_blocks,
      config.num_heads, config.dropout, memory)


def cbns_memory(config: configuration.ExperimentConfig) -> int:
  """The queue size `M` of a `cross_batch` variant (its default: 4 B); 0
  for any other sampler."""
  if config.sampler != "cross_batch":
    return 0
  options = samplers_lib.build_options(
      config.sampler, configuration.sampler_options_for(
          config.sampler, config.sampler_options))
  return int(options.memory_size or 4 * config.batch_size)


def logq_floor_label(config: configuration.ExperimentConfig,
                     memory: int = 0) -> str:
  """`tfrs_logq[_M<M>]_B<B>[_<tower>]`, e.g. `tfrs_logq_B256_mean`."""
  return "%s%s_B%d%s" % (
      LOGQ_FLOOR, "_M%d" % memory if memory else "", config.batch_size,
      "" if config.query_tower == "id" else "_" + config.query_tower)


def time_steps(base: configuration.ExperimentConfig,
               variants: Sequence[Variant], dataset, steps: int = 300,
               rounds: int = 2, floor: bool = True, seed: int = 0,
               logq_floor: bool = False) -> List[Dict[str, Any]]:
  """Median step time of every variant, interleaved in rounds, vs the floor.

  Every model is built once (tracing excluded); each round trains every
  model for `steps` steps in turn (`model.fit`, repeated training data,
  the first 5 steps of each round skipped), and a variant's time is the
  best (lowest) round median. With `floor`, one `PlainTFRSModel` per
  distinct (batch, dim, optimizer, learning rate, temperature, normalize)
  runs in the same rounds and every variant gets `floor_ratio` = its time
  / the time of the floor with its settings. With `logq_floor` too, one
  `TFRSLogQFloor` per distinct setting and towers (`logq_floor_label`)
  gives `logq_floor_ratio`, and every `cross_batch` variant also gets a
  `TFRSLogQFloor` with its queue size `M` (the `[B, B + M]` arithmetic)
  and `arithmetic_ratio`.

  XLA (`jit_compile=True` on the train step) is not offered: the steps
  take string ids (`StringLookup` inside the step), which XLA_CPU refuses
  (no DT_STRING `_Arg`), for the floor and every sampler alike.

  Returns:
    One row per model (floors first): `variant`, `sampler`, `batch_size`,
    `query_tower`, `memory_size` (of the `[B, B + M]` floors and CBNS),
    `step_ms` (best round), `round_ms` (every round), `floor_ratio`,
    `logq_floor_ratio` and `arithmetic_ratio` (NaN where there is none).
  """
  strategy = strategies.make_strategy(base.strategy, base.cpu_replicas)
  entries = []  # (label, sampler, config, memory)
  configs = [(v, apply_variant(base, v, seed)) for v in variants]
  floors = {}
  logq_floors = {}
  if floor:
    for _, config in configs:
      key = _floor_key(config)
      if key not in floors:
        label = FLOOR if not floors else "%s_%d" % (FLOOR, len(floors))
        floors[key] = label
        entries.append((label, FLOOR, config, 0))
    if len({k[0] for k in floors}) == len(floors) and len(floors) > 1:
      # One floor per batch: name it by the batch.
      renamed = {k: "%s_B%d" % (FLOOR, k[0]) for k in floors}
      entries = [(renamed[_floor_key(c)], s, c, m)
                 for _, s, c, m in entries]
      floors = renamed
  if floor and logq_floor:
    for _, config in configs:
      for memory in sorted({0, cbns_memory(config)}):
        key = _logq_floor_key(config, memory)
        if key in logq_floors:
          continue
        label = logq_floor_label(config, memory)
        if label in logq_floors.values():  # other settings, same name
          label = "%s_%d" % (label, len(logq_floors))
        logq_floors[key] = label
        entries.append((label, LOGQ_FLOOR, config, memory))
  entries += [(v.label, v.sampler, c, cbns_memory(c)) for v, c in configs]
  built = []
  for label, sampler, config, memory in entries:
    if sampler == FLOOR:
      model = create_floor(dataset, config)
    elif sampler == LOGQ_FLOOR:
      model = create_logq_floor(dataset, config, memory)
    else:
      model = assembly.create_model(dataset, config, strategy)
      model.local_batch_size = (config.batch_size
                                // strategy.num_replicas_in_sync)
    # Each round's `fit` reads a fresh iterator: enough epochs for `steps`
    # (a step that found no batch would end its round early and time the
    # few steps before it).
    per_epoch = max(inputs.train_steps_per_epoch(dataset, config), 1)
    data = _training_data(dataset, config, -(-steps // per_epoch) + 1)
    built.append((label, sampler, config, memory, model, data))
  times = {label: [] for label, *_ in built}
  for r in range(rounds):
    for label, _, _, _, model, data in built:
      timer = fitting.StepTimer(skip=5)
      model.fit(data, epochs=1, steps_per_epoch=steps, callbacks=[timer],
                verbose=0)
      times[label].append(1000.0 * timer.step_seconds)
      print("round %d/%d %s: %.2f ms/step" % (r + 1, rounds, label,
                                               times[label][-1]),
            file=sys.stderr, flush=True)
  rows = []
  for label, sampler, config, memory, _, _ in built:
    rows.append({"variant": label, "sampler": sampler,
                 "batch_size": config.batch_size,
                 "query_tower": ("id" if sampler == FLOOR
                                 else config.query_tower),
                 "memory_size": memory, "step_ms": min(times[label]),
                 "round_ms": list(times[label])})
  by_label = {row["variant"]: row for row in rows}

  def ratio(row, label):
    ref = by_label.get(label)
    return (row["step_ms"] / ref["step_ms"] if ref and ref["step_ms"] > 0
            else float("nan"))

  for row, (_, sampler, config, memory, _, _) in zip(rows, built):
    row["floor_ratio"] = ratio(row, floors.get(_floor_key(config)))
    if sampler == FLOOR:  # its own towers: the id-tower TFRS + logQ floor
      config = dataclasses.replace(config, query_tower="id")
    row["logq_floor_ratio"] = ratio(row, logq_floors.get(
        _logq_floor_key(config)))
    row["arithmetic_ratio"] = ratio(row, logq_floors.get(
        _logq_floor_key(config, memory))) if memory else float("nan")
  return rows


def _ratio_cell(value) -> str:
  return "–" if value is None or math.isnan(value) else "%.2f" % value


def timing_table(rows: List[Dict[str, Any]], title: str = "") -> str:
  """Markdown: one row per model, step ms (best round) and floor ratios.

  The columns of the TFRS + logQ floors appear when the rows have them.
  """
  nan = float("nan")
  columns = [("floor_ratio", "ratio to %s" % FLOOR)]
  for key, name in (("logq_floor_ratio", "ratio to %s" % LOGQ_FLOOR),
                    ("arithmetic_ratio", "ratio to its [B, B + M] floor")):
    if any(not math.isnan(r.get(key, nan)) for r in rows):
      columns.append((key, name))
  lines = ["## " + title, ""] if title else []
  lines += ["| variant | batch | step ms (best) | rounds ms | "
            + " | ".join(name for _, name in columns) + " |",
            "|" + "---|" * (4 + len(columns))]
  for row in rows:
    lines.append("| %s | %d | %.2f | %s | %s |" % (
        row["variant"], row["batch_size"], row["step_ms"],
        " / ".join("%.2f" % t for t in row["round_ms"]),
        " | ".join(_ratio_cell(row.get(key, nan)) for key, _ in columns)))
  lines += ["", "Median wall time of a training step (`model.fit`, first 5 "
            "steps of a round skipped); every model trained in turn, "
            "round after round, in one process; best round kept. Ratio: to "
            "the `%s` floor (TFRS tutorial two-tower, `tfrs.tasks."
            "Retrieval`) with the same batch." % FLOOR]
  if len(columns) > 1:
    lines.append("`%s`: TFRS doing the arithmetic of in-batch + logQ "
                 "(`tfrs.tasks.Retrieval(remove_accidental_hits=True)`, "
                 "`candidate_sampling_probability` from the batch's "
                 "frequency) with the variant's towers and batch; its "
                 "`_M<M>` form adds a FIFO of `M` past candidates (CBNS's "
                 "`[B, B + M]` logits)." % LOGQ_FLOOR)
  return "\n".join(lines) + "\n"


# `Target.denominator` values naming a floor of the numerator's settings.
OWN_LOGQ_FLOOR = "logq_floor"
OWN_ARITHMETIC_FLOOR = "arithmetic_floor"


class Target(NamedTuple):
  """A step-time ratio and its bound (None: reported, no bound).

  `numerator` is a variant label; `denominator` another label, or
  `OWN_LOGQ_FLOOR` / `OWN_ARITHMETIC_FLOOR` for the numerator's TFRS +
  logQ floor / `[B, B + M]` floor.
  """
  name: str
  numerator: str
  denominator: str
  bound: Optional[float] = None


def target_table(rows: List[Dict[str, Any]],
                 targets: Sequence[Target]) -> str:
  """Markdown: each target's measured ratio and whether it is met.

  Targets whose rows were not timed (e.g. left out by `--only`) are
  skipped.
  """
  by_label = {row["variant"]: row for row in rows}
  lines = ["| target | numerator | denominator | ratio | bound | met |",
           "|---|---|---|---|---|---|"]
  for target in targets:
    row = by_label.get(target.numerator)
    if row is None:
      continue
    if target.denominator == OWN_LOGQ_FLOOR:
      value = row.get("logq_floor_ratio", float("nan"))
    elif target.denominator == OWN_ARITHMETIC_FLOOR:
      value = row.get("arithmetic_ratio", float("nan"))
    elif target.denominator in by_label:
      value = row["step_ms"] / by_label[target.denominator]["step_ms"]
    else:
      continue
    met = ("–" if target.bound is None or math.isnan(value)
           else "yes" if value <= target.bound else "no")
    lines.append("| %s | %s | %s | %s | %s | %s |" % (
        target.name, target.numerator, target.denominator,
        _ratio_cell(value),
        "–" if target.bound is None else "<= %.2f" % target.bound, met))
  return "\n".join(lines) + "\n"
