"""The one place that owns a generation's state machine.

``pending | failed | refused → queued → processing → succeeded | failed | refused``. Faces
(admin, API, commands, the webhook view) call :func:`submit`, :func:`regenerate`, :func:`choose`,
:func:`requeue` and :func:`sweep_stale`; tasks call :func:`run` and :func:`resume`.
``run`` claims a request with a compare-and-set on its status, so calling it twice (or from
two workers) never starts a second provider job for one attempt; every attempt's end is
recorded under a row lock, so of two runs racing to finish it, one result counts.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from . import costs, fallbacks, kinds, safety
from .client import (
    AsyncModelsLabClient,
    ModelsLabClient,
    ProviderResponse,
    redact,
    reported_cost,
    reported_seed,
)
from .concurrency import Priority, Shared
from .conf import configured_secrets, get_setting, get_settings
from .copying import Copy, copy_outputs
from .exceptions import (
    AmbiguousSubmission,
    GenerationFailed,
    GenerationInProgress,
    GenerationRefused,
    ModelsLabError,
    ProviderError,
    ProviderRejected,
    WaitTimedOut,
)
from .limits import MAX_SEED
from .models import GeneratedImage, GenerationRequest, WebhookDelivery
from .signals import (
    image_stored,
    request_failed,
    request_refused,
    request_submitted,
    request_succeeded,
)
from .storage import StoredImage

logger = logging.getLogger("django_modelslab.pipeline")

Status = GenerationRequest.Status

#: Statuses from which a request may be queued (again).
SUBMITTABLE = (Status.PENDING, Status.FAILED, Status.REFUSED)
#: Statuses from which ``run`` may claim a request.
CLAIMABLE = (Status.PENDING, Status.QUEUED)
#: The columns the state machine writes. Saving only these leaves what was asked alone
#: (an editor changing the prompt meanwhile), and costs half a full save.
STATE_FIELDS = (
    "status",
    "error",
    "attempts",
    "model_id",
    "provider_id",
    "track_id",
    "eta",
    "output_urls",
    "outputs_expire_at",
    "provider_responses",
    "use_cache",
    "bypass_cache",
    "produced_by",
    "model_attempts",
    "cost",
    "cost_source",
    "cache_key",
    "regeneration_batch",
    "cached_from",
    "submitted_at",
    "started_at",
    "finished_at",
    "updated_at",
)


#: Longest Retry-After an inline run waits for (someone's web request is waiting on it);
#: a longer one fails the attempt at once, its error saying when to try again.
INLINE_MAX_RETRY_AFTER = 5.0


def build_client(*, inline: bool = False) -> ModelsLabClient:
    """A client configured from the MODELSLAB settings (``inline``: see :func:`run`)."""
    limit = INLINE_MAX_RETRY_AFTER if inline else None
    return ModelsLabClient.from_settings(get_settings(), max_retry_after=limit)


def build_async_client() -> AsyncModelsLabClient:
    """An :class:`~django_modelslab.client.AsyncModelsLabClient` configured the same way."""
    return AsyncModelsLabClient.from_settings(get_settings())


# --- what the work asks of the outside world (sans-IO) ----------------------------------
#
# The state machine below is written once, as generators that *yield* each provider call,
# pause or copy into storage they need and receive its result (or have its exception thrown
# in). The sync driver (:func:`run`, :func:`resume`) performs them with a ModelsLabClient;
# the async one (:func:`arun`, :func:`aresume`) with an AsyncModelsLabClient, each step of
# the state machine (the database work) running in Django's sync thread and each copy on a
# worker thread of its own.


@dataclass(frozen=True)
class Generate:
    """Start a job: ``client.generate(kind, params, api_version=...)``."""

    kind: str
    params: dict[str, Any]
    api_version: str


@dataclass(frozen=True)
class Fetch:
    """Ask for a job's state: ``client.fetch(provider_id, kind=..., api_version=...)``."""

    provider_id: str
    kind: str
    api_version: str


@dataclass(frozen=True)
class Sleep:
    """Pause between polls."""

    seconds: float


Op = Generate | Fetch | Sleep | Copy
T = TypeVar("T")
#: A piece of the state machine: yields :data:`Op` values, is sent their results.
Steps = Generator[Op, Any, T]


def perform(client: ModelsLabClient, op: Generate | Fetch) -> ProviderResponse:
    """Make the provider call ``op`` names, blocking."""
    if isinstance(op, Generate):
        return client.generate(op.kind, op.params, api_version=op.api_version)
    return client.fetch(op.provider_id, kind=op.kind, api_version=op.api_version)


def drive(
    steps: Steps[T], *, sleep: Callable[[float], None] = time.sleep, inline: bool = False
) -> T:
    """Run ``steps`` to the end, blocking: calls on a client from :func:`build_client`.

    An exception of a call (or of ``sleep``) is thrown into ``steps`` where it asked for it.
    """
    client: ModelsLabClient | None = None
    try:
        op = next(steps)
        while True:
            try:
                if isinstance(op, Sleep):
                    result: Any = sleep(op.seconds)
                elif isinstance(op, Copy):
                    result = copy_outputs(op, known=_recorded)
                else:
                    client = client or build_client(inline=inline)
                    result = perform(client, op)
            except BaseException as exc:  # thrown in: the steps decide, as inline code did
                op = steps.throw(exc)
            else:
                op = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        if client is not None:
            client.close()


async def aperform(client: AsyncModelsLabClient, op: Generate | Fetch) -> ProviderResponse:
    """Make the provider call ``op`` names, awaiting it."""
    if isinstance(op, Generate):
        return await client.generate(op.kind, op.params, api_version=op.api_version)
    return await client.fetch(op.provider_id, kind=op.kind, api_version=op.api_version)


async def adrive(
    steps: Steps[T],
    *,
    client: AsyncModelsLabClient | None = None,
    shared: Shared | None = None,
) -> T:
    """Run ``steps`` to the end on the event loop: calls and pauses are awaited.

    Each step between two calls runs in Django's sync thread (``sync_to_async``,
    thread-sensitive), so the database is used as from a sync view; copies into storage
    (download, checks, thumbnail: no database) run on a worker thread, in parallel. Without
    ``client``, one from :func:`build_async_client` is used and closed afterwards.

    ``shared``: what this run shares with the others on the loop (:mod:`.concurrency`). The
    caller holds one of its slots when it calls; it is given back as soon as the job is
    over at ModelsLab, and taken again for a later provider call (a fallback model's job).
    The first step goes before the other runs' waiting steps (``Priority.START``), and the
    run counts as starting (copies wait) until its provider call is made.
    """
    advance = sync_to_async(_advance, thread_sensitive=True)
    own = client is None
    held = shared is not None
    end_start = shared.start_pending() if shared is not None else _nothing

    async def step(
        value: Any, error: BaseException | None, priority: Priority = Priority.LATER
    ) -> tuple[bool, Any]:
        if shared is None:
            return await advance(steps, value, error)
        async with shared.step(priority):
            return await advance(steps, value, error)

    try:
        done, value = await step(None, None, Priority.START)
        while not done:
            op = value
            if not isinstance(op, Generate | Fetch):
                end_start()  # no provider call to wait for (say, outputs to copy again)
            try:
                if isinstance(op, Sleep):
                    result: Any = await asyncio.sleep(op.seconds)
                elif isinstance(op, Copy):  # off the sync thread: no database in a copy
                    if shared is not None:
                        await shared.quiet()
                    result = await asyncio.to_thread(copy_outputs, op)
                else:
                    if shared is not None and not held:
                        await shared.slots.acquire()
                        held = True
                    client = client or build_async_client()
                    response = None
                    end_start()
                    try:
                        response = await aperform(client, op)
                    finally:
                        if held and not (response is not None and response.processing):
                            shared.slots.release()  # type: ignore[union-attr]
                            held = False
                    if shared is not None and not held:
                        await asyncio.sleep(0)  # the run waiting for the slot starts first
                    result = response
            except Exception as exc:
                done, value = await step(None, exc)
            except BaseException:  # cancelled: the request is left as a killed worker leaves it
                steps.close()
                raise
            else:
                done, value = await step(result, None)
        return value  # type: ignore[no-any-return]
    finally:
        end_start()
        if held:
            shared.slots.release()  # type: ignore[union-attr]
        if own and client is not None:
            await client.aclose()


def _nothing() -> None:
    pass


def _advance(steps: Steps[Any], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """One step: (False, the next op) or (True, the result)."""
    try:
        if error is not None:
            return False, steps.throw(error)
        return False, steps.send(value)
    except StopIteration as stop:
        return True, stop.value


# --- faces call these -------------------------------------------------------------------


def submit(request: GenerationRequest, *, enqueue: bool = True) -> GenerationRequest:
    """Queue ``request`` (saving it first if new); the task starts once the transaction commits.

    Idempotent: a request already queued, processing or succeeded is returned unchanged.
    A failed request is retried: a job the provider may still finish is polled, not resubmitted.
    ``enqueue=False`` only marks it queued, for callers that :func:`run` it themselves.
    An ``extra`` setting a field the pipeline sets itself raises :class:`ReservedParameters`
    before anything is saved or queued.
    """
    kinds.check_extra(request)
    if request.pk is None:
        request.save()
    refusal = safety.moderation_refusal(request)
    if refusal is not None:
        _refuse_on_submit(request, refusal, statuses=SUBMITTABLE)
        request.refresh_from_db()
        return request
    if request.status in SUBMITTABLE:
        costs.check_budget(request)  # BudgetExceeded: nothing queued, the row is kept
    queued = GenerationRequest.objects.filter(pk=request.pk, status__in=SUBMITTABLE).update(
        status=Status.QUEUED, submitted_at=timezone.now(), updated_at=timezone.now()
    )
    if queued:
        _submitted_on_commit(request.pk, enqueue=enqueue)
    request.refresh_from_db()
    return request


def regenerate(
    request: GenerationRequest, *, keep_seed: bool = False, batch: str = "", enqueue: bool = True
) -> GenerationRequest:
    """Start a fresh provider job: a new picture. Earlier images stay, marked superseded.

    A seeded request gets a new random seed (its earlier images keep theirs) unless
    ``keep_seed``: then the same job is repeated on purpose, and paid again. The attempt looks
    in no cache; later ones do as ``use_cache`` says. ``batch`` names the
    ``regenerate_images`` run doing it; ``enqueue=False`` as for :func:`submit`. A prompt the
    MODERATION_HOOK refuses ends ``refused``, images untouched. ``extra`` is checked as by
    :func:`submit`.
    """
    kinds.check_extra(request)
    refusal = safety.moderation_refusal(request)
    with transaction.atomic():
        row = GenerationRequest.objects.select_for_update().filter(pk=request.pk)
        status, seed = row.values_list("status", "seed").get()  # locked until the commit
        if status in (Status.QUEUED, Status.PROCESSING):
            raise GenerationInProgress(
                f"Request #{request.pk} is {status}; regenerate it once it has finished."
            )
        if refusal is not None:
            _refuse_on_submit(request, refusal, statuses=(status,))
            request.refresh_from_db()
            return request
        costs.check_budget(request, regenerating=True)
        request.images.filter(superseded=False).update(superseded=True)
        now = timezone.now()
        # Only what a fresh job resets is written: the rest of the row stays as the lock saw it.
        fresh = {
            **_no_provider_job(),
            "status": Status.QUEUED,
            "error": "",
            "cached_from": None,
            "produced_by": "",
            "bypass_cache": True,
            "regeneration_batch": batch,
            "submitted_at": now,
            "updated_at": now,
        }
        if seed is not None and not keep_seed and request.kind != GenerationRequest.Kind.UPSCALE:
            fresh["seed"] = new_seed(seed)  # an upscale sends no seed: the same job again
        row.update(**fresh)
        _submitted_on_commit(request.pk, enqueue=enqueue)
    if enqueue:  # an inline task backend has run it already
        request.refresh_from_db()
    else:
        for name, value in fresh.items():
            setattr(request, name, value)
    return request


def new_seed(old: int | None = None) -> int:
    """A random seed ModelsLab accepts (0 to MAX_SEED), other than ``old``."""
    while True:
        seed = secrets.randbelow(MAX_SEED + 1)
        if seed != old:
            return seed


def choose(image: GeneratedImage) -> GeneratedImage:
    """Mark ``image`` as the one picked for its request (and no other)."""
    with transaction.atomic():
        GenerationRequest.objects.select_for_update().get(pk=image.request_id)
        image.request.images.exclude(pk=image.pk).filter(chosen=True).update(chosen=False)
        image.chosen = True
        image.save(update_fields=["chosen"])
    return image


def _submitted_on_commit(request_id: int, *, enqueue: bool) -> None:
    """Once the transaction commits: send ``request_submitted``, then enqueue the task."""
    from .tasks import run_generation

    task = run_generation.using(backend=get_setting("TASK_BACKEND")) if enqueue else None

    def submitted() -> None:
        if request_submitted.has_listeners(GenerationRequest):
            request = GenerationRequest.objects.filter(pk=request_id).first()
            if request is not None:
                request_submitted.send_robust(GenerationRequest, request=request)
        if task is not None:
            task.enqueue(request_id)

    transaction.on_commit(submitted)


def _refuse_on_submit(
    request: GenerationRequest, refusal: GenerationRefused, *, statuses: tuple[str, ...]
) -> None:
    """Mark ``request`` refused (by the moderation hook) with no provider call."""
    now = timezone.now()
    refused = GenerationRequest.objects.filter(pk=request.pk, status__in=statuses).update(
        status=Status.REFUSED, error=str(refusal), finished_at=now, updated_at=now
    )
    if refused:
        logger.info("Generation #%s refused: %s", request.pk, refusal)
        request.refresh_from_db()
        send = partial(request_refused.send_robust, GenerationRequest, request=request)
        transaction.on_commit(partial(send, error=refusal, duration=None))


def _enqueue_on_commit(request_id: int) -> None:
    from .tasks import run_generation

    task = run_generation.using(backend=get_setting("TASK_BACKEND"))
    transaction.on_commit(lambda: task.enqueue(request_id))


# --- the work ---------------------------------------------------------------------------


def run(
    request_id: int, *, sleep: Callable[[float], None] = time.sleep, inline: bool = False
) -> GenerationRequest:
    """Drive one request to ``succeeded``, ``failed`` or ``refused``. Safe to call twice.

    With webhooks on, a job ModelsLab queues leaves the request ``processing`` and frees the
    worker: the webhook (or, if it never comes, :func:`sweep_stale`) continues it. When a
    model fails in a way that lets the next one try, the fallback models are tried in turn
    (:mod:`django_modelslab.fallbacks`). ``inline``: the caller (a web request) waits on this
    run, so a rate limit longer than :data:`INLINE_MAX_RETRY_AFTER` fails it at once, saying
    when to try again, instead of blocking.
    """
    return drive(run_steps(request_id), sleep=sleep, inline=inline)


async def arun(
    request_id: int,
    *,
    client: AsyncModelsLabClient | None = None,
    shared: Shared | None = None,
) -> GenerationRequest:
    """:func:`run` for async code (ASGI views, the command's concurrency); same guarantees.

    Provider calls and polling pauses are awaited on ``client`` (default: one from
    :func:`build_async_client`, closed afterwards); the rest runs in Django's sync thread.
    ``shared``: as for :func:`adrive`.
    """
    return await adrive(run_steps(request_id), client=client, shared=shared)


def run_steps(request_id: int) -> Steps[GenerationRequest]:
    """:func:`run` as :data:`Steps`, for any driver."""
    request = _claim(request_id)
    if request is None:
        return GenerationRequest.objects.get(pk=request_id)
    logger.info("Generation #%s: attempt %s started", request.pk, request.attempts)
    with _failures_recorded(request):
        refusal = safety.moderation_refusal(request)
        if refusal is not None:
            raise refusal
        if _reuse_cached_images(request):
            return request
        attempt = partial(_try_model, request)
        yield from fallbacks.try_models(request, attempt, forget=_forget_provider_job)
    return request


def _try_model(request: GenerationRequest) -> Steps[None]:
    """Generate with the current model: submit or continue its job, wait, store the images."""
    response = yield from _provider_result(request)
    if response is not None and response.processing:
        if webhook_url() is not None:
            logger.info("Generation #%s: waiting for the webhook", request.pk)
            return
        response = yield from _wait(request, response)
    yield from _complete(request, response)


def resume(request_id: int, *, job_id: str | None = None) -> GenerationRequest:
    """Finish a request whose job may be done (a webhook said so).

    Works on ``processing`` requests, and on ``failed`` ones whose job is known (say, failed by
    MAX_WAIT just before the webhook came): images that arrive late still count.

    The news is confirmed through the fetch endpoint before anything is stored; a job still
    processing is left alone. Never submits a job, so duplicate or concurrent calls are harmless:
    the first to finish records the images, the others find the attempt finished.

    ``job_id``: the job a webhook named for a request whose generate answer was lost (track id
    saved, no provider id). It becomes the request's job only if the fetched job echoes the
    request's track id (or, echoing none, its prompt, model and seed); otherwise it is logged,
    noted on the webhook delivery, and the request is left as it was.
    """
    return drive(resume_steps(request_id, job_id=job_id))


async def aresume(
    request_id: int, *, client: AsyncModelsLabClient | None = None, job_id: str | None = None
) -> GenerationRequest:
    """:func:`resume` for async code (an async webhook view, say)."""
    return await adrive(resume_steps(request_id, job_id=job_id), client=client)


def resume_steps(request_id: int, *, job_id: str | None = None) -> Steps[GenerationRequest]:
    """:func:`resume` as :data:`Steps`, for any driver."""
    request = GenerationRequest.objects.get(pk=request_id)
    if request.status not in (Status.PROCESSING, Status.FAILED):
        return request
    adopted: ProviderResponse | None = None
    if not request.provider_id:
        if not (job_id and request.track_id):
            return request
        adopted = yield from _adopt(request, job_id)
        if adopted is None:
            return request
    with _failures_recorded(request):
        response = adopted or (yield from _call(request, "fetch", _fetch(request), keep=False))
        if response.processing:
            request.save(update_fields=["updated_at"])
            return request
        yield from _complete(request, response)
    return request


def _adopt(request: GenerationRequest, job_id: str) -> Steps[ProviderResponse | None]:
    """Fetch the job a webhook named; make it ``request``'s only if it is (else None)."""
    try:
        response = yield Fetch(job_id, request.kind, request.api_version)
    except (ProviderError, ValueError) as exc:
        return _ignore_job(request, job_id, f"it could not be fetched ({exc})")
    if not _is_job_of(request, response):
        return _ignore_job(
            request, job_id, "it echoes another track id, or not this request's parameters"
        )
    adopted = GenerationRequest.objects.filter(
        pk=request.pk, attempts=request.attempts, track_id=request.track_id, provider_id=""
    ).update(provider_id=job_id, updated_at=timezone.now())
    if not adopted:  # another delivery adopted it first, or the attempt moved on
        return None
    request.provider_id = job_id
    if not response.processing:
        _record(request, "fetch", response.raw)
    logger.info("Generation #%s: job %s named by a webhook adopted", request.pk, job_id)
    return response


def _is_job_of(request: GenerationRequest, response: ProviderResponse) -> bool:
    """Whether a fetched job is ``request``'s, by what its answer echoes.

    Its track id (top level or ``meta``) when it echoes one; else its ``meta`` must echo the
    request's prompt, and its model and seed where it echoes them.
    """
    meta = response.meta
    echoed = response.raw.get("track_id") or meta.get("track_id")
    if echoed not in (None, ""):
        return str(echoed) == request.track_id
    if not request.prompt or meta.get("prompt") != request.prompt:
        return False
    model = meta.get("model_id")
    if model not in (None, "") and str(model) != fallbacks.current_model(request):
        return False
    return request.seed is None or response.seed in (None, request.seed)


def _ignore_job(request: GenerationRequest, job_id: str, why: str) -> None:
    """Log and note on the webhook deliveries that named it a job that is not adopted."""
    reason = f"Job {job_id} is not adopted for request #{request.pk}: {why}."
    logger.warning("Generation #%s: %s", request.pk, reason)
    WebhookDelivery.objects.filter(
        request=request, provider_id=job_id, outcome=WebhookDelivery.Outcome.ACCEPTED
    ).update(outcome=WebhookDelivery.Outcome.UNKNOWN, error=reason)


def sweep_stale(*, now: datetime | None = None) -> list[int]:
    """Pick up requests stuck in ``queued`` or ``processing``; returns the ids re-queued.

    Stuck means no progress for ``STALE_AFTER`` seconds past the provider's eta (a worker
    died, a task or webhook was lost). Each is queued again (its job is polled, never
    resubmitted) or, after ``MAX_ATTEMPTS`` attempts, failed with the reason.
    """
    requeued = [request.pk for request in stale_requests(now=now) if pick_up(request, now=now)]
    if requeued:
        logger.warning("Re-queued %s stuck generation request(s): %s", len(requeued), requeued)
    return requeued


def stale_requests(*, now: datetime | None = None) -> list[GenerationRequest]:
    """Requests queued or processing with no progress for STALE_AFTER s past their eta."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=get_setting("STALE_AFTER"))
    candidates = GenerationRequest.objects.filter(
        status__in=(Status.QUEUED, Status.PROCESSING), updated_at__lt=limit
    )
    return [r for r in candidates if r.updated_at + timedelta(seconds=r.eta or 0) < limit]


def pick_up(
    request: GenerationRequest, *, enqueue: bool = True, now: datetime | None = None
) -> bool:
    """Continue a stuck request: re-queue it, or fail it after ``MAX_ATTEMPTS`` attempts.

    True when it was queued again.
    """
    if request.attempts < get_setting("MAX_ATTEMPTS"):
        return requeue(request, enqueue=enqueue)
    now = now or timezone.now()
    GenerationRequest.objects.filter(
        pk=request.pk, status=request.status, updated_at=request.updated_at
    ).update(
        status=Status.FAILED,
        finished_at=now,
        updated_at=now,
        error=f"Stuck in {request.status} after {request.attempts} attempt(s) (MAX_ATTEMPTS); "
        f"submit it again to keep polling job {request.provider_id or '(none)'}, or "
        "regenerate it.",
    )
    return False


def requeue(request: GenerationRequest, *, enqueue: bool = True) -> bool:
    """Queue a queued or processing request again, if nobody touched it since it was read.

    For a request whose worker is gone: the next run polls its job or copies its outputs,
    never submitting a second job for a job that may exist.
    """
    requeued = GenerationRequest.objects.filter(
        pk=request.pk,
        status__in=(Status.QUEUED, Status.PROCESSING),
        status=request.status,
        updated_at=request.updated_at,
    ).update(status=Status.QUEUED, updated_at=timezone.now())
    if requeued and enqueue:
        _enqueue_on_commit(request.pk)
    return bool(requeued)


def webhook_url() -> str | None:
    """Where ModelsLab should POST when a job finishes; None while webhooks are off."""
    conf = get_settings()
    if not (conf["PUBLIC_BASE_URL"] and conf["WEBHOOK_SECRETS"]):
        return None
    path = reverse("modelslab:webhook", kwargs={"secret": conf["WEBHOOK_SECRETS"][0]})
    return conf["PUBLIC_BASE_URL"].rstrip("/") + path


@contextmanager
def _failures_recorded(request: GenerationRequest) -> Iterator[None]:
    """Record any failure on the request; unexpected errors are re-raised after that."""
    try:
        yield
    except ModelsLabError as exc:  # provider, download, storage, wait: a reason to show
        _fail(request, exc)
    except Exception as exc:
        _fail(request, exc)
        raise


def _complete(request: GenerationRequest, response: ProviderResponse | None) -> Steps[None]:
    """Copy the outputs into storage and record them (``response`` None: URLs already known)."""
    if response is not None:
        if not response.output_urls:
            raise GenerationFailed(
                "ModelsLab reported success but returned no output URLs.", response=response.raw
            )
        refusal = safety.refusal(request, response, model_id=fallbacks.current_model(request))
        if refusal is not None:
            costs.record_unpaid_job(request, response.cost)  # only what ModelsLab reported
            _forget_provider_job(request)  # blank placeholders: never copied, never reused
            raise refusal
        request.output_urls = list(response.output_urls)
        fallbacks.note_provider_time(request, response.generation_time)
        ttl = timedelta(seconds=get_setting("OUTPUT_URL_TTL"))
        request.outputs_expire_at = timezone.now() + ttl
        request.save(
            update_fields=[
                "provider_id",
                "eta",
                "output_urls",
                "outputs_expire_at",
                "provider_responses",
                "updated_at",
            ]
        )
    model_id = fallbacks.current_model(request)
    copy = Copy(tuple(request.output_urls), request.pk, model_id, request.prompt)
    stored: list[tuple[StoredImage, StoredImage]] = yield copy
    nsfw = response.nsfw if response else ()
    _finish(request, stored, seed=_job_seed(request, response), response=response, nsfw=nsfw)


def _job_seed(request: GenerationRequest, response: ProviderResponse | None) -> int | None:
    """The seed ModelsLab used for the job whose outputs are stored.

    Its final answer's ``meta.seed``; else an earlier answer of the same job's (a fetch answer
    may be minimal, and a retried copy has none: the generate answer said it); else the seed
    sent; else None (unknown).
    """
    if response is not None and response.seed is not None:
        return response.seed
    for entry in reversed(request.provider_responses or []):
        body = entry.get("body") if isinstance(entry, dict) else None
        if isinstance(body, dict) and _answers_job(request, body):
            seed = reported_seed(body)
            if seed is not None:
                return seed
    return request.seed


def _answers_job(request: GenerationRequest, body: dict[str, Any]) -> bool:
    """Whether a recorded answer is about the request's current job (by job or track id)."""
    meta = body.get("meta")
    track_id = meta.get("track_id") if isinstance(meta, dict) else None
    if request.provider_id and str(body.get("id", "")).strip() == request.provider_id:
        return True
    return bool(request.track_id) and track_id == request.track_id


def _claim(request_id: int) -> GenerationRequest | None:
    """Compare-and-set ``pending|queued → processing``; None when another run owns it."""
    try:
        request = GenerationRequest.objects.get(pk=request_id, status__in=CLAIMABLE)
    except GenerationRequest.DoesNotExist:
        return None
    now = timezone.now()
    request.model_id = request.model_id or kinds.default_model(request)
    changes = {
        "status": Status.PROCESSING,
        "attempts": request.attempts + 1,
        "started_at": now,
        "finished_at": None,
        "error": "",
        "updated_at": now,
        "model_id": request.model_id,
        "cache_key": request.compute_cache_key(),
    }
    # Compare-and-set on status and attempts: of two runs, one claims this attempt.
    claimed = GenerationRequest.objects.filter(
        pk=request_id, status=request.status, attempts=request.attempts
    ).update(**changes)
    if not claimed:
        return None
    for name, value in changes.items():
        setattr(request, name, value)
    return request


def _reuse_cached_images(request: GenerationRequest) -> bool:
    """Copy the image rows of an identical seeded request that succeeded; no API call."""
    if not request.use_cache or request.bypass_cache or not get_setting("CACHE"):
        return False
    source = request.cache_source()
    if source is None:
        return False
    images = list(source.images.filter(superseded=False))
    copies: list[GeneratedImage] = []
    with transaction.atomic():
        for position, image in enumerate(images):
            copy = GeneratedImage.objects.create(
                request=request,
                image=image.image.name,
                thumbnail=image.thumbnail.name,
                sha256=image.sha256,
                width=image.width,
                height=image.height,
                format=image.format,
                bytes=image.bytes,
                source_url=image.source_url,
                source_expires_at=image.source_expires_at,
                seed=image.seed,
                attempt=request.attempts,
                position=position,
                nsfw=image.nsfw,
            )
            copies.append(copy)
        request.cached_from = source
        request.produced_by = source.produced_by or source.model_id
        costs.record(request, costs.CACHED, model_id=request.produced_by)  # no charge
        _mark(request, Status.SUCCEEDED)
        transaction.on_commit(partial(_send_succeeded, request, copies, charge=costs.CACHED))
    logger.info("Generation #%s: reused %s image(s) of #%s", request.pk, len(images), source.pk)
    return True


def _provider_result(request: GenerationRequest) -> Steps[ProviderResponse | None]:
    """Continue what an earlier attempt left, else submit a new job; None: URLs are known.

    This is what keeps a retry from paying twice: output URLs still alive are copied again,
    a job still processing is polled, and a submission whose answer was lost (track id saved,
    no provider id) is never sent again: it fails with the reason until a person regenerates.
    """
    if request.output_urls and request.outputs_alive:
        return None
    if request.provider_id and not request.output_urls:
        return (yield from _call(request, "fetch", _fetch(request), keep=False))
    if request.track_id and not request.provider_id:
        raise AmbiguousSubmission(
            f"An earlier attempt submitted job {request.track_id!r} and its answer was lost; "
            "ModelsLab may have accepted (and billed) it, so it is not sent again. "
            "Regenerate the request to start a new job."
        )
    images = kinds.input_images(request)  # before the track id: reading them may fail
    _forget_provider_job(request)
    # Saved before the call, with the model try: if this process dies mid-call, the next
    # attempt knows.
    request.track_id = fallbacks.track_id(request)
    request.save(
        update_fields=[
            "provider_id",
            "track_id",
            "output_urls",
            "eta",
            "outputs_expire_at",
            "model_attempts",
            "updated_at",
        ]
    )
    params = kinds.provider_params(request, _provider_params(request), images)
    generate = Generate(request.kind, params, request.api_version)
    response = yield from _call(request, request.kind, generate)
    request.provider_id = response.provider_id or ""
    request.eta = response.eta
    if response.processing:  # a finished job is saved by _complete, with its output URLs
        request.save(update_fields=["provider_id", "eta", "provider_responses", "updated_at"])
    return response


def _wait(request: GenerationRequest, response: ProviderResponse) -> Steps[ProviderResponse]:
    """Poll fetch until the job is done, pausing ``eta`` first and backing off up to MAX_WAIT.

    Each poll touches ``updated_at``: a request whose poller died stops moving, and
    :func:`sweep_stale` picks it up.
    """
    conf = get_settings()
    deadline = time.monotonic() + conf["MAX_WAIT"]
    pause = max(conf["POLL_INTERVAL"], response.eta or 0.0)
    while response.processing:
        if not request.provider_id:
            raise GenerationFailed(
                "ModelsLab said the job is processing but gave no id to fetch it by.",
                response=response.raw,
            )
        if time.monotonic() + pause > deadline:
            raise WaitTimedOut(
                f"ModelsLab was still processing job {request.provider_id} after "
                f"{conf['MAX_WAIT']:g} s (MAX_WAIT). Retrying the request polls the same job."
            )
        yield Sleep(pause)
        # Short "still processing" answers are not kept: only the final one (or an error).
        response = yield from _call(request, "fetch", _fetch(request), keep=False)
        request.save(update_fields=["updated_at"])
        pause = min(conf["POLL_INTERVAL_MAX"], pause * 1.5)
    return response


def _call(
    request: GenerationRequest,
    call: str,
    op: Generate | Fetch,
    *,
    keep: bool = True,
) -> Steps[ProviderResponse]:
    """Make one provider call, keeping its raw answer (or its error's) on the request.

    After an error, the job is forgotten (so a retry starts a new one) when it is over or
    certainly never started; it is kept when ModelsLab may still have it.
    """
    try:
        response = yield op
    except ProviderError as exc:
        _record(request, call, exc.response, status_code=exc.status_code)
        if isinstance(exc, GenerationFailed) and isinstance(exc.response, dict):
            costs.record_unpaid_job(request, reported_cost(exc.response))
        job_over = isinstance(exc, ProviderRejected | GenerationFailed)
        never_started = call != "fetch" and not exc.may_have_been_accepted
        if job_over or never_started:
            request.provider_id = ""
            request.track_id = ""
        raise
    if keep or not response.processing:
        _record(request, call, response.raw)
    return response


def _fetch(request: GenerationRequest) -> Fetch:
    """Fetch the request's job on the route its kind and API version use."""
    return Fetch(request.provider_id, request.kind, request.api_version)


def _provider_params(request: GenerationRequest) -> dict[str, Any]:
    params: dict[str, Any] = kinds.extra_params(request)
    params.update(
        model_id=fallbacks.current_model(request),
        prompt=request.prompt,
        width=request.width,
        height=request.height,
        samples=request.samples,
        track_id=request.track_id,
    )
    webhook = webhook_url()
    if webhook is not None:
        params["webhook"] = webhook
    optional = {
        "negative_prompt": request.negative_prompt or None,
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance,
        "seed": request.seed,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    params.update(safety.provider_params(request))
    return params


def _recorded(sha256: str, key: str) -> bool:
    """Whether a row already records ``key``: then the storage is not even asked (no HEAD)."""
    return GeneratedImage.objects.filter(sha256=sha256, image=key).exists()


def _finish(
    request: GenerationRequest,
    stored: list[tuple[StoredImage, StoredImage]],
    *,
    seed: int | None,
    response: ProviderResponse | None,
    nsfw: tuple[bool | None, ...] = (),
) -> None:
    """Record the images and mark success, unless another run finished this attempt first."""
    with transaction.atomic():
        if not _still_current(request, allow_failed=True):
            logger.warning("Generation #%s: attempt already finished; results dropped", request.pk)
            return
        outputs = zip(request.output_urls, stored, strict=True)
        rows: list[GeneratedImage] = []
        for position, (url, (image, thumbnail)) in enumerate(outputs):
            row = GeneratedImage.objects.create(
                request=request,
                image=image.key,
                thumbnail=thumbnail.key,
                sha256=image.sha256,
                width=image.info.width,
                height=image.info.height,
                format=image.info.format,
                bytes=image.size,
                source_url=url,
                source_expires_at=request.outputs_expire_at,
                seed=seed,
                attempt=request.attempts,
                position=position,
                nsfw=safety.nsfw_flag(nsfw, position),
            )
            rows.append(row)
        request.produced_by = fallbacks.current_model(request)
        fallbacks.end(request)
        # Priced by the model that produced them; its ledger row commits with the images.
        charge = costs.charge_for(request, response)
        costs.record(request, charge, model_id=request.produced_by)
        _mark(request, Status.SUCCEEDED)
        uploads = [image.uploaded for image, _thumbnail in stored]
        transaction.on_commit(partial(_send_succeeded, request, rows, uploads, charge=charge))
    logger.info("Generation #%s: stored %s image(s)", request.pk, len(stored))


def _fail(request: GenerationRequest, exc: BaseException) -> None:
    """End the attempt ``failed``, or ``refused`` for a refusal (moderation, safety checker)."""
    reason = _reason(exc)
    fallbacks.end(request, exc, reason)
    request.error = fallbacks.explain(request, reason)
    refused = isinstance(exc, GenerationRefused)
    with transaction.atomic():
        if not _still_current(request):
            logger.warning("Generation #%s: attempt already finished: %s", request.pk, reason)
            return
        _mark(request, Status.REFUSED if refused else Status.FAILED)
        signal = request_refused if refused else request_failed
        failed = partial(signal.send_robust, GenerationRequest, request=request)
        transaction.on_commit(partial(failed, error=exc, duration=request.duration))
    logger.warning("Generation #%s %s: %s", request.pk, request.status, request.error)


def _send_succeeded(
    request: GenerationRequest,
    rows: list[GeneratedImage],
    uploads: list[bool] | None = None,
    *,
    charge: costs.JobCost,
) -> None:
    """``image_stored`` for each stored image (none for cache reuse), then ``request_succeeded``."""
    for row, uploaded in zip(rows, uploads or [], strict=False):
        image_stored.send_robust(GeneratedImage, image=row, uploaded=uploaded, bytes=row.bytes)
    request_succeeded.send_robust(
        GenerationRequest,
        request=request,
        images=rows,
        duration=request.duration,
        cost=charge.amount,
    )


def _still_current(request: GenerationRequest, *, allow_failed: bool = False) -> bool:
    """Lock the row; True while this attempt is the one in progress.

    Images that arrive after the same attempt was failed (say, by MAX_WAIT while a webhook
    was on its way) still count: the failure is replaced by the success.
    """
    rows = GenerationRequest.objects.select_for_update().filter(pk=request.pk)
    status, attempts = rows.values_list("status", "attempts").get()
    statuses = (Status.PROCESSING, Status.FAILED) if allow_failed else (Status.PROCESSING,)
    return status in statuses and attempts == request.attempts


def _mark(request: GenerationRequest, status: str) -> None:
    request.status = status
    request.bypass_cache = False  # a regenerate's attempt is over: later ones may use the cache
    request.finished_at = timezone.now()
    if status == Status.SUCCEEDED:
        request.error = ""
    request.save(update_fields=STATE_FIELDS)


def _reason(exc: BaseException) -> str:
    """A sentence a person can act on (shown in the admin and the API: redacted)."""
    if isinstance(exc, ModelsLabError):
        return _redact_secrets(str(exc))
    return _redact_secrets(f"Unexpected error ({type(exc).__name__}): {exc}")


def _redact_secrets(value: Any) -> Any:
    """``value`` without the API key or a webhook secret (see :func:`client.redact`)."""
    return redact(value, configured_secrets())


def _record(
    request: GenerationRequest, call: str, body: Any, *, status_code: int | None = None
) -> None:
    body = _redact_secrets(body)  # ModelsLab echoes the webhook URL, secret included
    entry: dict[str, Any] = {"at": timezone.now().isoformat(), "call": call, "body": body}
    if status_code is not None:
        entry["status_code"] = status_code
    request.provider_responses = [*request.provider_responses, entry]


def _no_provider_job() -> dict[str, Any]:
    """The fields of a request with no provider job (fresh values on every call)."""
    return {
        "provider_id": "",
        "output_urls": [],
        "eta": None,
        "outputs_expire_at": None,
        "track_id": "",
    }


def _forget_provider_job(request: GenerationRequest) -> None:
    for name, value in _no_provider_job().items():
        setattr(request, name, value)
