"""The one place that owns a generation's state machine.

``pending | failed → queued → processing → succeeded | failed``. Faces (admin, API,
commands) call :func:`submit` and :func:`regenerate`; a task calls :func:`run`.
``run`` claims a request with a compare-and-set on its status, so calling it twice (or from
two workers) never starts a second provider job for one attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from .client import ModelsLabClient, ProviderResponse
from .conf import get_setting, get_settings
from .downloads import download
from .exceptions import (
    DownloadError,
    GenerationFailed,
    ModelsLabError,
    ProviderError,
    ProviderRejected,
)
from .models import GeneratedImage, GenerationRequest
from .storage import StoredImage, get_image_storage, store_file
from .thumbnails import make_thumbnail

logger = logging.getLogger("django_modelslab.pipeline")

Status = GenerationRequest.Status

#: Statuses from which a request may be queued (again).
SUBMITTABLE = (Status.PENDING, Status.FAILED)
#: Statuses from which ``run`` may claim a request.
CLAIMABLE = (Status.PENDING, Status.QUEUED)


class GenerationInProgress(ModelsLabError):
    """The request is queued or processing; it cannot be regenerated until it finishes."""


class WaitTimedOut(ModelsLabError):
    """The provider was still processing when MAX_WAIT ran out."""


def build_client() -> ModelsLabClient:
    """A client configured from the MODELSLAB settings."""
    conf = get_settings()
    return ModelsLabClient(
        api_key=conf["API_KEY"],
        base_url=conf["BASE_URL"],
        timeout=conf["TIMEOUT"],
        connect_timeout=conf["CONNECT_TIMEOUT"],
        max_retries=conf["MAX_RETRIES"],
        retry_backoff=conf["RETRY_BACKOFF"],
        retry_backoff_max=conf["RETRY_BACKOFF_MAX"],
    )


# --- faces call these -------------------------------------------------------------------


def submit(request: GenerationRequest) -> GenerationRequest:
    """Queue ``request`` (saving it first if new); the task starts once the transaction commits.

    Idempotent: a request already queued, processing or succeeded is returned unchanged.
    A failed request is retried: a job the provider may still finish is polled, not resubmitted.
    """
    if request.pk is None:
        request.save()
    queued = GenerationRequest.objects.filter(pk=request.pk, status__in=SUBMITTABLE).update(
        status=Status.QUEUED, submitted_at=timezone.now(), updated_at=timezone.now()
    )
    if queued:
        _enqueue_on_commit(request.pk)
    request.refresh_from_db()
    return request


def regenerate(request: GenerationRequest) -> GenerationRequest:
    """Start a fresh provider job; earlier images stay, marked superseded. Bypasses the cache."""
    with transaction.atomic():
        locked = GenerationRequest.objects.select_for_update().get(pk=request.pk)
        if locked.status in (Status.QUEUED, Status.PROCESSING):
            raise GenerationInProgress(
                f"Request #{locked.pk} is {locked.status}; regenerate it once it has finished."
            )
        locked.images.filter(superseded=False).update(superseded=True)
        _forget_provider_job(locked)
        locked.status = Status.QUEUED
        locked.error = ""
        locked.cached_from = None
        locked.use_cache = False
        locked.submitted_at = timezone.now()
        locked.save()
        _enqueue_on_commit(locked.pk)
    request.refresh_from_db()
    return request


def choose(image: GeneratedImage) -> GeneratedImage:
    """Mark ``image`` as the one picked for its request (and no other)."""
    with transaction.atomic():
        GenerationRequest.objects.select_for_update().get(pk=image.request_id)
        image.request.images.exclude(pk=image.pk).filter(chosen=True).update(chosen=False)
        image.chosen = True
        image.save(update_fields=["chosen"])
    return image


def _enqueue_on_commit(request_id: int) -> None:
    from .tasks import run_generation

    task = run_generation.using(backend=get_setting("TASK_BACKEND"))
    transaction.on_commit(lambda: task.enqueue(request_id))


# --- the work ---------------------------------------------------------------------------


def run(request_id: int, *, sleep: Callable[[float], None] = time.sleep) -> GenerationRequest:
    """Drive one request to ``succeeded`` or ``failed``. Safe to call twice."""
    request = _claim(request_id)
    if request is None:
        return GenerationRequest.objects.get(pk=request_id)
    logger.info("Generation #%s: attempt %s started", request.pk, request.attempts)
    try:
        if _reuse_cached_images(request):
            return request
        with build_client() as client:
            response = _provider_result(request, client, sleep)
            stored = [_copy_output(request, url) for url in request.output_urls]
        _finish(request, stored, seed=response.seed if response else None)
    except (ProviderError, DownloadError, WaitTimedOut) as exc:
        _fail(request, exc)
    except Exception as exc:
        _fail(request, exc)
        raise
    return request


def _claim(request_id: int) -> GenerationRequest | None:
    """Compare-and-set ``pending|queued → processing``; None when another run owns it."""
    now = timezone.now()
    claimed = GenerationRequest.objects.filter(pk=request_id, status__in=CLAIMABLE).update(
        status=Status.PROCESSING,
        attempts=F("attempts") + 1,
        started_at=now,
        finished_at=None,
        error="",
        updated_at=now,
    )
    if not claimed:
        return None
    request = GenerationRequest.objects.get(pk=request_id)
    request.model_id = request.model_id or get_setting("DEFAULT_MODEL")
    request.cache_key = request.compute_cache_key()
    request.save(update_fields=["model_id", "cache_key", "updated_at"])
    return request


def _reuse_cached_images(request: GenerationRequest) -> bool:
    """Copy the image rows of an identical seeded request that succeeded; no API call."""
    if not request.use_cache or not request.cache_key or not get_setting("CACHE"):
        return False
    source = (
        GenerationRequest.objects.filter(cache_key=request.cache_key, status=Status.SUCCEEDED)
        .exclude(pk=request.pk)
        .filter(images__superseded=False)
        .order_by("-finished_at")
        .first()
    )
    if source is None:
        return False
    images = list(source.images.filter(superseded=False))
    with transaction.atomic():
        for position, image in enumerate(images):
            GeneratedImage.objects.create(
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
            )
        request.cached_from = source
        _mark(request, Status.SUCCEEDED)
    logger.info("Generation #%s: reused %s image(s) of #%s", request.pk, len(images), source.pk)
    return True


def _provider_result(
    request: GenerationRequest, client: ModelsLabClient, sleep: Callable[[float], None]
) -> ProviderResponse | None:
    """Get the output URLs onto the request: resume what a failed attempt left, else a new job.

    Resuming is what keeps a retry from paying twice: URLs that are still alive are copied
    again, and a job that was still processing is polled rather than resubmitted.
    """
    if request.output_urls and not _outputs_expired(request):
        return None
    if request.output_urls or not request.provider_id:
        _forget_provider_job(request)
        request.track_id = f"{request.pk}-{request.attempts}"
        response = _call(request, "text2img", lambda: client.text2img(_provider_params(request)))
        request.provider_id = response.provider_id or ""
        request.eta = response.eta
        request.save(
            update_fields=["provider_id", "track_id", "eta", "provider_responses", "updated_at"]
        )
    else:
        response = _call(request, "fetch", lambda: client.fetch(request.provider_id))
    response = _wait(request, client, response, sleep)
    request.output_urls = list(response.output_urls)
    request.outputs_expire_at = timezone.now() + timedelta(seconds=get_setting("OUTPUT_URL_TTL"))
    request.save(
        update_fields=["output_urls", "outputs_expire_at", "provider_responses", "updated_at"]
    )
    return response


def _wait(
    request: GenerationRequest,
    client: ModelsLabClient,
    response: ProviderResponse,
    sleep: Callable[[float], None],
) -> ProviderResponse:
    """Poll fetch until the job is done, pausing ``eta`` first and backing off up to MAX_WAIT."""
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
        sleep(pause)
        # Short "still processing" answers are not kept: only the final one (or an error).
        response = _call(request, "fetch", partial(client.fetch, request.provider_id), keep=False)
        pause = min(conf["POLL_INTERVAL_MAX"], pause * 1.5)
    if not response.output_urls:
        raise GenerationFailed(
            "ModelsLab reported success but returned no output URLs.", response=response.raw
        )
    return response


def _call(
    request: GenerationRequest,
    call: str,
    send: Callable[[], ProviderResponse],
    *,
    keep: bool = True,
) -> ProviderResponse:
    """Make one provider call, keeping its raw answer (or its error's) on the request."""
    try:
        response = send()
    except ProviderError as exc:
        _record(request, call, exc.response, status_code=exc.status_code)
        if isinstance(exc, ProviderRejected | GenerationFailed):
            request.provider_id = ""  # the job is over; a retry starts a new one
        raise
    if keep or not response.processing:
        _record(request, call, response.raw)
    return response


def _provider_params(request: GenerationRequest) -> dict[str, Any]:
    params: dict[str, Any] = {
        key: value for key, value in request.extra.items() if key not in ("key", "track_id")
    }
    params.update(
        model_id=request.model_id,
        prompt=request.prompt,
        width=request.width,
        height=request.height,
        samples=request.samples,
        track_id=request.track_id,
    )
    optional = {
        "negative_prompt": request.negative_prompt or None,
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance,
        "seed": request.seed,
    }
    params.update({key: value for key, value in optional.items() if value is not None})
    return params


def _copy_output(request: GenerationRequest, url: str) -> tuple[StoredImage, StoredImage]:
    """Copy one output into storage; returns the image and its thumbnail."""
    conf = get_settings()
    storage = get_image_storage()
    with download(
        url,
        allowed_hosts=conf["ALLOWED_DOWNLOAD_HOSTS"],
        max_bytes=conf["MAX_IMAGE_BYTES"],
        timeout=conf["DOWNLOAD_TIMEOUT"],
        connect_timeout=conf["CONNECT_TIMEOUT"],
    ) as fetched:
        image = store_file(
            fetched.file,
            sha256=fetched.sha256,
            size=fetched.size,
            storage=storage,
            prefix=conf["UPLOAD_PREFIX"],
            max_pixels=conf["MAX_IMAGE_PIXELS"],
        )
        thumbnail = make_thumbnail(
            fetched.file,
            size=conf["THUMBNAIL_SIZE"],
            storage=storage,
            prefix=conf["UPLOAD_PREFIX"],
            max_pixels=conf["MAX_IMAGE_PIXELS"],
        )
    return image, thumbnail


def _finish(
    request: GenerationRequest,
    stored: list[tuple[StoredImage, StoredImage]],
    *,
    seed: int | None,
) -> None:
    """Record the images and mark success, unless another run finished this attempt first."""
    with transaction.atomic():
        current = GenerationRequest.objects.select_for_update().get(pk=request.pk)
        if current.status != Status.PROCESSING or current.attempts != request.attempts:
            logger.warning("Generation #%s: attempt superseded; results dropped", request.pk)
            return
        outputs = zip(request.output_urls, stored, strict=True)
        for position, (url, (image, thumbnail)) in enumerate(outputs):
            GeneratedImage.objects.create(
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
                seed=seed if seed is not None else request.seed,
                attempt=request.attempts,
                position=position,
            )
        _mark(request, Status.SUCCEEDED)
    logger.info("Generation #%s: stored %s image(s)", request.pk, len(stored))


def _fail(request: GenerationRequest, exc: BaseException) -> None:
    request.error = _reason(exc)
    _mark(request, Status.FAILED)
    logger.warning("Generation #%s failed: %s", request.pk, request.error)


def _mark(request: GenerationRequest, status: str) -> None:
    request.status = status
    request.finished_at = timezone.now()
    if status == Status.SUCCEEDED:
        request.error = ""
    request.save()


def _reason(exc: BaseException) -> str:
    """A sentence a person can act on."""
    if isinstance(exc, ModelsLabError):
        return str(exc)
    return f"Unexpected error ({type(exc).__name__}): {exc}"


def _record(
    request: GenerationRequest, call: str, body: Any, *, status_code: int | None = None
) -> None:
    entry: dict[str, Any] = {"at": timezone.now().isoformat(), "call": call, "body": body}
    if status_code is not None:
        entry["status_code"] = status_code
    request.provider_responses = [*request.provider_responses, entry]


def _forget_provider_job(request: GenerationRequest) -> None:
    request.provider_id = ""
    request.output_urls = []
    request.eta = None
    request.outputs_expire_at = None
    request.track_id = ""


def _outputs_expired(request: GenerationRequest) -> bool:
    return request.outputs_expire_at is None or timezone.now() >= request.outputs_expire_at
