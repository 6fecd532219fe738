"""A local ModelsLab image API (v6, v7): the wire protocol, real images, expiring URLs, faults.

Like stripe-mock or moto: a threaded HTTP server on 127.0.0.1 that answers what the real API
answers (see the project's modelslab-api notes), so clients are tested over real HTTP. It
imports nothing from Django.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from base64 import b64decode
from binascii import Error as Base64Error
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import count
from typing import Any
from urllib.parse import urlsplit

from . import drawing
from .drawing import EXTENSIONS, FORMATS, blank_image, draw_image, normalize_format
from .faults import Fault, FaultQueue

logger = logging.getLogger("django_modelslab.testing")

MODES = ("success", "processing")
INVALID_KEY = "Invalid API key"
MISSING_KEY = "The key field is required."
#: Hosts the editing routes download input images from (a test server: this machine only).
INPUT_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_INPUT_BYTES = 20 * 1024 * 1024
NOT_FOUND = "Request not found"
#: A prompt containing this word (any case) gets its outputs flagged NSFW; with the safety
#: checker on (the emulator's default, as ModelsLab's) they are also blanked (solid black).
NSFW_TRIGGER = "emulator-nsfw"
_FIRST_ID = 134_701_497  # real ids are 9-digit integers
_CORRUPT = b"<html><body>Not an image: the emulator was asked to corrupt this file.</body></html>\n"
_FLAGS = (
    "safety_checker",
    "enhance_prompt",
    "base64",
    "temp",
    "instant_response",
    "tomesd",
    "use_karras_sigmas",
    "multi_lingual",
    "panorama",
    "self_attention",
    "highres_fix",
)
_STANDARD = {
    "key",
    "prompt",
    "negative_prompt",
    "model_id",
    "width",
    "height",
    "samples",
    "num_inference_steps",
    "steps",
    "guidance_scale",
    "seed",
    "webhook",
    "track_id",
    *_FLAGS,
}


# --- validation (Laravel-style messages, first failing rule wins) -------------------------


class ValidationError(Exception):
    """A request field broke a rule; the message is what the API answers."""


def _label(name: str) -> str:
    return name.replace("_", " ")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _integer(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        return int(value)
    raise ValidationError(f"The {_label(name)} must be an integer.")


def _number(value: Any, name: str) -> float:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    if numeric or (isinstance(value, str) and re.fullmatch(r"\s*[+-]?(\d+\.?\d*|\.\d+)\s*", value)):
        number = float(value)
    else:
        raise ValidationError(f"The {_label(name)} must be a number.")
    if number != number or number in (float("inf"), float("-inf")):
        raise ValidationError(f"The {_label(name)} must be a number.")
    return number


def _between(number: float, name: str, lo: float, hi: float) -> None:
    if not lo <= number <= hi:
        raise ValidationError(f"The {_label(name)} must be between {lo:g} and {hi:g}.")


def _size(body: dict[str, Any], name: str) -> int:
    if _blank(body.get(name)):
        return 512
    number = _integer(body[name], name)
    if number < 256:
        raise ValidationError(f"The {_label(name)} must be at least 256.")
    if number > 1024:
        raise ValidationError(f"The {_label(name)} must not be greater than 1024.")
    return number


def _string(body: dict[str, Any], name: str, *, required: bool) -> str | None:
    value = body.get(name)
    if _blank(value):
        if required:
            raise ValidationError(f"The {_label(name)} field is required.")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"The {_label(name)} must be a string.")
    return value


def _flag(value: Any, name: str) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
        return "yes" if value.strip().lower() in ("yes", "true") else "no"
    raise ValidationError(f"The selected {_label(name)} is invalid.")


def validate_text2img(body: dict[str, Any]) -> dict[str, Any]:
    """Coerced parameters of a text2img body (no ``key``), or ValidationError."""
    params: dict[str, Any] = {
        "prompt": _string(body, "prompt", required=True),
        "model_id": _string(body, "model_id", required=True),
        "negative_prompt": _string(body, "negative_prompt", required=False),
        "width": _size(body, "width"),
        "height": _size(body, "height"),
    }
    samples = 1 if _blank(body.get("samples")) else _integer(body["samples"], "samples")
    _between(samples, "samples", 1, 4)
    steps_field = "num_inference_steps" if "num_inference_steps" in body else "steps"
    steps = 30 if _blank(body.get(steps_field)) else _integer(body[steps_field], steps_field)
    _between(steps, steps_field, 1, 50)
    guidance = body.get("guidance_scale")
    guidance = 7.5 if _blank(guidance) else _number(guidance, "guidance_scale")
    _between(guidance, "guidance_scale", 1, 20)
    seed = None if _blank(body.get("seed")) else _integer(body["seed"], "seed")
    if seed is not None and seed < 0:
        raise ValidationError("The seed must be at least 0.")
    params.update(samples=samples, num_inference_steps=steps, guidance_scale=guidance, seed=seed)
    for name in _FLAGS:
        if not _blank(body.get(name)):
            params[name] = _flag(body[name], name)
    webhook = _string(body, "webhook", required=False)
    if webhook is not None:
        parts = urlsplit(webhook)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValidationError("The webhook must be a valid URL.")
    track_id = body.get("track_id")
    if isinstance(track_id, (dict, list, bool)):
        raise ValidationError("The track id must be a string.")
    params.update(webhook=webhook, track_id=None if track_id == "" else track_id)
    params.update({k: v for k, v in body.items() if k not in _STANDARD})
    return params


def _image_field(body: dict[str, Any], name: str) -> str:
    """A required input image: an http(s) URL, a ``data:`` URL or bare base64."""
    value = _string(body, name, required=True)
    assert value is not None
    return value.strip()


def _strength(body: dict[str, Any], default: float) -> float:
    if _blank(body.get("strength")):
        return default
    strength = _number(body["strength"], "strength")
    _between(strength, "strength", 0, 1)
    return strength


def validate_img2img(body: dict[str, Any]) -> dict[str, Any]:
    """text2img's rules plus ``init_image`` (required) and ``strength`` (0 to 1, default 0.7)."""
    params = validate_text2img(body)
    params.update(init_image=_image_field(body, "init_image"), strength=_strength(body, 0.7))
    return params


def validate_inpaint(body: dict[str, Any]) -> dict[str, Any]:
    """img2img's rules plus ``mask_image`` (required; white is repainted); strength default 1."""
    params = validate_text2img(body)
    params.update(
        init_image=_image_field(body, "init_image"),
        mask_image=_image_field(body, "mask_image"),
        strength=_strength(body, 1.0),
    )
    return params


def validate_upscale(body: dict[str, Any]) -> dict[str, Any]:
    """super_resolution: ``init_image`` (required), ``scale`` 1 to 4 (default 3), ``model_id``."""
    init = _image_field(body, "init_image")
    scale = 3 if _blank(body.get("scale")) else _integer(body["scale"], "scale")
    _between(scale, "scale", 1, 4)
    model_id = _string(body, "model_id", required=False) or "realesr-general-x4v3"
    params = {k: v for k, v in body.items() if k not in ("key", "init_image", "scale", "model_id")}
    webhook = _string(body, "webhook", required=False)
    if webhook is not None and urlsplit(webhook).scheme not in ("http", "https"):
        raise ValidationError("The webhook must be a valid URL.")
    params.update(
        init_image=init,
        scale=scale,
        model_id=model_id,
        prompt=None,
        negative_prompt=None,
        samples=1,
        seed=None,
        webhook=webhook,
        track_id=body.get("track_id") or None,
    )
    return params


def validate_v7_image(body: dict[str, Any]) -> dict[str, Any]:
    """v7 image-to-image: text2img's rules plus ``init_image`` and ``strength`` (default 0.7)."""
    return validate_img2img(body)


# --- routes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One API endpoint under ``/api/``; add a line to ROUTES to grow the emulator."""

    name: str  # counter / fault key
    pattern: re.Pattern[str]
    kind: str  # "generate" | "fetch"
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    fetch_path: str = ""  # for generate routes: where its jobs are fetched
    message_key: str = "messege"  # v6 images misspell it; realtime/image_editing do not
    family: str = "v6/images/fetch"  # jobs are fetched on the fetch route of the same family
    key_required: bool = False  # v7: a key in the body or the ``key`` header, else 401


ROUTES: list[Route] = [
    Route(
        "text2img",
        re.compile(r"v6/images/text2img/?"),
        "generate",
        validate_text2img,
        fetch_path="v6/images/fetch",
    ),
    Route("fetch", re.compile(r"v6/images/fetch(?:/(?P<id>[^/]+))?/?"), "fetch"),
    Route(
        "img2img",
        re.compile(r"v6/images/img2img/?"),
        "generate",
        validate_img2img,
        fetch_path="v6/images/fetch",
    ),
    Route(
        "inpaint",
        re.compile(r"v6/images/inpaint/?"),
        "generate",
        validate_inpaint,
        fetch_path="v6/images/fetch",
    ),
    Route(
        "upscale",
        re.compile(r"v6/image_editing/super_resolution/?"),
        "generate",
        validate_upscale,
        fetch_path="v6/image_editing/fetch",
        message_key="message",
        family="v6/image_editing/fetch",
    ),
    Route(
        "upscale_fetch",
        re.compile(r"v6/image_editing/fetch(?:/(?P<id>[^/]+))?/?"),
        "fetch",
        message_key="message",
        family="v6/image_editing/fetch",
    ),
    Route(
        "v7_text2img",
        re.compile(r"v7/images/text-to-image/?"),
        "generate",
        validate_text2img,
        fetch_path="v7/images/fetch",
        message_key="message",
        family="v7/images/fetch",
        key_required=True,
    ),
    Route(
        "v7_img2img",
        re.compile(r"v7/images/image-to-image/?"),
        "generate",
        validate_v7_image,
        fetch_path="v7/images/fetch",
        message_key="message",
        family="v7/images/fetch",
        key_required=True,
    ),
    Route(
        "v7_fetch",
        re.compile(r"v7/images/fetch(?:/(?P<id>[^/]+))?/?"),
        "fetch",
        message_key="message",
        family="v7/images/fetch",
        key_required=True,
    ),
]


def _match_route(path: str) -> tuple[Route, re.Match[str]] | None:
    if not path.startswith("/api/"):
        return None
    rest = path[len("/api/") :]
    for route in ROUTES:
        match = route.pattern.fullmatch(rest)
        if match:
            return route, match
    return None


# --- jobs ---------------------------------------------------------------------------------


@dataclass
class Job:
    """One emulated generation, by provider id."""

    id: int
    route: str
    params: dict[str, Any]
    seed: int
    file_prefix: str
    image_format: str
    output_urls: list[str]
    proxy_urls: list[str]
    fetch_url: str
    meta: dict[str, Any]
    eta: float
    pending_fetches: int
    message_key: str = "messege"
    family: str = "v6/images/fetch"  # the fetch route that knows this job
    inputs: dict[str, bytes] = field(default_factory=dict, repr=False)  # decoded input images
    status: str = "processing"  # processing | success | failed
    message: str | None = None  # why it failed
    fail_message: str | None = None  # set by Fault.failed: fail at the next chance
    never_finish: bool = False
    nsfw: list[bool] = field(default_factory=list)  # per output
    blanked: frozenset[int] = frozenset()  # outputs replaced by a black image
    fetches: int = 0
    generation_time: float = 0.0
    cost: float | None = None  # reported in success answers when the report_cost knob is set
    answer_fields: dict[str, Any] = field(default_factory=dict)  # the answer_fields knob's
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    _created: float = field(default_factory=time.monotonic, repr=False)
    _finished: float | None = field(default=None, repr=False)

    @property
    def webhook(self) -> str | None:
        return self.params.get("webhook")

    @property
    def track_id(self) -> Any:
        return self.params.get("track_id")


# --- the emulator -------------------------------------------------------------------------


class Emulator:
    """A threaded local ModelsLab server; knobs are plain attributes, changeable at runtime.

    Knobs: ``mode`` "success" (text2img answers success at once) or "processing" (answers
    processing; fetch answers the short processing form ``pending_fetches`` times and until
    ``eta`` seconds have passed, then success); ``latency`` seconds slept in every generate
    call; ``url_ttl`` seconds an output stays downloadable after the job finished (then 404);
    ``api_keys`` None (any key) or the accepted keys (body ``key``, header ``key`` or Bearer);
    ``errors_as_200`` answer validation/auth/not-found errors with HTTP 200;
    ``image_format`` "png" | "jpeg"; ``webhook_duplicates`` extra copies of each callback;
    ``webhook_auto_finish`` a processing job that has a webhook finishes by itself after
    ``eta`` (and calls back) without being fetched; ``report_cost`` None (no cost in answers)
    or a price per image: success answers then carry ``"cost"`` = price x samples;
    ``minimal_fetch`` fetch success answers carry only ``status``, ``id``, ``output`` and
    ``proxy_links`` (no ``meta``), as a real fetch may;
    ``answer_fields`` fields set as given in the success answers (generate, fetch, webhook) of
    the jobs created meanwhile, its ``"meta"`` merged into the job's meta (odd figures such as
    ``{"cost": "1e30", "meta": {"seed": 1e30}}``).

    Models and safety: ``models`` None (any model id) or the ids that exist (others answer
    404 "Model not found: <id>"); ``failing_models`` maps a model id to ``"failed"`` (the
    job is accepted, then reported failed) or an HTTP status (e.g. 503, answered at once);
    a prompt containing ``NSFW_TRIGGER`` ("emulator-nsfw") gets ``nsfw_content_detected``
    true for every output, or only for the indexes in ``nsfw_outputs`` when that is a list;
    unless ``safety_checker`` is "no", flagged outputs are solid black.

    ``input_hosts`` are the hosts the editing routes (img2img, inpaint, upscale, v7
    image-to-image) download ``init_image`` / ``mask_image`` URLs from; ``data:`` URLs and
    bare base64 are decoded instead.

    Inspect ``calls`` (Counter by route name: text2img, fetch, img2img, upscale, v7_fetch …,
    download, webhook), ``jobs`` (by provider id as a string), ``requests`` (API calls as
    ``(route, body)``, key redacted), ``request_headers`` (``(route, headers)``, ``key`` and
    ``authorization`` masked) and ``webhook_deliveries``.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        mode: str = "success",
        eta: float = 0.2,
        pending_fetches: int = 1,
        url_ttl: float = 86400.0,
        api_keys: Iterable[str] | None = None,
        latency: float = 0.0,
        image_format: str = "png",
        errors_as_200: bool = False,
        webhook_duplicates: int = 0,
        webhook_auto_finish: bool = True,
        report_cost: float | None = None,
        answer_fields: dict[str, Any] | None = None,
        minimal_fetch: bool = False,
        models: Iterable[str] | None = None,
        failing_models: dict[str, str | int] | None = None,
        nsfw_outputs: Iterable[int] | None = None,
        input_hosts: Iterable[str] = INPUT_HOSTS,
    ) -> None:
        self.host = host
        self.port = port
        self._requested_port = port
        self.mode = mode
        self.eta = eta
        self.pending_fetches = pending_fetches
        self.url_ttl = url_ttl
        self.api_keys: set[str] | None = None
        self.latency = latency
        self.image_format = image_format
        self.errors_as_200 = errors_as_200
        self.webhook_duplicates = webhook_duplicates
        self.webhook_auto_finish = webhook_auto_finish
        self.input_hosts = tuple(input_hosts)
        self.report_cost: float | None = None
        self.answer_fields: dict[str, Any] = {}
        self.minimal_fetch = bool(minimal_fetch)
        self.models: set[str] | None = None
        self.failing_models: dict[str, str | int] = {}
        self.nsfw_outputs: list[int] | None = None
        self.configure(
            api_keys=api_keys,
            mode=mode,
            image_format=image_format,
            report_cost=report_cost,
            answer_fields=answer_fields or {},
            models=models,
            failing_models=failing_models or {},
            nsfw_outputs=nsfw_outputs,
        )
        self._defaults = self._knobs()

        self.calls: Counter[str] = Counter()
        self.jobs: dict[str, Job] = {}
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.request_headers: list[tuple[str, dict[str, str]]] = []
        self.webhook_deliveries: list[dict[str, Any]] = []
        self.faults = FaultQueue()
        self._lock = threading.RLock()
        self._ids = count(_FIRST_ID)
        self._epoch = 0
        self._outputs: dict[str, tuple[Job, int]] = {}
        self._images: dict[str, bytes] = {}
        self._timers: list[threading.Timer] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> Emulator:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        server = _Server((self.host, self._requested_port), _Handler)
        server.emulator = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"modelslab-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and cancel pending timers."""
        server, self._server = self._server, None
        self._cancel_timers()
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<Emulator {self.base_url} mode={self.mode}>"

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What ModelsLab calls BASE_URL: ``http://127.0.0.1:<port>/api``."""
        return f"{self.origin}/api"

    # knobs
    def _knobs(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "eta": self.eta,
            "pending_fetches": self.pending_fetches,
            "url_ttl": self.url_ttl,
            "api_keys": None if self.api_keys is None else set(self.api_keys),
            "latency": self.latency,
            "image_format": self.image_format,
            "errors_as_200": self.errors_as_200,
            "webhook_duplicates": self.webhook_duplicates,
            "webhook_auto_finish": self.webhook_auto_finish,
            "input_hosts": tuple(self.input_hosts),
            "report_cost": self.report_cost,
            "answer_fields": copy.deepcopy(self.answer_fields),
            "minimal_fetch": self.minimal_fetch,
            "models": None if self.models is None else set(self.models),
            "failing_models": dict(self.failing_models),
            "nsfw_outputs": None if self.nsfw_outputs is None else list(self.nsfw_outputs),
        }

    def config(self) -> dict[str, Any]:
        """The knobs as JSON-able values (keys are counted, never shown)."""
        knobs = self._knobs()
        knobs["api_keys"] = None if self.api_keys is None else len(self.api_keys)
        knobs["models"] = None if self.models is None else sorted(self.models)
        return knobs

    def configure(self, **knobs: Any) -> None:
        """Set knobs by name with validation (ValueError for unknown names or bad values)."""
        unknown = set(knobs) - set(self._knobs())
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(sorted(unknown))}")
        for name, value in knobs.items():
            if name == "mode" and value not in MODES:
                raise ValueError(f"mode must be one of {MODES}, not {value!r}")
            if name == "image_format":
                value = normalize_format(value)
            if name == "api_keys" and value is not None:
                if isinstance(value, str):
                    raise ValueError("api_keys must be a collection of keys, not one string")
                value = {str(key) for key in value}
            if name in ("eta", "url_ttl", "latency") and float(value) < 0:
                raise ValueError(f"{name} must not be negative")
            if name in ("pending_fetches", "webhook_duplicates") and int(value) < 0:
                raise ValueError(f"{name} must not be negative")
            if name == "input_hosts":
                if isinstance(value, str):
                    raise ValueError("input_hosts must be a collection of hosts, not one string")
                value = tuple(str(host) for host in value)
            if name == "report_cost" and value is not None:
                if isinstance(value, bool):
                    raise ValueError("report_cost must be None or a price per image >= 0")
                value = float(value)
                if not 0 <= value < float("inf"):
                    raise ValueError("report_cost must be None or a price per image >= 0")
            if name in ("models", "nsfw_outputs") and value is not None:
                if isinstance(value, str):
                    raise ValueError(f"{name} must be a collection, not one string")
                value = {str(v) for v in value} if name == "models" else [int(v) for v in value]
            if name == "failing_models":
                value = _failing_models(value)
            if name == "answer_fields":
                value = _answer_fields(value)
            setattr(self, name, value)

    def reset(self) -> None:
        """Forget jobs, counters, requests, faults and images; restore the constructor knobs."""
        self._cancel_timers()
        with self._lock:
            self._epoch += 1
            self.calls.clear()
            self.jobs.clear()
            self.requests.clear()
            self.request_headers.clear()
            self.webhook_deliveries.clear()
            self._outputs.clear()
            self._images.clear()
            self.faults.clear()
            for name, value in self._defaults.items():
                if isinstance(value, set | dict | list):
                    value = type(value)(value)
                setattr(self, name, value)

    def add_fault(self, route: str, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` calls on ``route`` (or ``"*"``) misbehave as ``fault``."""
        names = {r.name for r in ROUTES} | {"download", "*"}
        if route not in names:
            raise ValueError(f"unknown route {route!r}; known: {', '.join(sorted(names))}")
        kinds = {r.name: r.kind for r in ROUTES} | {"download": "download"}
        if route != "*" and not fault.applies_to(kinds[route]):
            raise ValueError(f"fault {fault.kind!r} does not apply to route {route!r}")
        self.faults.add(route, fault, times)

    def output_bytes(self, url: str) -> bytes:
        """The exact bytes served at an output URL (KeyError if the emulator never made it)."""
        name = urlsplit(url).path.rsplit("/", 1)[-1]
        with self._lock:
            job, index = self._outputs[name]
        return self._image(name, job, index)

    # bookkeeping used by the handler
    def _begin(
        self, route: str, kind: str, body: dict[str, Any] | None, headers: Any = None
    ) -> Fault | None:
        with self._lock:
            self.calls[route] += 1
            if body is not None:
                self.requests.append((route, {**body, "key": "***"} if "key" in body else body))
            if headers is not None:
                shown = {
                    k.lower(): "***" if k.lower() in ("key", "authorization") else v
                    for k, v in headers.items()
                }
                self.request_headers.append((route, shown))
        return self.faults.take(route, kind)

    def _authorized(self, body: dict[str, Any], headers: Any) -> bool:
        if self.api_keys is None:
            return True
        candidates = [body.get("key"), headers.get("key")]
        auth = headers.get("Authorization") or ""
        if auth.lower().startswith("bearer "):
            candidates.append(auth[7:].strip())
        return any(isinstance(c, str) and c in self.api_keys for c in candidates)

    def _cancel_timers(self) -> None:
        with self._lock:
            timers, self._timers = self._timers, []
        for timer in timers:
            timer.cancel()

    def _image(self, name: str, job: Job, index: int) -> bytes:
        data = self._images.get(name)
        if data is None and index in job.blanked:
            width, height = _output_size(job)
            data = blank_image(width, height, job.image_format)
        if data is None and job.inputs:
            data = _edited_image(job, index)
        if data is None:
            params = job.params
            data = draw_image(
                params["prompt"] or "",
                job.seed + index,
                params["width"],
                params["height"],
                job.image_format,
            )
            with self._lock:
                self._images.setdefault(name, data)
        return data

    def _prerender(self, job_id: str) -> None:
        """Draw a finished job's images now, as ModelsLab has them ready when it answers."""
        job = self.jobs.get(job_id)
        if job is None or job.status != "success" or job.inputs or job.blanked:
            return
        for index, url in enumerate(job.output_urls):
            self._image(url.rsplit("/", 1)[1], job, index)

    def _downloadable(self, name: str) -> tuple[bytes, str] | None:
        """Bytes and content type for an output file, or None (unknown, unfinished, expired)."""
        with self._lock:
            found = self._outputs.get(name)
            if found is None:
                return None
            job, index = found
            if job.status != "success" or job._finished is None:
                return None
            if time.monotonic() - job._finished >= float(self.url_ttl):
                return None
        return self._image(name, job, index), FORMATS[job.image_format]

    # input images (editing routes)
    def _load_inputs(self, params: dict[str, Any]) -> dict[str, bytes]:
        """Fetch or decode ``init_image`` / ``mask_image``; set the output size from the init.

        Raises ValidationError (answered as 400) when an input cannot be read.
        """
        inputs: dict[str, bytes] = {}
        for name in ("init_image", "mask_image"):
            value = params.get(name)
            if value is None:
                continue
            data = self._input_bytes(str(value), name)
            try:
                image = drawing.open_rgb(data)
            except ValueError:
                raise ValidationError(f"The {_label(name)} must be an image.") from None
            inputs[name] = data
            if name == "init_image":
                scale = int(params.get("scale") or 1)
                params["width"], params["height"] = image.width * scale, image.height * scale
        return inputs

    def _input_bytes(self, value: str, name: str) -> bytes:
        label = _label(name)
        if value[:5].lower() == "data:":
            _, _, value = value.partition(",")
        elif urlsplit(value).scheme in ("http", "https"):
            return self._download_input(value, label)
        try:
            return b64decode("".join(value.split()), validate=True)
        except (Base64Error, ValueError):
            raise ValidationError(f"The {label} must be a valid URL or base64 image.") from None

    def _download_input(self, url: str, label: str) -> bytes:
        host = urlsplit(url).hostname or ""
        if host not in self.input_hosts:
            raise ValidationError(f"The {label} could not be downloaded: host {host} not allowed.")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(url, timeout=5) as response:  # the host was checked above
                data = response.read(MAX_INPUT_BYTES + 1)
        except urllib.error.HTTPError as exc:
            raise ValidationError(
                f"The {label} could not be downloaded (HTTP {exc.code})."
            ) from exc
        except (OSError, ValueError) as exc:
            raise ValidationError(f"The {label} could not be downloaded: {exc}.") from exc
        if len(data) > MAX_INPUT_BYTES:
            raise ValidationError(f"The {label} must not be larger than {MAX_INPUT_BYTES} bytes.")
        return data

    # jobs
    def _create_job(
        self,
        route: Route,
        params: dict[str, Any],
        fault: Fault | None,
        inputs: dict[str, bytes] | None = None,
    ) -> dict:
        if self.mode not in MODES:
            raise ValueError(f"emulator mode must be one of {MODES}, not {self.mode!r}")
        fmt = normalize_format(self.image_format)
        seed = params["seed"] if params["seed"] is not None else random.randrange(2**32)
        prefix = str(uuid.uuid4())
        names = [f"{prefix}-{n}.{EXTENSIONS[fmt]}" for n in range(params["samples"])]
        with self._lock:
            job_id = next(self._ids)
            job = Job(
                id=job_id,
                route=route.name,
                params=params,
                seed=seed,
                file_prefix=prefix,
                image_format=fmt,
                output_urls=[f"{self.origin}/generations/{n}" for n in names],
                proxy_urls=[f"{self.origin}/proxy/generations/{n}" for n in names],
                fetch_url=f"{self.base_url}/{route.fetch_path}/{job_id}",
                meta=_meta(params, seed, prefix),
                eta=float(self.eta),
                pending_fetches=int(self.pending_fetches),
                message_key=route.message_key,
                family=route.family,
                inputs=dict(inputs or {}),
                generation_time=round(1.0 + (seed % 300) / 100 + float(self.latency), 2),
                cost=None
                if self.report_cost is None
                else round(self.report_cost * params["samples"], 6),
                answer_fields=copy.deepcopy(self.answer_fields),
            )
            job.nsfw = self._nsfw(params)
            if params.get("safety_checker", "yes") == "yes":
                job.blanked = frozenset(i for i, flag in enumerate(job.nsfw) if flag)
            if fault is not None and fault.kind == "failed":
                job.fail_message = fault.message
            job.never_finish = fault is not None and fault.kind == "never_finish"
            self.jobs[str(job_id)] = job
            for index, name in enumerate(names):
                self._outputs[name] = (job, index)
            if self.mode == "success" and job.fail_message is None and not job.never_finish:
                self._succeed(job)
                body = _success_body(job)
            else:
                body = _processing_body(job)
                if job.webhook and self.webhook_auto_finish and not job.never_finish:
                    self._schedule(job)
        if job.status == "success":
            self._notify(job)
        return body

    def _nsfw(self, params: dict[str, Any]) -> list[bool]:
        """Per-output NSFW flags: set for a prompt containing NSFW_TRIGGER."""
        samples = params["samples"]
        if NSFW_TRIGGER not in (params["prompt"] or "").lower():
            return [False] * samples
        chosen = self.nsfw_outputs
        return [chosen is None or i in chosen for i in range(samples)]

    def _model_problem(self, params: dict[str, Any]) -> tuple[int, str] | None:
        """``(HTTP status, message)`` when the model does not exist or is set to fail now."""
        model = params["model_id"]
        if self.models is not None and model not in self.models:
            return 404, f"Model not found: {model}"
        failing = self.failing_models.get(model)
        if isinstance(failing, int):
            return failing, f"Model {model} is temporarily unavailable."
        return None

    def _schedule(self, job: Job) -> None:
        epoch = self._epoch

        def finish() -> None:
            with self._lock:
                if epoch != self._epoch or job.status != "processing" or job.never_finish:
                    return
                if job.fail_message is not None:
                    self._fail(job, job.fail_message)
                else:
                    self._succeed(job)
            self._notify(job)

        timer = threading.Timer(job.eta, finish)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _succeed(self, job: Job) -> None:
        job.status = "success"
        job._finished = time.monotonic()
        job.finished_at = time.time()

    def _fail(self, job: Job, message: str) -> None:
        job.status = "failed"
        job.message = message
        job._finished = time.monotonic()
        job.finished_at = time.time()

    def _fetch(
        self, raw_id: Any, fault: Fault | None, family: str = "v6/images/fetch"
    ) -> tuple[int, dict[str, Any]]:
        job_id = str(raw_id).strip() if raw_id is not None else ""
        notify = False
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None or job.family != family:
                return 404, {"status": "error", "message": NOT_FOUND}
            job.fetches += 1
            if fault is not None and fault.kind == "never_finish":
                job.never_finish = True
            if fault is not None and fault.kind == "failed":
                notify = job.status == "processing"
                self._fail(job, fault.message)
            elif job.status == "processing" and not job.never_finish:
                if job.fail_message is not None:
                    self._fail(job, job.fail_message)
                    notify = True
                elif (
                    job.fetches > job.pending_fetches and time.monotonic() - job._created >= job.eta
                ):
                    self._succeed(job)
                    notify = True
            if job.status == "success" and self.minimal_fetch:
                body = {  # the minimal form a real fetch may answer (modelslab-api.md §4)
                    "status": "success",
                    "id": job.id,
                    "output": list(job.output_urls),
                    "proxy_links": list(job.proxy_urls),
                }
            elif job.status == "success":
                body = {
                    "status": "success",
                    "id": job.id,
                    "output": list(job.output_urls),
                    "proxy_links": list(job.proxy_urls),
                    "nsfw_content_detected": _nsfw_field(job),
                    "meta": dict(job.meta),
                    **_cost(job),
                }
                body = _with_answer_fields(body, job)
            elif job.status == "failed":
                body = {"status": "failed", "id": job.id, "message": job.message}
            else:
                body = {
                    "status": "processing",
                    job.message_key: "try again later.",
                    "output": "",
                    "tip": "Your image is processing in background, fetch it again later.",
                }
        if notify:
            self._notify(job)
        return 200, body

    # webhooks
    def _notify(self, job: Job) -> None:
        """POST the job's outcome to its webhook (best effort, in the background)."""
        url = job.webhook
        if not url:
            return
        if job.status == "success":
            body = {**_success_body(job), "track_id": job.track_id}
        else:
            body = {
                "status": "failed",
                "id": job.id,
                "message": job.message,
                "track_id": job.track_id,
            }
        copies = 1 + max(0, int(self.webhook_duplicates))
        epoch = self._epoch
        thread = threading.Thread(
            target=self._deliver, args=(url, body, copies, epoch), daemon=True
        )
        thread.start()

    def _deliver(self, url: str, body: dict[str, Any], copies: int, epoch: int) -> None:
        data = json.dumps(body).encode()
        for _ in range(copies):
            record: dict[str, Any] = {"url": url, "body": body}
            request = urllib.request.Request(  # noqa: S310 - http(s) checked by validation
                url,
                data=data,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "ModelsLabEmulator"},
            )
            try:
                with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                    record["status"] = response.status
            except urllib.error.HTTPError as exc:
                record["status"] = exc.code
            except (OSError, ValueError) as exc:
                record["error"] = str(exc)
            with self._lock:
                if epoch != self._epoch:
                    return
                self.calls["webhook"] += 1
                self.webhook_deliveries.append(record)

    # control API
    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "calls": dict(self.calls),
                "jobs": len(self.jobs),
                "jobs_by_status": dict(Counter(job.status for job in self.jobs.values())),
                "faults": self.faults.pending(),
                "webhooks": len(self.webhook_deliveries),
                "config": self.config(),
            }


def _meta(params: dict[str, Any], seed: int, prefix: str) -> dict[str, Any]:
    extras = {k: v for k, v in params.items() if k not in _STANDARD}
    flags = {k: params[k] for k in _FLAGS if k in params}
    return {
        **extras,
        **flags,
        "prompt": params.get("prompt"),
        "negative_prompt": params.get("negative_prompt"),
        "model_id": params["model_id"],
        "W": params.get("width"),
        "H": params.get("height"),
        "steps": params.get("num_inference_steps"),
        "n_samples": params.get("samples"),
        "guidance_scale": params.get("guidance_scale"),
        "seed": seed,
        "webhook": params.get("webhook"),
        "track_id": params.get("track_id"),
        "file_prefix": prefix,
    }


def _output_size(job: Job) -> tuple[int, int]:
    """The size of a job's outputs: its input's for an editing job, else width x height."""
    if "init_image" in job.inputs:
        size = drawing.open_rgb(job.inputs["init_image"]).size
        scale = int(job.params["scale"]) if job.route == "upscale" else 1
        return size[0] * scale, size[1] * scale
    return int(job.params["width"]), int(job.params["height"])


def _edited_image(job: Job, index: int) -> bytes:
    """An output of an editing job, made from its input images with real image operations."""
    params, fmt = job.params, job.image_format
    init = job.inputs["init_image"]
    if job.route == "upscale":
        return drawing.upscale(init, int(params["scale"]), fmt)
    prompt, seed, strength = params.get("prompt") or "", job.seed + index, params["strength"]
    if "mask_image" in job.inputs:
        return drawing.inpaint(init, job.inputs["mask_image"], prompt, seed, strength, fmt)
    return drawing.img2img(init, prompt, seed, strength, fmt)


def _success_body(job: Job) -> dict[str, Any]:
    body = {
        "status": "success",
        "generationTime": job.generation_time,
        "id": job.id,
        "output": list(job.output_urls),
        "proxy_links": list(job.proxy_urls),
        "nsfw_content_detected": _nsfw_field(job),
        "webhook_status": "",
        "meta": dict(job.meta),
        **_cost(job),
    }
    return _with_answer_fields(body, job)


def _with_answer_fields(body: dict[str, Any], job: Job) -> dict[str, Any]:
    """``body`` with the job's ``answer_fields`` set (its ``"meta"`` merged into the meta)."""
    fields = copy.deepcopy(job.answer_fields)
    meta = fields.pop("meta", None)
    body = {**body, **fields}
    if isinstance(meta, dict):
        body["meta"] = {**body.get("meta", {}), **meta}
    return body


def _answer_fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("meta", {}), dict):
        raise ValueError("answer_fields must be an object (its 'meta', if any, an object)")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"answer_fields must be JSON: {exc}") from None
    return copy.deepcopy(value)


def _cost(job: Job) -> dict[str, Any]:
    return {} if job.cost is None else {"cost": job.cost}


def _nsfw_field(job: Job) -> bool | list[bool]:
    """One bool when every output agrees (as ModelsLab answers), else one flag per output."""
    flags = job.nsfw or [False]
    return flags[0] if len(set(flags)) == 1 else list(flags)


def _failing_models(value: Any) -> dict[str, str | int]:
    if not isinstance(value, dict):
        raise ValueError("failing_models must map model ids to 'failed' or an HTTP status")
    checked: dict[str, str | int] = {}
    for model, how in value.items():
        if how != "failed" and not (isinstance(how, int) and 400 <= how <= 599):
            raise ValueError(f"failing_models[{model!r}] must be 'failed' or 400..599, not {how!r}")
        checked[str(model)] = how
    return checked


def _processing_body(job: Job) -> dict[str, Any]:
    return {
        "status": "processing",
        "tip": f"Your image is processing in background, you can get this image using fetch "
        f"API: here is link for fetch api : {job.fetch_url}",
        "eta": job.eta,
        job.message_key: "Try to fetch request after seconds estimated",
        "webhook_status": "",
        "fetch_result": job.fetch_url,
        "id": job.id,
        "output": [],
        "future_links": list(job.output_urls),
        "meta": dict(job.meta),
    }


# --- HTTP ---------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of concurrent clients (the
    # regenerate_images --concurrency benchmark) would see dropped SYNs and 1 s retries.
    request_queue_size = 128
    emulator: Emulator

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


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out as two writes
    server_version = "ModelsLabEmulator/1.0"
    timeout = 60  # idle keep-alive connections give their thread back
    server: _Server
    _answer_at: float | None = None

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
    def emu(self) -> Emulator:
        return self.server.emulator

    def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None):
        if self._answer_at is not None:  # --latency: answer no sooner than that after the call
            time.sleep(max(0.0, self._answer_at - time.monotonic()))
            self._answer_at = None
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
        found = _match_route(path)
        if found is None:
            return self._json(404, {"status": "error", "message": "Not found."})
        route, match = found
        fault = self.emu._begin(route.name, route.kind, body, self.headers)
        if route.kind == "generate" and self.emu.latency > 0:
            if fault is None:  # the job's own work (drawing its images) is part of the latency
                self._answer_at = time.monotonic() + float(self.emu.latency)
            else:
                time.sleep(float(self.emu.latency))
        if self._common_fault(fault):
            return None
        if body is None:
            return self._error(400, problem or "Bad request.")
        if route.key_required and _blank(body.get("key")) and _blank(self.headers.get("key")):
            return self._error(401, MISSING_KEY)
        if not self.emu._authorized(body, self.headers):
            return self._error(401, INVALID_KEY)
        if route.kind == "generate":
            assert route.validate is not None
            try:
                params = route.validate(body)
                inputs = self.emu._load_inputs(params)
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
        if _match_route(path):
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
            data = _CORRUPT
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
