"""ModelsLab HTTP client: the v6 and v7 image APIs over httpx, nothing of Django.

Two halves, kept apart so the async client reuses everything but the transport calls:

* :func:`parse_response` turns one HTTP answer into a :class:`ProviderResponse` or raises the
  matching :mod:`django_modelslab.exceptions` error. It reads the body's ``status`` whatever
  the HTTP code (ModelsLab documents 4xx codes but has been seen answering 200 with
  ``status: "error"``).
* :class:`_ClientCore` holds configuration, builds payloads, redacts the API key and decides,
  attempt by attempt, whether to retry; :class:`ModelsLabClient` adds the blocking httpx calls
  and :class:`AsyncModelsLabClient` the ``httpx.AsyncClient`` ones (for ASGI projects).

The API key travels as the JSON body field ``key`` (on v7 also as the ``key`` header, the
two ways ModelsLab's v7 docs disagree on) and is never logged: payloads and responses kept
on exceptions (and :attr:`ProviderResponse.raw`) are redacted, and input images sent inline
(base64) are elided from them.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import TracebackType
from typing import Any, Final, Self

import httpx

from django_modelslab import __version__
from django_modelslab.amounts import MAX_AMOUNT, parse_amount
from django_modelslab.conf import DEFAULT_BASE_URL
from django_modelslab.exceptions import (
    AmbiguousSubmission,
    AuthenticationFailed,
    GenerationFailed,
    InsufficientCredits,
    InvalidProviderResponse,
    ProviderError,
    ProviderRejected,
    ProviderTransportError,
    ProviderUnavailable,
    RateLimited,
)
from django_modelslab.redaction import SECRET_FIELDS, elide_image_data, redact
from django_modelslab.tls import shared_context

__all__ = [
    "DEFAULT_BASE_URL",
    "KINDS",
    "AsyncModelsLabClient",
    "ModelsLabClient",
    "ProviderResponse",
    "elide_image_data",
    "fetch_path",
    "generate_path",
    "parse_response",
    "redact",
    "reported_cost",
    "reported_seed",
]

logger = logging.getLogger("django_modelslab.client")

TEXT2IMG_PATH: Final = "v6/images/text2img"
FETCH_PATH: Final = "v6/images/fetch/{id}"
#: What a request can ask for; :data:`GENERATE_PATHS` says which API version serves which.
KINDS: Final = ("text2img", "img2img", "inpaint", "upscale")
#: (api_version, kind) -> the generate endpoint, as ModelsLab's API reference names them.
GENERATE_PATHS: Final = {
    ("v6", "text2img"): TEXT2IMG_PATH,
    ("v6", "img2img"): "v6/images/img2img",
    ("v6", "inpaint"): "v6/images/inpaint",
    ("v6", "upscale"): "v6/image_editing/super_resolution",
    ("v7", "text2img"): "v7/images/text-to-image",
    ("v7", "img2img"): "v7/images/image-to-image",
}
#: (api_version, kind) -> where jobs of that endpoint are fetched; others use FETCH_PATH.
FETCH_PATHS: Final = {
    ("v6", "upscale"): "v6/image_editing/fetch/{id}",
    ("v7", "text2img"): "v7/images/fetch/{id}",
    ("v7", "img2img"): "v7/images/fetch/{id}",
}
#: ``MODELSLAB`` setting -> client argument, for :meth:`ModelsLabClient.from_settings`.
SETTING_ARGUMENTS: Final = {
    "API_KEY": "api_key",
    "BASE_URL": "base_url",
    "TIMEOUT": "timeout",
    "CONNECT_TIMEOUT": "connect_timeout",
    "MAX_RETRIES": "max_retries",
    "RETRY_BACKOFF": "retry_backoff",
    "RETRY_BACKOFF_MAX": "retry_backoff_max",
}
#: How much of a non-JSON body an exception keeps.
MAX_TEXT: Final = 2048
USER_AGENT: Final = f"django-modelslab/{__version__}"

#: Where a cost may be reported (not documented by ModelsLab; see docs/costs.md), first found wins.
COST_FIELDS: Final = ("cost", "credits", "credits_used", "price")
#: What the figures of an answer may be to be stored (``GeneratedImage.seed`` is a
#: BigIntegerField, ``provider_id`` 64 characters; an eta past a day outlives the outputs).
#: Outside these a figure is unknown (None), with a warning; the raw answer still holds it.
SEED_RANGE: Final = range(-(2**63), 2**63)
MAX_ETA: Final = 86400.0
MAX_ID_LENGTH: Final = 64

_PROVIDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def generate_path(kind: str, api_version: str = "v6") -> str:
    """The generate endpoint for ``kind`` on ``api_version``; ValueError when there is none."""
    try:
        return GENERATE_PATHS[(api_version, kind)]
    except KeyError:
        served = ", ".join(k for v, k in GENERATE_PATHS if v == api_version) or "nothing"
        raise ValueError(
            f"ModelsLab {api_version} has no {kind!r} endpoint here (it serves: {served})"
        ) from None


def fetch_path(kind: str = "text2img", api_version: str = "v6") -> str:
    """Where jobs started by :func:`generate_path` are fetched (``{id}`` to fill in)."""
    generate_path(kind, api_version)  # same ValueError for a combination that does not exist
    return FETCH_PATHS.get((api_version, kind), FETCH_PATH)


# -- parsing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProviderResponse:
    """One successful or still-processing ModelsLab answer, normalised."""

    status: str
    provider_id: str | None = None
    output_urls: tuple[str, ...] = ()
    future_urls: tuple[str, ...] = ()
    proxy_urls: tuple[str, ...] = ()
    eta: float | None = None
    fetch_url: str | None = None
    generation_time: float | None = None
    seed: int | None = None
    cost: Decimal | None = None  # what ModelsLab says the call cost, when it says so
    meta: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    raw: dict[str, Any] = field(default_factory=dict)
    #: ``nsfw_content_detected`` per output (None where not said); empty when absent.
    nsfw: tuple[bool | None, ...] = ()

    @property
    def done(self) -> bool:
        return self.status == "success"

    @property
    def processing(self) -> bool:
        return self.status == "processing"


def parse_response(
    body: Any,
    *,
    status_code: int,
    payload: dict[str, Any],
    headers: Mapping[str, str] | None = None,
) -> ProviderResponse:
    """Interpret one answer; raise the matching :class:`ProviderError` unless it is usable.

    ``body`` is the parsed JSON, or the text / bytes when it was not JSON; ``payload`` is
    what was sent. Both should already be redacted (credential fields are masked again
    here). ``headers`` is only read for ``Retry-After``.
    """
    payload = redact(payload)
    if isinstance(body, bytes | bytearray):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            body = body[:MAX_TEXT]
    body = redact(body)
    ctx: dict[str, Any] = {"status_code": status_code, "response": body, "payload": payload}
    data = body if isinstance(body, dict) else None
    status = str(data.get("status", "")).strip().lower() if data is not None else ""
    message = _message(data) if data is not None else ""

    if not 200 <= status_code < 300:
        text = message or _snippet(body) or f"HTTP {status_code}"
        if status_code == 429:
            raise RateLimited(text, retry_after=_retry_after(data, headers), **ctx)
        if status_code >= 500:
            raise ProviderUnavailable(f"ModelsLab server error: {text}", **ctx)
        if status_code == 401:
            raise AuthenticationFailed(message or "ModelsLab refused the API key", **ctx)
        if status_code == 402:
            raise InsufficientCredits(message or "Insufficient ModelsLab credits", **ctx)
        if status == "failed":
            raise GenerationFailed(message or "The generation failed", **ctx)
        if data is not None and (status == "error" or message):
            raise ProviderRejected(message or "ModelsLab rejected the request", **ctx)
        raise InvalidProviderResponse(
            f"Unexpected answer from ModelsLab: {_snippet(body) or 'empty body'}", **ctx
        )

    if data is None:
        raise InvalidProviderResponse(
            f"ModelsLab did not answer JSON: {_snippet(body) or 'empty body'}", **ctx
        )
    if status in ("success", "processing"):
        return _build(status, data, message)
    if status == "failed":
        raise GenerationFailed(message or "The generation failed", **ctx)
    if status == "error":
        raise _classify_error(data, message, headers, ctx)
    raise InvalidProviderResponse(
        f"Unknown ModelsLab status {data.get('status')!r}: {_snippet(body)}", **ctx
    )


def _classify_error(
    data: dict[str, Any], message: str, headers: Mapping[str, str] | None, ctx: dict[str, Any]
) -> ProviderError:
    """Pick the error class for a ``status: "error"`` body that came with HTTP 2xx."""
    text = message or "ModelsLab rejected the request"
    lowered = text.lower()
    if data.get("retry_after") is not None or "rate limit" in lowered:
        return RateLimited(text, retry_after=_retry_after(data, headers), **ctx)
    if "api key" in lowered and any(w in lowered for w in ("invalid", "missing", "required")):
        return AuthenticationFailed(text, **ctx)
    if "insufficient credit" in lowered:
        return InsufficientCredits(text, **ctx)
    return ProviderRejected(text, **ctx)


def _build(status: str, data: dict[str, Any], message: str) -> ProviderResponse:
    meta = data.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    raw_id = data.get("id", data.get("request_id"))
    fetch_url = data.get("fetch_result")
    output_urls = _urls(data.get("output"))
    return ProviderResponse(
        status=status,
        provider_id=_storable("id", raw_id, _provider_id(raw_id)),
        output_urls=output_urls,
        future_urls=_urls(data.get("future_links")),
        proxy_urls=_urls(data.get("proxy_links")),
        eta=_storable("eta", data.get("eta"), _eta(data.get("eta"))),
        fetch_url=fetch_url if isinstance(fetch_url, str) and fetch_url else None,
        generation_time=_number(data.get("generationTime", data.get("generation_time"))),
        seed=_storable("seed", _raw_seed(data), reported_seed(data)),
        cost=reported_cost(data),
        meta=meta,
        message=message,
        raw=data,
        nsfw=_nsfw_flags(data.get("nsfw_content_detected"), len(output_urls)),
    )


def reported_cost(data: Mapping[str, Any]) -> Decimal | None:
    """A cost in a ModelsLab body: top-level or ``meta`` ``cost`` / ``credits`` /
    ``credits_used`` / ``price``, a number or numeric string from 0 to
    :data:`~django_modelslab.amounts.MAX_AMOUNT`; None when absent or unusable (warned)."""
    meta = data.get("meta")
    for source in (data, meta if isinstance(meta, Mapping) else {}):
        for name in COST_FIELDS:
            value = source.get(name)
            amount = parse_amount(value)
            if amount is not None and amount > MAX_AMOUNT:
                amount = None
            if _storable(name, value, amount) is not None:
                return amount
    return None


def reported_seed(data: Mapping[str, Any]) -> int | None:
    """The seed a ModelsLab body reports (``meta.seed``, else ``seed``): None when absent or
    when it does not fit 64 bits (``GeneratedImage.seed``). Silent: :func:`parse_response`
    warns about an unusable one."""
    return _seed(_raw_seed(data))


def _raw_seed(data: Mapping[str, Any]) -> Any:
    meta = data.get("meta")
    return (meta if isinstance(meta, Mapping) else {}).get("seed", data.get("seed"))


def loads(text: str | bytes) -> Any:
    """JSON, keeping as text the numbers Python cannot hold as finite numbers.

    ``NaN``, ``Infinity``, ``1e400`` and integers too long to convert stay strings, so an
    answer is always storable JSON (PostgreSQL's ``jsonb`` refuses non-finite numbers).
    """
    return json.loads(text, parse_float=_float_or_text, parse_int=_int_or_text, parse_constant=str)


def _float_or_text(text: str) -> float | str:
    number = float(text)
    return number if math.isfinite(number) else text


def _int_or_text(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:  # more digits than int() converts
        return text


def _storable(name: str, value: Any, parsed: Any) -> Any:
    """``parsed``; a warning when the answer had a ``name`` but it cannot be stored."""
    if parsed is None and value not in (None, ""):
        shown = repr(value)
        shown = shown if len(shown) <= 80 else shown[:79] + "…"
        logger.warning(
            "ModelsLab answered %s=%s, which cannot be stored: recorded as unknown "
            "(the raw answer keeps it).",
            name,
            shown,
        )
    return parsed


def _provider_id(value: Any) -> str | None:
    """An id that can be stored and fetched: up to 64 letters, digits, ``_`` or ``-``."""
    if value in (None, "") or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    return text if len(text) <= MAX_ID_LENGTH and _PROVIDER_ID.match(text) else None


def _eta(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and 0 <= number <= MAX_ETA else None


def _seed(value: Any) -> int | None:
    number = _integer(value)
    return number if number is not None and number in SEED_RANGE else None


def _nsfw_flags(value: Any, outputs: int) -> tuple[bool | None, ...]:
    """Per-output flags from one bool (all outputs), a list (one each) or yes/no strings."""
    if isinstance(value, list | tuple):
        return tuple(_yes_no(v) for v in value)
    flag = _yes_no(value)
    return () if flag is None else (flag,) * max(outputs, 1)


def _yes_no(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("yes", "true", "no", "false"):
        return value.strip().lower() in ("yes", "true")
    if isinstance(value, int | float):
        return bool(value)
    return None


def _urls(value: Any) -> tuple[str, ...]:
    """URLs from a list, an object keyed by position (``{"0": url}``), one string or ``""``."""
    if isinstance(value, str):
        return (value,) if value else ()
    if isinstance(value, Mapping):
        items = sorted(
            value.items(), key=lambda kv: (_integer(kv[0]) is None, _integer(kv[0]) or 0)
        )
        value = [v for _, v in items]
    if isinstance(value, list | tuple):
        return tuple(v for v in value if isinstance(v, str) and v)
    return ()


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number == number else None  # drop NaN


def _integer(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value  # exact: a float would round integers past 2**53
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    number = _number(value)
    return int(number) if number is not None and number.is_integer() else None


def _message(data: dict[str, Any]) -> str:
    """The provider's text: ``message`` or the misspelt ``messege``, flattened if structured."""
    parts = [_flatten(data.get(k)) for k in ("message", "messege", "error")]
    text = next((p for p in parts if p), "")
    errors = _flatten(data.get("errors"))  # Laravel: {"message": "...invalid.", "errors": {...}}
    if errors and errors not in text:
        text = f"{text} {errors}".strip()
    return text


def _flatten(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, Mapping):
        return " ".join(t for t in (_flatten(v) for v in value.values()) if t)
    if isinstance(value, list | tuple):
        return " ".join(t for t in (_flatten(v) for v in value) if t)
    return str(value)


def _snippet(body: Any, limit: int = 300) -> str:
    text = body if isinstance(body, str) else json.dumps(body, default=str) if body else ""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _retry_after(data: dict[str, Any] | None, headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait, from the body's ``retry_after`` or a ``Retry-After`` header."""
    if data is not None:
        seconds = _number(data.get("retry_after"))
        if seconds is not None and seconds >= 0:
            return seconds
    value = headers.get("retry-after") if headers is not None else None
    if not value:
        return None
    seconds = _number(value)
    if seconds is not None:
        return max(seconds, 0.0)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


# -- retry policy and configuration (shared by sync and async clients) -------------------


@dataclass(frozen=True)
class _Call:
    """One logical API call: where it goes, what it sends, whether repeating it is safe."""

    path: str
    payload: dict[str, Any]  # with the key: only ever handed to the transport
    shown_payload: dict[str, Any]  # redacted: for exceptions and logs
    idempotent: bool
    headers: dict[str, str] = field(default_factory=dict)  # with the key (v7): transport only


class _ClientCore:
    """Everything but I/O: configuration, payloads, redaction, retry decisions."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 60.0,
        connect_timeout: float = 10.0,
        max_retries: int = 3,
        retry_backoff: float = 1.0,
        retry_backoff_max: float = 30.0,
        max_retry_after: float | None = None,
    ) -> None:
        # An empty key is sent as is: the bundled emulator accepts it, the real API answers
        # 401, and system check django_modelslab.E001 refuses it for any non-loopback BASE_URL.
        if not isinstance(api_key, str):
            raise TypeError("The ModelsLab API key must be a string")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._api_key = api_key.strip()  # a key read from a file often ends in a newline
        self.base_url = base_url.rstrip("/") + "/"
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_retries = max_retries
        self.retry_backoff = retry_backoff
        self.retry_backoff_max = retry_backoff_max
        # A longer Retry-After is not waited for (None: waited, capped at retry_backoff_max).
        self.max_retry_after = max_retry_after

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any], **kwargs: Any) -> Self:
        """A client configured from a ``MODELSLAB``-style mapping, e.g. ``conf.get_settings()``.

        Reads ``API_KEY`` (required), ``BASE_URL``, ``TIMEOUT``, ``CONNECT_TIMEOUT``,
        ``MAX_RETRIES``, ``RETRY_BACKOFF`` and ``RETRY_BACKOFF_MAX`` where present; ``kwargs``
        (``max_retry_after``, ``transport``, ``sleep``) go to the constructor as they are.
        """
        given = {arg: settings[name] for name, arg in SETTING_ARGUMENTS.items() if name in settings}
        return cls(**given, **kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} base_url={self.base_url!r}>"

    # payloads

    def _generate_call(self, kind: str, params: Mapping[str, Any], api_version: str) -> _Call:
        path = generate_path(kind, api_version)
        return self._call(path, params, idempotent=False, key_header=api_version == "v7")

    def _fetch_call(
        self, provider_id: str | int, kind: str = "text2img", api_version: str = "v6"
    ) -> _Call:
        pid = str(provider_id).strip()
        if isinstance(provider_id, bool) or not _PROVIDER_ID.match(pid):
            raise ValueError(f"Not a ModelsLab request id: {provider_id!r}")
        path = fetch_path(kind, api_version).format(id=pid)
        return self._call(path, {}, idempotent=True, key_header=api_version == "v7")

    def _call(
        self, path: str, params: Mapping[str, Any], *, idempotent: bool, key_header: bool = False
    ) -> _Call:
        payload = {k: v for k, v in params.items() if str(k).lower() not in SECRET_FIELDS}
        payload["key"] = self._api_key
        headers = {"key": self._api_key} if key_header else {}
        return _Call(path, payload, elide_image_data(self._redact(payload)), idempotent, headers)

    def _redact(self, value: Any) -> Any:
        return redact(value, self._api_key)

    def _client_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "timeout": self.timeout,
            "headers": {"User-Agent": USER_AGENT, "Accept": "application/json"},
            "follow_redirects": False,
            "verify": shared_context(),
        }

    # retry decisions

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with full jitter; ``attempt`` counts from 0."""
        return min(self.retry_backoff_max, self.retry_backoff * 2.0**attempt) * random.random()

    def _on_response(
        self, call: _Call, attempt: int, response: httpx.Response, elapsed: float
    ) -> ProviderResponse | float:
        """Parse an answer: the result, or seconds to wait before trying again (or raise)."""
        logger.debug(
            "POST %s -> %s in %.3fs (attempt %d)",
            call.path,
            response.status_code,
            elapsed,
            attempt + 1,
        )
        try:
            body: Any = loads(response.content)
        except ValueError:
            body = response.text  # cut to MAX_TEXT by parse_response, after redaction
        try:
            return parse_response(
                elide_image_data(self._redact(body)),
                status_code=response.status_code,
                payload=call.shown_payload,
                headers=response.headers,
            )
        except RateLimited as exc:
            limit, wait = self.max_retry_after, exc.retry_after
            if limit is not None and wait is not None and wait > limit:
                raise _try_again_later(exc) from exc
            # Rejected before queueing: safe to repeat even for generate calls.
            delay = self._retry_delay(attempt, exc.retry_after)
            return self._retry_or_raise(call, attempt, exc, delay)
        except ProviderUnavailable as exc:
            if not call.idempotent and response.status_code not in (502, 503):
                # 500/504 on a generate call: the app may have queued the job before failing.
                raise AmbiguousSubmission(
                    f"{exc.message}; the generation may have been queued, not retried",
                    status_code=exc.status_code,
                    response=exc.response,
                    payload=exc.payload,
                ) from exc
            return self._retry_or_raise(call, attempt, exc, self._backoff(attempt))

    def _on_transport_error(
        self, call: _Call, attempt: int, exc: httpx.TransportError, elapsed: float
    ) -> float:
        """Seconds to wait before trying again after ``exc``; raise when that is not safe."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        reason = self._redact(text)
        # An error whose text quotes the key (httpx: "Illegal header value b'...'") is not
        # chained: tracebacks would print it.
        cause = exc if reason == text else None
        logger.debug(
            "POST %s failed after %.3fs (attempt %d): %s", call.path, elapsed, attempt + 1, reason
        )
        error = ProviderTransportError(
            f"Could not reach ModelsLab: {reason}", payload=call.shown_payload
        )
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
            raise error from cause  # our configuration or request is wrong; repeating won't help
        if not call.idempotent and not isinstance(exc, _NOT_SENT):
            raise AmbiguousSubmission(
                f"Lost the answer to a generate call ({reason}); the generation may have been"
                " queued, not retried",
                payload=call.shown_payload,
            ) from cause
        try:
            return self._retry_or_raise(call, attempt, error, self._backoff(attempt))
        except ProviderTransportError as final:
            raise final from cause

    def _retry_delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is None:
            return self._backoff(attempt)
        return min(retry_after, self.retry_backoff_max)

    def _retry_or_raise(self, call: _Call, attempt: int, exc: ProviderError, delay: float) -> float:
        if attempt >= self.max_retries:
            raise exc
        logger.warning(
            "POST %s: %s; retrying in %.2fs (retry %d of %d)",
            call.path,
            self._redact(str(exc)),
            delay,
            attempt + 1,
            self.max_retries,
        )
        return delay


def _try_again_later(exc: RateLimited) -> RateLimited:
    """``exc`` saying when to try again, for a caller that does not wait that long."""
    seconds = exc.retry_after or 0.0
    at = datetime.now(UTC) + timedelta(seconds=seconds)
    return RateLimited(
        f"{exc.message.rstrip('. ')}: ModelsLab asks to wait {seconds:g} s; try again after "
        f"{at:%Y-%m-%d %H:%M:%S} UTC",
        retry_after=exc.retry_after,
        status_code=exc.status_code,
        response=exc.response,
        payload=exc.payload,
    )


# Generate calls (text2img) are NOT idempotent: ModelsLab documents no idempotency key, so a
# repeated call after the provider queued the job would start, and bill, a second one. A
# generate call is therefore retried only when the provider certainly did not accept it:
#   * the connection could not be established (ConnectError / ConnectTimeout / PoolTimeout):
#     not one byte of the request was sent;
#   * HTTP 429: the request was refused because the queue is full;
#   * HTTP 502 / 503: a gateway answered that the application is unreachable or unavailable.
# Everything else that loses the answer (read/write timeout, a connection dropped after
# sending, HTTP 500 or 504) raises AmbiguousSubmission (may_have_been_accepted=True) and is
# not retried; the caller decides (e.g. look for the job by track id, or ask a person).
# Fetch calls are read-only, so every retriable failure is retried.
_NOT_SENT: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


# -- the blocking client -------------------------------------------------------------------


class ModelsLabClient(_ClientCore):
    """Blocking ModelsLab client. Use as a context manager or call :meth:`close`."""

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        **options: Any,
    ) -> None:
        """``options``: the timeouts and retry settings of :class:`_ClientCore`."""
        super().__init__(api_key, base_url, **options)
        self._sleep = sleep
        self._http = httpx.Client(transport=transport, **self._client_kwargs())

    def generate(
        self, kind: str, params: Mapping[str, Any], *, api_version: str = "v6"
    ) -> ProviderResponse:
        """Start a generation of ``kind`` (see :data:`GENERATE_PATHS`); never retried blindly."""
        return self._send(self._generate_call(kind, params, api_version))

    def text2img(self, params: Mapping[str, Any]) -> ProviderResponse:
        """Start a text-to-image generation (``POST v6/images/text2img``)."""
        return self.generate("text2img", params)

    def fetch(
        self, provider_id: str | int, *, kind: str = "text2img", api_version: str = "v6"
    ) -> ProviderResponse:
        """Ask for the state of a queued job of ``kind`` (``POST v6/images/fetch/{id}`` …)."""
        return self._send(self._fetch_call(provider_id, kind, api_version))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ModelsLabClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _send(self, call: _Call) -> ProviderResponse:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = self._http.post(call.path, json=call.payload, headers=call.headers)
            except httpx.TransportError as exc:
                delay = self._on_transport_error(call, attempt, exc, time.monotonic() - started)
            else:
                result = self._on_response(call, attempt, response, time.monotonic() - started)
                if isinstance(result, ProviderResponse):
                    return result
                delay = result
            self._sleep(delay)
            attempt += 1


# -- the async client ----------------------------------------------------------------------


class AsyncModelsLabClient(_ClientCore):
    """``httpx.AsyncClient`` twin of :class:`ModelsLabClient`: same payloads, parsing, retries.

    Use ``async with`` or await :meth:`aclose`.
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        **options: Any,
    ) -> None:
        """``options``: the timeouts and retry settings of :class:`_ClientCore`."""
        super().__init__(api_key, base_url, **options)
        self._sleep = sleep
        self._http = httpx.AsyncClient(transport=transport, **self._client_kwargs())

    async def generate(
        self, kind: str, params: Mapping[str, Any], *, api_version: str = "v6"
    ) -> ProviderResponse:
        """Start a generation of ``kind`` (see :data:`GENERATE_PATHS`); never retried blindly."""
        return await self._send(self._generate_call(kind, params, api_version))

    async def text2img(self, params: Mapping[str, Any]) -> ProviderResponse:
        """Start a text-to-image generation (``POST v6/images/text2img``)."""
        return await self.generate("text2img", params)

    async def fetch(
        self, provider_id: str | int, *, kind: str = "text2img", api_version: str = "v6"
    ) -> ProviderResponse:
        """Ask for the state of a queued job of ``kind`` (``POST v6/images/fetch/{id}`` …)."""
        return await self._send(self._fetch_call(provider_id, kind, api_version))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncModelsLabClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _send(self, call: _Call) -> ProviderResponse:
        attempt = 0
        while True:
            started = time.monotonic()
            try:
                response = await self._http.post(call.path, json=call.payload, headers=call.headers)
            except httpx.TransportError as exc:
                delay = self._on_transport_error(call, attempt, exc, time.monotonic() - started)
            else:
                result = self._on_response(call, attempt, response, time.monotonic() - started)
                if isinstance(result, ProviderResponse):
                    return result
                delay = result
            await self._sleep(delay)
            attempt += 1
