"""ModelsLab webhook deliveries: authenticate, record, and hand over to the pipeline.

A delivery is a hint, never trusted as a result: an accepted one queues
:func:`~django_modelslab.pipeline.resume`, which confirms through the fetch endpoint before
storing anything. ModelsLab signs nothing, so the URL carries a secret (compared in constant
time against every entry of ``WEBHOOK_SECRETS``, for rotation). Every delivery with a known
secret is kept as a :class:`~django_modelslab.models.WebhookDelivery` row, whatever its
outcome; those with an unknown secret (anyone can send them) are counted, one row a minute.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.crypto import constant_time_compare

from .conf import configured_secrets, get_setting
from .exceptions import WebhookRejected
from .limits import load_json
from .models import GenerationRequest, WebhookDelivery, request_id_from_track_id
from .pipeline import resume_on_commit
from .redaction import elide_image_data, redact

logger = logging.getLogger("django_modelslab.webhooks")

Outcome = WebhookDelivery.Outcome
#: How much of a body that is not JSON is kept.
MAX_RAW_BODY = 4096


def secret_is_valid(secret: str) -> bool:
    """Constant-time comparison with every configured secret (all are checked)."""
    matches = [constant_time_compare(secret, known) for known in get_setting("WEBHOOK_SECRETS")]
    return any(matches)


def receive(secret: str, body: bytes | None, *, remote_addr: str | None = None) -> WebhookDelivery:
    """Record one delivery and act on it; raises WebhookRejected for a bad secret or body.

    ``body`` is None when it was larger than Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE``.
    """
    delivery = WebhookDelivery(remote_addr=remote_addr or None)
    if not secret_is_valid(secret):
        _count_rejected(delivery)
        raise WebhookRejected("Unknown ModelsLab webhook secret.")
    delivery.valid = True
    try:
        if body is None:
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            raise ValueError(f"larger than DATA_UPLOAD_MAX_MEMORY_SIZE ({limit} bytes)")
        payload = load_json(body)
        if not isinstance(payload, dict):
            raise ValueError("the body is not a JSON object")
    except ValueError as exc:
        delivery.raw_body = _redacted((body or b"").decode("utf-8", "replace"))[:MAX_RAW_BODY]
        _save(delivery, Outcome.REJECTED, error=f"Unreadable body: {exc}")
        raise WebhookRejected("ModelsLab webhook body is not a JSON object.") from exc
    delivery.body = _redacted(payload)
    delivery.track_id = str(payload.get("track_id") or _meta(payload).get("track_id") or "")[:64]
    delivery.provider_id = str(payload.get("id") or "")[:64]
    try:
        with transaction.atomic():
            outcome, error = _handle(delivery)
            _save(delivery, outcome, error=error)
    except Exception:
        _save(delivery, Outcome.ERROR, error=traceback.format_exc())
        raise
    return delivery


def _handle(delivery: WebhookDelivery) -> tuple[str, str]:
    """Decide what the delivery means for its request (row locked); returns (outcome, why).

    Every delivery for the current, unfinished attempt is accepted: confirming is idempotent
    (one result is recorded however many confirmations race), and an early or forged delivery
    cannot shadow the real one.
    """
    generation = _find_generation(delivery)
    if generation is None:
        return Outcome.UNKNOWN, "No generation request has this track id or provider id."
    delivery.request = generation
    if delivery.track_id and delivery.track_id != generation.track_id:
        return Outcome.DUPLICATE, "For an earlier attempt of this request: ignored."
    if generation.status == GenerationRequest.Status.SUCCEEDED:
        return Outcome.DUPLICATE, "The request has already succeeded."
    if not generation.provider_id and delivery.provider_id:
        # The answer to the generate call was lost. The job the delivery names becomes the
        # request's only once fetching it shows it is (pipeline.resume): a delivery may name
        # anyone's job.
        resume_on_commit(generation.pk, job_id=delivery.provider_id)
        return Outcome.ACCEPTED, ""
    if not generation.provider_id:
        return Outcome.UNKNOWN, "The delivery names no provider id to confirm."
    resume_on_commit(generation.pk)
    return Outcome.ACCEPTED, ""


def _find_generation(delivery: WebhookDelivery) -> GenerationRequest | None:
    """By the current track id, else the provider id, else the request a track id names."""
    generations = GenerationRequest.objects.select_for_update()
    if delivery.track_id:
        found = generations.filter(track_id=delivery.track_id).first()
        if found is not None:
            return found
    if delivery.provider_id:
        found = generations.filter(provider_id=delivery.provider_id).first()
        if found is not None:
            return found
    request_id = request_id_from_track_id(delivery.track_id)
    return generations.filter(pk=request_id).first() if request_id else None


def _count_rejected(delivery: WebhookDelivery) -> None:
    """Count a delivery with an unknown secret on this minute's row (the first one makes it).

    Anonymous traffic thus stores at most one row a minute, however much of it comes; the
    row keeps the first sender's address and ``count`` says how many came.
    """
    minute = timezone.now().replace(second=0, microsecond=0)
    this_minute = WebhookDelivery.objects.filter(
        valid=False, outcome=Outcome.REJECTED, received_at__gte=minute
    )
    row = this_minute.order_by("pk").values_list("pk", flat=True).first()
    if row is not None and WebhookDelivery.objects.filter(pk=row).update(count=F("count") + 1):
        return
    _save(delivery, Outcome.REJECTED, error="Unknown webhook secret.")


def _save(delivery: WebhookDelivery, outcome: str, *, error: str = "") -> None:
    error = redact(error, configured_secrets())  # a traceback can quote anything
    delivery.outcome = outcome
    delivery.error = error
    delivery.save()
    if outcome in (Outcome.REJECTED, Outcome.ERROR):
        logger.warning("ModelsLab webhook %s: %s", outcome, error.splitlines()[-1] if error else "")


def _meta(payload: dict[str, Any]) -> dict[str, Any]:
    meta = payload.get("meta")
    return meta if isinstance(meta, dict) else {}


def _redacted(value: Any) -> Any:
    """``value`` without the API key or any webhook secret (values and field names, in their
    escaped forms too) and without inline image data. Redact before truncating."""
    return elide_image_data(redact(value, configured_secrets()))
