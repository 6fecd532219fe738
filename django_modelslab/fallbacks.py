"""Model fallbacks: which models a request tries, which errors move on, what each try did.

A request tries its ``model_id`` (or DEFAULT_MODEL), then its ``fallback_models`` (or, when
that is empty, the FALLBACK_MODELS setting), in order, inside one attempt of
:func:`~django_modelslab.pipeline.run`. Each model try is a new provider job with its own
track id (``<request>-<attempt>`` for the first, ``<request>-<attempt>.<n>`` after) and one
entry in ``GenerationRequest.model_attempts``::

    {"model_id": "flux", "outcome": "failed", "error": "Model not found: flux (HTTP 404)",
     "seconds": 0.02, "provider_seconds": None, "at": "2026-...", "attempt": 1,
     "track_id": "12-1"}

``outcome`` is ``started`` (in flight), ``succeeded``, ``failed``, ``refused`` or
``abandoned`` (a job the request stopped waiting for). ``seconds`` is the time this try took
here, from its start; ``provider_seconds`` the job's own time as ModelsLab reported it
(``generationTime``; None when it did not). A retry that continues an earlier attempt's job
(polls it, or copies its outputs again) adds its own entry, ``"continued": true``, with the
same track id: the earlier entry keeps its outcome and error. See :func:`falls_through` for
the errors that move on to the next model.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.utils import timezone

from .conf import get_setting
from .exceptions import (
    AmbiguousSubmission,
    AuthenticationFailed,
    GenerationFailed,
    GenerationRefused,
    InsufficientCredits,
    ProviderRejected,
    ProviderTransportError,
    ProviderUnavailable,
    RateLimited,
    SafetyRefused,
)

if TYPE_CHECKING:
    from .models import GenerationRequest

STARTED = "started"
SUCCEEDED = "succeeded"
FAILED = "failed"
REFUSED = "refused"
ABANDONED = "abandoned"
#: Most fallback models one request may list.
MAX_FALLBACK_MODELS = 10
MAX_MODEL_ID_LENGTH = 200


def models_for(generation: GenerationRequest) -> list[str]:
    """The model ids to try, in order, without repeats.

    FALLBACK_MODELS lists v6 image models: upscale and v7 requests fall back only to their own
    ``fallback_models``.
    """
    from . import kinds  # here: kinds needs the models loaded

    first = generation.model_id or kinds.default_model(generation)
    fallbacks = generation.fallback_models
    if not fallbacks and kinds.uses_fallback_setting(generation):
        fallbacks = get_setting("FALLBACK_MODELS") or []
    ordered: list[str] = []
    for model in (first, *fallbacks):
        if model and model not in ordered:
            ordered.append(model)
    return ordered


def clean_model_ids(values: Any) -> list[str]:
    """Validate a list of fallback model ids (for forms, serializers, the command).

    Strips blanks and repeats; raises ValueError with a message a person can act on for an id
    that is not a string, too long or has spaces, more than MAX_FALLBACK_MODELS ids, or an id
    outside ALLOWED_MODELS when that is set.
    """
    if isinstance(values, str) or not isinstance(values, list | tuple):
        raise ValueError("Give a list of model ids.")
    ids: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a model id.")
        model = value.strip()
        if not model or model in ids:
            continue
        if len(model) > MAX_MODEL_ID_LENGTH or any(c.isspace() for c in model):
            raise ValueError(f"{model[:40]!r} is not a model id (no spaces, at most 200 chars).")
        ids.append(model)
    if len(ids) > MAX_FALLBACK_MODELS:
        raise ValueError(f"Give at most {MAX_FALLBACK_MODELS} fallback models.")
    allowed = get_setting("ALLOWED_MODELS")
    unknown = [model for model in ids if allowed is not None and model not in allowed]
    if unknown:
        raise ValueError(
            f"Unknown model(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}."
        )
    return ids


def falls_through(generation: GenerationRequest, exc: BaseException) -> bool:
    """Whether ``exc``, ending one model's try, lets the next model be tried.

    Yes for a model-specific rejection ("Model not found: …", any ``status: "error"`` that
    names the model), a job ModelsLab reported ``failed``, and a server error (5xx) or lost
    connection that left no job behind. A safety refusal only with FALLBACK_ON_SAFETY.
    Never for what the next model would meet too (API key, credits, rate limit, invalid
    parameters), for a submission whose answer was lost (the job may run, and be billed),
    or while a job may still finish (errors polling it, MAX_WAIT).
    """
    if isinstance(exc, SafetyRefused):
        return bool(get_setting("FALLBACK_ON_SAFETY"))
    if isinstance(exc, GenerationRefused | AmbiguousSubmission):
        return False
    if isinstance(exc, AuthenticationFailed | InsufficientCredits | RateLimited):
        return False
    if isinstance(exc, GenerationFailed):
        return True
    if isinstance(exc, ProviderUnavailable | ProviderTransportError):
        return not generation.provider_id  # with a job known, it may still finish
    if isinstance(exc, ProviderRejected):
        return is_model_error(exc)
    return False


def is_model_error(exc: ProviderRejected) -> bool:
    """A rejection about the model itself (unknown, unavailable, not on this plan)."""
    return "model" in exc.message.lower()


def try_models(
    generation: GenerationRequest,
    attempt: Callable[[], Generator[Any, Any, Any]],
    *,
    forget: Callable[[GenerationRequest], None],
) -> Generator[Any, Any, None]:
    """Run ``attempt`` for each model in turn until one does not fail in a way that moves on.

    ``attempt`` generates with :func:`current_model` (it submits, waits, stores); it is a
    generator of the pipeline's provider calls (``yield from``: see
    :func:`~django_modelslab.pipeline.drive`), and so is this. ``forget``
    drops the previous model's job before the next one is submitted. A job already in flight
    (a retry polling it, or copying its outputs) is continued first, with its own model.
    The error of the last model tried is raised; :func:`explain` lists them all.
    """
    models = models_for(generation)
    in_flight = _entry(generation, generation.track_id) if generation.track_id else None
    if in_flight is not None and in_flight.get("attempt") != generation.attempts:
        in_flight = _continue(generation, in_flight)
    if in_flight is not None and in_flight["model_id"] in models:
        start = models.index(in_flight["model_id"])
    else:
        start = 0
        if in_flight is None:
            _begin(generation, models[0])
    for index in range(start, len(models)):
        if index > start:
            forget(generation)
            _begin(generation, models[index])
        try:
            yield from attempt()
            return
        except Exception as exc:
            if index + 1 == len(models) or not falls_through(generation, exc):
                raise
            end(generation, exc)
            generation.save(update_fields=["model_attempts", "updated_at"])


def current_model(generation: GenerationRequest) -> str:
    """The model of the job the request is on: the try its track id names, else its own."""
    found = _entry(generation, generation.track_id) if generation.track_id else None
    if found is None:
        found = _open(generation)
    if found is not None:
        return str(found["model_id"])
    from . import kinds  # here: kinds needs the models loaded

    return generation.model_id or kinds.default_model(generation)


def track_id(generation: GenerationRequest) -> str:
    """The track id for a new job: the one reserved by the model try in progress."""
    found = _open(generation)
    return str(found["track_id"]) if found is not None else generation.new_track_id()


def end(generation: GenerationRequest, exc: BaseException | None = None, reason: str = "") -> None:
    """Close the current try: succeeded (``exc`` None), refused or failed with its reason."""
    found = _entry(generation, generation.track_id) if generation.track_id else None
    if found is None:
        found = _open(generation)
    if found is None:
        return
    if exc is None:
        outcome = SUCCEEDED
    else:
        outcome = REFUSED if isinstance(exc, GenerationRefused) else FAILED
    found.update(
        outcome=outcome,
        error=reason or ("" if exc is None else str(exc)),
        seconds=_seconds_since(found.get("at")),
    )
    generation.model_attempts = list(generation.model_attempts)


def note_provider_time(generation: GenerationRequest, seconds: float | None) -> None:
    """Record on the current try the job's time as ModelsLab reported it (unsaved)."""
    found = _entry(generation, generation.track_id) if generation.track_id else None
    if found is None:
        found = _open(generation)
    if found is not None and seconds is not None:
        found["provider_seconds"] = seconds
        generation.model_attempts = list(generation.model_attempts)


def explain(generation: GenerationRequest, reason: str) -> str:
    """``reason``, preceded by the errors of the attempt's earlier models when there were any."""
    tries = [e for e in generation.model_attempts if e.get("attempt") == generation.attempts]
    failed = [e for e in tries if e.get("outcome") in (FAILED, REFUSED)]
    if len(failed) < 2:
        return reason
    listed = "; ".join(f"{e['model_id']}: {e.get('error') or e['outcome']}" for e in failed)
    return f"No model produced images ({len(failed)} tried). {listed}"


# --- entries ----------------------------------------------------------------------------


def _begin(generation: GenerationRequest, model: str) -> None:
    """Record a new try of ``model`` (unsaved: the pipeline saves it with the track id it
    reserves, before the call, so a crash mid-call leaves the evidence)."""
    entries = list(generation.model_attempts)
    for entry in entries:
        if entry.get("outcome") == STARTED:
            entry.update(outcome=ABANDONED, seconds=_seconds_since(entry.get("at")))
    n = sum(1 for entry in entries if entry.get("attempt") == generation.attempts)
    track = generation.new_track_id() if n == 0 else f"{generation.new_track_id()}.{n}"
    entries.append(_new_entry(generation, model, track))
    generation.model_attempts = entries


def _new_entry(
    generation: GenerationRequest, model: str, track: str, **more: Any
) -> dict[str, Any]:
    """A ``started`` entry of this attempt for ``model`` under ``track``."""
    return {
        "model_id": model,
        "outcome": STARTED,
        "error": "",
        "seconds": None,
        "provider_seconds": None,
        "at": timezone.now().isoformat(),
        "attempt": generation.attempts,
        "track_id": track,
        **more,
    }


def _continue(generation: GenerationRequest, earlier: dict[str, Any]) -> dict[str, Any]:
    """A new entry for this attempt, continuing the job of an ``earlier`` one (unsaved).

    The earlier entry keeps what it recorded; one a dead worker left ``started`` is closed.
    """
    if earlier.get("outcome") == STARTED:
        earlier.update(
            outcome=ABANDONED,
            error=f"Interrupted; attempt {generation.attempts} continued its job.",
        )
    entry = _new_entry(generation, earlier["model_id"], earlier.get("track_id", ""), continued=True)
    generation.model_attempts = [*generation.model_attempts, entry]
    return entry


def _entry(generation: GenerationRequest, track: str) -> dict[str, Any] | None:
    for entry in reversed(generation.model_attempts):
        if entry.get("track_id") == track:
            return entry
    return None


def _open(generation: GenerationRequest) -> dict[str, Any] | None:
    for entry in reversed(generation.model_attempts):
        if entry.get("outcome") == STARTED:
            return entry
    return None


def _seconds_since(at: Any) -> float | None:
    try:
        started = datetime.fromisoformat(str(at))
    except ValueError:
        return None
    return round((timezone.now() - started).total_seconds(), 3)
