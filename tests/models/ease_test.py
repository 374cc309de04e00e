"""EASE^R: closed form, memory refusal, lambda chosen on validation."""

import numpy as np
import pytest

from tfrs_negsamp import data as data_lib
from trainers.pipeline import configuration
from trainers.pipeline import experiment
from tfrs_negsamp import protocol
from tfrs_negsamp.models import ease


def _random_matrix(num_users=30, num_items=12, density=0.3, seed=0):
  rng = np.random.default_rng(seed)
  dense = (rng.random((num_users, num_items)) < density).astype(np.float32)
  rows, cols = np.nonzero(dense)
  return ease.interaction_matrix(rows, cols, num_users, num_items), dense


def test_weights_equal_the_closed_form_with_a_zero_diagonal():
  x, dense = _random_matrix()
  lam = 5.0
  b = ease.fit(x, lam)
  # Closed form with an independent inverse (float64 LU).
  g = dense.T.astype(np.float64) @ dense + lam * np.eye(dense.shape[1])
  p = np.linalg.inv(g)
  expected = np.eye(g.shape[0]) - p / np.diag(p)[None, :]
  assert b.dtype == np.float32
  np.testing.assert_allclose(np.diag(b), 0.0)
  np.testing.assert_allclose(b, expected, atol=1e-5)


def test_weights_solve_the_constrained_least_squares_per_column():
  # Column j: min ||x_j - X_{-j} b||^2 + lam ||b||^2 over b (b_j = 0), a
  # ridge regression on the other columns.
  x, dense = _random_matrix(num_users=25, num_items=8, seed=3)
  lam = 2.0
  b = ease.fit(x, lam)
  n = dense.shape[1]
  for j in range(n):
    others = [i for i in range(n) if i != j]
    a = dense[:, others].astype(np.float64)
    coef = np.linalg.solve(a.T @ a + lam * np.eye(n - 1),
                           a.T @ dense[:, j])
    np.testing.assert_allclose(b[others, j], coef, atol=1e-5)
    assert b[j, j] == 0.0


def test_repeated_pairs_count_once():
  x = ease.interaction_matrix([0, 0, 1], [2, 2, 1], 2, 3)
  np.testing.assert_array_equal(x.toarray(), [[0, 0, 1], [0, 1, 0]])


def test_scores_are_user_rows_times_b():
  x, dense = _random_matrix()
  b = ease.fit(x, 3.0)
  scores = ease.score_fn(x, b)(np.array([4, 1]))
  np.testing.assert_allclose(scores, dense[[4, 1]] @ b, atol=1e-5)


def test_refuses_with_one_clear_message_when_the_matrices_do_not_fit(
    monkeypatch):
  with pytest.raises(ease.EaseMemoryError) as info:
    ease.check_memory(23715, copies=2, available=3 * 2**30)
  message = str(info.value)
  assert "ease_baseline refuses" in message
  assert "23715 x 23715" in message and "4.19 GB" in message
  assert ease.MEMORY_ENV in message
  # The environment variable overrides MemAvailable, both ways.
  monkeypatch.setenv(ease.MEMORY_ENV, "0")
  x, _ = _random_matrix()
  with pytest.raises(MemoryError, match="refuses"):
    ease.fit(x, 1.0)
  monkeypatch.setenv(ease.MEMORY_ENV, "100")
  assert ease.check_memory(23715, copies=2) == 2 * 4 * 23715**2


def test_available_memory_reads_proc_meminfo(monkeypatch):
  monkeypatch.delenv(ease.MEMORY_ENV, raising=False)
  assert ease.available_memory_bytes() > 0


def test_lambda_grid_is_the_reference_grid_up_to_10x_the_top_count():
  x, _ = _random_matrix(num_users=600, num_items=10, density=0.5)
  assert ease.lambda_grid(x) == ease.LAMBDA_GRID  # top count ~300
  tiny, _ = _random_matrix(num_users=30, num_items=10, density=0.3)
  grid = ease.lambda_grid(tiny)  # top count <= 30: up to 300
  assert len(grid) >= 3 and max(grid) <= 300.0
  assert grid == ease.LAMBDA_GRID[:len(grid)]


def test_select_lambda_walks_to_the_peak():
  x, _ = _random_matrix()
  grid = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
  evaluated = []

  def objective(b):
    lam = _lambda_of(x, b, grid)
    evaluated.append(lam)
    return -abs(np.log2(lam) - 5.0)  # peak at 32

  chosen, b, scores = ease.select_lambda(x, objective, grid, progress=False)
  assert chosen == 32.0
  np.testing.assert_allclose(b, ease.fit(x, 32.0), atol=1e-6)
  assert 1.0 not in scores  # the walk went upwards only
  assert set(scores) == set(evaluated)


def _lambda_of(x, b, grid):
  return min(grid, key=lambda lam: np.abs(ease.fit(x, lam) - b).max())


def test_lambda_is_chosen_on_validation_not_test():
  # A tiny synthetic set (seed found by search) where validation prefers
  # the small lambda and test the large one.
  dataset = data_lib.load_dataset(
      "synthetic", seed=9, num_users=40, num_items=30,
      interactions_per_user=6, split_kwargs={"num_validation": 1})
  grid = (0.1, 300.0)
  kw = dict(progress=False, objective="ndcg@10", grid=grid)
  val = protocol.evaluation_sets(dataset, "validation")
  test = protocol.evaluation_sets(dataset, "test")
  by_lam = {lam: (protocol.evaluate_ease(dataset, val, lam, **kw)["ndcg@10"],
                  protocol.evaluate_ease(dataset, test, lam, **kw)["ndcg@10"])
            for lam in grid}
  assert by_lam[0.1][0] > by_lam[300.0][0] + 0.01, by_lam  # validation
  assert by_lam[300.0][1] > by_lam[0.1][1] + 0.05, by_lam  # test
  metrics = protocol.evaluate_ease(dataset, test, 0.0, **kw)
  assert metrics["ease_lambda"] == 0.1
  assert metrics["ease_lambda_selected"]
  assert metrics["ease_objective"] == "validation ndcg@10"
  assert metrics["ndcg@10"] == pytest.approx(by_lam[0.1][1])
  # Evaluated on validation, the same choice.
  assert protocol.evaluate_ease(dataset, val, 0.0, **kw)["ease_lambda"] == 0.1


def test_ease_baseline_runs_through_the_experiment(tmp_path):
  config = configuration.ExperimentConfig(
      sampler="ease_baseline", output_dir=str(tmp_path), verbose=0,
      synthetic={"num_users": 80, "num_items": 30,
                 "interactions_per_user": 8})
  metrics = experiment.run(config)
  for key in ("recall@10", "recall@50", "recall@100", "ndcg@10",
              "balance", "ease_lambda", "ease_lambda_scores"):
    assert key in metrics, key
  assert metrics["ease_lambda"] in [
      float(k) for k in metrics["ease_lambda_scores"]]
  assert (tmp_path / "metrics.json").exists()
