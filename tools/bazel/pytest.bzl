"""`pytest_modules`: one py_test per pytest module, run by pytest_runner.py."""

_RUNNER = "//tools/bazel:pytest_runner.py"

def pytest_modules(srcs, deps = [], data = [], **kwargs):
    """Declares a py_test named after each module in `srcs` (minus `.py`).

    Args:
      srcs: the test modules, relative to the calling package.
      deps: libraries the modules import.
      data: files the tests read at run time.
      **kwargs: further py_test attributes (size, timeout, tags, ...).
    """
    kwargs.setdefault("size", "medium")

    # A module's run pays a TensorFlow import and shares 2 cores with another
    # test: allow up to 15 minutes rather than medium's 5.
    kwargs.setdefault("timeout", "long")
    for src in srcs:
        native.py_test(
            name = src[:-len(".py")],
            srcs = [src, _RUNNER],
            main = _RUNNER,
            args = ["%s/%s" % (native.package_name(), src)],
            data = ["//:pytest.ini"] + data,
            deps = deps,
            # `tests` and its subpackages have their own __init__.py; generated
            # ones (e.g. at the runfiles root) would change pytest's module names.
            legacy_create_init = False,
            python_version = "PY3",
            srcs_version = "PY3",
            **kwargs
        )
