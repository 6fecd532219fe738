"""Faults the emulator can inject, and the queue that hands them out.

Faults form a script: each call takes at most one fault, the oldest one registered for its
route (or for ``"*"``) that makes sense there. ``add_fault("fetch", Fault.rate_limit())``
then ``add_fault("fetch", Fault.http_error(503))`` makes the next fetch answer 429, the one
after 503, and later ones normally.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, fields
from typing import Any

#: Which kind of call each fault applies to: "any", "api" (generate/fetch) or "download".
KINDS: dict[str, str] = {
    "rate_limit": "any",
    "http_error": "any",
    "delay": "any",
    "drop_connection": "any",
    "error_200": "api",
    "failed": "api",
    "never_finish": "api",
    "cut_download": "download",
    "slow_download": "download",
    "corrupt": "download",
    "expired": "download",
}

RATE_LIMIT_MESSAGE = "Rate limit exceeded. Maximum 5 queued requests allowed."


@dataclass(frozen=True)
class Fault:
    """One misbehaviour; build it with the classmethods, e.g. ``Fault.rate_limit(2)``."""

    kind: str
    status: int = 500
    message: str = ""
    retry_after: float = 1
    seconds: float = 0.0
    after_bytes: int = 0
    bytes_per_second: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(KINDS)}")

    @classmethod
    def rate_limit(cls, retry_after: float = 1) -> Fault:
        """HTTP 429, body ``retry_after`` and a ``Retry-After`` header."""
        return cls("rate_limit", status=429, message=RATE_LIMIT_MESSAGE, retry_after=retry_after)

    @classmethod
    def http_error(cls, status: int = 500, message: str = "Internal Server Error") -> Fault:
        """HTTP ``status`` with ``{"status": "error", "message": message}``."""
        return cls("http_error", status=status, message=message)

    @classmethod
    def insufficient_credits(cls) -> Fault:
        """HTTP 402 as the API documents it for an empty wallet."""
        return cls.http_error(402, "Insufficient credits. Please add more credits to continue.")

    @classmethod
    def error_200(cls, message: str = "Server error, please try again.") -> Fault:
        """HTTP 200 with ``{"status": "error", "message": message}``."""
        return cls("error_200", status=200, message=message)

    @classmethod
    def failed(cls, message: str = "Generation failed.") -> Fault:
        """The job is accepted, then reported ``{"status": "failed", ...}``."""
        return cls("failed", status=200, message=message)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Sleep ``seconds`` before answering normally (for client timeouts)."""
        return cls("delay", seconds=seconds)

    @classmethod
    def drop_connection(cls) -> Fault:
        """Read the request, then close the socket without answering."""
        return cls("drop_connection")

    @classmethod
    def never_finish(cls) -> Fault:
        """The job stays ``processing`` forever."""
        return cls("never_finish")

    @classmethod
    def cut_download(cls, after_bytes: int = 100) -> Fault:
        """Announce the full Content-Length, then close after ``after_bytes`` bytes."""
        return cls("cut_download", after_bytes=after_bytes)

    @classmethod
    def slow_download(cls, bytes_per_second: int = 1000) -> Fault:
        """Send the image at ``bytes_per_second``."""
        return cls("slow_download", bytes_per_second=max(1, int(bytes_per_second)))

    @classmethod
    def corrupt(cls) -> Fault:
        """Serve bytes that are not an image, labelled as one."""
        return cls("corrupt")

    @classmethod
    def expired(cls) -> Fault:
        """404 for the download, as after the URL's lifetime."""
        return cls("expired", status=404)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fault:
        """Build from ``{"kind": ..., <params>}`` (the control API's body); ValueError if bad."""
        data = dict(data)
        kind = data.pop("kind", None)
        if not isinstance(kind, str) or kind not in KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(KINDS)}")
        factory = getattr(cls, kind)
        try:
            return factory(**data)
        except TypeError as exc:
            raise ValueError(f"bad parameters for fault {kind!r}: {exc}") from None

    def applies_to(self, call_kind: str) -> bool:
        """Whether this fault makes sense on a call of kind generate, fetch or download."""
        scope = KINDS[self.kind]
        if scope == "any":
            return True
        if scope == "download":
            return call_kind == "download"
        return call_kind in ("generate", "fetch")

    def as_dict(self) -> dict[str, Any]:
        """The fault's kind and non-default parameters."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self)[1:]:
            value = getattr(self, f.name)
            if value != f.default:
                out[f.name] = value
        return out


class FaultQueue:
    """Thread-safe script of faults, consumed one per call in the order added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[list[Any]] = []  # [route, fault, remaining]

    def add(self, route: str, fault: Fault, times: int = 1) -> None:
        if times < 1:
            raise ValueError("times must be at least 1")
        with self._lock:
            self._entries.append([route, fault, times])

    def take(self, route: str, call_kind: str) -> Fault | None:
        """Use up one fault for a call on ``route`` (of ``call_kind``), or None."""
        with self._lock:
            for entry in self._entries:
                entry_route, fault, _ = entry
                if entry_route in (route, "*") and fault.applies_to(call_kind):
                    entry[2] -= 1
                    if entry[2] == 0:
                        self._entries.remove(entry)
                    return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [
                {"route": route, "times": times, **fault.as_dict()}
                for route, fault, times in self._entries
            ]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        with self._lock:
            return sum(entry[2] for entry in self._entries)
