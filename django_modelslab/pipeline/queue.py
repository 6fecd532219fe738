"""Putting requests on the queue: what faces call to start, retry or continue a generation.

Each moves a request to ``queued`` with a compare-and-set on its status, then enqueues its
task once the transaction commits (:func:`.tasks.enqueue_on_commit`).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Collection
from datetime import datetime, timedelta
from functools import partial

from django.db import transaction
from django.utils import timezone

from .. import costs, kinds, safety
from ..conf import get_setting
from ..exceptions import GenerationInProgress, GenerationRefused, InvalidParameters
from ..limits import MAX_SEED
from ..models import GenerationRequest
from ..signals import request_refused, request_submitted
from .record import no_provider_job
from .tasks import enqueue_on_commit, resume_generation, run_generation, task

logger = logging.getLogger("django_modelslab.pipeline")

Status = GenerationRequest.Status

#: Statuses from which a request may be queued (again).
SUBMITTABLE = (Status.PENDING, Status.FAILED, Status.REFUSED)


def submit(generation: GenerationRequest, *, enqueue: bool = True) -> GenerationRequest:
    """Queue ``generation`` (saving it first if new); the task starts once the transaction commits.

    Idempotent: a request already queued, processing or succeeded is returned unchanged.
    A failed request is retried: a job the provider may still finish is polled, not resubmitted.
    ``enqueue=False`` only marks it queued, for callers that :func:`~.drivers.run` it themselves.
    Parameters ModelsLab would refuse raise :class:`InvalidParameters` before anything is saved
    or queued (see :func:`check_parameters`).
    """
    check_parameters(generation)
    if generation.pk is None:
        generation.save()
    refusal = safety.moderation_refusal(generation)
    if refusal is not None:
        _refuse_on_submit(generation, refusal, statuses=SUBMITTABLE)
        generation.refresh_from_db()
        return generation
    if generation.status in SUBMITTABLE:
        costs.check_budget(generation)  # BudgetExceeded: nothing queued, the row is kept
    queued = GenerationRequest.objects.filter(pk=generation.pk, status__in=SUBMITTABLE).update(
        status=Status.QUEUED, submitted_at=timezone.now(), updated_at=timezone.now()
    )
    if queued:
        _submitted_on_commit(generation.pk, enqueue=enqueue)
    generation.refresh_from_db()
    return generation


def regenerate(
    generation: GenerationRequest, *, keep_seed: bool = False, batch: str = "", enqueue: bool = True
) -> GenerationRequest:
    """Start a fresh provider job: a new picture. Earlier images stay, marked superseded.

    A seeded request gets a new random seed (its earlier images keep theirs) unless
    ``keep_seed``: then the same job is repeated on purpose, and paid again. The attempt looks
    in no cache; later ones do as ``use_cache`` says. ``batch`` names the
    ``regenerate_images`` run doing it; ``enqueue=False`` as for :func:`submit`. A prompt the
    MODERATION_HOOK refuses ends ``refused``, images untouched. The parameters are checked as
    by :func:`submit`.
    """
    check_parameters(generation)
    refusal = safety.moderation_refusal(generation)
    with transaction.atomic():
        row = GenerationRequest.objects.select_for_update().filter(pk=generation.pk)
        status, seed = row.values_list("status", "seed").get()  # locked until the commit
        if status in (Status.QUEUED, Status.PROCESSING):
            raise GenerationInProgress(
                f"Request #{generation.pk} is {status}; regenerate it once it has finished."
            )
        if refusal is not None:
            _refuse_on_submit(generation, refusal, statuses=(status,))
            generation.refresh_from_db()
            return generation
        costs.check_budget(generation, regenerating=True)
        generation.images.filter(superseded=False).update(superseded=True)
        now = timezone.now()
        # Only what a fresh job resets is written: the rest of the row stays as the lock saw it.
        fresh = {
            **no_provider_job(),
            "status": Status.QUEUED,
            "error": "",
            "cached_from": None,
            "produced_by": "",
            "bypass_cache": True,
            "regeneration_batch": batch,
            "submitted_at": now,
            "updated_at": now,
        }
        if seed is not None and not keep_seed and generation.kind != GenerationRequest.Kind.UPSCALE:
            fresh["seed"] = new_seed(seed)  # an upscale sends no seed: the same job again
        row.update(**fresh)
        _submitted_on_commit(generation.pk, enqueue=enqueue)
    if enqueue:  # an inline task backend has run it already
        generation.refresh_from_db()
    else:
        for name, value in fresh.items():
            setattr(generation, name, value)
    return generation


def check_parameters(generation: GenerationRequest) -> None:
    """Raise :class:`InvalidParameters` for a request ModelsLab must not get: an ``extra``
    setting a field the pipeline sets (:class:`ReservedParameters`), or a size, samples,
    steps, guidance or seed outside ModelsLab's limits (the model's validators)."""
    kinds.check_extra(generation)
    errors = generation.parameter_errors()
    if errors:
        label = f"Request #{generation.pk}: " if generation.pk else ""
        problems = "; ".join(f"{name}: {' '.join(texts)}" for name, texts in errors.items())
        raise InvalidParameters(label + problems, errors=errors)


def new_seed(old: int | None = None) -> int:
    """A random seed ModelsLab accepts (0 to MAX_SEED), other than ``old``."""
    while True:
        seed = secrets.randbelow(MAX_SEED + 1)
        if seed != old:
            return seed


def _submitted_on_commit(request_id: int, *, enqueue: bool) -> None:
    """Once the transaction commits: send ``request_submitted``, then enqueue the task."""
    send = partial(_send_submitted, request_id)
    if enqueue:
        enqueue_on_commit(run_generation, request_id, first=send)
    else:
        transaction.on_commit(send)


def _send_submitted(request_id: int) -> None:
    if request_submitted.has_listeners(GenerationRequest):
        generation = GenerationRequest.objects.filter(pk=request_id).first()
        if generation is not None:
            request_submitted.send_robust(GenerationRequest, request=generation)


def _refuse_on_submit(
    generation: GenerationRequest, refusal: GenerationRefused, *, statuses: tuple[str, ...]
) -> None:
    """Mark ``generation`` refused (by the moderation hook) with no provider call."""
    now = timezone.now()
    refused = GenerationRequest.objects.filter(pk=generation.pk, status__in=statuses).update(
        status=Status.REFUSED, error=str(refusal), finished_at=now, updated_at=now
    )
    if refused:
        logger.info("Generation #%s refused: %s", generation.pk, refusal)
        generation.refresh_from_db()
        send = partial(request_refused.send_robust, GenerationRequest, request=generation)
        transaction.on_commit(partial(send, error=refusal, duration=None))


def sweep_stale(*, now: datetime | None = None) -> list[int]:
    """Pick up requests stuck in ``queued`` or ``processing``; returns the ids re-queued.

    Stuck means no progress for ``STALE_AFTER`` seconds past the provider's eta (a worker
    died, a task or webhook was lost). Each is queued again (its job is polled, never
    resubmitted) or, after ``MAX_ATTEMPTS`` attempts, failed with the reason.
    """
    requeued = [
        generation.pk for generation in stale_requests(now=now) if pick_up(generation, now=now)
    ]
    if requeued:
        logger.warning("Re-queued %s stuck generation request(s): %s", len(requeued), requeued)
    return requeued


def stale_requests(
    *, now: datetime | None = None, among: Collection[int] | None = None
) -> list[GenerationRequest]:
    """Requests queued or processing with no progress for STALE_AFTER s past their eta
    (``among``: only those of these ids)."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=get_setting("STALE_AFTER"))
    candidates = GenerationRequest.objects.filter(
        status__in=(Status.QUEUED, Status.PROCESSING), updated_at__lt=limit
    )
    if among is not None:
        candidates = candidates.filter(pk__in=among)
    return [r for r in candidates if r.updated_at + timedelta(seconds=r.eta or 0) < limit]


def pick_up(
    generation: GenerationRequest, *, enqueue: bool = True, now: datetime | None = None
) -> bool:
    """Continue a stuck request: re-queue it, or fail it after ``MAX_ATTEMPTS`` attempts.

    True when it was queued again.
    """
    if generation.attempts < get_setting("MAX_ATTEMPTS"):
        return requeue(generation, enqueue=enqueue)
    now = now or timezone.now()
    GenerationRequest.objects.filter(
        pk=generation.pk, status=generation.status, updated_at=generation.updated_at
    ).update(
        status=Status.FAILED,
        finished_at=now,
        updated_at=now,
        error=f"Stuck in {generation.status} after {generation.attempts} attempt(s) "
        f"(MAX_ATTEMPTS); submit it again to keep polling job "
        f"{generation.provider_id or '(none)'}, or regenerate it.",
    )
    return False


def requeue(generation: GenerationRequest, *, enqueue: bool = True) -> bool:
    """Queue a queued or processing request again, if nobody touched it since it was read.

    For a request whose worker is gone: the next run polls its job or copies its outputs,
    never submitting a second job for a job that may exist.
    """
    requeued = GenerationRequest.objects.filter(
        pk=generation.pk,
        status__in=(Status.QUEUED, Status.PROCESSING),
        status=generation.status,
        updated_at=generation.updated_at,
    ).update(status=Status.QUEUED, updated_at=timezone.now())
    if requeued and enqueue:
        enqueue_on_commit(run_generation, generation.pk)
    return bool(requeued)


def resume_on_commit(request_id: int, *, job_id: str | None = None) -> None:
    """Continue a request a webhook said is done, once the transaction commits.

    ``job_id``: as for :func:`~django_modelslab.pipeline.resume`.
    """
    enqueue_on_commit(resume_generation, request_id, job_id)


@task()
def sweep_stale_generations() -> list[int]:
    """Re-queue requests stuck in queued/processing; schedule it every few minutes."""
    return sweep_stale()
