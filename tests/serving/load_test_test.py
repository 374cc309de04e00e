"""The bounded load test: loopback only, and 0 errors on a healthy server."""

import json

import pytest

from trainers.serving import load_test


def test_requests_at_concurrency_without_errors(served, tmp_path):
  result = load_test.run_load_test(
      "http://127.0.0.1:%d" % served.port, num_requests=50, concurrency=4,
      batch_size=2, k=5, user_ids=["0", "1", "2", "never-seen"],
      time_limit_s=60)
  assert (result.sent, result.succeeded, result.errors) == (50, 50, 0)
  assert not result.stopped_by_time_limit
  assert result.requests_per_second > 0
  assert 0 < result.p50_ms <= result.p99_ms <= result.max_ms
  paths = load_test.write_result(result, str(tmp_path / "load.json"))
  assert json.loads(open(paths[0]).read())["errors"] == 0
  assert "| 50 | 4 | 2 | 5 | 0 |" in open(paths[1]).read()


def test_errors_are_counted(served):
  # k above the index's k: every request is a 400, counted, none crashes.
  result = load_test.run_load_test(
      "http://localhost:%d" % served.port, num_requests=8, concurrency=2,
      k=1000, time_limit_s=30)
  assert result.errors == 8
  assert result.error_kinds == {"HTTP 400": 8}
  unknown = load_test.run_load_test(
      "http://127.0.0.1:%d" % served.port, model_name="nope",
      num_requests=3, concurrency=1, time_limit_s=30)
  assert unknown.error_kinds == {"HTTP 404": 3}


def test_time_limit_stops_the_run(served):
  result = load_test.run_load_test(
      "http://127.0.0.1:%d" % served.port, num_requests=100_000,
      concurrency=2, time_limit_s=0.5)
  assert result.stopped_by_time_limit
  assert result.sent < 100_000
  assert result.errors == 0


@pytest.mark.parametrize("url", [
    "http://10.0.0.1:8501", "http://192.168.1.2:8501", "http://8.8.8.8",
    "http://example.com:8501", "http://0.0.0.0:8501"])
def test_refuses_non_loopback_hosts(url):
  with pytest.raises(ValueError, match="only targets the loopback"):
    load_test.run_load_test(url, num_requests=1)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:1", "http://127.5.0.1:1", "http://localhost:1",
    "http://[::1]:1", "127.0.0.1:1"])
def test_accepts_loopback_hosts(url):
  load_test.parse_url(url)


def test_bounds():
  url = "http://127.0.0.1:1"
  with pytest.raises(ValueError, match="num_requests"):
    load_test.run_load_test(url, num_requests=0)
  with pytest.raises(ValueError, match="num_requests"):
    load_test.run_load_test(url, num_requests=load_test.MAX_REQUESTS + 1)
  with pytest.raises(ValueError, match="concurrency"):
    load_test.run_load_test(url, concurrency=1000)
  with pytest.raises(ValueError, match="time_limit_s"):
    load_test.run_load_test(url, time_limit_s=0)
  with pytest.raises(ValueError, match="only http"):
    load_test.parse_url("https://127.0.0.1:1")


def test_percentile():
  assert load_test.percentile([3.0, 1.0, 2.0], 50) == 2.0
  assert load_test.percentile([0.0, 10.0], 99) == pytest.approx(9.9)
  assert load_test.percentile([], 50) != load_test.percentile([], 50)  # nan
