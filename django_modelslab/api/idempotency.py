"""``Idempotency-Key``: one key and body, one generation, even when two calls race.

A key is scoped to its user and its endpoint: the same key sent to ``generations/`` and to
``v1/images/generations`` names two different calls.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from django.db import IntegrityError, transaction
from django.utils.translation import gettext_lazy as _
from rest_framework.exceptions import ValidationError

from ..models import GenerationRequest, IdempotencyKey
from .exceptions import IdempotencyKeyReused

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: The endpoints a key is scoped to (``IdempotencyKey.endpoint``).
GENERATIONS = "generations"
OPENAI_IMAGES = "v1/images/generations"
#: Keys recorded before they were scoped: they match either endpoint.
UNSCOPED = ""


def body_hash(data: Any) -> str:
    """A hash of the parsed body; key order and whitespace do not matter.

    Uploaded files (multipart) count by their content; a form field sent more than once
    by all of its values.
    """
    if hasattr(data, "lists"):  # a form's QueryDict
        data = {name: values[0] if len(values) == 1 else values for name, values in data.lists()}
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=_content)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _content(value: Any) -> str:
    if hasattr(value, "chunks"):
        digest = hashlib.sha256()
        for chunk in value.chunks():
            digest.update(chunk)
        value.seek(0)
        return f"sha256:{digest.hexdigest()}"
    return str(value)


def header_key(request: Any) -> str | None:
    """The request's Idempotency-Key, or None; 400 for an empty or overlong one."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ValidationError(
            {HEADER: [_("Must be 1 to %(max)d characters.") % {"max": MAX_KEY_LENGTH}]}
        )
    return key


def _record(user: Any, key: str, endpoint: str) -> IdempotencyKey | None:
    return (
        IdempotencyKey.objects.filter(user=user, key=key, endpoint__in=(endpoint, UNSCOPED))
        .select_related("request")
        .order_by("-endpoint")  # this endpoint's own record first
        .first()
    )


def replayed(user: Any, key: str, digest: str, *, endpoint: str) -> GenerationRequest | None:
    """The request an earlier call to ``endpoint`` with this key made; 422 if that call's
    body differed."""
    record = _record(user, key, endpoint)
    if record is None:
        return None
    if record.body_hash != digest:
        raise IdempotencyKeyReused()
    return record.request


def create_once(
    user: Any,
    key: str | None,
    digest: str,
    create: Callable[[], GenerationRequest],
    *,
    endpoint: str,
) -> tuple[GenerationRequest, bool]:
    """Run ``create`` and record ``key``; returns ``(request, replayed)``.

    Call :func:`replayed` first. The key row is written in the same transaction as the
    request: if another call with the same key commits first, the unique constraint rolls
    this one back (its request and its queued task with it) and the winner's request is
    returned.
    """
    if key is None:
        return create(), False
    try:
        with transaction.atomic():
            generation = create()
            IdempotencyKey.objects.create(
                user=user, endpoint=endpoint, key=key, body_hash=digest, request=generation
            )
    except IntegrityError:
        winner = replayed(user, key, digest, endpoint=endpoint)
        if winner is None:
            raise
        return winner, True
    return generation, False


def record_status(user: Any, key: str, status: int, *, endpoint: str) -> None:
    """Remember the HTTP status the first call with ``key`` answered, for its replays."""
    IdempotencyKey.objects.filter(user=user, key=key, endpoint=endpoint).update(
        response_status=status
    )


def original_status(user: Any, key: str, *, endpoint: str) -> int | None:
    """The status :func:`record_status` kept; None when none was (an earlier row, or the
    first call has not answered yet)."""
    record = _record(user, key, endpoint)
    return None if record is None else record.response_status
