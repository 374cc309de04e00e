r"""Benchmarks samplers side by side: every variant x seed in one process.

  python -m trainers.benchmark --dataset=movielens \
      --data_path=../shared/data/movielens-100k --suite=cbns --seeds=3 \
      --output_dir=runs/bench_cbns

  python -m trainers.benchmark --samplers=in_batch,in_batch_logq --seeds=3

Writes OUTPUT_DIR/results.csv (one row per variant x seed, the metrics.json
keys as columns), results.md (mean ± std per variant, step-time ratio to the
reference variant, plus the popularity baseline) and PNG plots (balance vs
HR@10, per-cohort HR@10 bars, recall@50 vs step time). Finished runs are
kept under OUTPUT_DIR/runs and skipped when the command is run again.
`--best_settings=TUNE_DIR/best.json` (from `trainers.tune`) gives each
variant its sampler's tuned settings (the variant's own overrides win).

The floor (issue 17): `--floor` adds a `plain_tfrs` variant (the TFRS
tutorial two-tower, `tfrs.tasks.Retrieval`, same batch/optimizer/data) and
makes it the step-ratio reference. `--timing_steps=N` only times training
steps: every model is built once and trained N steps in turn, for
`--timing_rounds` interleaved rounds (best round kept), and results.md
gives each variant's step time as a ratio to the floor at its batch. With
`--logq_floor` (on in `--suite=floor`, issue 27) it also gives the ratio to
TFRS doing in-batch + logQ's arithmetic with the variant's own towers
(`tfrs_logq_*`) and, for CBNS, to the same at `[B, B + M]`; the floor
suite ends with its targets (ratio, bound, met):

  nice -n 5 python -m trainers.benchmark --suite=floor \
      --only=B256_id,B1024_id --dataset=movielens \
      --data_path=../shared/data/movielens-100k --output_dir=runs/floor
"""

import json
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from trainers import console  # noqa: E402

console.setup(__name__)  # Before TensorFlow is imported.

from absl import flags  # noqa: E402

from trainers import common  # noqa: E402

common.define_flags()
flags.DEFINE_list("samplers", [],
                  "Samplers to compare (default: every registered sampler).")
flags.DEFINE_list("variants", [],
                  "Variants `label=sampler:key=value:...` (override "
                  "--samplers), e.g. cbns_4B=cross_batch:memory_size=512.")
flags.DEFINE_string("suite", None,
                    "A preset comparison: cbns, xir, towers, cbns_history, "
                    "floor, ml1m_sasrec (its settings apply where no flag "
                    "sets them).")
flags.DEFINE_list("seeds", ["3"],
                  "A count N (seeds 0..N-1) or an explicit list of seeds "
                  "(ml1m_sasrec: 1 unless given).")
flags.DEFINE_string("reference", None,
                    "Variant the step-time ratio refers to (default: the "
                    "first).")
flags.DEFINE_boolean("baseline", True, "Add the popularity_baseline row.")
flags.DEFINE_list("only", [],
                  "Keep only the variants whose label starts with one of "
                  "these prefixes (e.g. --suite=cbns_history --only=mean).")
flags.DEFINE_string("best_settings", None,
                    "best.json of trainers.tune: each variant gets its "
                    "sampler's tuned settings (its own overrides win).")
flags.DEFINE_boolean("floor", False,
                     "Add the plain-TFRS floor (`plain_tfrs`) and make it "
                     "the step-ratio reference.")
flags.DEFINE_boolean("logq_floor", False,
                     "With --floor and --timing_steps: also time the TFRS + "
                     "logQ floor of each variant's towers (and CBNS's "
                     "[B, B + M] one); on in the floor suite.")
flags.DEFINE_integer("timing_steps", None,
                     "> 0: only time training steps, this many per model "
                     "and round, interleaved (no evaluation); default: the "
                     "suite's, else 0 (full runs).")
flags.DEFINE_integer("timing_rounds", 2,
                     "Interleaved rounds of --timing_steps (best kept).")
flags.DEFINE_float("then_best_minutes", None,
                   "After the grid, train the variant with the best mean "
                   "validation metric again (seed of the first run, from "
                   "scratch) until it stops improving "
                   "(--then_best_patience evaluations) or for this many "
                   "training minutes; 0: off. Default: the suite's "
                   "(ml1m_sasrec: 150), else 0.")
flags.DEFINE_integer("then_best_patience", None,
                     "Early-stopping patience (evaluations) of the "
                     "--then_best_minutes run. Default: the suite's "
                     "(ml1m_sasrec: 10).")
FLAGS = flags.FLAGS
common.refuse_flags(
    ("backup_dir", "backup_freq"),
    "each run keeps its own backup in OUTPUT_DIR/runs/<variant>/seed<k>/"
    "backup until it finishes, and the same command resumes it")
common.refuse_flags(
    ("export_dir", "tensorboard_dir", "index",
     "top_k", "scann_leaves", "scann_leaves_to_search", "scann_reorder"),
    "its runs write metrics only (train a variant with trainers.train for "
    "an export)")
common.refuse_flags(("sampler",), "it compares the samplers of --samplers, "
                    "--variants or --suite")

FLOOR_BATCHES = (256, 1024, 4096)
FLOOR_TOWERS = ("id", "mean")
# The floor suite's bounds by batch (issue 27); None: reported only.
HISTORY_MASK_BOUND = {256: 1.10, 1024: 1.15}
XIR_BOUND = {1024: 2.0}


def _floor_prefix(batch: int, tower: str) -> str:
  """`B<B>_<tower>_`, e.g. `B1024_mean_` (`--only=B1024_id` keeps one)."""
  return "B%d_%s_" % (batch, tower)


def _floor_variants(batch: int, tower: str):
  """The floor suite's variants at one batch and query tower."""
  # The tower is always named: the trainer's default tower is SASRec.
  p, o = _floor_prefix(batch, tower), "batch_size=%d:query_tower=%s" % (
      batch, tower)
  if tower != "id":
    # Window rows: one query per row, the arithmetic of the TFRS floors.
    o += ":training_rows=window"
  return ["%sin_batch=in_batch:%s" % (p, o),
          "%sin_batch_logq=in_batch_logq:%s" % (p, o),
          "%sin_batch_logq_nomask=in_batch_logq:%s:mask_history=false"
          % (p, o),
          "%scross_batch_M4B=cross_batch:%s:memory_size=%d"
          % (p, o, 4 * batch),
          "%scross_batch_M4B_nomask=cross_batch:%s:memory_size=%d:"
          "mask_history=false" % (p, o, 4 * batch),
          "%sbir=bir:%s" % (p, o),
          "%sxir=xir:%s" % (p, o),
          "%sxir_poisson=xir:%s:resampling=poisson" % (p, o),
          "%sbir_poisson=bir:%s:resampling=poisson" % (p, o),
          "%smixed=mixed:%s" % (p, o),
          "%suniform_K32=uniform:%s:num_negatives=32" % (p, o)]


def _floor_targets(batch: int, tower: str):
  """The issue-27 targets at one batch and query tower (`Target`s).

  Called after flag parsing (the pipeline is imported after the CPU split).
  """
  from trainers.pipeline import benchmarking  # pylint: disable=g-import-not-at-top
  p = _floor_prefix(batch, tower)
  target = benchmarking.Target
  return [
      target("in-batch + logQ, no history mask, vs TFRS + logQ",
             p + "in_batch_logq_nomask", benchmarking.OWN_LOGQ_FLOOR, 1.05),
      target("in-batch + logQ vs TFRS + logQ", p + "in_batch_logq",
             benchmarking.OWN_LOGQ_FLOOR),
      target("cost of the history mask", p + "in_batch_logq",
             p + "in_batch_logq_nomask", HISTORY_MASK_BOUND.get(batch)),
      target("XIR (K = B draws per row) vs in-batch + logQ", p + "xir",
             p + "in_batch_logq", XIR_BOUND.get(batch)),
      target("XIR, Poisson resampling (expected K = B per row) vs "
             "in-batch + logQ", p + "xir_poisson", p + "in_batch_logq",
             XIR_BOUND.get(batch)),
      target("BIR (K = B draws per row) vs in-batch + logQ", p + "bir",
             p + "in_batch_logq"),
      target("BIR, Poisson resampling, vs in-batch + logQ",
             p + "bir_poisson", p + "in_batch_logq"),
      target("CBNS M = 4B, no history mask, vs its [B, B + M] arithmetic",
             p + "cross_batch_M4B_nomask", benchmarking.OWN_ARITHMETIC_FLOOR,
             1.2),
      target("CBNS M = 4B vs its [B, B + M] arithmetic",
             p + "cross_batch_M4B", benchmarking.OWN_ARITHMETIC_FLOOR)]


B = 128
# Each suite: config overrides for all variants, and the variants.
SUITES = {
    # Issue 4: CBNS at batch B with memory M in {B, 4B, 16B} vs in-batch at
    # B and at larger batches. The item tower has a real encoding cost
    # (titles, genres, MLP). All variants correct with the streaming logQ
    # estimator (`--frequency`, default streaming). Labels may not contain "=".
    # The CBNS variants fix their own warm-up (200 steps, about a quarter of
    # an ML-100K epoch at B), overriding --warmup_steps.
    "cbns": {
        "base": {"batch_size": B, "item_hidden": (256, 128),
                 "item_features": True},
        "variants": [
            "inbatch_B=in_batch_logq",
            "cbns_B_M1B=cross_batch:memory_size=%d:warmup_steps=200" % B,
            "cbns_B_M4B=cross_batch:memory_size=%d:warmup_steps=200"
            % (4 * B),
            "cbns_B_M16B=cross_batch:memory_size=%d:warmup_steps=200"
            % (16 * B),
            "inbatch_4B=in_batch_logq:batch_size=%d" % (4 * B),
            "inbatch_16B=in_batch_logq:batch_size=%d" % (16 * B),
        ],
    },
    # Issue 5: in-batch + logQ vs BIR vs XIR at the same batch B, all with
    # the streaming logQ estimator (--frequency). BIR: K = B draws per query;
    # XIR: K/2 batch + K/2 cache draws, cache C = B, lambda = --cache_weight.
    # The item tower has a real cost, which XIR pays again on its cache.
    "xir": {
        "base": {"batch_size": B, "item_hidden": (256, 128),
                 "item_features": True},
        "variants": ["inbatch_logq=in_batch_logq", "bir=bir", "xir=xir"],
    },
    # Issue 13: the query towers side by side with in-batch + logQ at the
    # same batch; the history encoders share the item id table.
    "towers": {
        "base": {"batch_size": 2 * B},
        "variants": ["%s=in_batch_logq:query_tower=%s" % (t, t)
                     for t in ("id", "mean", "gru", "sasrec")],
    },
    # Issue 13: CBNS at batch B with M in {B, 4B, 16B} against in-batch at
    # B and 4B, with history towers that share the item table (the setting
    # of the CBNS paper). `--only=mean` keeps one tower's variants.
    "cbns_history": {
        "base": {"batch_size": 2 * B},
        "variants": [v for t in ("mean", "sasrec") for v in (
            "%s_inbatch_B=in_batch_logq:query_tower=%s" % (t, t),
            "%s_cbns_M1B=cross_batch:query_tower=%s:memory_size=%d:"
            "warmup_steps=200" % (t, t, 2 * B),
            "%s_cbns_M4B=cross_batch:query_tower=%s:memory_size=%d:"
            "warmup_steps=200" % (t, t, 8 * B),
            "%s_cbns_M16B=cross_batch:query_tower=%s:memory_size=%d:"
            "warmup_steps=200" % (t, t, 32 * B),
            "%s_inbatch_4B=in_batch_logq:query_tower=%s:batch_size=%d"
            % (t, t, 8 * B))],
    },
    # Issues 17 and 27: step time vs the floors at B in {256, 1024, 4096},
    # id and mean query towers (window rows), labelled `B<B>_<tower>_...`
    # (`--only=B256,B1024` keeps two batches, `--only=B1024_mean` one
    # batch and tower). Floors: plain TFRS and TFRS doing in-batch +
    # logQ's arithmetic with each variant's towers (and CBNS's [B, B + M]).
    # Timing only: 300 steps per model and round, 2 interleaved rounds.
    "floor": {
        "base": {"item_features": False},
        "floor": True,
        "logq_floor": True,
        "timing_steps": 300,
        "variants": [v for b in FLOOR_BATCHES for t in FLOOR_TOWERS
                     for v in _floor_variants(b, t)],
        "targets": lambda: [t for b in FLOOR_BATCHES for q in FLOOR_TOWERS
                            for t in _floor_targets(b, q)],
    },
}


# The published full-ranking results on the SASRec version of MovieLens 1M
# (../shared/data/ml-1m-sasrec/README.md), the rows the ml1m_sasrec suite is
# set beside: Recall@10 = HR@10 there (one held-out item per user).
ML1M_PUBLISHED = (
    {"label": "published SASRec (BCE, 1 negative)", "recall@10": 0.2392,
     "ndcg@10": 0.1259},
    {"label": "published gSASRec (gBCE, 256 negatives)", "recall@10": 0.3003,
     "ndcg@10": 0.1726},
    {"label": "published SASRec+ (full softmax)", "recall@10": 0.3152,
     "ndcg@10": 0.1821},
    {"label": "published SASRec+ (3,000 sampled negatives)",
     "recall@10": 0.3159, "ndcg@10": 0.1857},
    {"label": "published BERT4Rec", "recall@10": 0.2843, "ndcg@10": 0.1537},
)
SUITES["ml1m_sasrec"] = {
    # Issue 25: SASRec on ML-1M (SASRec version) with the losses and
    # negatives of the literature, each with the same wall-clock budget of
    # training (--time_budget_minutes, default 30), validated every epoch;
    # the test metrics are those of the best validation epoch. The
    # configuration of gSASRec's public code (L = 200, d = 128, 2 blocks,
    # 1 head, 128 sequences a batch, Adam at 1e-3) with the dropout of its
    # SASRec baseline, 0.5 (gSASRec's own: 0.0; docs/results/ml1m.md).
    # Within the budget no variant stops early (patience 0): each trains
    # the whole budget. Then the variant with the best validation NDCG@10
    # trains again until it stops improving (10 epochs without a better
    # one) or for 150 training minutes (issue 25's "(2)").
    "base": {"query_tower": "sasrec", "max_history": 200,
             "embedding_dim": 128, "num_blocks": 2, "num_heads": 1,
             "dropout": 0.5, "batch_size": 128, "learning_rate": 0.001,
             "item_features": False, "epochs": 10000, "validate_every": 1,
             "patience": 0, "time_budget_minutes": 30.0,
             "monitor": "ndcg@10"},
    "then_best": {"minutes": 150.0, "patience": 10},
    "seeds": ["1"],  # 8 x 30 minutes already; --seeds=3 for the spread.
    # The sigmoid losses score as gSASRec's code does, by raw dot products
    # (`normalize=false`; docs/design/sequence_training.md#ml1m-suite).
    "variants": [
        "bce_1neg=uniform:num_negatives=1:loss=gbce:gbce_t=0.0:"
        "normalize=false",
        "gbce_256=uniform:num_negatives=256:loss=gbce:gbce_t=0.75:"
        "normalize=false",
        "full_softmax=full",
        "in_batch_logq=in_batch_logq",
        "mixed=mixed",
        "cbns=cross_batch",
        "xir=xir",
        "uniform_3000_shared=uniform:num_negatives=3000:shared=true",
    ],
    "time_to_quality": ML1M_PUBLISHED,
}


def parse_seeds(values) -> list:
  """--seeds: a count N (seeds 0..N-1, N >= 1) or a list of distinct seeds.

  Raises:
    common.UsageError: naming the flag and the bad value.
  """
  try:
    seeds = [int(v) for v in values]
  except ValueError:
    seeds = None
  if not values or seeds is None or min(seeds) < 0:
    raise common.UsageError(
        "--seeds=%s: give a count N >= 1 (seeds 0..N-1) or a list of seeds "
        ">= 0 such as 3,7,11" % ",".join(values))
  if len(seeds) == 1:
    if seeds[0] < 1:
      raise common.UsageError("--seeds=%d runs nothing: give a count >= 1 "
                              "(seeds 0..N-1) or a list of seeds"
                              % seeds[0])
    return list(range(seeds[0]))
  if len(set(seeds)) != len(seeds):
    raise common.UsageError("--seeds=%s repeats a seed" % ",".join(values))
  return seeds


def _check_mode_flags(timing: bool) -> None:
  """The flags of the other mode (timing or full runs) are errors."""
  if timing:
    for name in ("seeds", "reference", "baseline", "then_best_minutes",
                 "then_best_patience"):
      if FLAGS[name].present:
        raise common.UsageError(
            "--%s does not apply to a timing run (--timing_steps > 0: "
            "step times only, each a ratio to the floor)" % name)
  else:
    for name in ("timing_rounds", "logq_floor"):
      if FLAGS[name].present:
        raise common.UsageError("--%s applies only with --timing_steps > 0"
                                % name)
  for name in ("then_best_minutes", "then_best_patience"):
    value = FLAGS[name].value
    if value is not None and not value >= 0:
      raise common.UsageError("--%s must be >= 0, got %s" % (name, value))
  if FLAGS.timing_rounds < 1:
    raise common.UsageError("--timing_rounds must be >= 1, got %d"
                            % FLAGS.timing_rounds)
  if FLAGS.timing_steps is not None and FLAGS.timing_steps < 0:
    raise common.UsageError("--timing_steps must be >= 0, got %d"
                            % FLAGS.timing_steps)


def main(argv):
  del argv
  # Imported after flag parsing so that the CPU split comes first.
  from trainers.pipeline import benchmarking  # pylint: disable=g-import-not-at-top
  from tfrs_negsamp import samplers  # pylint: disable=g-import-not-at-top
  if not FLAGS.output_dir:
    raise common.UsageError("--output_dir is required")
  if FLAGS.suite and FLAGS.suite not in SUITES:
    raise common.UsageError("unknown suite %r; valid: %s"
                            % (FLAGS.suite, ", ".join(sorted(SUITES))))
  if FLAGS.samplers and (FLAGS.variants or FLAGS.suite):
    raise common.UsageError("--samplers does not apply with --%s, which "
                            "names the variants" % (
                                "variants" if FLAGS.variants else "suite"))
  suite = SUITES.get(FLAGS.suite, {})
  # The suite's settings, where the command line sets none (the command
  # line wins, e.g. a shorter --time_budget_minutes).
  suite_base = {key: value for key, value in suite.get("base", {}).items()
                if not FLAGS[key].present}
  timing_steps = FLAGS.timing_steps
  if timing_steps is None:
    timing_steps = suite.get("timing_steps", 0)
  _check_mode_flags(timing_steps > 0)
  seeds = parse_seeds(FLAGS.seeds if FLAGS["seeds"].present
                      else suite.get("seeds", FLAGS.seeds)
                      ) if timing_steps <= 0 else []
  specs = list(FLAGS.variants)
  if FLAGS.suite:
    specs = specs or SUITES[FLAGS.suite]["variants"]
  if not specs:
    specs = FLAGS.samplers or samplers.available_samplers()
  if FLAGS.only:
    specs = [s for s in specs
             if s.split("=")[0].startswith(tuple(FLAGS.only))]
    if not specs:
      raise common.UsageError("--only=%s keeps no variant"
                              % ",".join(FLAGS.only))
  floor = FLAGS.floor or suite.get("floor", False)
  logq_floor = floor and (FLAGS.logq_floor or suite.get("logq_floor", False))
  if FLAGS.logq_floor and not floor:
    raise common.UsageError("--logq_floor adds floors beside the plain-TFRS "
                            "one: it needs --floor (or --suite=floor)")
  try:
    variants = [benchmarking.parse_variant(s) for s in specs]
    base = common.shared_config_from_flags(
        [v.sampler for v in variants], export_dir=None, backup_dir=None,
        verbose=min(FLAGS.verbose, 2), **suite_base)
    if FLAGS.best_settings:
      variants = benchmarking.with_best_settings(
          variants, benchmarking.load_best_settings(FLAGS.best_settings))
    configs = [benchmarking.apply_variant(base, v, 0) for v in variants]
  except ValueError as e:
    raise common.UsageError(str(e)) from e
  common.check_applies(configs, "variants")
  if logq_floor and timing_steps > 0:
    for variant, config in zip(variants, configs):
      try:
        benchmarking.check_logq_floor(config)
      except ValueError as e:
        raise common.UsageError("variant %s: %s" % (variant.label, e)) from e
  labels = [v.label for v in variants] + (
      [benchmarking.FLOOR] if floor else [])
  if FLAGS.reference and FLAGS.reference not in labels:
    raise common.UsageError("--reference=%s is not a variant; the variants: "
                            "%s" % (FLAGS.reference, ", ".join(labels)))
  try:
    if timing_steps > 0:
      return _time_steps(base, variants, timing_steps, floor, logq_floor,
                         suite)
    _run_grid(base, variants, seeds, floor, _then_best(suite, base))
  except KeyboardInterrupt:
    raise KeyboardInterrupt(
        "interrupted; %s" % ("timing runs do not resume: run the command "
                             "again" if timing_steps > 0 else
                             "run the same command to resume from %s "
                             "(finished runs are kept)" % FLAGS.output_dir)
    ) from None


def _time_steps(base, variants, timing_steps, floor, logq_floor, suite):
  """--timing_steps > 0: interleaved step timing, results.md of ratios.

  With the floor suite (or --logq_floor), also the TFRS + logQ floors of
  each variant and, when the suite has targets, its targets table.
  """
  from trainers.pipeline import benchmarking  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import inputs  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  strategies.make_strategy(base.strategy, base.cpu_replicas)
  rows = benchmarking.time_steps(
      base, variants, inputs.load_data(base), steps=timing_steps,
      rounds=FLAGS.timing_rounds, floor=floor, logq_floor=logq_floor)
  os.makedirs(FLAGS.output_dir, exist_ok=True)
  with open(os.path.join(FLAGS.output_dir, "timing.json"), "w") as f:
    json.dump(rows, f, indent=2)
  table = benchmarking.timing_table(rows, title="%s: step time on %s, "
                                    "%d steps x %d rounds" % (
                                        FLAGS.suite or "samplers",
                                        base.data_path or base.dataset,
                                        timing_steps,
                                        FLAGS.timing_rounds))
  if suite.get("targets"):
    table += "\n### Targets\n\n" + benchmarking.target_table(
        rows, suite["targets"]())
  with open(os.path.join(FLAGS.output_dir, "results.md"), "w") as f:
    f.write(table)
  print(table)


def _then_best(suite, base):
  """`(minutes, patience)` of the run after the grid, or None (off).

  Raises:
    common.UsageError: when it is asked for without validation.
  """
  preset = suite.get("then_best", {})
  minutes = FLAGS.then_best_minutes
  if minutes is None:
    minutes = preset.get("minutes", 0.0)
  patience = FLAGS.then_best_patience
  if patience is None:
    patience = preset.get("patience", 10)
  if not minutes:
    if FLAGS["then_best_patience"].present:
      raise common.UsageError("--then_best_patience applies only with "
                              "--then_best_minutes > 0")
    return None
  if not base.resolved().validate_every:
    raise common.UsageError(
        "--then_best_minutes=%g picks the variant by its validation metric: "
        "it needs --validate_every > 0 and a validation split "
        "(--num_validation >= 1)" % minutes)
  return float(minutes), int(patience)


def _run_grid(base, variants, seeds, floor, then_best=None):
  """Every variant x seed (resumable), then results.md and the plots.

  With `then_best = (minutes, patience)`, the variant with the best mean
  validation metric then trains again (`<label>_to_convergence`, the first
  seed) with that budget and patience; resumable like the grid.
  """
  from trainers.pipeline import benchmarking  # pylint: disable=g-import-not-at-top
  from trainers.pipeline import strategies  # pylint: disable=g-import-not-at-top
  if floor:
    variants.insert(0, benchmarking.Variant(benchmarking.FLOOR,
                                            benchmarking.FLOOR, {}))
  if FLAGS.baseline:
    variants.append(benchmarking.Variant("popularity_baseline",
                                         "popularity_baseline", {}))
  strategies.make_strategy(base.strategy, base.cpu_replicas)
  rows = benchmarking.run_grid(base, variants, seeds, FLAGS.output_dir)
  if then_best:
    long_run, long_rows = benchmarking.run_best_to_convergence(
        base, rows, variants, seeds[0], FLAGS.output_dir, *then_best)
    if long_run is not None:
      variants.append(long_run)
      rows += long_rows
  reference = FLAGS.reference or variants[0].label
  title = "%s on %s, %s epochs, seeds %s" % (
      FLAGS.suite or "samplers", base.dataset if not base.data_path
      else os.path.basename(os.path.normpath(base.data_path)), base.epochs,
      ",".join(str(s) for s in seeds))
  benchmarking.write_report(rows, FLAGS.output_dir, title=title,
                            reference=reference)
  with open(os.path.join(FLAGS.output_dir, "results.md")) as f:
    print(f.read())
  if base.validate_every:
    from trainers.pipeline import curves  # pylint: disable=g-import-not-at-top
    print(curves.write_time_to_quality(
        FLAGS.output_dir, [v.label for v in variants],
        references=SUITES.get(FLAGS.suite, {}).get("time_to_quality", ()),
        title="Time to quality: %s, %.0f training minutes each, test at the "
        "best validation epoch" % (FLAGS.suite or "variants",
                                   base.time_budget_minutes)))


if __name__ == "__main__":
  common.run(main)
