"""Observability signals, sent by the real pipeline against the emulator."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from django_modelslab import pipeline
from django_modelslab.exceptions import GenerationFailed
from django_modelslab.models import GeneratedImage, GenerationRequest
from django_modelslab.signals import (
    image_stored,
    request_failed,
    request_submitted,
    request_succeeded,
)
from django_modelslab.testing import Fault

from .helpers import configure, generate, new_request

pytestmark = pytest.mark.django_db

Status = GenerationRequest.Status
SIGNALS = {
    "submitted": request_submitted,
    "succeeded": request_succeeded,
    "failed": request_failed,
    "stored": image_stored,
}


@pytest.fixture
def events() -> Iterator[list[tuple[str, Any, dict[str, Any]]]]:
    """Every signal the pipeline sends, in order: (name, sender, kwargs)."""
    seen: list[tuple[str, Any, dict[str, Any]]] = []
    receivers = {}
    for name, signal in SIGNALS.items():

        def receiver(sender: Any, name: str = name, **kwargs: Any) -> None:
            kwargs.pop("signal")
            seen.append((name, sender, kwargs))

        receivers[name] = receiver
        signal.connect(receiver)
    yield seen
    for name, signal in SIGNALS.items():
        signal.disconnect(receivers[name])


def names(events) -> list[str]:
    return [name for name, _sender, _kwargs in events]


def test_success_sends_submitted_stored_succeeded(emulator, events) -> None:
    request = generate(seed=41, samples=2)

    assert request.status == Status.SUCCEEDED, request.error
    assert names(events) == ["submitted", "stored", "stored", "succeeded"]
    _, sender, submitted = events[0]
    assert sender is GenerationRequest and submitted["request"].pk == request.pk
    assert submitted["request"].status == Status.QUEUED

    images = list(request.images.order_by("position"))
    for (_, sender, stored), image in zip(events[1:3], images, strict=True):
        assert sender is GeneratedImage
        assert stored["image"] == image and stored["image"].pk is not None
        assert stored["uploaded"] is True
        assert stored["bytes"] == image.bytes > 0

    _, sender, succeeded = events[3]
    assert sender is GenerationRequest
    assert succeeded["request"].pk == request.pk
    assert succeeded["images"] == images
    assert succeeded["duration"] == pytest.approx(request.duration)
    assert succeeded["duration"] >= 0
    assert succeeded["cost"] is None


def test_bytes_already_stored_are_reported_as_not_uploaded(emulator, events, settings) -> None:
    configure(settings, CACHE=False)
    generate(seed=42)
    events.clear()

    generate(seed=42)

    assert names(events) == ["submitted", "stored", "succeeded"]
    assert events[1][2]["uploaded"] is False


def test_cache_hit_succeeds_without_storing(emulator, events) -> None:
    generate(seed=43)
    events.clear()

    second = generate(seed=43)

    assert second.cached_from is not None
    assert names(events) == ["submitted", "succeeded"]
    assert events[1][2]["images"] == list(second.images.all())


def test_failure_sends_failed_with_the_error(emulator, events) -> None:
    emulator.configure(mode="processing", eta=0)
    emulator.add_fault("text2img", Fault.failed("NSFW content detected"))

    request = generate(seed=44)

    assert request.status == Status.FAILED
    assert names(events) == ["submitted", "failed"]
    _, sender, failed = events[1]
    assert sender is GenerationRequest and failed["request"].pk == request.pk
    assert isinstance(failed["error"], GenerationFailed)
    assert "NSFW content detected" in str(failed["error"])
    assert failed["duration"] == pytest.approx(request.duration)


def test_signals_wait_for_the_commit(emulator, events, django_capture_on_commit_callbacks) -> None:
    """Sent from on_commit callbacks: receivers see committed rows, and nothing before."""
    request = new_request("a fox", seed=45)
    seen_in_db: list[tuple[str, int]] = []

    def check(sender, request, **kwargs) -> None:
        row = GenerationRequest.objects.get(pk=request.pk)
        seen_in_db.append((row.status, row.images.count()))

    request_succeeded.connect(check)
    try:
        with django_capture_on_commit_callbacks() as callbacks:
            pipeline.submit(request, enqueue=False)
            pipeline.run(request.pk)
        assert names(events) == []  # not committed yet: nothing sent
        for callback in callbacks:
            callback()
    finally:
        request_succeeded.disconnect(check)
    assert names(events) == ["submitted", "stored", "succeeded"]
    assert seen_in_db == [(Status.SUCCEEDED, 1)]


def test_regenerate_sends_submitted(emulator, events, django_capture_on_commit_callbacks) -> None:
    request = generate(seed=46)
    events.clear()

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.regenerate(request)

    assert names(events) == ["submitted", "stored", "succeeded"]
    assert events[0][2]["request"].regeneration_batch == ""


def test_a_failing_receiver_never_breaks_the_pipeline(emulator, events, caplog) -> None:
    def broken(sender, **kwargs) -> None:
        raise RuntimeError("metrics backend down")

    for signal in SIGNALS.values():
        signal.connect(broken)
    try:
        with caplog.at_level(logging.ERROR):
            request = generate(seed=47)
    finally:
        for signal in SIGNALS.values():
            signal.disconnect(broken)

    assert request.status == Status.SUCCEEDED, request.error
    assert names(events) == ["submitted", "stored", "succeeded"]  # the others still ran
    # Logged once per failure (submitted, stored, succeeded), by send_robust itself.
    errors = [r for r in caplog.records if "metrics backend down" in r.getMessage()]
    assert [r.name for r in errors] == ["django.dispatch"] * 3
    assert "broken" in errors[0].getMessage()
    assert errors[0].levelno == logging.ERROR
    assert errors[0].exc_info is not None
