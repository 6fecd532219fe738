"""What the state machine writes on the rows: each provider answer, and how an attempt ends.

An attempt ends once: images recorded and ``succeeded`` (from the provider or the cache), or
``failed`` / ``refused`` with a reason a person can act on, each checked under a row lock so
that of two runs racing to finish it, one result counts; its signals go once the transaction
commits. An editor's choice among the images is recorded here too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any, cast

from django.db import transaction
from django.utils import timezone

from .. import alttext, costs, fallbacks, safety
from ..client import ProviderResponse
from ..conf import configured_secrets, get_setting
from ..exceptions import GenerationRefused, ModelsLabError
from ..models import GeneratedImage, GenerationRequest
from ..redaction import redact
from ..signals import image_stored, request_failed, request_refused, request_succeeded
from ..storage.content import StoredImage

logger = logging.getLogger("django_modelslab.pipeline")

Status = GenerationRequest.Status

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


@contextmanager
def failures_recorded(generation: GenerationRequest) -> Iterator[None]:
    """Record any failure on the request; unexpected errors are re-raised after that."""
    try:
        yield
    except ModelsLabError as exc:  # provider, download, storage, wait: a reason to show
        _fail(generation, exc)
    except Exception as exc:
        _fail(generation, exc)
        raise


def _fail(generation: GenerationRequest, exc: BaseException) -> None:
    """End the attempt ``failed``, or ``refused`` for a refusal (moderation, safety checker)."""
    reason = _reason(exc)
    fallbacks.end(generation, exc, reason)
    generation.error = fallbacks.explain(generation, reason)
    refused = isinstance(exc, GenerationRefused)
    with transaction.atomic():
        if not _still_current(generation):
            logger.warning("Generation #%s: attempt already finished: %s", generation.pk, reason)
            return
        _mark(generation, Status.REFUSED if refused else Status.FAILED)
        signal = request_refused if refused else request_failed
        failed = partial(signal.send_robust, GenerationRequest, request=generation)
        transaction.on_commit(partial(failed, error=exc, duration=generation.duration))
    logger.warning("Generation #%s %s: %s", generation.pk, generation.status, generation.error)


def finish(
    generation: GenerationRequest,
    stored: list[tuple[StoredImage, StoredImage]],
    *,
    seed: int | None,
    response: ProviderResponse | None,
    nsfw: tuple[bool | None, ...] = (),
) -> None:
    """Record the images and mark success, unless another run finished this attempt first.

    Alt text (``alttext``: the ALT_TEXT_HOOK, else the prompt) is worked out first, outside
    the transaction, so a slow hook holds no row lock.
    """
    outputs = zip(generation.output_urls, stored, strict=True)
    rows: list[GeneratedImage] = []
    for position, (url, (image, thumbnail)) in enumerate(outputs):
        row = GeneratedImage(
            request=generation,
            image=image.key,
            thumbnail=thumbnail.key,
            sha256=image.sha256,
            width=image.info.width,
            height=image.info.height,
            format=image.info.format,
            bytes=image.size,
            source_url=url,
            source_expires_at=generation.outputs_expire_at,
            seed=seed,
            attempt=generation.attempts,
            position=position,
            nsfw=safety.nsfw_flag(nsfw, position),
        )
        row.alt_text = alttext.alt_text_for(row, generation)
        rows.append(row)
    with transaction.atomic():
        if not _still_current(generation, allow_failed=True):
            logger.warning(
                "Generation #%s: attempt already finished; results dropped", generation.pk
            )
            return
        for row in rows:
            row.save(force_insert=True)
        generation.produced_by = fallbacks.current_model(generation)
        fallbacks.end(generation)
        # Priced by the model that produced them; its ledger row commits with the images.
        charge = costs.charge_for(generation, response)
        costs.record(generation, charge, model_id=generation.produced_by)
        _mark(generation, Status.SUCCEEDED)
        uploads = [image.uploaded for image, _thumbnail in stored]
        transaction.on_commit(partial(_send_succeeded, generation, rows, uploads, charge=charge))
    logger.info("Generation #%s: stored %s image(s)", generation.pk, len(stored))


def reuse_cached_images(generation: GenerationRequest) -> bool:
    """Copy the image rows of an identical seeded request that succeeded; no API call."""
    if not generation.use_cache or generation.bypass_cache or not get_setting("CACHE"):
        return False
    source = generation.cache_source()
    if source is None:
        return False
    images = list(source.images.filter(superseded=False))
    copies: list[GeneratedImage] = []
    with transaction.atomic():
        for position, image in enumerate(images):
            copy = GeneratedImage.objects.create(
                request=generation,
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
                attempt=generation.attempts,
                position=position,
                nsfw=image.nsfw,
                alt_text=image.alt_text or alttext.default_alt_text(generation),
            )
            copies.append(copy)
        generation.cached_from = source
        generation.produced_by = source.produced_by or source.model_id
        costs.record(generation, costs.CACHED, model_id=generation.produced_by)  # no charge
        _mark(generation, Status.SUCCEEDED)
        transaction.on_commit(partial(_send_succeeded, generation, copies, charge=costs.CACHED))
    logger.info("Generation #%s: reused %s image(s) of #%s", generation.pk, len(images), source.pk)
    return True


def _send_succeeded(
    generation: GenerationRequest,
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
        request=generation,
        images=rows,
        duration=generation.duration,
        cost=charge.amount,
    )


def _still_current(generation: GenerationRequest, *, allow_failed: bool = False) -> bool:
    """Lock the row; True while this attempt is the one in progress.

    Images that arrive after the same attempt was failed (say, by MAX_WAIT while a webhook
    was on its way) still count: the failure is replaced by the success.
    """
    rows = GenerationRequest.objects.select_for_update().filter(pk=generation.pk)
    status, attempts = rows.values_list("status", "attempts").get()
    statuses = (Status.PROCESSING, Status.FAILED) if allow_failed else (Status.PROCESSING,)
    return status in statuses and attempts == generation.attempts


def _mark(generation: GenerationRequest, status: str) -> None:
    generation.status = status
    generation.bypass_cache = False  # a regenerate's attempt is over: later ones may use the cache
    generation.finished_at = timezone.now()
    if status == Status.SUCCEEDED:
        generation.error = ""
    generation.save(update_fields=STATE_FIELDS)


def _reason(exc: BaseException) -> str:
    """A sentence a person can act on (shown in the admin and the API: redacted)."""
    if isinstance(exc, ModelsLabError):
        return cast(str, _redact_secrets(str(exc)))
    return cast(str, _redact_secrets(f"Unexpected error ({type(exc).__name__}): {exc}"))


def _redact_secrets(value: Any) -> Any:
    """``value`` without the API key or a webhook secret (:func:`..redaction.redact`)."""
    return redact(value, configured_secrets())


def record_answer(
    generation: GenerationRequest, call: str, body: Any, *, status_code: int | None = None
) -> None:
    """Keep one raw answer of ``call`` on the request (saved with its next state)."""
    body = _redact_secrets(body)  # ModelsLab echoes the webhook URL, secret included
    entry: dict[str, Any] = {"at": timezone.now().isoformat(), "call": call, "body": body}
    if status_code is not None:
        entry["status_code"] = status_code
    generation.provider_responses = [*generation.provider_responses, entry]


def no_provider_job() -> dict[str, Any]:
    """The fields of a request with no provider job (fresh values on every call)."""
    return {
        "provider_id": "",
        "output_urls": [],
        "eta": None,
        "outputs_expire_at": None,
        "track_id": "",
    }


def forget_provider_job(generation: GenerationRequest) -> None:
    """Blank the request's provider job fields in memory (the caller saves them)."""
    for name, value in no_provider_job().items():
        setattr(generation, name, value)


def is_recorded(sha256: str, key: str) -> bool:
    """Whether a row already records ``key``: then the storage is not even asked (no HEAD)."""
    return GeneratedImage.objects.filter(sha256=sha256, image=key).exists()


def choose(image: GeneratedImage) -> GeneratedImage:
    """Mark ``image`` as the one picked for its request (and no other)."""
    with transaction.atomic():
        GenerationRequest.objects.select_for_update().get(pk=image.request_id)
        image.request.images.exclude(pk=image.pk).filter(chosen=True).update(chosen=False)
        image.chosen = True
        image.save(update_fields=["chosen"])
    return image
