"""Downloads over real HTTP: the bundled emulator, plus a tiny local server for edge cases."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from django_modelslab.downloads import Download, download, is_allowed_host
from django_modelslab.exceptions import DownloadError, DownloadRefused
from django_modelslab.testing import Emulator, Fault

from .helpers import noise_png

LIMITS = {"max_bytes": 1024 * 1024, "timeout": 2.0, "connect_timeout": 1.0}
LOCAL = ["127.0.0.1"]


PNG = noise_png(64)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        route = getattr(self, "route_" + parts.path.strip("/").replace("-", "_"), None)
        if route is None:
            self.send_error(404)
            return
        route(query)

    def _headers(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def route_png(self, query: dict[str, str]) -> None:
        self._headers(200, {"Content-Type": "image/png", "Content-Length": str(len(PNG))})
        self.wfile.write(PNG)

    def route_redirect(self, query: dict[str, str]) -> None:
        self._headers(int(query.get("status", 302)), {"Location": query["to"], **_EMPTY})

    def route_loop(self, query: dict[str, str]) -> None:
        self._headers(302, {"Location": "/loop", **_EMPTY})

    def route_announced_big(self, query: dict[str, str]) -> None:
        # Claims a huge body; a client that reads it would hang until the timeout.
        self._headers(200, {"Content-Type": "image/png", "Content-Length": str(10**9)})
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.server.release.wait(5)  # type: ignore[attr-defined]

    def route_chunked(self, query: dict[str, str]) -> None:
        total = int(query["bytes"])
        self._headers(200, {"Content-Type": "image/png", "Transfer-Encoding": "chunked"})
        chunk = b"y" * 8192
        sent = 0
        try:
            while sent < total:
                piece = chunk[: total - sent]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                sent += len(piece)
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should

    def route_short(self, query: dict[str, str]) -> None:
        self._headers(200, {"Content-Type": "image/png", "Content-Length": str(len(PNG))})
        self.wfile.write(PNG[:50])
        self.wfile.flush()
        self.close_connection = True


_EMPTY = {"Content-Length": "0"}


@pytest.fixture(scope="module")
def local() -> Iterator[str]:
    """Base URL of a local server with edge-case routes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    server.release = threading.Event()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.release.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


def _generate(emulator: Emulator) -> str:
    response = httpx.post(
        emulator.base_url + "/v6/images/text2img",
        json={
            "key": "k",
            "model_id": "flux",
            "prompt": "fox",
            "width": 256,
            "height": 256,
            "seed": 1,
        },
        timeout=5,
    )
    body = response.json()
    assert body["status"] == "success", body
    return body["output"][0]


# --- host rules -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "allowed", "expected"),
    [
        ("cdn.example.com", ["cdn.example.com"], True),
        ("CDN.Example.COM.", ["cdn.example.com"], True),
        ("cdn.example.com", ["CDN.EXAMPLE.COM."], True),
        ("other.example.com", ["cdn.example.com"], False),
        ("example.com", [".example.com"], True),
        ("a.b.example.com", [".example.com"], True),
        ("badexample.com", [".example.com"], False),
        ("example.com.evil.net", [".example.com"], False),
        ("pub-123.r2.dev", [".r2.dev"], True),
        ("127.0.0.1", ["127.0.0.1"], True),
        ("127.0.0.1", [".0.0.1"], False),
        ("::1", ["0:0::1"], True),
        ("", [".example.com"], False),
        ("example.com", [], False),
    ],
)
def test_is_allowed_host(host: str, allowed: list[str], expected: bool) -> None:
    assert is_allowed_host(host, allowed) is expected


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:8000/x.png",
        "http://192.168.1.10/x.png",
        "http://0.0.0.0/x.png",
    ],
)
def test_unlisted_private_ip_literal_is_refused(url: str) -> None:
    with pytest.raises(DownloadRefused, match="private or reserved address"):
        download(url, allowed_hosts=LOCAL, **LIMITS)


def test_host_not_allowed_names_host_and_setting() -> None:
    with pytest.raises(DownloadRefused) as excinfo:
        download("https://evil.example.net/a.png?sig=s3cr3t", allowed_hosts=[".r2.dev"], **LIMITS)
    message = str(excinfo.value)
    assert "evil.example.net" in message
    assert "ALLOWED_DOWNLOAD_HOSTS" in message
    assert "s3cr3t" not in message


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/x.png"])
def test_only_http_and_https(url: str) -> None:
    with pytest.raises(DownloadRefused, match="only http and https"):
        download(url, allowed_hosts=LOCAL, **LIMITS)


# --- the emulator -----------------------------------------------------------------------


def test_download_hashes_the_served_bytes(emulator: Emulator) -> None:
    url = _generate(emulator)
    served = emulator.output_bytes(url)
    with download(url, allowed_hosts=LOCAL, **LIMITS) as result:
        assert isinstance(result, Download)
        assert result.sha256 == hashlib.sha256(served).hexdigest()
        assert result.size == len(served)
        assert result.url == url
        assert result.file.read() == served
    assert result.file.closed


def test_emulator_host_refused_when_not_listed(emulator: Emulator) -> None:
    url = _generate(emulator)
    with pytest.raises(DownloadRefused, match=r"127\.0\.0\.1"):
        download(url, allowed_hosts=[".r2.dev"], **LIMITS)


def test_cut_off_download(emulator: Emulator) -> None:
    url = _generate(emulator)
    emulator.add_fault("download", Fault.cut_download(after_bytes=100))
    with pytest.raises(DownloadError, match="was cut off") as excinfo:
        download(url, allowed_hosts=LOCAL, **LIMITS)
    assert excinfo.value.url == url


def test_expired_url_is_a_404(emulator: Emulator) -> None:
    url = _generate(emulator)
    emulator.add_fault("download", Fault.expired())
    with pytest.raises(DownloadError, match="HTTP 404: the output URL has expired"):
        download(url, allowed_hosts=LOCAL, **LIMITS)


def test_slow_download_gives_up_at_the_timeout(emulator: Emulator) -> None:
    url = _generate(emulator)
    emulator.add_fault("download", Fault.slow_download(2000))
    with pytest.raises(DownloadError, match=r"DOWNLOAD_TIMEOUT|timed out"):
        download(url, allowed_hosts=LOCAL, max_bytes=10**7, timeout=0.3, connect_timeout=0.3)


def test_too_large_while_streaming_from_emulator(emulator: Emulator) -> None:
    url = _generate(emulator)
    size = len(emulator.output_bytes(url))
    with pytest.raises(DownloadError, match=rf"larger than MAX_IMAGE_BYTES \({size - 1} bytes\)"):
        download(url, allowed_hosts=LOCAL, max_bytes=size - 1, timeout=2, connect_timeout=1)


# --- edge cases from the local server ---------------------------------------------------


def test_follows_allowed_redirects(local: str) -> None:
    url = f"{local}/redirect?to=/redirect%3Fto%3D/png%26status%3D307"
    with download(url, allowed_hosts=LOCAL, **LIMITS) as result:
        assert result.sha256 == hashlib.sha256(PNG).hexdigest()
        assert result.content_type == "image/png"
        assert result.url == url


def test_redirect_to_disallowed_host_is_refused(local: str) -> None:
    port = local.rsplit(":", 1)[1]
    url = f"{local}/redirect?to=http://localhost:{port}/png"
    with pytest.raises(DownloadRefused, match="'localhost' is not in"):
        download(url, allowed_hosts=LOCAL, **LIMITS)


def test_redirect_to_private_address_is_refused(local: str) -> None:
    url = f"{local}/redirect?to=http://169.254.169.254/latest/meta-data/"
    with pytest.raises(DownloadRefused, match=r"169\.254\.169\.254"):
        download(url, allowed_hosts=LOCAL, **LIMITS)


def test_too_many_redirects(local: str) -> None:
    with pytest.raises(DownloadError, match="Too many redirects"):
        download(f"{local}/loop", allowed_hosts=LOCAL, max_redirects=2, **LIMITS)


def test_too_large_by_content_length_is_refused_before_reading(local: str) -> None:
    with pytest.raises(DownloadError, match=r"larger than MAX_IMAGE_BYTES \(1000 bytes\)"):
        download(
            f"{local}/announced-big",
            allowed_hosts=LOCAL,
            max_bytes=1000,
            timeout=5,
            connect_timeout=1,
        )


def test_too_large_without_content_length(local: str) -> None:
    with pytest.raises(DownloadError, match=r"larger than MAX_IMAGE_BYTES \(20000 bytes\)"):
        download(
            f"{local}/chunked?bytes=5000000",
            allowed_hosts=LOCAL,
            max_bytes=20_000,
            timeout=2,
            connect_timeout=1,
        )


def test_chunked_body_within_limit(local: str) -> None:
    with download(f"{local}/chunked?bytes=20000", allowed_hosts=LOCAL, **LIMITS) as result:
        assert result.size == 20_000
        assert result.sha256 == hashlib.sha256(b"y" * 20_000).hexdigest()


def test_short_body_is_an_error(local: str) -> None:
    with pytest.raises(DownloadError, match="was cut off"):
        download(f"{local}/short", allowed_hosts=LOCAL, **LIMITS)


def test_not_found(local: str) -> None:
    with pytest.raises(DownloadError, match="HTTP 404: the output URL has expired"):
        download(f"{local}/nothing-here.png", allowed_hosts=LOCAL, **LIMITS)


def test_connection_refused_is_chained(local: str) -> None:
    with pytest.raises(DownloadError) as excinfo:
        download("http://127.0.0.1:9/x.png", allowed_hosts=LOCAL, **LIMITS)
    assert isinstance(excinfo.value.__cause__, httpx.ConnectError)


def test_uses_a_given_client(local: str) -> None:
    with (
        httpx.Client() as client,
        download(f"{local}/png", allowed_hosts=LOCAL, client=client, **LIMITS) as result,
    ):
        assert result.size == len(PNG)
        assert not client.is_closed
