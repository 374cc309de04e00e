"""REST server in the TF Serving shape for an exported SavedModel + ScaNN.

    predictor = SavedModelPredictor("/tmp/run/export")   # tf + scann only
    with ModelServer(predictor, port=0).start() as server:  # background thread
      print(server.url)
    ModelServer(predictor, port=8501).serve_forever()        # until SIGTERM

The request rules (routes, validation, response shapes) live in `rest.py`;
this module reads bodies, calls the model and writes JSON. It needs neither
TFRS nor this package's training code: the SavedModel is loaded with
`tf.saved_model.load` after `import scann` (which registers the ScaNN ops).

Library: aiohttp (the aio-libs asyncio HTTP server), chosen over Flask +
waitress and Starlette + uvicorn for three reasons:

- Threading model vs the blocking TF call. One asyncio event loop owns every
  connection (keep-alive, slow clients, bodies read incrementally) and never
  runs the model; each model call (a `ConcreteFunction` call that blocks,
  releasing the GIL inside its kernels; ScaNN's batched search uses its own
  threads) runs in a bounded `ThreadPoolExecutor` (`threads`). A slow call
  never stalls I/O and the number of concurrent TF calls is set on its own.
  With a WSGI server (waitress) one worker thread both reads a request and
  makes the TF call, so slow clients and model calls share one pool.
- Body-size limit. `client_max_size` is enforced while the body streams in:
  `request.read()` raises 413 as soon as the limit is passed, without
  buffering the rest, and we answer it as JSON like every other error.
  waitress buffers a whole body (spilling to a temporary file) before the
  application sees it and answers its own limit with a plain-text 413;
  Starlette has no body limit at all.
- Maturity. aiohttp has been maintained by aio-libs since 2013
  (Apache-2.0, the 3.x API stable since 2018, frequent releases, binary
  wheels with a C HTTP parser for current CPython versions), a single
  dependency with small aio-libs helpers and nothing that pins TensorFlow's
  own dependencies.

Each request's users go to the model in one call (`[B]` strings in, `[B, k]`
out). The model returns the index's k items; a request's `k` slices them.
"""

import asyncio
import concurrent.futures
import logging
import signal
import sys
import threading
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from aiohttp import web

from trainers.serving import export_files
from trainers.serving import rest

METADATA_FILE = export_files.METADATA_FILE
KEEP_SIGNATURE = "keep_history_items"
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_INSTANCES = 1024
DEFAULT_THREADS = 4
# The outputs the predictor reads (the export's others are optional).
_REQUIRED_OUTPUTS = ("item_ids", "scores", "count")

_LOG = logging.getLogger(__name__)


class SavedModelPredictor:
  """An exported retriever: a batch of queries -> the export's outputs.

  Checks the folder (`export_files.read_export`: a whole export of this
  format), loads the SavedModel with only TensorFlow and ScaNN imported and
  calls its `serving_default` signature, or `keep_history_items` when asked
  to keep the seen items. Thread-safe: concurrent calls share the model.
  The export's metadata says which input the signature takes: `user_id`
  (`predict`), or `history` and maybe `user_id` (`predict_histories`).

  Args:
    model_dir: the export folder.
    label: how messages name it (default: the path), e.g.
      "--model_dir=/tmp/run/export".

  Attributes:
    index_k: the export's k (columns of every answer).
    metadata: the export's `tfrs_negsamp.json`.
    inputs: the signature's input names, e.g. `("user_id",)` or
      `("history",)`.
    exclusion: what `serving_default` excludes: "history",
      "training_items" or "none".

  Raises:
    export_files.ExportError: (a ValueError) not a whole export.
    ValueError: a SavedModel that does not match its metadata.
    RuntimeError: a ScaNN export without scann installed.
  """

  def __init__(self, model_dir: str, label: Optional[str] = None):
    where = label or repr(model_dir)
    self.metadata: Dict[str, Any] = export_files.read_export(model_dir,
                                                             label)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      # pylint: disable-next=g-import-not-at-top,unused-import
      import scann  # noqa: F401
    except ImportError:
      scann = None  # a brute-force export loads without it
    self._tf = tf
    try:
      loaded = tf.saved_model.load(model_dir)
    except Exception as e:  # pylint: disable=broad-except
      if scann is None and "Scann" in str(e):
        raise RuntimeError("the SavedModel at %s holds a ScaNN index; "
                           "install scann (pip install scann==1.4.2)"
                           % where) from e
      raise ValueError("cannot load the SavedModel at %s: %s" % (
          where, str(e).splitlines()[0] if str(e) else type(e).__name__)
                       ) from e
    if rest.SIGNATURE_NAME not in loaded.signatures:
      raise ValueError("the SavedModel at %s has no %r signature (it has %s)"
                       % (where, rest.SIGNATURE_NAME,
                          sorted(loaded.signatures)))
    self._loaded = loaded  # keeps the signatures' variables alive
    default = loaded.signatures[rest.SIGNATURE_NAME]
    self.exclusion = str(self.metadata.get("exclusion", "none"))
    keep = default
    if self.exclusion != "none":
      if KEEP_SIGNATURE not in loaded.signatures:
        raise ValueError("the SavedModel at %s excludes %s but has no %r "
                         "signature" % (where, self.exclusion,
                                        KEEP_SIGNATURE))
      keep = loaded.signatures[KEEP_SIGNATURE]
    self._signatures = {False: default, True: keep}
    self.inputs: Tuple[str, ...] = tuple(
        self.metadata.get("inputs") or [rest.INPUT_NAME])
    signature_inputs = set(default.structured_input_signature[1])
    if set(self.inputs) != signature_inputs:
      raise ValueError("the SavedModel at %s takes %s but its %s says %s"
                       % (where, sorted(signature_inputs), METADATA_FILE,
                          sorted(self.inputs)))
    missing = sorted(set(_REQUIRED_OUTPUTS) - set(default.structured_outputs))
    if missing:
      raise ValueError("the SavedModel at %s has no %s output" % (
          where, " or ".join(repr(m) for m in missing)))
    self.index_k = int(self.metadata["k"])
    # One warm-up call loads the searcher.
    if rest.HISTORY_NAME in self.inputs:
      self.predict_histories([[""]], [""])
    else:
      self.predict([""])

  def _call(self, keep_history_items: bool, **inputs) -> Dict[str, Any]:
    out = self._signatures[bool(keep_history_items)](**inputs)
    return {name: value.numpy() for name, value in out.items()}

  def predict(self, user_ids: Sequence[str],
              keep_history_items: bool = False) -> Dict[str, Any]:
    """`[B]` user ids -> the outputs (numpy): `item_ids` (bytes), `scores`
    `[B, k]`, `count`, `excluded` `[B]` (+ `known_user`)."""
    return self._call(keep_history_items, user_id=self._tf.constant(
        list(user_ids), dtype=self._tf.string))

  def predict_histories(self, histories: Sequence[Sequence[str]],
                        user_ids: Optional[Sequence[str]] = None,
                        keep_history_items: bool = False) -> Dict[str, Any]:
    """`[B]` histories (item id strings) -> the outputs, like `predict`.

    Rows are left-padded with "" to the longest (at least 1), which the
    export ignores; `user_ids` (one per row, "" if unknown) is passed only
    when the export takes `user_id`. `unknown_history` is returned per
    row, one flag per entry of that row's history (padding removed).
    """
    width = max([1] + [len(h) for h in histories])
    rows = [[""] * (width - len(h)) + list(h) for h in histories]
    kwargs = {rest.HISTORY_NAME: self._tf.constant(
        rows, dtype=self._tf.string, shape=[len(rows), width])}
    if rest.INPUT_NAME in self.inputs:
      users = list(user_ids) if user_ids else [""] * len(rows)
      kwargs[rest.INPUT_NAME] = self._tf.constant(users, dtype=self._tf.string)
    out = self._call(keep_history_items, **kwargs)
    if "unknown_history" in out:
      out["unknown_history"] = [
          [bool(v) for v in flags[width - len(h):]]
          for flags, h in zip(out["unknown_history"], histories)]
    return out


def _describe(error: Optional[BaseException]) -> str:
  """`ErrorClass: message` on one line (an aiohttp HTTP error's text)."""
  if error is None:
    return "no error"
  text = getattr(error, "message", None) or str(error)
  text = " ".join(str(text).split())
  if len(text) > 200:
    text = text[:197] + "..."
  return "%s: %s" % (type(error).__name__, text) if text else (
      type(error).__name__)


class OneLineLogger(logging.LoggerAdapter):
  """A logger that writes an exception as one line, without its traceback.

  aiohttp logs each malformed request (a bad Content-Length, headers over
  its 8190-byte limit, bytes that are not HTTP) with `logger.exception`,
  a traceback per bad client. The server hands aiohttp this adapter: the
  same event is one WARNING line `<message>: <ErrorClass>: <text>` (debug
  messages stay at DEBUG, also on one line).
  """

  def __init__(self, logger: logging.Logger):
    super().__init__(logger, {})

  @staticmethod
  def _error(exc_info: Any) -> Optional[BaseException]:
    if isinstance(exc_info, BaseException):
      return exc_info
    if isinstance(exc_info, tuple) and len(exc_info) == 3:
      return exc_info[1]
    return sys.exc_info()[1] if exc_info else None

  def _one_line(self, level: int, msg: Any, args: Tuple[Any, ...],
                kwargs: Dict[str, Any]) -> None:
    error = self._error(kwargs.pop("exc_info", None))
    kwargs.pop("stack_info", None)
    text = str(msg) % args if args else str(msg)
    if error is not None:
      text = "%s: %s" % (text, _describe(error))
    self.log(level, "%s", text, **kwargs)

  def exception(self, msg, *args, **kwargs):  # pylint: disable=arguments-differ
    kwargs.setdefault("exc_info", True)
    self._one_line(logging.WARNING, msg, args, kwargs)

  def error(self, msg, *args, **kwargs):
    self._one_line(logging.WARNING if kwargs.get("exc_info") else
                   logging.ERROR, msg, args, kwargs)

  def debug(self, msg, *args, **kwargs):
    self._one_line(logging.DEBUG, msg, args, kwargs)


class ClientGone(Exception):
  """The client closed the connection before its request was read."""


class ModelServer:
  """Serves one predictor under `/v1/models/<model_name>` (aiohttp).

  Args:
    predictor: has `index_k`, `metadata` and `predict(user_ids)` like
      `SavedModelPredictor` (and `inputs` and `predict_histories` for a
      history export).
    model_name: the `<name>` of the routes (TF Serving's default: `default`).
    host, port: where to listen (`port=0`: a free port, see `port` after
      `start`).
    max_body_bytes: larger bodies are answered 413.
    max_instances: requests with more users are answered 400.
    max_history: histories with more item ids are answered 400.
    threads: concurrent model calls.
    access_log: log one line per request (aiohttp's access logger).
  """

  def __init__(self, predictor, model_name: str = rest.DEFAULT_MODEL_NAME,
               host: str = "127.0.0.1", port: int = 8501,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
               max_instances: int = DEFAULT_MAX_INSTANCES,
               threads: int = DEFAULT_THREADS, access_log: bool = False,
               max_history: int = rest.DEFAULT_MAX_HISTORY):
    for name, value in (("max_body_bytes", max_body_bytes),
                        ("max_instances", max_instances),
                        ("max_history", max_history),
                        ("threads", threads)):
      if value < 1:
        raise ValueError("%s must be >= 1, got %r" % (name, value))
    if not model_name or "/" in model_name or ":" in model_name:
      raise ValueError("model_name must be non-empty without '/' or ':', "
                       "got %r" % model_name)
    self.predictor = predictor
    self.model_name = model_name
    self.host = host
    self.port = port
    self.max_body_bytes = max_body_bytes
    self.max_instances = max_instances
    self.max_history = max_history
    self.threads = threads
    self.access_log = access_log
    self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None
    self._loop: Optional[asyncio.AbstractEventLoop] = None
    self._stop: Optional[asyncio.Event] = None
    self._thread: Optional[threading.Thread] = None

  @property
  def url(self) -> str:
    host = "[%s]" % self.host if ":" in self.host else self.host
    return "http://%s:%d" % (host, self.port)

  # Request handling.

  def make_app(self) -> web.Application:
    app = web.Application(client_max_size=self.max_body_bytes)
    app.router.add_route("*", "/{tail:.*}", self._handle)
    return app

  async def _handle(self, request: web.Request) -> web.Response:
    try:
      kind = rest.route(request.method, request.path, self.model_name)
      if kind == rest.HEALTH:
        body = rest.health_body(self.model_name)
      elif kind == rest.STATUS:
        body = rest.status_body()
      elif kind == rest.METADATA:
        body = rest.metadata_body(self.model_name, self.predictor.index_k,
                                  self.predictor.metadata,
                                  inputs=self._inputs)
      else:
        body = await self._predict(request)
      return web.json_response(body)
    except ClientGone as e:
      # Nobody to answer: one line, no traceback.
      _LOG.warning("%s", e)
      return web.Response(status=400)
    except rest.RestError as e:
      return web.json_response(rest.error_body(e.message), status=e.status,
                               headers=e.headers)
    except Exception as e:  # pylint: disable=broad-except
      _LOG.exception("error answering %s %s", request.method, request.path)
      return web.json_response(
          rest.error_body("internal error: %s: %s" % (type(e).__name__, e)),
          status=500)

  def _too_large(self, size: Optional[int]) -> rest.RestError:
    return rest.RestError(413, "request body %sexceeds the limit of %d bytes "
                          "(--max_body_bytes)"
                          % ("of %d bytes " % size if size else "",
                             self.max_body_bytes))

  @property
  def _inputs(self) -> Tuple[str, ...]:
    return tuple(getattr(self.predictor, "inputs", (rest.INPUT_NAME,)))

  async def _predict(self, request: web.Request) -> Dict[str, Any]:
    rest.check_content_type(request.headers.get("Content-Type"))
    size = request.content_length
    if size is not None and size > self.max_body_bytes:
      raise self._too_large(size)  # answered without reading the body
    try:
      body = await request.read()
    except web.HTTPRequestEntityTooLarge as e:  # chunked, no Content-Length
      raise self._too_large(None) from e
    except ConnectionError as e:  # aiohttp: ConnectionResetError
      raise ClientGone(
          "client %s disconnected before sending the whole body of %s %s "
          "(%s); nothing answered" % (
              request.remote, request.method, request.path,
              "Content-Length %d" % size if size is not None
              else "chunked")) from e
    parsed = rest.parse_predict(body, self.predictor.index_k,
                                self.max_instances, inputs=self._inputs,
                                max_history=self.max_history)
    loop = asyncio.get_running_loop()
    keep = parsed.keep_history_items
    if parsed.histories is not None:
      outputs = await loop.run_in_executor(
          self._pool, lambda: self.predictor.predict_histories(
              parsed.histories, parsed.user_ids, keep_history_items=keep))
    else:
      outputs = await loop.run_in_executor(
          self._pool, lambda: self.predictor.predict(
              parsed.user_ids, keep_history_items=keep))
    return rest.format_predict(parsed, outputs, self.predictor.metadata)

  # Life cycle.

  async def _serve(self, on_ready: Callable[["ModelServer"], None]) -> None:
    self._loop = asyncio.get_running_loop()
    self._stop = asyncio.Event()
    self._pool = concurrent.futures.ThreadPoolExecutor(
        self.threads, thread_name_prefix="model")
    runner = web.AppRunner(
        self.make_app(), handle_signals=False, shutdown_timeout=5.0,
        access_log=logging.getLogger("aiohttp.access")
        if self.access_log else None,
        logger=OneLineLogger(logging.getLogger("aiohttp.server")))
    await runner.setup()
    try:
      await web.TCPSite(runner, self.host, self.port).start()
      self.port = int(runner.addresses[0][1])
      on_ready(self)
      await self._stop.wait()
    finally:
      await runner.cleanup()
      self._pool.shutdown(wait=True)

  def start(self, timeout: float = 60.0) -> "ModelServer":
    """Serves in a background thread; returns once listening (`self.port`)."""
    ready = threading.Event()
    failure = []

    def run():
      try:
        asyncio.run(self._serve(lambda _: ready.set()))
      except BaseException as e:  # pylint: disable=broad-except
        failure.append(e)
        ready.set()

    self._thread = threading.Thread(target=run, name="model-server",
                                    daemon=True)
    self._thread.start()
    if not ready.wait(timeout):
      raise TimeoutError("the server did not start within %.0f s" % timeout)
    if failure:
      raise failure[0]
    return self

  def stop(self, timeout: float = 30.0) -> None:
    """Stops a server started with `start` (waits for in-flight requests)."""
    if self._loop is not None and self._stop is not None:
      self._loop.call_soon_threadsafe(self._stop.set)
    if self._thread is not None:
      self._thread.join(timeout)
      self._thread = None

  def serve_forever(self, on_ready: Optional[
      Callable[["ModelServer"], None]] = None) -> None:
    """Serves in this thread until SIGINT or SIGTERM."""

    async def main():
      loop = asyncio.get_running_loop()

      def ready(server):
        for sig in (signal.SIGINT, signal.SIGTERM):
          loop.add_signal_handler(sig, self._stop.set)
        if on_ready is not None:
          on_ready(server)

      await self._serve(ready)

    asyncio.run(main())

  def __enter__(self) -> "ModelServer":
    return self

  def __exit__(self, *exc) -> None:
    self.stop()
