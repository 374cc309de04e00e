"""What the programs print: their own lines only, and one line on Ctrl-C.

Every program calls `setup(__name__)` at its top, before TensorFlow is
imported (`common.run` calls it too, a no-op the second time, so a program
that imports TensorFlow only in `main` needs no call of its own). Unless
`--tf_logs` is on the command line (or the environment has
`TFRS_NEGSAMP_TF_LOGS=1`), the program then

- sets `TF_CPP_MIN_LOG_LEVEL=2` when the environment does not set it:
  TensorFlow's C++ INFO and WARNING lines are not printed, its ERROR lines
  are;
- sends its standard error (file descriptor 2, so that the lines of C++
  libraries pass too) through a filter that drops the lines in `NOISE`:
  lines that TensorFlow logs at ERROR level although nothing is wrong with
  the run (the `cuInit` probe on a machine without a GPU driver, the oneDNN
  uint8/int64 notice), absl's C++ INFO and WARNING lines (ScaNN's index build)
  and its "before absl::InitializeLog()" notice. Every other line, real errors
  included, reaches the terminal unchanged;
- drops the Python log records of third-party loggers below ERROR
  (`QuietThirdParty`: TensorFlow's, absl's, ...) and ignores the Python
  warnings raised in third-party modules (`THIRD_PARTY`).

The filter is a forked child process, not a thread, so that the last lines
of a program that crashes (a fatal error, a faulthandler stack) still reach
the terminal: the child reads until every writer has closed the pipe. It
ignores SIGINT and SIGTERM (Ctrl-C reaches the whole process group) and
ends when the pipe closes; at exit the program puts its own standard error
back and waits for the child to finish writing.

Ctrl-C: `interrupted(error)` prints one line (the `KeyboardInterrupt`'s
message, e.g. the trainer's "interrupted at step N; ...", or "interrupted")
and exits with status 130, without a stack trace (`common.guard` calls it;
a Ctrl-C before `main`, while TensorFlow is imported, prints "interrupted"
through `sys.excepthook`).

This module imports only the standard library (and absl's logging, when
it quiets it).
"""

import atexit
import logging
import os
import re
import select
import signal
import sys
import time
import warnings
from typing import Optional, Sequence

TF_LOGS_FLAG = "tf_logs"
TF_LOGS_ENV = "TFRS_NEGSAMP_TF_LOGS"
INTERRUPT_EXIT_CODE = 130

_ABSL = rb"[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\]\s]+:\d+\] "
_TSL = rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWEF] [^\]\s]+:\d+\] "
# Whole lines (without their line end) that the filter drops.
NOISE = tuple(re.compile(pattern) for pattern in (
    # absl's INFO and WARNING lines from C++ (ScaNN's partitioner: "Size of
    # sampled dataset ...", "Could not normalize centroid ..."). Python's
    # records have the same format with a .py source: they are left to the
    # loggers' levels (a program's own log lines, e.g. the server's, pass).
    _ABSL.replace(b"[IWEF]", b"[IW]").replace(
        rb"[^\]\s]+:\d+\] ", rb"[^\]\s]+\.(?:cc|h|c|cpp|hpp):\d+\] "),
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called "
    rb"are written to STDERR$",
    # TensorFlow's device probe on a machine without a GPU driver (logged
    # at ERROR level; TensorFlow then runs on the CPU, as intended here).
    _TSL.replace(b"[IWEF]", b"E") + rb"failed call to cuInit: ",
    # A notice logged at ERROR level by CPUs without AVX-512: oneDNN falls
    # back to Eigen for uint8 or int64 (a speed note, not an error).
    _TSL.replace(b"[IWEF]", b"E") + rb"oneDNN supports DT_[A-Z0-9]+ only on "
    rb"platforms with AVX-512\.",
))
# Python log records below ERROR and warnings of these packages are not
# shown (their authors' notes, not the user's concern; "absl" is the logger
# of every `absl.logging` call, which the package makes none of).
THIRD_PARTY = ("tensorflow", "tf_keras", "keras", "tensorflow_recommenders",
               "scann", "absl", "optuna", "google", "h5py", "matplotlib")

# How long a partial line (no "\n" or "\r" yet) waits before it is shown: a
# progress line such as the evaluation's "\revaluate_full_corpus: ..." is
# not a log line.
_PARTIAL_LINE_SECONDS = 0.1


class _State:
  installed = False
  quiet = False
  pid = 0
  child = 0
  saved_stderr = -1


_state = _State()


def is_noise(line: bytes) -> bool:
  """Whether the filter drops `line` (one line, with or without its end)."""
  line = line.rstrip(b"\r\n")
  return any(pattern.match(line) for pattern in NOISE)


def wants_tf_logs(argv: Optional[Sequence[str]] = None) -> bool:
  """`--tf_logs` among the program's own flags, or TFRS_NEGSAMP_TF_LOGS=1.

  Read from the raw command line: the choice is made before the flags are
  parsed (and TensorFlow imported). Arguments after `--` belong to another
  program (`trainers.launch_local`).
  """
  if os.environ.get(TF_LOGS_ENV, "").strip().lower() in (
      "1", "true", "yes", "on"):
    return True
  args = list(sys.argv if argv is None else argv)[1:]
  if "--" in args:
    args = args[:args.index("--")]
  value = None
  for arg in args:
    name = arg.lstrip("-").split("=", 1)[0]
    if name == TF_LOGS_FLAG:
      value = arg.split("=", 1)[1] if "=" in arg else "true"
    elif name == "no" + TF_LOGS_FLAG:
      value = "false"
  return value is not None and value.strip().lower() in ("1", "true")


def setup(module_name: str, argv: Optional[Sequence[str]] = None) -> None:
  """Quiet third-party logs and one-line Ctrl-C, for a program's process.

  Does nothing unless `module_name` is "__main__" (a program imported by a
  test is left alone), and nothing the second time.

  Args:
    module_name: the calling module's `__name__`.
    argv: the command line (default `sys.argv`), for `--tf_logs`.
  """
  if module_name != "__main__" or _state.installed:
    return
  _state.installed = True
  _state.pid = os.getpid()
  sys.excepthook = _excepthook(sys.excepthook)
  if wants_tf_logs(argv):
    return
  _state.quiet = True
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  quiet_python_logs()
  _start_filter()


class QuietThirdParty(logging.Filter):
  """Drops the records of third-party loggers (`THIRD_PARTY`) below ERROR.

  A filter, not only a logger level: TensorFlow resets absl's verbosity
  while it saves a SavedModel (`AutoTrackable._trackable_children` sets it
  to FATAL and back to the `--verbosity` flag's), and its INFO lines
  ("Found untraced functions", "Writing fingerprint") would follow.
  """

  def filter(self, record):
    if record.levelno >= logging.ERROR:
      return True
    return not any(record.name == p or record.name.startswith(p + ".")
                   for p in THIRD_PARTY)


_QUIET = QuietThirdParty()


def quiet_python_logs() -> None:
  """Third-party Python log records below ERROR dropped; no their warnings.

  TensorFlow's and absl's loggers at ERROR, and `QuietThirdParty` on them
  and on absl's handler (where Python records reach the terminal). Again
  after the flags are parsed (`common.guard`): absl installs its handler
  and applies `--verbosity` then.
  """
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  for name in ("tensorflow", "absl"):
    logger = logging.getLogger(name)
    logger.setLevel(logging.ERROR)
    if _QUIET not in logger.filters:
      logger.addFilter(_QUIET)
  handler = absl_logging.get_absl_handler()
  if _QUIET not in handler.filters:
    handler.addFilter(_QUIET)
  warnings.filterwarnings(
      "ignore", module=r"(%s)(\.|$)" % "|".join(THIRD_PARTY))


def is_quiet() -> bool:
  """Whether `setup` quieted this process (no `--tf_logs`)."""
  return _state.quiet


def _excepthook(previous):
  def hook(kind, value, trace):
    if issubclass(kind, KeyboardInterrupt):
      sys.stderr.write((str(value) or "interrupted") + "\n")
      sys.stderr.flush()
      return
    previous(kind, value, trace)
  return hook


def interrupted(error: BaseException) -> None:
  """Ctrl-C: one line (the error's message, else "interrupted"), exit 130.

  A second Ctrl-C while the program winds down is ignored. A progress bar
  left mid-line on a terminal is ended first.
  """
  signal.signal(signal.SIGINT, signal.SIG_IGN)
  try:
    if sys.stdout.isatty():
      sys.stdout.write("\n")
    sys.stdout.flush()
  except (OSError, ValueError):
    pass  # stdout already closed: the one line goes to stderr anyway
  message = " ".join(str(error).split()) or "interrupted"
  sys.stderr.write(message + "\n")
  sys.stderr.flush()
  sys.exit(INTERRUPT_EXIT_CODE)


def _start_filter() -> None:
  """Points file descriptor 2 at a pipe read by a forked filter process."""
  try:
    saved = os.dup(2)  # not inheritable: children keep the filtered pipe
  except OSError:
    return  # no standard error to filter
  read_end, write_end = os.pipe()
  for stream in (sys.stdout, sys.stderr):
    stream.flush()
  child = os.fork()
  if child == 0:  # The filter: never returns.
    try:
      for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
      os.close(write_end)
      null = os.open(os.devnull, os.O_RDWR)
      os.dup2(null, 0)
      os.dup2(null, 1)
      keep = {0, 1, 2, read_end}
      for fd in range(3, _max_fd()):
        if fd not in keep:
          try:
            os.close(fd)
          except OSError:
            pass  # not open in this process: nothing to close
      filter_stream(read_end, 2)
    finally:
      os._exit(0)  # pylint: disable=protected-access
  os.close(read_end)
  os.dup2(write_end, 2)
  os.close(write_end)
  _state.child = child
  _state.saved_stderr = saved
  atexit.register(_stop_filter)


def _max_fd() -> int:
  try:
    return min(os.sysconf("SC_OPEN_MAX"), 65536)
  except (ValueError, OSError):
    return 1024


def _stop_filter(timeout: float = 5.0) -> None:
  """At exit: standard error back, and the filter's last lines written."""
  if os.getpid() != _state.pid or not _state.child:
    return  # a forked copy of the program, not the program
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass  # a closed stream has nothing left to write
  os.dup2(_state.saved_stderr, 2)  # closes the program's end of the pipe
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    try:
      pid, _ = os.waitpid(_state.child, os.WNOHANG)
    except ChildProcessError:
      break
    if pid:
      break
    time.sleep(0.005)
  _state.child = 0


def _write(fd: int, data: bytes) -> None:
  while data:
    try:
      data = data[os.write(fd, data):]
    except InterruptedError:
      continue
    except OSError:
      return  # the terminal is gone: keep draining the pipe


def filter_stream(read_fd: int, write_fd: int) -> None:
  """Copies `read_fd` to `write_fd` until end of file, without `NOISE`.

  Lines end at "\\n" or "\\r" and are judged whole; a partial line is shown
  after `_PARTIAL_LINE_SECONDS` without more data (then the rest of that
  line passes too).
  """
  pending = b""
  passing = False  # the current line was partly shown: show the rest
  while True:
    if pending:
      ready, _, _ = select.select([read_fd], [], [], _PARTIAL_LINE_SECONDS)
      if not ready:
        _write(write_fd, pending)
        pending, passing = b"", True
        continue
    try:
      chunk = os.read(read_fd, 1 << 16)
    except InterruptedError:
      continue
    if not chunk:
      break
    data, pending = pending + chunk, b""
    start = 0
    for end in re.finditer(rb"\r\n|[\r\n]", data):
      line = data[start:end.end()]
      if passing or not is_noise(line):
        _write(write_fd, line)
      passing = False
      start = end.end()
    if start < len(data):
      if passing:
        _write(write_fd, data[start:])
      else:
        pending = data[start:]
  if pending and (passing or not is_noise(pending)):
    _write(write_fd, pending)
