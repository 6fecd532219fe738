"""The state machine, sans-IO: an attempt (and a resume) as a generator of what it needs.

Written once, as generators that *yield* each provider call, pause or copy into storage
they need and receive its result (or have its exception thrown in). The drivers
(:mod:`.drivers`) perform them, blocking or on an event loop; the database work between two
of them runs here. How an attempt ends on the row is :mod:`.record`'s.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Any, TypeVar

from django.urls import reverse
from django.utils import timezone

from .. import costs, fallbacks, kinds, safety
from ..client import ProviderResponse, reported_cost, reported_seed
from ..conf import get_setting, get_settings
from ..copying import CopyOutputs
from ..exceptions import (
    AmbiguousSubmission,
    GenerationFailed,
    ProviderError,
    ProviderRejected,
    WaitTimedOut,
)
from ..models import GenerationRequest, WebhookDelivery
from ..storage.content import StoredImage
from .record import (
    failures_recorded,
    finish,
    forget_provider_job,
    record_answer,
    reuse_cached_images,
)

logger = logging.getLogger("django_modelslab.pipeline")

Status = GenerationRequest.Status

#: Statuses from which ``run`` may claim a request.
CLAIMABLE = (Status.PENDING, Status.QUEUED)


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


Op = Generate | Fetch | Sleep | CopyOutputs
T = TypeVar("T")
#: A piece of the state machine: yields :data:`Op` values, is sent their results.
OpGenerator = Generator[Op, Any, T]


def run_steps(request_id: int) -> OpGenerator[GenerationRequest]:
    """:func:`~django_modelslab.pipeline.run` as :data:`OpGenerator`, for any driver."""
    generation = _claim(request_id)
    if generation is None:
        return GenerationRequest.objects.get(pk=request_id)
    logger.info("Generation #%s: attempt %s started", generation.pk, generation.attempts)
    with failures_recorded(generation):
        refusal = safety.moderation_refusal(generation)
        if refusal is not None:
            raise refusal
        if reuse_cached_images(generation):
            return generation
        attempt = partial(_try_model, generation)
        yield from fallbacks.try_models(generation, attempt, forget=forget_provider_job)
    return generation


def _try_model(generation: GenerationRequest) -> OpGenerator[None]:
    """Generate with the current model: submit or continue its job, wait, store the images."""
    response = yield from _provider_result(generation)
    if response is not None and response.processing:
        if webhook_url() is not None:
            logger.info("Generation #%s: waiting for the webhook", generation.pk)
            return
        response = yield from _wait(generation, response)
    yield from _complete(generation, response)


def resume_steps(request_id: int, *, job_id: str | None = None) -> OpGenerator[GenerationRequest]:
    """:func:`~django_modelslab.pipeline.resume` as :data:`OpGenerator`, for any driver."""
    generation = GenerationRequest.objects.get(pk=request_id)
    if generation.status not in (Status.PROCESSING, Status.FAILED):
        return generation
    adopted: ProviderResponse | None = None
    if not generation.provider_id:
        if not (job_id and generation.track_id):
            return generation
        adopted = yield from _adopt(generation, job_id)
        if adopted is None:
            return generation
    with failures_recorded(generation):
        response = adopted or (
            yield from _call(generation, "fetch", _fetch(generation), keep=False)
        )
        if response.processing:
            generation.save(update_fields=["updated_at"])
            return generation
        yield from _complete(generation, response)
    return generation


def _adopt(generation: GenerationRequest, job_id: str) -> OpGenerator[ProviderResponse | None]:
    """Fetch the job a webhook named; make it ``generation``'s only if it is (else None)."""
    try:
        response: ProviderResponse = yield Fetch(job_id, generation.kind, generation.api_version)
    except (ProviderError, ValueError) as exc:
        _ignore_job(generation, job_id, f"it could not be fetched ({exc})")
        return None
    if not _is_job_of(generation, response):
        _ignore_job(
            generation, job_id, "it echoes another track id, or not this request's parameters"
        )
        return None
    adopted = GenerationRequest.objects.filter(
        pk=generation.pk, attempts=generation.attempts, track_id=generation.track_id, provider_id=""
    ).update(provider_id=job_id, updated_at=timezone.now())
    if not adopted:  # another delivery adopted it first, or the attempt moved on
        return None
    generation.provider_id = job_id
    if not response.processing:
        record_answer(generation, "fetch", response.raw)
    logger.info("Generation #%s: job %s named by a webhook adopted", generation.pk, job_id)
    return response


def _is_job_of(generation: GenerationRequest, response: ProviderResponse) -> bool:
    """Whether a fetched job is ``generation``'s, by what its answer echoes.

    Its track id (top level or ``meta``) when it echoes one; else its ``meta`` must echo the
    request's prompt, and its model and seed where it echoes them.
    """
    meta = response.meta
    echoed = response.raw.get("track_id") or meta.get("track_id")
    if echoed not in (None, ""):
        return str(echoed) == generation.track_id
    if not generation.prompt or meta.get("prompt") != generation.prompt:
        return False
    model = meta.get("model_id")
    if model not in (None, "") and str(model) != fallbacks.current_model(generation):
        return False
    return generation.seed is None or response.seed in (None, generation.seed)


def _ignore_job(generation: GenerationRequest, job_id: str, why: str) -> None:
    """Log and note on the webhook deliveries that named it a job that is not adopted."""
    reason = f"Job {job_id} is not adopted for request #{generation.pk}: {why}."
    logger.warning("Generation #%s: %s", generation.pk, reason)
    WebhookDelivery.objects.filter(
        request=generation, provider_id=job_id, outcome=WebhookDelivery.Outcome.ACCEPTED
    ).update(outcome=WebhookDelivery.Outcome.UNKNOWN, error=reason)


def webhook_url() -> str | None:
    """Where ModelsLab should POST when a job finishes; None while webhooks are off."""
    conf = get_settings()
    if not (conf["PUBLIC_BASE_URL"] and conf["WEBHOOK_SECRETS"]):
        return None
    path = reverse("modelslab:webhook", kwargs={"secret": conf["WEBHOOK_SECRETS"][0]})
    base: str = conf["PUBLIC_BASE_URL"]
    return base.rstrip("/") + path


def _complete(
    generation: GenerationRequest, response: ProviderResponse | None
) -> OpGenerator[None]:
    """Copy the outputs into storage and record them (``response`` None: URLs already known)."""
    if response is not None:
        if not response.output_urls:
            raise GenerationFailed(
                "ModelsLab reported success but returned no output URLs.", response=response.raw
            )
        refusal = safety.refusal(generation, response, model_id=fallbacks.current_model(generation))
        if refusal is not None:
            costs.record_unpaid_job(generation, response.cost)  # only what ModelsLab reported
            forget_provider_job(generation)  # blank placeholders: never copied, never reused
            raise refusal
        generation.output_urls = list(response.output_urls)
        fallbacks.note_provider_time(generation, response.generation_time)
        ttl = timedelta(seconds=get_setting("OUTPUT_URL_TTL"))
        generation.outputs_expire_at = timezone.now() + ttl
        generation.save(
            update_fields=[
                "provider_id",
                "eta",
                "output_urls",
                "outputs_expire_at",
                "provider_responses",
                "updated_at",
            ]
        )
    model_id = fallbacks.current_model(generation)
    copy = CopyOutputs(
        tuple(generation.output_urls),
        generation.pk,
        model_id,
        generation.prompt,
        input_name=generation.init_image.name or "",
    )
    stored: list[tuple[StoredImage, StoredImage]] = yield copy
    nsfw = response.nsfw if response else ()
    finish(generation, stored, seed=_job_seed(generation, response), response=response, nsfw=nsfw)


def _job_seed(generation: GenerationRequest, response: ProviderResponse | None) -> int | None:
    """The seed ModelsLab used for the job whose outputs are stored.

    Its final answer's ``meta.seed``; else an earlier answer of the same job's (a fetch answer
    may be minimal, and a retried copy has none: the generate answer said it); else the seed
    sent; else None (unknown).
    """
    if response is not None and response.seed is not None:
        return response.seed
    for entry in reversed(generation.provider_responses or []):
        body = entry.get("body") if isinstance(entry, dict) else None
        if isinstance(body, dict) and _answers_job(generation, body):
            seed = reported_seed(body)
            if seed is not None:
                return seed
    return generation.seed


def _answers_job(generation: GenerationRequest, body: dict[str, Any]) -> bool:
    """Whether a recorded answer is about the request's current job (by job or track id)."""
    meta = body.get("meta")
    track_id = meta.get("track_id") if isinstance(meta, dict) else None
    if generation.provider_id and str(body.get("id", "")).strip() == generation.provider_id:
        return True
    return bool(generation.track_id) and track_id == generation.track_id


def _claim(request_id: int) -> GenerationRequest | None:
    """Compare-and-set ``pending|queued → processing``; None when another run owns it."""
    try:
        generation = GenerationRequest.objects.get(pk=request_id, status__in=CLAIMABLE)
    except GenerationRequest.DoesNotExist:
        return None
    now = timezone.now()
    generation.model_id = generation.model_id or kinds.default_model(generation)
    changes = {
        "status": Status.PROCESSING,
        "attempts": generation.attempts + 1,
        "started_at": now,
        "finished_at": None,
        "error": "",
        "updated_at": now,
        "model_id": generation.model_id,
        "cache_key": generation.compute_cache_key(),
    }
    # Compare-and-set on status and attempts: of two runs, one claims this attempt.
    claimed = GenerationRequest.objects.filter(
        pk=request_id, status=generation.status, attempts=generation.attempts
    ).update(**changes)
    if not claimed:
        return None
    for name, value in changes.items():
        setattr(generation, name, value)
    return generation


def _provider_result(generation: GenerationRequest) -> OpGenerator[ProviderResponse | None]:
    """Continue what an earlier attempt left, else submit a new job; None: URLs are known.

    This is what keeps a retry from paying twice: output URLs still alive are copied again,
    a job still processing is polled, and a submission whose answer was lost (track id saved,
    no provider id) is never sent again: it fails with the reason until a person regenerates.
    """
    if generation.output_urls and generation.outputs_alive:
        return None
    if generation.provider_id and not generation.output_urls:
        return (yield from _call(generation, "fetch", _fetch(generation), keep=False))
    if generation.track_id and not generation.provider_id:
        raise AmbiguousSubmission(
            f"An earlier attempt submitted job {generation.track_id!r} and its answer was lost; "
            "ModelsLab may have accepted (and billed) it, so it is not sent again. "
            "Regenerate the request to start a new job."
        )
    images = kinds.input_images(generation)  # before the track id: reading them may fail
    forget_provider_job(generation)
    # Saved before the call, with the model try: if this process dies mid-call, the next
    # attempt knows.
    generation.track_id = fallbacks.track_id(generation)
    generation.save(
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
    params = kinds.provider_params(generation, _provider_params(generation), images)
    generate = Generate(generation.kind, params, generation.api_version)
    response = yield from _call(generation, generation.kind, generate)
    generation.provider_id = response.provider_id or ""
    generation.eta = response.eta
    if response.processing:  # a finished job is saved by _complete, with its output URLs
        generation.save(update_fields=["provider_id", "eta", "provider_responses", "updated_at"])
    return response


def _wait(
    generation: GenerationRequest, response: ProviderResponse
) -> OpGenerator[ProviderResponse]:
    """Poll fetch until the job is done, pausing ``eta`` first and backing off up to MAX_WAIT.

    Each poll touches ``updated_at``: a request whose poller died stops moving, and
    :func:`~.queue.sweep_stale` picks it up.
    """
    conf = get_settings()
    deadline = time.monotonic() + conf["MAX_WAIT"]
    pause = max(conf["POLL_INTERVAL"], response.eta or 0.0)
    while response.processing:
        if not generation.provider_id:
            raise GenerationFailed(
                "ModelsLab said the job is processing but gave no id to fetch it by.",
                response=response.raw,
            )
        if time.monotonic() + pause > deadline:
            raise WaitTimedOut(
                f"ModelsLab was still processing job {generation.provider_id} after "
                f"{conf['MAX_WAIT']:g} s (MAX_WAIT). Retrying the request polls the same job."
            )
        yield Sleep(pause)
        # Short "still processing" answers are not kept: only the final one (or an error).
        response = yield from _call(generation, "fetch", _fetch(generation), keep=False)
        generation.save(update_fields=["updated_at"])
        pause = min(conf["POLL_INTERVAL_MAX"], pause * 1.5)
    return response


def _call(
    generation: GenerationRequest,
    call: str,
    op: Generate | Fetch,
    *,
    keep: bool = True,
) -> OpGenerator[ProviderResponse]:
    """Make one provider call, keeping its raw answer (or its error's) on the request.

    After an error, the job is forgotten (so a retry starts a new one) when it is over or
    certainly never started; it is kept when ModelsLab may still have it.
    """
    try:
        response: ProviderResponse = yield op
    except ProviderError as exc:
        record_answer(generation, call, exc.response, status_code=exc.status_code)
        if isinstance(exc, GenerationFailed) and isinstance(exc.response, dict):
            costs.record_unpaid_job(generation, reported_cost(exc.response))
        job_over = isinstance(exc, ProviderRejected | GenerationFailed)
        never_started = call != "fetch" and not exc.may_have_been_accepted
        if job_over or never_started:
            generation.provider_id = ""
            generation.track_id = ""
        raise
    if keep or not response.processing:
        record_answer(generation, call, response.raw)
    return response


def _fetch(generation: GenerationRequest) -> Fetch:
    """Fetch the request's job on the route its kind and API version use."""
    return Fetch(generation.provider_id, generation.kind, generation.api_version)


def _provider_params(generation: GenerationRequest) -> dict[str, Any]:
    params: dict[str, Any] = kinds.extra_params(generation)
    params.update(
        model_id=fallbacks.current_model(generation),
        prompt=generation.prompt,
        width=generation.width,
        height=generation.height,
        samples=generation.samples,
        track_id=generation.track_id,
    )
    webhook = webhook_url()
    if webhook is not None:
        params["webhook"] = webhook
    optional = {
        "negative_prompt": generation.negative_prompt or None,
        "num_inference_steps": generation.steps,
        "guidance_scale": generation.guidance,
        "seed": generation.seed,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    params.update(safety.provider_params(generation))
    return params
