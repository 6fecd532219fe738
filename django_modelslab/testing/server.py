"""The emulator's HTTP side: a threaded server and the handler that answers each call.

Generate and fetch calls go to the :class:`~.emulator.Emulator`; downloads of outputs are
served here, and so are the faults that act on the connection (drops, cut or slow bodies).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .faults import Fault
from .routes import Route, match_route
from .validation import ValidationError, blank, load_inputs

logger = logging.getLogger("django_modelslab.testing")

INVALID_KEY = "Invalid API key"
MISSING_KEY = "The key field is required."
#: What ``Fault.corrupt()`` serves instead of the image.
CORRUPT = b"<html><body>Not an image: the emulator was asked to corrupt this file.</body></html>\n"


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of concurrent clients (the
    # benchmarks' hundreds of calls at once) would see dropped SYNs and 1 s retries.
    request_queue_size = 1024
    emulator: Any  # the Emulator it serves (emulator.py imports this module)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def close_connections(self) -> None:
        with self.connections_lock:
            conns, self.connections = self.connections, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server_version = "ModelsLabEmulator/1.0"
    timeout = 60  # idle keep-alive connections give their thread back
    server: Server
    _answer_at: float | None = None
    _admitted = False  # a generate call holding a place in the account's queue

    def _over(self) -> None:
        if self._admitted:
            self._admitted = False
            self.emu._leave()

    # plumbing
    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    @property
    def emu(self) -> Any:
        return self.server.emulator

    def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None):
        if self._answer_at is not None:  # --latency: answer no sooner than that after the call
            time.sleep(max(0.0, self._answer_at - time.monotonic()))
            self._answer_at = None
        self._over()  # the job leaves the account's queue as the answer goes out
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, body: Any, headers: dict | None = None) -> None:
        self._send(status, json.dumps(body).encode(), "application/json", headers)

    def _error(self, status: int, message: str) -> None:
        """A validation/auth/not-found error, as 4xx or, with errors_as_200, as 200."""
        self._json(
            200 if self.emu.errors_as_200 else status, {"status": "error", "message": message}
        )

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _read_json(self) -> tuple[dict[str, Any] | None, str | None]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if not raw.strip():
            return {}, None
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return None, "The request body must be valid JSON."
        if not isinstance(body, dict):
            return None, "The request body must be a JSON object."
        return body, None

    def _common_fault(self, fault: Fault | None) -> bool:
        """Apply a fault that pre-empts the answer; True if the request is answered."""
        if fault is None:
            return False
        if fault.kind == "delay":
            time.sleep(fault.seconds)
            return False
        if fault.kind == "drop_connection":
            self._drop()
            return True
        if fault.kind == "rate_limit":
            retry = fault.retry_after
            body = {"status": "error", "message": fault.message, "retry_after": retry}
            self._json(
                429, body, {"Retry-After": str(int(retry) if retry == int(retry) else retry)}
            )
            return True
        if fault.kind in ("http_error", "error_200"):
            self._json(fault.status, {"status": "error", "message": fault.message})
            return True
        return False

    def _guard(self, action: Callable[[], None]) -> None:
        try:
            action()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:
            logger.exception("emulator error")
            try:
                self._json(500, {"status": "error", "message": f"emulator error: {exc}"})
            except OSError:
                self.close_connection = True

    # methods
    def do_POST(self) -> None:
        self._guard(self._post)

    def do_GET(self) -> None:
        self._guard(self._get)

    def _post(self) -> None:
        path = urlsplit(self.path).path
        body, problem = self._read_json()
        if path.startswith("/_emulator/"):
            return self._control(path, body, problem)
        found = match_route(path)
        if found is None:
            return self._json(404, {"status": "error", "message": "Not found."})
        route, match = found
        fault = self.emu._begin(route.name, route.kind, body, self.headers)
        if route.kind == "generate" and fault is None:
            fault = self.emu._admit()  # max_queued_jobs: 429 when the account's queue is full
            if fault is None:
                self._admitted = True
                try:
                    return self._answer(route, match, body, problem, fault)
                finally:
                    self._over()
        return self._answer(route, match, body, problem, fault)

    def _answer(
        self,
        route: Route,
        match: re.Match[str],
        body: dict[str, Any] | None,
        problem: str | None,
        fault: Fault | None,
    ) -> None:
        if route.kind == "generate" and self.emu.latency > 0:
            if fault is None:  # the job's own work (drawing its images) is part of the latency
                self._answer_at = time.monotonic() + float(self.emu.latency)
            else:
                time.sleep(float(self.emu.latency))
        if self._common_fault(fault):
            return None
        if body is None:
            return self._error(400, problem or "Bad request.")
        if route.key_required and blank(body.get("key")) and blank(self.headers.get("key")):
            return self._error(401, MISSING_KEY)
        if not self.emu._authorized(body, self.headers):
            return self._error(401, INVALID_KEY)
        if route.kind == "generate":
            assert route.validate is not None
            try:
                params = route.validate(body)
                inputs = load_inputs(params, self.emu.input_hosts)
            except ValidationError as exc:
                return self._error(400, str(exc))
            refusal = self.emu._model_problem(params)
            if refusal is not None:
                code, message = refusal
                if code >= 500:
                    return self._json(code, {"status": "error", "message": message})
                return self._error(code, message)
            if self.emu.failing_models.get(params["model_id"]) == "failed" and fault is None:
                model = params["model_id"]
                fault = Fault.failed(f"Generation failed: model {model} could not run it.")
            body = self.emu._create_job(route, params, fault, inputs)
            if self._answer_at is not None:
                self.emu._prerender(str(body.get("id")))
            return self._json(200, body)
        raw_id = match["id"] or body.get("request_id")
        status, answer = self.emu._fetch(raw_id, fault, route.family)
        if status != 200:
            return self._error(status, answer["message"])
        return self._json(200, answer)

    def _get(self) -> None:
        path = urlsplit(self.path).path
        match = re.fullmatch(r"/(?:proxy/)?generations/([^/]+)", path)
        if match:
            return self._download(match[1])
        if path == "/_emulator/stats":
            return self._json(200, self.emu.stats())
        if match_route(path):
            message = "The GET method is not supported for this route. Supported methods: POST."
            return self._json(405, {"status": "error", "message": message}, {"Allow": "POST"})
        return self._send(404, b"Not Found", "text/plain")

    def _download(self, name: str) -> None:
        fault = self.emu._begin("download", "download", None)
        if self._common_fault(fault):
            return
        found = (
            None if fault is not None and fault.kind == "expired" else self.emu._downloadable(name)
        )
        if found is None:
            return self._send(404, b"Not Found", "text/plain")
        data, content_type = found
        if fault is not None and fault.kind == "corrupt":
            data = CORRUPT
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "public, max-age=86400")
        self.end_headers()
        if fault is not None and fault.kind == "cut_download":
            self.wfile.write(data[: fault.after_bytes])
            self.wfile.flush()
            return self._drop()
        if fault is not None and fault.kind == "slow_download":
            rate = fault.bytes_per_second
            chunk = max(1, rate // 20)
            for start in range(0, len(data), chunk):
                self.wfile.write(data[start : start + chunk])
                self.wfile.flush()
                time.sleep(chunk / rate)
            return None
        self.wfile.write(data)
        return None

    def _control(self, path: str, body: dict[str, Any] | None, problem: str | None) -> None:
        if body is None:
            return self._json(400, {"status": "error", "message": problem})
        try:
            if path == "/_emulator/reset":
                self.emu.reset()
                return self._json(200, {"status": "ok"})
            if path == "/_emulator/faults":
                params = dict(body)
                route = params.pop("route", "*")
                times = int(params.pop("times", 1))
                self.emu.add_fault(route, Fault.from_dict(params), times)
                return self._json(200, {"status": "ok", "faults": self.emu.faults.pending()})
            if path == "/_emulator/config":
                self.emu.configure(**body)
                return self._json(200, {"status": "ok", "config": self.emu.config()})
        except (ValueError, TypeError) as exc:
            return self._json(400, {"status": "error", "message": str(exc)})
        return self._json(404, {"status": "error", "message": "Not found."})
