"""A bounded load test of the REST server, on the loopback interface only.

`run_load_test` sends `num_requests` predict requests from `concurrency`
threads (stdlib `http.client`, one keep-alive connection per thread) and
reports throughput, latency percentiles and errors. It refuses any host that
is not a loopback address (127.0.0.0/8, ::1, `localhost`) and stops by
itself: after `num_requests` requests or `time_limit_s` seconds, whichever
comes first, with a per-request socket timeout.

A request counts as an error unless it is answered 200 with one prediction
per user; its latency is measured from sending the request to reading the
whole response.
"""

import collections
import contextlib
import dataclasses
import http.client
import ipaddress
import json
import math
import os
import threading
import time
import urllib.parse
from typing import Any, Dict, List, Optional, Sequence, Tuple

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 256
MAX_TIME_LIMIT_S = 3600.0


def check_loopback(host: str) -> None:
  """Raises ValueError unless `host` is `localhost` or a loopback address."""
  name = host.strip().strip("[]").lower()
  if name in ("localhost", "localhost."):
    return
  with contextlib.suppress(ValueError):  # a host name, not an address
    if ipaddress.ip_address(name).is_loopback:
      return
  raise ValueError(
      "refusing to load-test %r: the load test only targets the loopback "
      "interface (127.0.0.0/8, [::1] or localhost)" % host)


def parse_url(url: str) -> Tuple[str, int]:
  """`http://HOST:PORT` -> (host, port), checking that HOST is loopback."""
  parts = urllib.parse.urlsplit(url if "://" in url else "http://" + url)
  if parts.scheme != "http":
    raise ValueError("only http:// URLs are supported, got %r" % url)
  if not parts.hostname:
    raise ValueError("no host in %r" % url)
  check_loopback(parts.hostname)
  return parts.hostname, parts.port or 80


def percentile(values: Sequence[float], q: float) -> float:
  """The `q`-th percentile (0-100, linear interpolation); nan if empty."""
  if not values:
    return float("nan")
  ordered = sorted(values)
  rank = (len(ordered) - 1) * q / 100.0
  low, high = math.floor(rank), math.ceil(rank)
  return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclasses.dataclass
class LoadTestResult:
  """What a load test measured (latencies in milliseconds)."""
  url: str
  model_name: str
  num_requests: int
  concurrency: int
  batch_size: int
  k: int
  sent: int
  succeeded: int
  errors: int
  error_kinds: Dict[str, int]
  seconds: float
  requests_per_second: float
  users_per_second: float
  p50_ms: float
  p90_ms: float
  p99_ms: float
  max_ms: float
  stopped_by_time_limit: bool

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)

  def to_markdown(self) -> str:
    header = ("| requests | concurrency | users/request | k | errors | "
              "seconds | requests/s | users/s | p50 ms | p90 ms | p99 ms | "
              "max ms |")
    row = ("| %d | %d | %d | %d | %d | %.2f | %.1f | %.1f | %.2f | %.2f | "
           "%.2f | %.2f |" % (
               self.sent, self.concurrency, self.batch_size, self.k,
               self.errors, self.seconds, self.requests_per_second,
               self.users_per_second, self.p50_ms, self.p90_ms, self.p99_ms,
               self.max_ms))
    lines = [header, "|" + "---|" * 12, row]
    if self.error_kinds:
      lines.append("")
      lines.append("Errors: " + ", ".join(
          "%s x%d" % kv for kv in sorted(self.error_kinds.items())))
    if self.stopped_by_time_limit:
      lines.append("")
      lines.append("Stopped by the time limit after %d of %d requests."
                   % (self.sent, self.num_requests))
    return "\n".join(lines) + "\n"

  def summary(self) -> str:
    return ("%d requests (%d users each) at concurrency %d in %.2f s: "
            "%.1f requests/s, p50 %.2f ms, p99 %.2f ms, %d errors"
            % (self.sent, self.batch_size, self.concurrency, self.seconds,
               self.requests_per_second, self.p50_ms, self.p99_ms,
               self.errors))


def _bodies(user_ids: Sequence[str], num_requests: int, batch_size: int,
            k: int) -> List[bytes]:
  """Request i's body is `_bodies(...)[i % len(bodies)]` (one user cycle)."""
  period = len(user_ids) // math.gcd(batch_size, len(user_ids))
  bodies = []
  for i in range(min(num_requests, period)):
    users = [user_ids[(i * batch_size + j) % len(user_ids)]
             for j in range(batch_size)]
    bodies.append(json.dumps({"instances": [{"user_id": u} for u in users],
                              "k": k}).encode("utf-8"))
  return bodies


def run_load_test(url: str, model_name: str = "default",
                  num_requests: int = 1000, concurrency: int = 16,
                  batch_size: int = 1, k: int = 10,
                  user_ids: Optional[Sequence[str]] = None,
                  time_limit_s: float = 120.0,
                  timeout_s: float = 30.0) -> LoadTestResult:
  """Sends `num_requests` predict requests from `concurrency` threads.

  Args:
    url: the server, `http://127.0.0.1:PORT` (loopback only).
    model_name: the `<name>` of `/v1/models/<name>:predict`.
    num_requests: requests to send (at most `MAX_REQUESTS`).
    concurrency: threads, each with one keep-alive connection.
    batch_size: users per request.
    k: the `k` of every request.
    user_ids: users to cycle through (default "0" .. "999"; ids the model
      never saw are answered with its OOV embedding, still a 200).
    time_limit_s: no request starts after this many seconds.
    timeout_s: socket timeout of one request.

  Returns:
    A `LoadTestResult`.

  Raises:
    ValueError: a non-loopback host or out-of-range bounds.
  """
  host, port = parse_url(url)
  if not 1 <= num_requests <= MAX_REQUESTS:
    raise ValueError("num_requests must be in [1, %d], got %d"
                     % (MAX_REQUESTS, num_requests))
  if not 1 <= concurrency <= MAX_CONCURRENCY:
    raise ValueError("concurrency must be in [1, %d], got %d"
                     % (MAX_CONCURRENCY, concurrency))
  if not 0 < time_limit_s <= MAX_TIME_LIMIT_S:
    raise ValueError("time_limit_s must be in (0, %g], got %g"
                     % (MAX_TIME_LIMIT_S, time_limit_s))
  if batch_size < 1 or k < 1 or timeout_s <= 0:
    raise ValueError("batch_size, k and timeout_s must be positive.")
  user_ids = list(user_ids) if user_ids else [str(i) for i in range(1000)]
  bodies = _bodies(user_ids, num_requests, batch_size, k)
  path = "/v1/models/%s:predict" % urllib.parse.quote(model_name, safe="")
  headers = {"Content-Type": "application/json"}

  lock = threading.Lock()
  next_index = [0]
  latencies: List[float] = []
  error_kinds: Dict[str, int] = collections.Counter()
  succeeded = [0]
  timed_out = [False]
  start = time.perf_counter()
  deadline = start + time_limit_s

  def take() -> Optional[int]:
    with lock:
      if next_index[0] >= num_requests:
        return None
      if time.perf_counter() >= deadline:
        timed_out[0] = True
        return None
      next_index[0] += 1
      return next_index[0] - 1

  def worker():
    conn = None
    try:
      while True:
        i = take()
        if i is None:
          return
        if conn is None:
          conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        t0 = time.perf_counter()
        error = None
        try:
          conn.request("POST", path, body=bodies[i % len(bodies)],
                       headers=headers)
          response = conn.getresponse()
          data = response.read()
          if response.status != 200:
            error = "HTTP %d" % response.status
          elif len(json.loads(data)["predictions"]) != batch_size:
            error = "wrong number of predictions"
          if response.will_close:
            conn.close()
            conn = None
        except Exception as e:  # pylint: disable=broad-except
          # Any failure (socket, HTTP, a body that is not the expected JSON)
          # is one error; the connection is replaced.
          error = type(e).__name__
          if conn is not None:
            conn.close()
          conn = None
        elapsed_ms = (time.perf_counter() - t0) * 1000.0
        with lock:
          if error is None:
            succeeded[0] += 1
            latencies.append(elapsed_ms)
          else:
            error_kinds[error] += 1
    finally:
      if conn is not None:
        conn.close()

  threads = [threading.Thread(target=worker, name="load-%d" % t, daemon=True)
             for t in range(concurrency)]
  for t in threads:
    t.start()
  for t in threads:
    # Bounded: no request starts after the deadline and each is timed out.
    t.join(time_limit_s + 2 * timeout_s + 5)
  seconds = time.perf_counter() - start
  sent = next_index[0]
  unfinished = sent - succeeded[0] - sum(error_kinds.values())
  if unfinished:  # threads still blocked after their join timeout
    error_kinds["unfinished"] = unfinished
  return LoadTestResult(
      url="http://%s:%d" % (host if ":" not in host else "[%s]" % host, port),
      model_name=model_name, num_requests=num_requests,
      concurrency=concurrency, batch_size=batch_size, k=k, sent=sent,
      succeeded=succeeded[0], errors=sent - succeeded[0],
      error_kinds=dict(error_kinds), seconds=seconds,
      requests_per_second=succeeded[0] / seconds if seconds > 0 else 0.0,
      users_per_second=succeeded[0] * batch_size / seconds
      if seconds > 0 else 0.0,
      p50_ms=percentile(latencies, 50), p90_ms=percentile(latencies, 90),
      p99_ms=percentile(latencies, 99),
      max_ms=max(latencies) if latencies else float("nan"),
      stopped_by_time_limit=timed_out[0])


def write_result(result: LoadTestResult, path: str) -> List[str]:
  """Writes `path` (JSON) and the same name with `.md` (markdown table)."""
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  with open(path, "w") as f:
    json.dump(result.to_json(), f, indent=2)
  markdown = os.path.splitext(path)[0] + ".md"
  with open(markdown, "w") as f:
    f.write(result.to_markdown())
  return [path, markdown]
