"""The defaults study's table: seeds of a label are one row, mean +- std."""

import json

from tests import tool_modules


def _tool():
  return tool_modules.load("study_table")


def _write(folder, **metrics):
  folder.mkdir(parents=True)
  (folder / "metrics.json").write_text(json.dumps(metrics))



def test_seeds_of_a_label_make_one_row_of_mean_and_sample_std(tmp_path):
  runs = tmp_path / "runs"
  for name, recall in (("d-s1-xir", 0.2), ("d-s1-xir.s1", 0.4),
                       ("d-s1-xir.s2", 0.6), ("d-s1-bir", 0.5)):
    _write(runs / name, **{"recall@50": recall, "hr@10": recall / 2,
                           "ndcg@10": recall / 4, "best_epoch": 3,
                           "train_seconds": 120.0,
                           "best_validation": recall + 0.1})
  _write(runs / "d-s1-popularity_baseline",
         **{"recall@50": 0.25, "hr@10": 0.1, "ndcg@10": 0.05})
  lines = _tool().table(str(runs), str(tmp_path / "none"), "d-", "s1")
  rows = {line.split(" | ")[0][2:]: line.split(" | ")
          for line in lines[2:]}
  assert set(rows) == {"*popularity*", "bir", "xir"}
  xir = rows["xir"]
  # n = 3; mean 0.4, sample std 0.2 (not the population std 0.163).
  assert xir[1] == "3"
  assert xir[2] == "0.5000 ± 0.2000"  # best validation
  assert xir[3] == "0.4000 ± 0.2000"
  assert xir[4] == "0.2000 ± 0.1000"
  assert xir[6] == "1.60"  # 0.4 / 0.25, above the bar
  assert xir[8] == "3/3/3" and xir[9] == "2.0"
  bir = rows["bir"]
  assert bir[1] == "1" and bir[2] == "0.6000" and bir[3] == "0.5000"
  # Sorted by mean recall@50: bir (0.5) before xir (0.4).
  order = [line.split(" | ")[0][2:] for line in lines[3:]]
  assert order == ["bir", "xir"]


def test_validation_cell_is_empty_unless_every_seed_has_it(tmp_path):
  runs = tmp_path / "runs"
  base = {"recall@50": 0.3, "hr@10": 0.1, "ndcg@10": 0.05, "best_epoch": 2,
          "train_seconds": 60.0}
  _write(runs / "d-s1-uniform", **base, best_validation=0.4)
  _write(runs / "d-s1-uniform.s1", **base)  # a run without validation
  lines = _tool().table(str(runs), str(tmp_path / "none"), "d-", "s1")
  row = lines[2].split(" | ")
  assert row[0] == "| uniform" and row[1] == "2"
  assert row[2] == "" and row[3] == "0.3000"
