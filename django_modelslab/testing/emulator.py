"""A local ModelsLab image API (v6, v7): the wire protocol, real images, expiring URLs, faults.

Like stripe-mock or moto: a threaded HTTP server on 127.0.0.1 that answers what ModelsLab's
API reference documents (paths, body shapes and quirks), so clients are tested over real
HTTP. It imports nothing from Django. :class:`Emulator` holds the knobs, the jobs and what
was called; :mod:`.server` answers HTTP, :mod:`.routes` lists the endpoints,
:mod:`.validation` checks the bodies and :mod:`.jobs` shapes the answers.
"""

from __future__ import annotations

import copy
import json
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterable
from itertools import count
from typing import Any
from urllib.parse import urlsplit

from .drawing import EXTENSIONS, FORMATS, blank_image, draw_image, normalize_format
from .faults import Fault, FaultQueue
from .jobs import (
    Job,
    callback_body,
    edited_image,
    fetch_body,
    job_meta,
    output_size,
    processing_body,
    success_body,
)
from .routes import ROUTES, Route
from .server import Handler, Server
from .validation import INPUT_HOSTS

MODES = ("success", "processing")
NOT_FOUND = "Request not found"
#: A prompt containing this word (any case) gets its outputs flagged NSFW; with the safety
#: checker on (the emulator's default, as ModelsLab's) they are also blanked (solid black).
NSFW_TRIGGER = "emulator-nsfw"
_FIRST_ID = 134_701_497  # real ids are 9-digit integers


class Emulator:
    """A threaded local ModelsLab server; knobs are plain attributes, changeable at runtime.

    Knobs (each described in docs/emulator.md): ``mode`` ("success" answers at once,
    "processing" answers processing until fetched ``pending_fetches`` times and ``eta``
    seconds have passed), ``eta``, ``pending_fetches``, ``url_ttl``, ``api_keys``,
    ``latency``, ``image_format``, ``errors_as_200``, ``webhook_duplicates``,
    ``webhook_auto_finish``, ``report_cost``, ``answer_fields``, ``minimal_fetch``,
    ``models``, ``failing_models``, ``max_queued_jobs``, ``nsfw_outputs`` (a prompt containing
    ``NSFW_TRIGGER`` is flagged) and ``input_hosts``.

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
        max_queued_jobs: int | None = None,
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
        self.max_queued_jobs: int | None = None
        self._in_flight = 0  # generate calls being answered (max_queued_jobs counts them)
        self.peak_in_flight = 0  # the most generate calls ever being answered at once
        self.configure(
            api_keys=api_keys,
            mode=mode,
            image_format=image_format,
            report_cost=report_cost,
            answer_fields=answer_fields or {},
            models=models,
            failing_models=failing_models or {},
            nsfw_outputs=nsfw_outputs,
            max_queued_jobs=max_queued_jobs,
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
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    # lifecycle
    def start(self) -> Emulator:
        """Bind and serve in a daemon thread; returns self."""
        if self._server is not None:
            return self
        server = Server((self.host, self._requested_port), Handler)
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
            "max_queued_jobs": self.max_queued_jobs,
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
            if name == "max_queued_jobs" and value is not None:
                if isinstance(value, bool) or int(value) < 1:
                    raise ValueError("max_queued_jobs must be None or a whole number >= 1")
                value = int(value)
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
            self.peak_in_flight = 0
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
            width, height = output_size(job)
            data = blank_image(width, height, job.image_format)
        if data is None and job.inputs:
            data = edited_image(job, index)
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

    # the account's queue
    def _admit(self) -> Fault | None:
        """A generate call's place in the account's queue, or the 429 ModelsLab answers when
        ``max_queued_jobs`` jobs are already queued (calls being answered, and jobs still
        processing within their ``eta``); counted as ``calls["queue_full"]``."""
        with self._lock:
            if self.max_queued_jobs is None:
                self._enter()
                return None
            now = time.monotonic()
            processing = sum(
                1
                for job in self.jobs.values()
                if job.status == "processing" and (job.never_finish or now - job._created < job.eta)
            )
            if self._in_flight + processing >= self.max_queued_jobs:
                self.calls["queue_full"] += 1
                message = (
                    f"Rate limit exceeded. Maximum {self.max_queued_jobs} queued requests allowed."
                )
                return Fault("rate_limit", status=429, message=message, retry_after=1)
            self._enter()
            return None

    def _enter(self) -> None:
        self._in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self._in_flight)

    def _leave(self) -> None:
        """A generate call admitted by :meth:`_admit` has been answered."""
        with self._lock:
            self._in_flight -= 1

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
                meta=job_meta(params, seed, prefix),
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
                job.succeed()
                body = success_body(job)
            else:
                body = processing_body(job)
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
                    job.fail(job.fail_message)
                else:
                    job.succeed()
            self._notify(job)

        timer = threading.Timer(job.eta, finish)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

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
                job.fail(fault.message)
            elif job.status == "processing" and not job.never_finish:
                if job.fail_message is not None:
                    job.fail(job.fail_message)
                    notify = True
                elif (
                    job.fetches > job.pending_fetches and time.monotonic() - job._created >= job.eta
                ):
                    job.succeed()
                    notify = True
            body = fetch_body(job, minimal=self.minimal_fetch)
        if notify:
            self._notify(job)
        return 200, body

    # webhooks
    def _notify(self, job: Job) -> None:
        """POST the job's outcome to its webhook (best effort, in the background)."""
        url = job.webhook
        if not url:
            return
        body = callback_body(job)
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
                "in_flight": self._in_flight,
                "peak_in_flight": self.peak_in_flight,
                "config": self.config(),
            }


def _answer_fields(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or not isinstance(value.get("meta", {}), dict):
        raise ValueError("answer_fields must be an object (its 'meta', if any, an object)")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"answer_fields must be JSON: {exc}") from None
    return copy.deepcopy(value)


def _failing_models(value: Any) -> dict[str, str | int]:
    if not isinstance(value, dict):
        raise ValueError("failing_models must map model ids to 'failed' or an HTTP status")
    checked: dict[str, str | int] = {}
    for model, how in value.items():
        if how != "failed" and not (isinstance(how, int) and 400 <= how <= 599):
            raise ValueError(f"failing_models[{model!r}] must be 'failed' or 400..599, not {how!r}")
        checked[str(model)] = how
    return checked
