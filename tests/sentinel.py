"""Sentinel-key check: run the suite with a distinctive API key and fail where it shows up.

On with ``MODELSLAB_SENTINEL_KEY=1`` (a generated key) or ``=<key>`` (at least 16 characters),
or ``pytest --sentinel-key``. Then ``MODELSLAB["API_KEY"]`` (and ``tests.conftest.TEST_API_KEY``,
which tests compare against) is the sentinel, and a test fails if the sentinel appears in:

* any log record (message, arguments and formatted traceback), every logger at DEBUG;
* the text of an exception raised anywhere in the test (Python >= 3.12, via
  ``sys.monitoring``; on 3.11 only the test's own failure and logged tracebacks). The
  ``StopIteration`` that carries a coroutine's return value (httpx's async client returns
  the request body that way) is iteration machinery, not text anyone sees, and is skipped;
* any HTTP response the Django test client or the live server serves (headers and body:
  API, admin pages, webhooks), through a middleware put first in ``MIDDLEWARE``;
* any row of any table, read after the test body while its data is still there.

``MODELSLAB_SENTINEL_KEY=newline`` configures a generated sentinel followed by a newline, as
a key read from a secrets file often is (a given ``<key>`` keeps its surrounding whitespace
the same way). The sentinel without the whitespace is what is grepped for, and
``TEST_API_KEY``: the app must strip the key before using it.

Enable it from ``tests/conftest.py`` with ``pytest_plugins = ["tests.sentinel"]``.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ENV = "MODELSLAB_SENTINEL_KEY"
#: The value of ``ENV`` that configures the generated sentinel with a trailing newline.
NEWLINE = "newline"
MIDDLEWARE = "tests.sentinel.SentinelMiddleware"

_key: str | None = None
_configured: str | None = None  # MODELSLAB["API_KEY"]: the sentinel, maybe with whitespace
_found: list[str] = []
_lock = threading.Lock()


def sentinel() -> str | None:
    """The sentinel key while the check is on, else None."""
    return _key


def _report(where: str) -> None:
    with _lock:
        if len(_found) < 20:
            _found.append(where)


def _contains(text: Any) -> bool:
    return _key is not None and isinstance(text, str) and _key in text


# --- capture points -----------------------------------------------------------------------


class _LogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "".join(traceback.format_exception(*record.exc_info))
            text += str(record.__dict__.get("stack_info") or "")
        except Exception:  # a broken record is not ours to judge
            return
        if _contains(text):
            _report(f"log record {record.name}: {text[:200]!r}")


class SentinelMiddleware:
    """Checks every response Django serves (test client, live server)."""

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        response = self.get_response(request)
        if _key is None:
            return response
        headers = "\n".join(f"{k}: {v}" for k, v in response.items())
        body = b"" if getattr(response, "streaming", False) else response.content
        if _key in headers or _key.encode() in body:
            _report(f"HTTP response to {request.method} {request.path} ({response.status_code})")
        return response


def _watch_exceptions() -> Callable[[], None]:
    """Report every exception raised whose text carries the key (Python >= 3.12)."""
    monitoring = getattr(sys, "monitoring", None)
    if monitoring is None:
        return lambda: None
    tool = next((t for t in (3, 4, 5) if monitoring.get_tool(t) is None), None)
    if tool is None:
        return lambda: None

    def on_raise(code: Any, offset: int, exc: BaseException) -> None:
        if isinstance(exc, StopIteration | StopAsyncIteration):
            return  # control flow: a generator's or coroutine's return value, never shown
        try:
            text = f"{exc!s} {exc!r}"
        except Exception:
            return
        if _contains(text):
            _report(f"exception {type(exc).__name__} raised in {code.co_qualname}: {text[:200]!r}")

    monitoring.use_tool_id(tool, "modelslab-sentinel")
    monitoring.register_callback(tool, monitoring.events.RAISE, on_raise)
    monitoring.set_events(tool, monitoring.events.RAISE)

    def stop() -> None:
        monitoring.set_events(tool, 0)
        monitoring.register_callback(tool, monitoring.events.RAISE, None)
        monitoring.free_tool_id(tool)

    return stop


def _scan_database() -> None:
    from django.apps import apps
    from django.db import DatabaseError

    for model in apps.get_models():
        if model._meta.proxy or not model._meta.managed:
            continue
        try:
            for row in model._default_manager.values_list():
                if _key in str(row):
                    _report(f"database row of {model._meta.label}: {str(row)[:200]!r}")
                    break
        except DatabaseError:
            continue


# --- pytest hooks -------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--sentinel-key",
        action="store_true",
        help=f"run with a sentinel API key and fail where it leaks (or set {ENV}=1)",
    )


def pytest_configure(config: pytest.Config) -> None:
    global _key, _configured
    value = os.environ.get(ENV, "")
    if not (config.getoption("--sentinel-key", False) or value):
        return
    generated = f"sentinel-{secrets.token_hex(12)}-modelslab"
    if value.strip() == NEWLINE:
        _key, _configured = generated, generated + "\n"
    elif len(value.strip()) >= 16:
        _key, _configured = value.strip(), value
    else:
        _key = _configured = generated
    from django.conf import settings

    settings.MODELSLAB["API_KEY"] = _configured
    settings.MIDDLEWARE = [MIDDLEWARE, *settings.MIDDLEWARE]
    conftest = sys.modules.get("tests.conftest")
    if conftest is not None:
        conftest.TEST_API_KEY = _key
    handler = _LogHandler(level=logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    config._sentinel_stop = _watch_exceptions()  # type: ignore[attr-defined]


def pytest_unconfigure(config: pytest.Config) -> None:
    stop = getattr(config, "_sentinel_stop", None)
    if stop is not None:
        stop()


def pytest_report_header(config: pytest.Config) -> str | None:
    if not _key:
        return None
    extra = " (configured with surrounding whitespace)" if _configured != _key else ""
    return f"sentinel API key check: on{extra}"


def _uses_database(item: pytest.Item) -> bool:
    names = getattr(item, "fixturenames", ())
    return item.get_closest_marker("django_db") is not None or any(
        name in names for name in ("db", "transactional_db", "django_db_reset_sequences")
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if _key is None:
        return (yield)
    with _lock:
        _found.clear()
    try:
        result = yield
    except BaseException as exc:
        if _contains("".join(traceback.format_exception(exc))):
            _report(f"the test's own failure: {type(exc).__name__}")
        raise
    finally:
        if _uses_database(item):
            _scan_database()
        with _lock:
            found = list(_found)
            _found.clear()
        if found:
            pytest.fail("The sentinel API key leaked:\n  " + "\n  ".join(found), pytrace=False)
    return result
