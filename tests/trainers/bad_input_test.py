"""Bad inputs: each gives ONE line naming the flag or file, line and problem.

`CASES` is the table of issue 16 (`python -m tests.trainers.bad_input_test`
prints it as markdown): the program's arguments, the files they name (under
a temporary folder `{tmp}`), the exact line the user sees on stderr and the
exit status. Trainer cases run in-process through the same steps as
`trainers.train` (flag parsing, `config_from_flags`, loading, the data
checks) up to where the model would be built, and the line comes from
`common.error_line`, which is what `common.run` prints. The other programs
check their flags before importing TensorFlow, so their cases run as
(fast) subprocesses; a few trainer cases also run as real subprocesses to
check the exit status, the absence of a stack trace and of the docstring.
"""

import dataclasses
import json
import os
import subprocess
import sys
from typing import Dict, Sequence

from absl import flags
import pytest

from trainers import common
from trainers.pipeline import assembly
from trainers.pipeline import configuration
from trainers.pipeline import experiment
from trainers.pipeline import inputs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
FLAGS = flags.FLAGS
if "sampler" not in FLAGS:
  common.define_flags()

# A MovieLens 100K folder: u.item with 3 movies (no u.genre: the 19 default
# genre columns), and the u.data of each case.
_GENRES = "|0" * 19
U_ITEM = "".join("%d|Movie %d (1995)|01-Jan-1995||http://x%s\n"
                 % (i, i, _GENRES) for i in (1, 2, 3))
GOOD_CSV = ("user_id,item_id,timestamp\n"
            "1,1,1\n1,2,2\n1,3,3\n2,1,3\n2,2,4\n2,3,5\n3,3,5\n3,4,6\n3,1,7\n")
BIG = "1" + "0" * 40  # 10^40
# A small synthetic set (50 items) for the checks against the catalog.
SMALL = ["--synthetic_users=100", "--synthetic_items=50", "--batch_size=32"]


@dataclasses.dataclass
class Case:
  name: str
  argv: Sequence[str]
  message: str
  code: int = 2
  files: Dict[str, str] = dataclasses.field(default_factory=dict)
  program: str = "train"  # trainers.<program>; train runs in-process.
  binary: Dict[str, bytes] = dataclasses.field(default_factory=dict)


# Programs whose cases run in one process each (they import TensorFlow when
# they define their flags).
BATCHED = ("tune", "benchmark")


def _ml(u_data):
  return {"ml/u.item": U_ITEM, "ml/u.data": u_data}


CASES = [
    # Floats: finite and positive.
    Case("learning_rate_nan", ["--learning_rate=nan"],
         "error: --learning_rate must be a finite number > 0, got nan"),
    Case("learning_rate_inf", ["--learning_rate=inf"],
         "error: --learning_rate must be a finite number > 0, got inf"),
    Case("learning_rate_zero", ["--learning_rate=0"],
         "error: --learning_rate must be a finite number > 0, got 0.0"),
    Case("temperature_nan", ["--temperature=nan"],
         "error: --temperature must be a finite number > 0, got nan"),
    Case("temperature_negative", ["--temperature=-0.5"],
         "error: --temperature must be a finite number > 0, got -0.5"),
    Case("dropout_one", ["--dropout=1"],
         "error: --dropout must be in [0, 1), got 1.0"),
    Case("ease_lambda_nan", ["--ease_lambda=nan"],
         "error: --ease_lambda must be >= 0 (0: chosen on validation), got "
         "nan"),
    Case("estimator_alpha_zero", ["--estimator_alpha=0"],
         "error: --estimator_alpha must be a finite number in (0, 1], got "
         "0.0"),
    Case("xir_lambda_above_one", ["--sampler=xir", "--cache_weight=1.5"],
         "error: --cache_weight must be a finite number in [0, 1], got 1.5"),
    Case("cache_decay_nan", ["--sampler=xir", "--cache_decay=nan"],
         "error: --cache_decay must be a finite number in [0, 1), got nan"),
    Case("cml_margin_negative", ["--sampler=two_stage_triplet",
                                 "--margin=-1"],
         "error: --margin must be a finite number >= 0, got -1.0"),
    Case("popularity_alpha_inf", ["--sampler=popularity", "--alpha=inf"],
         "error: --alpha must be a finite number, got inf"),
    # Integers and lists.
    Case("batch_size_not_a_number", ["--batch_size=abc"],
         "error: flag --batch_size=abc: invalid literal for int() with base "
         "10: 'abc'"),
    Case("batch_size_zero", ["--batch_size=0"],
         "error: --batch_size must be >= 1, got 0"),
    Case("epochs_zero", ["--epochs=0"],
         "error: --epochs must be >= 1, got 0"),
    Case("memory_size_negative", ["--sampler=cross_batch",
                                  "--memory_size=-5"],
         "error: --memory_size must be an integer >= 0 (0: the default), "
         "got -5"),
    Case("num_hashes_zero", ["--num_hashes=0"],
         "error: --num_hashes must be an integer >= 1, got 0"),
    Case("xir_one_draw", ["--sampler=xir", "--num_resampled=1"],
         "error: --num_resampled must be 0 (the global batch) or >= 2 for "
         "xir (half batch, half cache draws), got 1"),
    Case("query_hidden_not_a_list", ["--query_hidden=64,abc"],
         "error: --query_hidden=64,abc: expected comma-separated positive "
         "integers such as 128,64, and 'abc' is not one"),
    Case("item_hidden_zero", ["--item_hidden=128,0"],
         "error: --item_hidden=128,0: expected comma-separated positive "
         "integers such as 128,64, and '0' is not one"),
    Case("query_hidden_trailing_comma", ["--query_hidden=64,"],
         "error: --query_hidden=64,: expected comma-separated positive "
         "integers such as 128,64, and '' is not one"),
    Case("scann_leaves_negative", ["--scann_leaves=-1"],
         "error: bad ScaNN override num_leaves=-1; valid: num_leaves, "
         "num_leaves_to_search, num_reordering_candidates (>= 0)"),
    Case("synthetic_users_zero", ["--synthetic_users=0"],
         "error: --synthetic_users must be >= 1, got 0"),
    Case("ps_shards_negative", ["--ps_shards=-1"],
         "error: --ps_shards must be >= 0 (0: one per parameter server), "
         "got -1"),
    # Names.
    Case("unknown_flag", ["--learning_rat=0.1"],
         "error: Unknown command line flag 'learning_rat'. Did you mean: "
         "learning_rate ?"),
    Case("unknown_sampler", ["--sampler=bogus"], None),
    Case("unknown_optimizer", ["--optimizer=sgd"],
         "error: flag --optimizer=sgd: value should be one of "
         "<adam|lazy_adam>"),
    Case("unknown_duplicates", ["--duplicates=drop"],
         "error: flag --duplicates=drop: value should be one of "
         "<keep_first|keep_all|error>"),
    Case("validation_without_rows", ["--eval_split=validation",
                                     "--num_validation=0"],
         "error: --eval_split=validation needs --num_validation >= 1"),
    Case("stray_argument", ["--epochs=1", "cross_batch"],
         "error: unexpected argument(s) cross_batch: flags take the form "
         "--name=value"),
    # Paths.
    Case("csv_without_data_path", ["--dataset=csv"],
         "error: --dataset=csv needs --data_path=<a CSV file with "
         "user_id,item_id,timestamp columns>"),
    Case("csv_missing_file", ["--dataset=csv",
                              "--data_path={tmp}/nope.csv"],
         "error: --data_path={tmp}/nope.csv: file not found"),
    Case("csv_is_a_folder", ["--dataset=csv", "--data_path={tmp}"],
         "error: --data_path={tmp}: is a folder, not a CSV file"),
    Case("movielens_missing_folder", ["--dataset=movielens",
                                      "--data_path={tmp}/ml-nope"],
         "error: --data_path={tmp}/ml-nope: MovieLens folder not found"),
    Case("movielens_not_a_movielens_folder",
         ["--dataset=movielens", "--data_path={tmp}"],
         "data error: {tmp}: not a MovieLens folder (expected u.data for "
         "100K or ratings.dat for 1M)", files={"notes.txt": "hi\n"}),
    Case("synthetic_with_data_path", ["--data_path={tmp}"],
         "error: --data_path applies to --dataset=movielens or csv, not "
         "synthetic"),
    Case("export_dir_is_a_file", ["--export_dir={tmp}/model.txt"],
         "error: --export_dir={tmp}/model.txt is an existing file, not a "
         "folder: pass a new or existing folder",
         files={"model.txt": "x\n"}),
    Case("output_dir_is_a_file", ["--output_dir={tmp}/out"],
         "error: --output_dir={tmp}/out is an existing file, not a folder: "
         "pass a new or existing folder", files={"out": "x\n"}),
    Case("backup_dir_under_a_file", ["--backup_dir={tmp}/f/backup"],
         "error: --backup_dir={tmp}/f/backup: {tmp}/f is a file, so the "
         "folder cannot be created", files={"f": "x\n"}),
    # Data: MovieLens u.data (every line checked, ids in range).
    Case("udata_3_then_5_fields",
         ["--dataset=movielens", "--data_path={tmp}/ml"],
         "data error: {tmp}/ml/u.data, line 1: expected 4 '\\t'-separated "
         "fields, found 3", files=_ml("196\t242\t3\n186\t302\t3\t7\t1\n")),
    Case("udata_id_10_to_the_40",
         ["--dataset=movielens", "--data_path={tmp}/ml"],
         "data error: {tmp}/ml/u.data, line 2: integer out of range "
         "[-2^63, 2^63): '1000000000000000000000000000000000000000...'",
         files=_ml("1\t1\t3\t881250949\n%s\t2\t3\t4\n" % BIG)),
    Case("udata_not_an_integer",
         ["--dataset=movielens", "--data_path={tmp}/ml"],
         "data error: {tmp}/ml/u.data, line 3: not an integer: '2.5'",
         files=_ml("1\t1\t3\t5\n\n1\t2.5\t3\t6\n")),
    Case("udata_empty", ["--dataset=movielens", "--data_path={tmp}/ml"],
         "data error: {tmp}/ml/u.data: no ratings", files=_ml("\n")),
    Case("udata_unknown_movie",
         ["--dataset=movielens", "--data_path={tmp}/ml"],
         "data error: {tmp}/ml/u.data rates items missing from the movie "
         "list: item id '9' is not in the catalog (1 unknown ids: '9'; "
         "catalog has 3 items)", files=_ml("1\t9\t3\t5\n")),
    Case("ratings_dat_short_line",
         ["--dataset=movielens", "--data_path={tmp}/ml1m"],
         "data error: {tmp}/ml1m/ratings.dat, line 2: expected 4 "
         "'::'-separated fields, found 3",
         files={"ml1m/movies.dat": "1::A (1995)::Drama\n",
                "ml1m/ratings.dat": "1::1::5::978300760\n1::1::5\n"}),
    # Data: CSV.
    Case("csv_too_many_fields", ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv, line 3: too many fields: expected 3 as "
         "in the header, found 5",
         files={"a.csv": "user_id,item_id,timestamp\n1,2,3\n1,2,3,4,5\n"}),
    Case("csv_too_few_fields", ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv, line 2: too few fields: expected at "
         "least 3 (for columns user_id, item_id, timestamp), found 2",
         files={"a.csv": "user_id,item_id,timestamp\n1,2\n"}),
    Case("csv_missing_column", ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv, line 1: the header is missing column(s) "
         "timestamp (found: 'user_id', 'item_id', 'time')",
         files={"a.csv": "user_id,item_id,time\n1,2,3\n"}),
    Case("csv_bad_timestamp", ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv, line 3: timestamp is not a number: "
         "'yesterday'",
         files={"a.csv": "user_id,item_id,timestamp\n1,2,3\n1,3,yesterday\n"}),
    Case("csv_timestamp_overflow",
         ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv, line 2: timestamp out of range [-2^63, "
         "2^63): '1e30'",
         files={"a.csv": "user_id,item_id,timestamp\n1,2,1e30\n"}),
    Case("csv_empty", ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv: the file is empty (expected a header "
         "line with columns user_id, item_id, timestamp)",
         files={"a.csv": ""}),
    Case("csv_not_utf8", ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv, line 3: not valid UTF-8 (byte 0xff at "
         "column 3)",
         binary={"a.csv": b"user_id,item_id,timestamp\n1,2,3\n1,\xff,3\n"}),
    Case("csv_nul_in_id", ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv, line 2: user_id contains a NUL "
         "character: '1\\x00'",
         binary={"a.csv": b"user_id,item_id,timestamp\n1\x00,2,3\n"}),
    Case("csv_duplicates_error",
         ["--dataset=csv", "--data_path={tmp}/a.csv", "--duplicates=error"],
         "data error: {tmp}/a.csv, line 4: duplicate interaction (user '1', "
         "item '1'), first seen at line 2; pass --duplicates=keep_first to "
         "keep each pair's earliest row, or --duplicates=keep_all to keep "
         "every row",
         files={"a.csv": "user_id,item_id,timestamp\n1,1,1\n1,2,2\n1,1,3\n"
                         "1,3,4\n"}),
    Case("csv_users_too_short_to_split",
         ["--dataset=csv", "--data_path={tmp}/a.csv"],
         "data error: {tmp}/a.csv: cannot split leave-last-out: every user "
         "has fewer than 3 interactions (4 rows, 2 users)",
         files={"a.csv": "user_id,item_id,timestamp\n1,1,1\n1,2,2\n2,1,3\n"
                         "2,2,4\n"}),
    # Data against the settings.
    Case("batch_larger_than_data",
         ["--dataset=csv", "--data_path={tmp}/a.csv", "--batch_size=64"],
         "error: --batch_size=64 is larger than the training split of "
         "csv:a.csv (3 rows): lower --batch_size", files={"a.csv": GOOD_CSV}),
    Case("batch_larger_than_history_examples",
         ["--dataset=csv", "--data_path={tmp}/a.csv", "--batch_size=3",
          "--query_tower=mean", "--training_rows=window"],
         "error: --batch_size=3 is larger than the 0 next-item examples "
         "(training rows with a history) of csv:a.csv for "
         "--query_tower=mean: lower --batch_size",
         files={"a.csv": GOOD_CSV}),
    Case("batch_larger_than_sequence_rows",
         ["--dataset=csv", "--data_path={tmp}/a.csv", "--batch_size=3",
          "--query_tower=mean"],
         "error: --batch_size=3 is larger than the 0 sequence rows (users "
         "with 2 or more training items) of csv:a.csv: lower --batch_size or "
         "use --training_rows=window",
         files={"a.csv": GOOD_CSV}),
    Case("batch_not_divisible_by_replicas",
         ["--strategy=mirrored", "--cpu_replicas=2", "--batch_size=33",
          "--synthetic_users=100"],
         "error: --batch_size=33 is not divisible by the 2 replicas: use a "
         "multiple of 2"),
    Case("temporal_split_without_known_test_user",
         ["--dataset=csv", "--data_path={tmp}/a.csv", "--split=temporal",
          "--num_validation=0", "--batch_size=2"],
         "error: none of the 1 users of the test split of csv:a.csv is in "
         "the training split, so none can be evaluated (--split=temporal "
         "holds out the latest rows of all users); use "
         "--split=leave_last_out",
         files={"a.csv": "user_id,item_id,timestamp\na,1,1\na,2,2\nb,1,3\n"
                         "b,2,4\nc,3,10\nd,4,11\n"}),
    # A flag the chosen mode ignores (issue 29): one line, before any work.
    Case("sampler_misspelt", ["--sampler=crossbatch"],
         "error: unknown sampler 'crossbatch' (did you mean cross_batch?); "
         "valid samplers: " + ", ".join(common.valid_samplers())),
    Case("sampler_wrong_case", ["--sampler=Cross_Batch"],
         "error: unknown sampler 'Cross_Batch' (did you mean cross_batch?); "
         "valid samplers: " + ", ".join(common.valid_samplers())),
    Case("baseline_with_history_tower",
         ["--sampler=popularity_baseline", "--query_tower=mean"],
         "error: --query_tower applies only to a trained model, not a "
         "model-free baseline (no tower, no training, no export), and this "
         "run has --sampler=popularity_baseline"),
    Case("baseline_with_export", ["--sampler=popularity_baseline",
                                  "--export_dir={tmp}/e"],
         "error: --export_dir applies only to a trained model, not a "
         "model-free baseline (no tower, no training, no export), and this "
         "run has --sampler=popularity_baseline"),
    Case("baseline_with_backup", ["--sampler=ease_baseline",
                                  "--backup_dir={tmp}/b"],
         "error: --backup_dir applies only to a trained model, not a "
         "model-free baseline (no tower, no training, no export), and this "
         "run has --sampler=ease_baseline"),
    Case("baseline_with_tensorboard", ["--sampler=popularity_baseline",
                                       "--tensorboard_dir={tmp}/tb"],
         "error: --tensorboard_dir applies only to a trained model, not a "
         "model-free baseline (no tower, no training, no export), and this "
         "run has --sampler=popularity_baseline"),
    Case("baseline_with_batch_size", ["--sampler=popularity_baseline",
                                      "--batch_size=64"],
         "error: --batch_size applies only to a trained model, not a "
         "model-free baseline (no tower, no training, no export), and this "
         "run has --sampler=popularity_baseline"),
    Case("ease_lambda_without_ease", ["--ease_lambda=10"],
         "error: --ease_lambda applies only to --sampler=ease_baseline, and "
         "this run has --sampler=in_batch_logq"),
    Case("floor_with_export", ["--sampler=plain_tfrs", "--export_dir={tmp}/e"],
         "error: --export_dir applies only to the package's two-tower model, "
         "not the plain-TFRS floor (id embeddings, tfrs.tasks.Retrieval, no "
         "backup, no TensorBoard logs, no export), and this run has "
         "--sampler=plain_tfrs"),
    Case("floor_with_backup", ["--sampler=plain_tfrs", "--backup_dir={tmp}/b"],
         "error: --backup_dir applies only to the package's two-tower model, "
         "not the plain-TFRS floor (id embeddings, tfrs.tasks.Retrieval, no "
         "backup, no TensorBoard logs, no export), and this run has "
         "--sampler=plain_tfrs"),
    Case("floor_with_item_hidden", ["--sampler=plain_tfrs",
                                    "--item_hidden=64"],
         "error: --item_hidden applies only to the package's two-tower model, "
         "not the plain-TFRS floor (id embeddings, tfrs.tasks.Retrieval, no "
         "backup, no TensorBoard logs, no export), and this run has "
         "--sampler=plain_tfrs"),
    Case("floor_with_history_tower", ["--sampler=plain_tfrs",
                                      "--query_tower=mean"],
         "error: the plain_tfrs floor has an id query tower; got "
         "query_tower=mean: pass --query_tower=id"),
    Case("floor_with_sampler_option", ["--sampler=plain_tfrs",
                                       "--memory_size=64"],
         "error: --memory_size does not apply to --sampler=plain_tfrs: the "
         "floor takes no sampler option"),
    Case("option_of_another_sampler", ["--memory_size=64"],
         "error: --memory_size does not apply to --sampler=in_batch_logq (an "
         "option of cross_batch); it takes: --estimator_alpha, "
         "--estimator_hashing, --estimator_update_rule, --num_buckets, "
         "--num_hashes"),
    Case("cpu_replicas_without_mirrored", ["--cpu_replicas=4"],
         "error: --cpu_replicas applies only to --strategy=mirrored, and this "
         "run has --strategy=default"),
    Case("max_history_with_id_tower",
         ["--query_tower=id", "--max_history=20"],
         "error: --max_history applies only to the history towers "
         "(--query_tower=mean, gru or sasrec), and this run has "
         "--query_tower=id"),
    Case("history_user_id_with_id_tower",
         ["--query_tower=id", "--history_user_id"],
         "error: --history_user_id applies only to the history towers "
         "(--query_tower=mean, gru or sasrec), and this run has "
         "--query_tower=id"),
    Case("num_heads_with_mean_tower", ["--query_tower=mean", "--num_heads=2"],
         "error: --num_heads applies only to --query_tower=sasrec, and this "
         "run has --query_tower=mean"),
    Case("dropout_with_gru_tower", ["--query_tower=gru", "--dropout=0.1"],
         "error: --dropout applies only to --query_tower=sasrec, and this run "
         "has --query_tower=gru"),
    Case("top_k_without_export", ["--top_k=10"],
         "error: --top_k applies only to the export (--export_dir), and this "
         "run has no --export_dir"),
    Case("scann_leaves_with_brute_force",
         ["--export_dir={tmp}/e", "--index=brute_force", "--scann_leaves=4"],
         "error: --scann_leaves applies only to --index=scann (or auto), and "
         "this run has --index=brute_force"),
    Case("backup_freq_without_backup", ["--backup_freq=10"],
         "error: --backup_freq applies only to --backup_dir, and this run has "
         "no --backup_dir"),
    Case("synthetic_size_with_csv",
         ["--dataset=csv", "--data_path={tmp}/a.csv", "--synthetic_users=5"],
         "error: --synthetic_users applies only to --dataset=synthetic, and "
         "this run has --dataset=csv", files={"a.csv": GOOD_CSV}),
    Case("temperature_without_normalize", ["--nonormalize",
                                           "--temperature=0.1"],
         "error: --temperature applies only to --normalize (unnormalised "
         "towers score by raw dot products), and this run has --nonormalize"),
    Case("temporal_num_validation_3", ["--split=temporal",
                                       "--num_validation=3"],
         "error: --num_validation=3: --split=temporal takes 0 (no validation "
         "slice) or 1 (the split's validation fraction)"),
    Case("verbose_3", ["--verbose=3"],
         "error: flag --verbose=3: 3 is not an integer in the range [0, 2]"),
    Case("tensorboard_dir_is_a_file", ["--tensorboard_dir={tmp}/f"],
         "error: --tensorboard_dir={tmp}/f is an existing file, not a "
         "folder: pass a new or existing folder", files={"f": "x\n"}),
    # Sizes: the synthetic generator, ScaNN against the catalog (checked
    # after loading, before the model is built).
    Case("synthetic_items_one", ["--synthetic_items=1"],
         "error: --synthetic_items must be >= 3, got 1"),
    Case("scann_leaves_beyond_catalog",
         SMALL + ["--export_dir={tmp}/e", "--index=scann",
                  "--scann_leaves=1000"],
         "error: --scann_leaves=1000 does not fit the catalog of synthetic "
         "(50 items): num_leaves must be in [1, 50] (the catalog size), got "
         "1000"),
    Case("scann_search_beyond_leaves",
         SMALL + ["--export_dir={tmp}/e", "--index=scann",
                  "--scann_leaves=5",
                  "--scann_leaves_to_search=9"],
         "error: --scann_leaves_to_search=9 does not fit the catalog of "
         "synthetic (50 items): num_leaves_to_search must be in [1, 5] "
         "(num_leaves), got 9"),
    Case("scann_reorder_below_k",
         SMALL + ["--export_dir={tmp}/e", "--index=scann",
                  "--top_k=20", "--scann_reorder=10"],
         "error: --scann_reorder=10 does not fit the catalog of synthetic (50 "
         "items): num_reordering_candidates must be in [20, 50] (k, the "
         "catalog size), got 10"),
    # The other programs (subprocesses; they check flags before TF).
    # trainers.tune and trainers.benchmark: all their cases in one process
    # per program (`BATCHED`, tests/trainers/program_cases.py).
    Case("tune_without_output_dir", [], "error: --output_dir is required",
         program="tune"),
    Case("tune_objective_unknown", ["--output_dir={tmp}/o",
                                    "--objective=accuracy"],
         "error: --objective=accuracy is not a metric a run reports; valid: "
         "recall@10, recall@50, recall@100, hr@10, hr@50, hr@100, ndcg@10, "
         "ndcg@50, ndcg@100, balance, balance_ndcg, coverage@10",
         program="tune"),
    Case("tune_trials_zero", ["--output_dir={tmp}/o", "--trials=0"],
         "error: --trials and --final_seeds must be >= 1", program="tune"),
    Case("tune_unknown_sampler", ["--output_dir={tmp}/o", "--samplers=xirr"],
         "error: unknown samplers xirr; valid: %s; baselines: "
         "popularity_baseline, ease_baseline" % ", ".join(
             s for s in common.valid_samplers()
             if s not in common.OTHER_SAMPLERS), program="tune"),
    Case("tune_export_dir", ["--output_dir={tmp}/o", "--export_dir={tmp}/e"],
         "error: --export_dir does not apply to trainers.tune: its trials and "
         "final runs write metrics only (train the chosen setting with "
         "trainers.train for an export)", program="tune"),
    Case("tune_sampler_flag", ["--output_dir={tmp}/o", "--sampler=xir"],
         "error: --sampler does not apply to trainers.tune: it tunes the "
         "samplers of --samplers", program="tune"),
    Case("tune_eval_split", ["--output_dir={tmp}/o", "--eval_split=test"],
         "error: --eval_split does not apply to trainers.tune: trials are "
         "scored on the validation split and the best settings on test",
         program="tune"),
    Case("tune_option_of_no_tuned_sampler",
         ["--output_dir={tmp}/o", "--samplers=xir", "--memory_size=64"],
         "error: --memory_size is an option of cross_batch, which is not run "
         "here (the runs: ease_baseline, popularity_baseline, xir)",
         program="tune"),
    Case("tune_num_blocks_without_sasrec",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--query_tower=id",
          "--num_blocks=3"],
         "error: --num_blocks applies only to --query_tower=sasrec, and none "
         "of the tuned runs does (--query_tower=id)", program="tune"),
    Case("tune_ease_lambda_without_ease",
         ["--output_dir={tmp}/o", "--samplers=in_batch",
          "--baselines=popularity_baseline", "--ease_lambda=5"],
         "error: --ease_lambda applies only to --sampler=ease_baseline, and "
         "none of the tuned runs does (--sampler=in_batch / "
         "--sampler=popularity_baseline)", program="tune"),
    Case("tune_query_tower_with_towers",
         ["--output_dir={tmp}/o", "--towers=mean", "--query_tower=gru"],
         "error: --query_tower does not apply with --towers (each study has "
         "its tower)", program="tune"),
    Case("tune_towers_without_data", ["--output_dir={tmp}/o",
                                      "--towers=mean"],
         "error: --towers and --search apply to the transfer study: give "
         "--data too", program="tune"),
    Case("tune_final_seeds_with_data",
         ["--output_dir={tmp}/o", "--data=a:csv:{tmp}/a.csv",
          "--final_seeds=2"],
         "error: --final_seeds does not apply to the transfer study (--data "
         "sets the data and evaluates on each validation split; the chosen "
         "defaults are measured on test with trainers.benchmark)",
         program="tune", files={"a.csv": GOOD_CSV}),
    Case("benchmark_without_output_dir", [],
         "error: --output_dir is required", program="benchmark"),
    Case("benchmark_seeds_zero", ["--output_dir={tmp}/o", "--seeds=0"],
         "error: --seeds=0 runs nothing: give a count >= 1 (seeds 0..N-1) or "
         "a list of seeds", program="benchmark"),
    Case("benchmark_seeds_not_a_number", ["--output_dir={tmp}/o",
                                          "--seeds=abc"],
         "error: --seeds=abc: give a count N >= 1 (seeds 0..N-1) or a list "
         "of seeds >= 0 such as 3,7,11", program="benchmark"),
    Case("benchmark_seeds_negative", ["--output_dir={tmp}/o",
                                      "--seeds=1,-2"],
         "error: --seeds=1,-2: give a count N >= 1 (seeds 0..N-1) or a list "
         "of seeds >= 0 such as 3,7,11", program="benchmark"),
    Case("benchmark_seeds_repeated", ["--output_dir={tmp}/o", "--seeds=1,1"],
         "error: --seeds=1,1 repeats a seed", program="benchmark"),
    Case("benchmark_sampler_flag", ["--output_dir={tmp}/o", "--sampler=xir"],
         "error: --sampler does not apply to trainers.benchmark: it compares "
         "the samplers of --samplers, --variants or --suite",
         program="benchmark"),
    Case("benchmark_backup_dir", ["--output_dir={tmp}/o",
                                  "--backup_dir={tmp}/b"],
         "error: --backup_dir does not apply to trainers.benchmark: each run "
         "keeps its own backup in OUTPUT_DIR/runs/<variant>/seed<k>/backup "
         "until it finishes, and the same command resumes it",
         program="benchmark"),
    Case("benchmark_unknown_suite", ["--output_dir={tmp}/o", "--suite=cbn"],
         "error: unknown suite 'cbn'; valid: cbns, cbns_history, floor, "
         "ml1m_sasrec, towers, xir", program="benchmark"),
    Case("benchmark_samplers_with_suite",
         ["--output_dir={tmp}/o", "--suite=xir", "--samplers=in_batch"],
         "error: --samplers does not apply with --suite, which names the "
         "variants", program="benchmark"),
    Case("benchmark_reference_not_a_variant",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--reference=xir"],
         "error: --reference=xir is not a variant; the variants: in_batch",
         program="benchmark"),
    Case("benchmark_timing_with_seeds",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--timing_steps=5",
          "--seeds=2"],
         "error: --seeds does not apply to a timing run (--timing_steps > 0: "
         "step times only, each a ratio to the floor)", program="benchmark"),
    Case("benchmark_timing_rounds_without_timing",
         ["--output_dir={tmp}/o", "--samplers=in_batch",
          "--timing_rounds=3"],
         "error: --timing_rounds applies only with --timing_steps > 0",
         program="benchmark"),
    Case("benchmark_timing_rounds_zero",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--timing_steps=5",
          "--timing_rounds=0"],
         "error: --timing_rounds must be >= 1, got 0", program="benchmark"),
    Case("benchmark_then_best_negative",
         ["--output_dir={tmp}/o", "--samplers=in_batch",
          "--then_best_minutes=-1"],
         "error: --then_best_minutes must be >= 0, got -1.0",
         program="benchmark"),
    Case("benchmark_then_best_patience_without_minutes",
         ["--output_dir={tmp}/o", "--samplers=in_batch",
          "--then_best_patience=3"],
         "error: --then_best_patience applies only with --then_best_minutes "
         "> 0", program="benchmark"),
    Case("benchmark_then_best_without_validation",
         ["--output_dir={tmp}/o", "--samplers=in_batch",
          "--then_best_minutes=5", "--validate_every=0"],
         "error: --then_best_minutes=5 picks the variant by its validation "
         "metric: it needs --validate_every > 0 and a validation split "
         "(--num_validation >= 1)", program="benchmark"),
    Case("benchmark_then_best_with_timing",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--timing_steps=5",
          "--then_best_minutes=5"],
         "error: --then_best_minutes does not apply to a timing run "
         "(--timing_steps > 0: step times only, each a ratio to the floor)",
         program="benchmark"),
    Case("benchmark_logq_floor_without_timing",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--floor",
          "--logq_floor"],
         "error: --logq_floor applies only with --timing_steps > 0",
         program="benchmark"),
    Case("benchmark_logq_floor_without_floor",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--timing_steps=5",
          "--logq_floor"],
         "error: --logq_floor adds floors beside the plain-TFRS one: it needs "
         "--floor (or --suite=floor)", program="benchmark"),
    Case("benchmark_option_of_no_variant",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--memory_size=64"],
         "error: --memory_size is an option of cross_batch, which is not run "
         "here (the runs: in_batch)", program="benchmark"),
    Case("benchmark_history_flag_without_history_tower",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--query_tower=id",
          "--max_history=20"],
         "error: --max_history applies only to the history towers "
         "(--query_tower=mean, gru or sasrec), and none of the variants does "
         "(--query_tower=id)", program="benchmark"),
    Case("benchmark_only_keeps_nothing",
         ["--output_dir={tmp}/o", "--samplers=in_batch", "--only=zz"],
         "error: --only=zz keeps no variant", program="benchmark"),
    Case("query_without_model_dir", [],
         "error: flag --model_dir=None: Flag --model_dir must have a value "
         "other than None.", program="query"),
    Case("query_missing_model", ["--model_dir={tmp}/none"],
         "error: no SavedModel at --model_dir={tmp}/none (saved_model.pb "
         "missing)", program="query"),
    Case("query_k_zero", ["--model_dir={tmp}/m", "--k=0"],
         "error: --k must be >= 1, got 0", program="query",
         files={"m/saved_model.pb": ""}),
    Case("serve_port_out_of_range", ["--model_dir={tmp}", "--port=70000"],
         "error: --port must be in [0, 65535], got 70000", program="serve"),
    Case("serve_no_threads", ["--model_dir={tmp}", "--threads=0"],
         "error: --threads must be >= 1, got 0", program="serve"),
    Case("bench_index_max_seconds_nan",
         ["--output_dir={tmp}/o", "--max_seconds=nan"],
         "error: --max_seconds must be a finite number > 0, got nan",
         program="bench_index"),
    Case("bench_index_sizes_not_numbers",
         ["--output_dir={tmp}/o", "--sizes=10,abc"],
         "error: --sizes and --search_multipliers take numbers: invalid "
         "literal for int() with base 10: 'abc'", program="bench_index"),
    Case("bench_sequence_unknown_part", ["--parts=cost,speed"],
         "error: --parts=cost,speed: unknown part 'speed'; valid: cost, "
         "epoch, crop", program="bench_sequence"),
    Case("bench_sequence_chunk_zero", ["--chunk_size=0"],
         "error: --chunk_size=0: must be >= 1", program="bench_sequence"),
    Case("bench_sequence_missing_csv", ["--data_path={tmp}/none.csv"],
         "data error: {tmp}/none.csv: file not found",
         program="bench_sequence"),
    Case("load_test_time_limit_inf", ["--time_limit=inf"],
         "error: --time_limit must be a finite number > 0, got inf",
         program="load_test"),
    Case("load_test_remote_url", ["--url=http://example.com:8501",
                                  "--num_requests=1"],
         "error: refusing to load-test 'example.com': the load test only "
         "targets the loopback interface (127.0.0.0/8, [::1] or localhost)",
         program="load_test"),
]


def _materialize(case: Case, tmp: str):
  for name, text in case.files.items():
    path = os.path.join(tmp, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="latin-1") as f:
      f.write(text)
  for name, data in case.binary.items():
    with open(os.path.join(tmp, name), "wb") as f:
      f.write(data)
  return [a.replace("{tmp}", tmp) for a in case.argv]


def train_error_line(argv: Sequence[str]):
  """What `trainers.train ARGV` prints before building a model, or None.

  The steps of `trainers.train.main` and `experiment.run` up to
  `create_model`: flags, config (`common.training_config`), strategy
  replicas, data, data checks.
  """
  try:
    try:
      rest = FLAGS(["train"] + list(argv))
      if len(rest) > 1:
        raise common.UsageError("unexpected argument(s) %s: flags take the "
                                "form --name=value" % " ".join(rest[1:]))
      config = common.training_config()
      replicas = config.cpu_replicas if config.strategy == "mirrored" else 1
      dataset = inputs.load_data(config)
      configuration.check_dataset(config, dataset, replicas)
    except Exception as e:  # pylint: disable=broad-except
      return common.error_line(e)
    return None
  finally:
    FLAGS.unparse_flags()


def _program(name, argv, env=None):
  env = dict(os.environ if env is None else env)
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  env.pop(common.TRACEBACK_ENV, None)
  return subprocess.run([sys.executable, "-m", "trainers." + name] + argv,
                        cwd=ROOT, env=env, capture_output=True, text=True,
                        timeout=300, check=False)


def _expected(case, tmp):
  return case.message.replace("{tmp}", tmp)


def test_the_table_has_at_least_40_cases():
  assert len(CASES) >= 40
  assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if c.program == "train"],
                         ids=lambda c: c.name)
def test_trainer_bad_input_is_one_clear_line(case, tmp_path):
  tmp = str(tmp_path)
  argv = _materialize(case, tmp)
  line, code = train_error_line(argv)
  assert "\n" not in line
  assert code == case.code
  if case.message is None:
    return  # checked by the dedicated tests below
  assert line == _expected(case, tmp)


@pytest.mark.parametrize("case", [c for c in CASES
                                  if c.program not in ("train",) + BATCHED],
                         ids=lambda c: c.name)
def test_program_bad_input_is_one_clear_line(case, tmp_path):
  tmp = str(tmp_path)
  argv = _materialize(case, tmp)
  out = _program(case.program, argv)
  assert out.returncode == case.code, out.stderr
  assert "Traceback" not in out.stderr
  lines = out.stderr.strip().splitlines()
  assert len(lines) == 1, out.stderr
  if case.message is not None:
    assert lines[0] == _expected(case, tmp)


# `ACCEPTED`: command lines of the `BATCHED` programs that pass every check
# and get to work (a check must not refuse them).
ACCEPTED = {
    "tune": [["--output_dir={tmp}/o", "--samplers=cross_batch,in_batch",
              "--memory_size=64", "--trials=1"],
             ["--output_dir={tmp}/o", "--samplers=in_batch",
              "--towers=id,sasrec", "--num_blocks=1",
              "--data=a:csv:{tmp}/a.csv"]],
    "benchmark": [["--output_dir={tmp}/o", "--samplers=cross_batch,in_batch",
                   "--memory_size=64", "--seeds=3,7"],
                  ["--output_dir={tmp}/o", "--suite=towers",
                   "--num_blocks=1"],
                  # A suite's settings yield to the command line.
                  ["--output_dir={tmp}/o", "--suite=xir", "--batch_size=64"],
                  ["--output_dir={tmp}/o", "--samplers=in_batch",
                   "--timing_steps=5", "--timing_rounds=1"],
                  # The presets pass their own checks at the defaults.
                  ["--output_dir={tmp}/o", "--suite=floor",
                   "--only=B256_id"],
                  ["--output_dir={tmp}/o", "--suite=ml1m_sasrec"]],
}


def _batch_cases(program):
  return [c for c in CASES if c.program == program]


@pytest.fixture(scope="module")
def batched(tmp_path_factory):
  """{program: (results of its cases, of ACCEPTED, of --help)}, {case: tmp}."""
  found, tmps = {}, {}
  for program in BATCHED:
    argvs = []
    for case in _batch_cases(program):
      tmps[case.name] = str(tmp_path_factory.mktemp(case.name))
      argvs.append(_materialize(case, tmps[case.name]))
    accepted = []
    for argv in ACCEPTED[program]:
      tmp = str(tmp_path_factory.mktemp(program + "_accepted"))
      with open(os.path.join(tmp, "a.csv"), "w") as f:
        f.write(GOOD_CSV)
      accepted.append([a.replace("{tmp}", tmp) for a in argv])
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, "-m", "tests.trainers.program_cases",
         "trainers." + program,
         json.dumps(argvs + accepted + [["--help"], ["--helpfull"]])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
        check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads(out.stdout.strip().splitlines()[-1])
    n = len(argvs)
    found[program] = (results[:n], results[n:n + len(accepted)],
                      results[n + len(accepted):])
  return found, tmps


@pytest.mark.parametrize("case", [c for c in CASES if c.program in BATCHED],
                         ids=lambda c: c.name)
def test_tune_and_benchmark_bad_input_is_one_clear_line(case, batched):
  found, tmps = batched
  results = found[case.program][0]
  result = results[_batch_cases(case.program).index(case)]
  assert not result["started"], case.name
  assert result["code"] == case.code, result
  assert "Traceback" not in result["stderr"]
  lines = result["stderr"].strip().splitlines()
  assert len(lines) == 1, result["stderr"]
  assert lines[0] == _expected(case, tmps[case.name])


@pytest.mark.parametrize("program", BATCHED)
def test_valid_combinations_get_to_work(program, batched):
  for argv, result in zip(ACCEPTED[program], batched[0][program][1]):
    assert result["started"], (argv, result["stderr"])
    assert result["stderr"] == "", result["stderr"]


@pytest.mark.parametrize("program", BATCHED)
def test_help_of_tune_and_benchmark(program, batched):
  short, full = batched[0][program][2]
  assert short["code"] == 0 and full["code"] == 0
  assert short["stderr"] == "" and full["stderr"] == ""
  text = short["stdout"]
  assert text.startswith({"tune": "Tunes every sampler",
                          "benchmark": "Benchmarks samplers"}[program])
  own = {"tune": ["--objective", "--trials", "--samplers"],
         "benchmark": ["--seeds", "--variants", "--samplers"]}[program]
  assert "\ntrainers.%s:\n" % program in text
  for flag in own + ["--batch_size", "--memory_size"]:
    assert "  " + flag + "=" in text, flag
  # Refused here: not listed (--sampler=, not --samplers=).
  for flag in ("--export_dir=", "--backup_dir=", "--sampler="):
    assert "  " + flag not in text, flag
  assert "--logtostderr" not in text
  assert "--[no]logtostderr" in full["stdout"]


def test_unknown_sampler_names_the_valid_ones(tmp_path):
  line, code = train_error_line(["--sampler=bogus"])
  assert code == 2
  assert line.startswith("error: unknown sampler 'bogus'; valid samplers: ")
  for name in ("in_batch_logq", "popularity_baseline", "ease_baseline",
               "plain_tfrs"):
    assert name in line


def test_run_checks_the_data_before_building_the_model(tmp_path,
                                                       monkeypatch):
  path = tmp_path / "a.csv"
  path.write_text(GOOD_CSV)
  built = []
  monkeypatch.setattr(assembly, "create_model",
                      lambda *a, **k: built.append(1))
  config = configuration.ExperimentConfig(dataset="csv", data_path=str(path),
                                       batch_size=64, verbose=0)
  with pytest.raises(configuration.ConfigError, match="--batch_size=64 is "
                     "larger than the training split"):
    experiment.run(config)
  assert not built


# Real trainer processes: exit status 2, one line, no stack, no docstring.
@pytest.mark.parametrize("name", [
    "unknown_flag", "learning_rate_nan",
    # Another TensorFlow import (~5 s, more on a loaded machine).
    pytest.param("udata_3_then_5_fields", marks=pytest.mark.slow)])
def test_trainer_process_exits_2_with_one_line(name, tmp_path):
  case = next(c for c in CASES if c.name == name)
  tmp = str(tmp_path)
  out = _program("train", _materialize(case, tmp))
  assert out.returncode == 2, out.stderr
  assert "Traceback" not in out.stderr
  assert "Trains a two-tower retriever" not in out.stderr  # the docstring
  assert out.stderr.strip().splitlines() == [_expected(case, tmp)]


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_traceback_on_request(how, tmp_path):
  (tmp_path / "saved_model.pb").write_text("")
  argv = ["--k=0", "--model_dir=%s" % tmp_path]
  env = dict(os.environ)
  if how == "flag":
    argv.append("--verbose_errors")
    env.pop(common.TRACEBACK_ENV, None)
  else:
    env[common.TRACEBACK_ENV] = "1"
  env["TF_CPP_MIN_LOG_LEVEL"] = "3"
  env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
  out = subprocess.run([sys.executable, "-m", "trainers.query"] + argv,
                       cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300, check=False)
  assert out.returncode == 2
  assert "Traceback (most recent call last)" in out.stderr
  assert out.stderr.strip().splitlines()[-1] == (
      "error: --k must be >= 1, got 0")


def markdown_table(tmp="<tmp>") -> str:
  rows = ["| # | input | message (stderr) | exit code |",
          "|---:|---|---|---:|"]
  for i, case in enumerate(CASES, 1):
    files = "; ".join(
        "`%s`: %s" % (n, "3 movies" if t == U_ITEM else "`%r`" % (t,))
        for n, t in list(case.files.items()) + list(case.binary.items()))
    command = "`trainers.%s %s`" % (case.program, " ".join(case.argv))
    command = command.replace("{tmp}", tmp)
    if files:
      command += " with " + files.replace("{tmp}", tmp)
    message = case.message
    if message is None:  # the list of samplers: ask the trainer's checks
      message = train_error_line(case.argv)[0]
    rows.append("| %d | %s | `%s` | %d |" % (
        i, command.replace("|", "\\|"),
        message.replace("{tmp}", tmp).replace("|", "\\|"), case.code))
  return "\n".join(rows) + "\n"


if __name__ == "__main__":
  print(markdown_table())
