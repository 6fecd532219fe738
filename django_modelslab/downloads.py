"""Download an output image safely: allow-listed hosts, bounded size, time and memory.

ModelsLab output URLs are untrusted input (they arrive in API responses and webhooks), so
a download refuses hosts that are not allow-listed, follows redirects by hand re-checking
every hop, streams into a spooled temporary file while hashing, and gives up as soon as the
body is larger than allowed, slower than allowed, or cut short. No Django models here.
"""

from __future__ import annotations

import hashlib
import ipaddress
import tempfile
import time
from collections.abc import Iterable
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
        # A listed host is trusted even when it is local (the emulator runs on 127.0.0.1).
        # TODO(issue 7: resolve and pin): a listed DNS name could still resolve to a private
        # address; resolve once, refuse internal addresses and connect to the pinned IP.
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
    """An HTTP client for :func:`download`; share one across the downloads of a job."""
    return httpx.Client(
        follow_redirects=False, headers={"User-Agent": USER_AGENT}, verify=shared_context()
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


def _content_length(response: httpx.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        return None
    return length if length >= 0 else None
