"""Download an output image safely: allow-listed hosts, bounded size, time and memory.

ModelsLab output URLs are untrusted input (they arrive in API responses and webhooks), so
a download refuses hosts that are not allow-listed, follows redirects by hand re-checking
every hop, streams into a spooled temporary file while hashing, and gives up as soon as the
body is larger than allowed, slower than allowed, cut short, or not labelled as an image.
No Django models here.

DNS is checked and pinned (SSRF): the client from :func:`make_client` resolves each host
itself, refuses it when any address is private, loopback, link-local or reserved (unless the
exact host is listed), and connects to the very address it checked, so a name cannot resolve
to a public address for the check and to an internal one for the connection (DNS rebinding).
TLS still verifies the certificate against the host name. As a second line, every response's
peer address is checked again before its body is read (this also covers a caller's own client).
"""

from __future__ import annotations

import hashlib
import ipaddress
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Any

import httpx

from . import __version__
from .exceptions import DownloadError, DownloadRefused
from .tls import shared_context

#: Bytes kept in memory before the download spills to a temporary file on disk.
SPOOL_MAX_MEMORY = 1024 * 1024
USER_AGENT = f"django-modelslab/{__version__}"
ALLOWED_SCHEMES = ("http", "https")
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
#: Content types accepted for an image body (the bytes are checked again by the storage).
IMAGE_CONTENT_TYPES = ("application/octet-stream", "binary/octet-stream")
#: Seconds a name may take to resolve when the connection has no timeout of its own.
DEFAULT_RESOLVE_TIMEOUT = 10.0
HTTP_REASONS = {
    403: "access denied (the output URL may have expired)",
    404: "the output URL has expired or does not exist",
    410: "the output URL has expired",
}


@dataclass
class Download:
    """A finished download, spooled to memory or disk and rewound.

    The caller owns ``file``: close it, or use the download as a context manager.
    """

    file: IO[bytes]
    sha256: str
    size: int
    url: str  # the URL asked for (before redirects)
    content_type: str | None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Download:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _normalize_host(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_internal_ip(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Private, loopback, link-local, reserved, multicast or unspecified: not the internet."""
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_reserved
        or ip.is_multicast
        or ip.is_unspecified
        or not ip.is_global
    )


def is_allowed_host(host: str, allowed: Iterable[str]) -> bool:
    """Whether ``host`` matches an allow-list entry.

    Entries are exact hosts (``"cdn.example.com"``, ``"127.0.0.1"``) or ``".suffix"``, which
    matches the bare domain and every subdomain. Case-insensitive, trailing dots ignored. An
    IP literal only matches an exact entry (``".0.0.1"`` does not allow ``127.0.0.1``).
    """
    host = _normalize_host(host)
    if not host:
        return False
    host_ip = _ip(host)
    for raw in allowed:
        entry = _normalize_host(str(raw))
        if not entry or entry == ".":
            continue
        if host_ip is not None:
            if _ip(entry.lstrip(".")) == host_ip:
                return True
        elif entry.startswith("."):
            domain = entry[1:]
            if host == domain or host.endswith(entry):
                return True
        elif host == entry:
            return True
    return False


def check_url(url: httpx.URL, allowed_hosts: Iterable[str]) -> None:
    """Raise :class:`DownloadRefused` unless ``url`` may be downloaded."""
    shown = _shown(url)
    if url.scheme not in ALLOWED_SCHEMES:
        raise DownloadRefused(
            f"Refused to download {shown}: only http and https URLs are allowed", url=shown
        )
    host = _normalize_host(url.host)
    if is_allowed_host(host, allowed_hosts):
        # Listed; the addresses it resolves to are checked when connecting (PinnedTransport).
        return
    ip = _ip(host)
    if ip is not None and is_internal_ip(ip):
        raise DownloadRefused(
            f"Refused to download {shown}: {host} is a private or reserved address and is "
            "not in MODELSLAB['ALLOWED_DOWNLOAD_HOSTS']",
            url=shown,
        )
    raise DownloadRefused(
        f"Refused to download {shown}: host {host!r} is not in MODELSLAB['ALLOWED_DOWNLOAD_HOSTS']",
        url=shown,
    )


def is_exactly_listed(host: str, allowed: Iterable[str]) -> bool:
    """Whether ``host`` itself (not through a ``.suffix`` entry) is in the allow-list."""
    return is_allowed_host(host, [str(e) for e in allowed if not str(e).strip().startswith(".")])


def check_address(
    host: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address, allowed: Iterable[str]
) -> None:
    """Raise :class:`DownloadRefused` when ``host``'s address ``ip`` must not be connected to.

    Internal addresses (private, loopback, link-local, reserved...) are refused unless the
    exact host is listed: ``"127.0.0.1"`` or ``"localhost"`` lets the emulator through, while
    ``".example.com"`` never lets a name under it reach the internal network.
    """
    ip = _ip(str(ip)) or ip
    if is_internal_ip(ip) and not is_exactly_listed(host, allowed):
        raise DownloadRefused(
            f"Refused to download from {_normalize_host(host)}: it resolves to {ip}, a private "
            "or reserved address (list the exact host in MODELSLAB['ALLOWED_DOWNLOAD_HOSTS'] "
            "to allow it)"
        )


def resolve(
    host: str, port: int | None, *, timeout: float | None = None
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` resolves to, in the resolver's order, within ``timeout`` seconds.

    Raises :class:`httpx.ConnectError` (or ``ConnectTimeout``) when the name does not
    resolve in time.
    """
    literal = _ip(_normalize_host(host))
    if literal is not None:
        return [literal]
    found: dict[str, Any] = {}

    def lookup() -> None:
        try:
            found["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            found["error"] = exc

    # getaddrinfo has no timeout of its own: a thread keeps a dead resolver from hanging us.
    thread = threading.Thread(target=lookup, name="modelslab-resolve", daemon=True)
    thread.start()
    thread.join(DEFAULT_RESOLVE_TIMEOUT if timeout is None else timeout)
    if "error" in found:
        raise httpx.ConnectError(f"Could not resolve {host}: {found['error']}")
    if "infos" not in found:
        raise httpx.ConnectTimeout(f"Resolving {host} took longer than {timeout} s")
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for _family, _type, _proto, _name, sockaddr in found["infos"]:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise httpx.ConnectError(f"{host} resolves to no address")
    return addresses


#: The allow-list of the download in progress (in this thread/context); None: none running,
#: then every internal address is refused.
_allowed_hosts: ContextVar[tuple[str, ...] | None] = ContextVar(
    "modelslab_allowed_download_hosts", default=None
)


class PinnedTransport(httpx.BaseTransport):
    """Resolve the host here, check every address, send the request to a checked one.

    The URL sent names the address (DNS pinning); the Host header and TLS (SNI and the
    certificate check) keep the name. Each host has its own connection pool, so a connection
    verified for one name never carries a request for another name on the same address.
    """

    def __init__(self, *, ssl_context: ssl.SSLContext, limits: httpx.Limits | None = None) -> None:
        self._ssl_context = ssl_context
        self._limits = limits or httpx.Limits(max_connections=20, max_keepalive_connections=10)
        self._pools: dict[str, httpx.HTTPTransport] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        timeout = request.extensions.get("timeout", {}).get("connect")
        addresses = resolve(host, request.url.port, timeout=timeout)
        allowed = _allowed_hosts.get() or ()
        for ip in addresses:  # all of them: a name that is partly internal is refused
            check_address(host, ip, allowed)
        pool = self._pools.get(host)
        if pool is None:
            pool = httpx.HTTPTransport(verify=self._ssl_context, limits=self._limits)
            pool = self._pools.setdefault(host, pool)
        error: httpx.ConnectError | None = None
        for ip in addresses:
            pinned = httpx.Request(
                request.method,
                request.url.copy_with(host=str(ip)),
                headers=request.headers,  # Host: the name
                stream=request.stream,
                extensions={**request.extensions, "sni_hostname": host},
            )
            try:
                return pool.handle_request(pinned)
            except httpx.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()


def _check_peer(response: httpx.Response, host: str, allowed: Iterable[str]) -> None:
    """Refuse a response whose connection reached an internal address (any client)."""
    stream = response.extensions.get("network_stream")
    peer = stream.get_extra_info("server_addr") if stream is not None else None
    ip = _ip(str(peer[0]).split("%", 1)[0]) if peer else None
    if ip is not None:
        check_address(host, ip, allowed)


def _shown(url: httpx.URL | str) -> str:
    """The URL for messages: no query string or fragment (they may carry signatures)."""
    try:
        return str(httpx.URL(url).copy_with(query=None, fragment=None))
    except (httpx.InvalidURL, TypeError):
        return "<invalid URL>"


def _status_error(response: httpx.Response, url: str) -> DownloadError:
    code = response.status_code
    if code in HTTP_REASONS:
        reason = HTTP_REASONS[code]
    elif code >= 500:
        reason = "the image host failed"
    else:
        reason = "unexpected response from the image host"
    return DownloadError(f"HTTP {code}: {reason} ({_shown(url)})", url=url)


def _too_large(max_bytes: int, url: str) -> DownloadError:
    return DownloadError(
        f"The image at {_shown(url)} is larger than MAX_IMAGE_BYTES ({max_bytes} bytes)", url=url
    )


def make_client() -> httpx.Client:
    """An HTTP client for :func:`download`; share one across the downloads of a job.

    It resolves and pins addresses itself (:class:`PinnedTransport`), so it ignores proxy
    environment variables: a proxy would resolve names where they cannot be checked.
    """
    return httpx.Client(
        transport=PinnedTransport(ssl_context=shared_context()),
        follow_redirects=False,
        headers={"User-Agent": USER_AGENT},
    )


def download(
    url: str,
    *,
    allowed_hosts: Iterable[str],
    max_bytes: int,
    timeout: float,
    connect_timeout: float,
    client: httpx.Client | None = None,
    max_redirects: int = 3,
    chunk_size: int = 64 * 1024,
) -> Download:
    """Download ``url`` into a spooled temporary file, hashing it with SHA-256.

    ``timeout`` bounds every read and the whole transfer (a trickling server is cut off);
    ``connect_timeout`` bounds connecting; ``chunk_size`` is the most bytes hashed and
    written at a time. Raises :class:`DownloadRefused` for a host that
    is not allowed (on any redirect hop) and :class:`DownloadError` for everything else:
    HTTP errors, too many redirects, too large, too slow, cut off, transport failures.
    """
    allowed = [str(h) for h in allowed_hosts]
    shown = _shown(url)
    own_client = client is None
    if client is None:
        client = make_client()
    request_timeout = httpx.Timeout(timeout, connect=connect_timeout)
    deadline = time.monotonic() + timeout
    policy = _allowed_hosts.set(tuple(allowed))
    try:
        current = httpx.URL(url)
        for _hop in range(max_redirects + 1):
            check_url(current, allowed)
            with client.stream(
                "GET",
                current,
                headers={"Accept": "image/*", "Accept-Encoding": "identity"},
                timeout=request_timeout,
                follow_redirects=False,
            ) as response:
                _check_peer(response, current.host, allowed)
                if response.status_code in REDIRECT_STATUSES:
                    location = response.headers.get("Location")
                    if not location:
                        raise DownloadError(
                            f"HTTP {response.status_code} redirect without a Location ({shown})",
                            url=url,
                        )
                    current = response.url.join(location)
                    continue
                if not response.is_success:
                    raise _status_error(response, url)
                return _read_body(
                    response,
                    url=url,
                    max_bytes=max_bytes,
                    chunk_size=chunk_size,
                    deadline=deadline,
                    timeout=timeout,
                )
        raise DownloadError(f"Too many redirects (more than {max_redirects}) for {shown}", url=url)
    except DownloadRefused as exc:
        if exc.url is None:
            exc.url = url
        raise
    except httpx.InvalidURL as exc:
        raise DownloadRefused(f"Refused to download an invalid URL: {exc}", url=url) from exc
    except httpx.HTTPError as exc:
        if isinstance(exc, httpx.RemoteProtocolError):
            what = "was cut off"
        elif isinstance(exc, httpx.TimeoutException):
            what = "timed out"
        else:
            what = "failed"
        raise DownloadError(
            f"Downloading {shown} {what}: {type(exc).__name__}: {exc}", url=url
        ) from exc
    finally:
        _allowed_hosts.reset(policy)
        if own_client:
            client.close()


def _read_body(
    response: httpx.Response,
    *,
    url: str,
    max_bytes: int,
    chunk_size: int,
    deadline: float,
    timeout: float,
) -> Download:
    shown = _shown(url)
    content_type = response.headers.get("Content-Type")
    if not is_image_content_type(content_type):
        raise DownloadError(
            f"The image host answered {content_type!r} for {shown}, not an image", url=url
        )
    expected = _content_length(response)
    if expected is not None and expected > max_bytes:
        raise _too_large(max_bytes, url)
    spool: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX_MEMORY)  # noqa: SIM115
    try:
        digest = hashlib.sha256()
        size = 0
        # Pieces as they arrive (iter_bytes(n) would buffer n bytes and hide a trickle).
        for received in response.iter_bytes():
            size += len(received)
            if size > max_bytes:
                raise _too_large(max_bytes, url)
            if time.monotonic() > deadline:
                raise DownloadError(
                    f"Downloading {shown} took longer than DOWNLOAD_TIMEOUT ({timeout} s)", url=url
                )
            for start in range(0, len(received), chunk_size):
                chunk = received[start : start + chunk_size]
                digest.update(chunk)
                spool.write(chunk)
        if expected is not None and response.num_bytes_downloaded < expected:
            raise DownloadError(
                f"Downloading {shown} was cut off: got {response.num_bytes_downloaded} of "
                f"{expected} bytes",
                url=url,
            )
        spool.seek(0)
        return Download(
            file=spool,
            sha256=digest.hexdigest(),
            size=size,
            url=url,
            content_type=response.headers.get("Content-Type"),
        )
    except BaseException:
        spool.close()  # never leave a half-written file behind
        raise


def is_image_content_type(value: str | None) -> bool:
    """``image/*``, a generic binary type, or none at all (the bytes are checked later)."""
    media_type = (value or "").split(";", 1)[0].strip().lower()
    return not media_type or media_type.startswith("image/") or media_type in IMAGE_CONTENT_TYPES


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None
