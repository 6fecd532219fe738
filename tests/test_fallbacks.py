"""Model fallbacks end to end: the emulator refuses or fails some models, the next one works."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command

from django_modelslab import fallbacks, pipeline
from django_modelslab.models import GenerationRequest, request_id_from_track_id
from django_modelslab.signals import request_failed, request_succeeded
from django_modelslab.testing import Fault

from .helpers import configure, finished, generate, new_request, signals_sent, wait_for

pytestmark = pytest.mark.django_db

Status = GenerationRequest.Status
PROMPT = "a lighthouse at dusk"


def sent_models(emulator) -> list[tuple[str, str]]:
    """(model_id, track_id) of every generate call the emulator received."""
    return [(b["model_id"], b["track_id"]) for route, b in emulator.requests if route == "text2img"]


@pytest.fixture
def events() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    with signals_sent({"failed": request_failed, "succeeded": request_succeeded}) as seen:
        yield seen


def test_an_unknown_model_falls_back_to_the_next(emulator, events):
    emulator.configure(models={"sdxl"})

    request = generate(PROMPT, model_id="no-such-model", fallback_models=["sdxl"])

    assert request.status == Status.SUCCEEDED, request.error
    assert request.model_id == "no-such-model"  # what was asked stays
    assert request.produced_by == "sdxl"
    first, second = request.model_attempts
    assert first["model_id"] == "no-such-model"
    assert first["outcome"] == "failed"
    assert "Model not found: no-such-model" in first["error"]
    assert second["model_id"] == "sdxl"
    assert (second["outcome"], second["error"]) == ("succeeded", "")
    for entry in (first, second):
        assert isinstance(entry["seconds"], float) and 0 <= entry["seconds"] < 10
        assert entry["attempt"] == 1 and entry["at"]
    # Each model try was its own job with its own track id; the request keeps the last one.
    pk = request.pk
    assert sent_models(emulator) == [("no-such-model", f"{pk}-1"), ("sdxl", f"{pk}-1.1")]
    assert request.track_id == f"{pk}-1.1"
    assert request_id_from_track_id(f"{pk}-1.1") == pk
    # The stored file says which model made it (provenance XMP).
    image = request.images.get()
    data = (Path(django_settings.MEDIA_ROOT) / image.image.name).read_bytes()
    assert b"sdxl" in data and b"no-such-model" not in data
    assert [name for name, _kwargs in events] == ["succeeded"]


def test_the_fallback_models_setting_applies_when_the_request_lists_none(emulator, settings):
    configure(settings, FALLBACK_MODELS=["gone", "sdxl", "flux"])
    emulator.configure(models={"sdxl", "flux"}, failing_models={"flux": "failed"})

    request = generate(PROMPT)  # model: DEFAULT_MODEL (flux)

    assert request.status == Status.SUCCEEDED, request.error
    assert request.produced_by == "sdxl"
    assert [(e["model_id"], e["outcome"]) for e in request.model_attempts] == [
        ("flux", "failed"),
        ("gone", "failed"),
        ("sdxl", "succeeded"),
    ]
    assert "flux could not run it" in request.model_attempts[0]["error"]
    assert [m for m, _track in sent_models(emulator)] == ["flux", "gone", "sdxl"]


def test_a_server_error_that_outlasts_the_retries_falls_back(emulator):
    emulator.configure(failing_models={"flux": 503})

    request = generate(PROMPT, fallback_models=["sdxl"])

    assert request.status == Status.SUCCEEDED, request.error
    assert request.produced_by == "sdxl"
    assert "temporarily unavailable" in request.model_attempts[0]["error"]
    models = [m for m, _track in sent_models(emulator)]
    assert models == ["flux"] * 4 + ["sdxl"]  # the client's MAX_RETRIES=3, then the next model


def test_a_refused_api_key_does_not_fall_back(emulator, events):
    emulator.configure(api_keys={"another-key"})

    request = generate(PROMPT, fallback_models=["sdxl", "sd3"])

    assert request.status == Status.FAILED
    assert request.error.startswith("Invalid API key")
    assert emulator.calls["text2img"] == 1  # the next model would be refused the same way
    assert [(e["model_id"], e["outcome"]) for e in request.model_attempts] == [("flux", "failed")]
    assert request.produced_by == ""
    assert [name for name, _kwargs in events] == ["failed"]


def test_invalid_parameters_do_not_fall_back(emulator):
    # A row saved around pipeline.submit (which refuses the width) and run: ModelsLab refuses.
    request = GenerationRequest.objects.create(
        prompt=PROMPT, width=2048, height=256, fallback_models=["sdxl"]
    )
    pipeline.run(request.pk)
    request.refresh_from_db()

    assert request.status == Status.FAILED
    assert "width must not be greater than 1024" in request.error
    assert emulator.calls["text2img"] == 1


def test_credits_rate_limits_and_lost_answers_do_not_fall_back(emulator, settings):
    configure(settings, MAX_RETRIES=0)
    emulator.add_fault("text2img", Fault.insufficient_credits())
    out_of_credit = generate(PROMPT, fallback_models=["sdxl"])
    emulator.add_fault("text2img", Fault.rate_limit(0.01))
    limited = generate(PROMPT, fallback_models=["sdxl"])
    emulator.add_fault("text2img", Fault.http_error(500))  # may have been queued: ambiguous
    ambiguous = generate(PROMPT, fallback_models=["sdxl"])

    for request in (out_of_credit, limited, ambiguous):
        assert request.status == Status.FAILED
        assert len(request.model_attempts) == 1, request.model_attempts
    assert emulator.calls["text2img"] == 3
    assert "may have been queued" in ambiguous.error


def test_when_every_model_fails_the_error_lists_each(emulator, events):
    emulator.configure(models={"flux"}, failing_models={"flux": "failed"})

    request = generate(PROMPT, fallback_models=["sdxl", "sd3"])

    assert request.status == Status.FAILED
    assert request.error.startswith("No model produced images (3 tried).")
    assert "flux: Generation failed: model flux could not run it." in request.error
    assert "sdxl: Model not found: sdxl" in request.error
    assert "sd3: Model not found: sd3" in request.error
    assert [e["outcome"] for e in request.model_attempts] == ["failed"] * 3
    assert [name for name, _kwargs in events] == ["failed"]  # once, for the request
    assert events[0][1]["request"].pk == request.pk


def test_retrying_after_a_total_failure_starts_from_the_first_model(
    emulator, django_capture_on_commit_callbacks
):
    emulator.configure(models=set())
    request = generate(PROMPT, fallback_models=["sdxl"])
    assert request.status == Status.FAILED

    emulator.configure(models=None)
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.submit(request)
    request.refresh_from_db()

    assert request.status == Status.SUCCEEDED, request.error
    assert request.produced_by == "flux"
    assert [(e["attempt"], e["model_id"], e["outcome"]) for e in request.model_attempts] == [
        (1, "flux", "failed"),
        (1, "sdxl", "failed"),
        (2, "flux", "succeeded"),
    ]
    assert request.track_id == f"{request.pk}-2"


def test_a_cached_result_reports_the_model_that_made_it(emulator):
    emulator.configure(models={"sdxl"})
    first = generate(PROMPT, seed=5, fallback_models=["sdxl"])
    again = generate(PROMPT, seed=5, fallback_models=["sdxl"])

    assert again.cached_from == first
    assert again.produced_by == "sdxl"
    assert emulator.calls["text2img"] == 2  # both for the first request


@pytest.mark.django_db(transaction=True)
def test_a_fallback_job_finishes_through_its_webhook(webhooks_on, emulator):
    emulator.configure(models={"sdxl"})
    request = new_request("a harbour at night", fallback_models=["sdxl"])

    returned = pipeline.run(request.pk)

    assert returned.status == Status.PROCESSING
    done = wait_for(lambda: finished(request))
    assert done.status == Status.SUCCEEDED, done.error
    assert done.produced_by == "sdxl"
    assert done.track_id == f"{done.pk}-1.1"
    assert [(e["model_id"], e["outcome"]) for e in done.model_attempts] == [
        ("flux", "failed"),
        ("sdxl", "succeeded"),
    ]
    delivery = done.webhook_deliveries.get()
    assert delivery.track_id == done.track_id


@pytest.mark.django_db(transaction=True)  # the command runs requests on its own threads
def test_the_command_can_add_fallbacks_for_its_run(emulator, settings):
    emulator.configure(models={"sdxl"})
    request = new_request("a kite")
    pipeline.run(request.pk)
    request.refresh_from_db()
    assert request.status == Status.FAILED

    out = _command("--id", str(request.pk), "--fallback-model", "sdxl", "--fallback-model", "x")

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert request.fallback_models == ["sdxl", "x"]
    assert "Done: 1 succeeded." in out
    assert "Produced by: sdxl 1." in out


def test_the_command_checks_fallback_models(emulator, settings):
    configure(settings, ALLOWED_MODELS=["flux"])
    new_request("a kite")

    with pytest.raises(Exception, match="--fallback-model: Unknown model"):
        _command("--fallback-model", "sdxl")
    assert emulator.calls["text2img"] == 0


def _command(*args: str) -> str:
    import io

    out = io.StringIO()
    call_command("regenerate_images", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_policy_in_one_place():
    """Which errors move on to the next model (the rest of the file shows it end to end)."""
    from django_modelslab import exceptions as e

    request = GenerationRequest(prompt="x")
    assert fallbacks.falls_through(request, e.ProviderRejected("Model not found: x"))
    assert not fallbacks.falls_through(request, e.ProviderRejected("The width is invalid."))
    assert fallbacks.falls_through(request, e.GenerationFailed("failed"))
    assert fallbacks.falls_through(request, e.ProviderUnavailable("503"))
    request.provider_id = "123"  # a job exists and may still finish
    assert not fallbacks.falls_through(request, e.ProviderUnavailable("503"))
    assert not fallbacks.falls_through(request, e.AuthenticationFailed("Invalid API key"))
    assert not fallbacks.falls_through(request, e.InsufficientCredits("no model credits"))
    assert not fallbacks.falls_through(request, e.AmbiguousSubmission("lost"))
    assert not fallbacks.falls_through(request, e.PromptRejected("no"))
    assert not fallbacks.falls_through(request, e.SafetyRefused("blanked"))
    assert fallbacks.models_for(GenerationRequest(model_id="a", fallback_models=["b", "a"])) == [
        "a",
        "b",
    ]


def test_fallback_settings_are_checked(settings):
    from django.core.checks import run_checks

    configure(
        settings,
        FALLBACK_MODELS="sdxl",
        FALLBACK_ON_SAFETY="yes",
        SAFETY_CHECKER="on",
        MODERATION_HOOK="tests.test_fallbacks.nothing_here",
    )
    ids = {message.id for message in run_checks()}
    assert {
        "django_modelslab.E030",
        "django_modelslab.E031",
        "django_modelslab.E032",
        "django_modelslab.E033",
    } <= ids


def test_seconds_are_measured(emulator):
    emulator.configure(models={"sdxl"}, latency=0.2)
    started = time.monotonic()
    request = generate(PROMPT, model_id="nope", fallback_models=["sdxl"])
    took = time.monotonic() - started

    seconds = [e["seconds"] for e in request.model_attempts]
    assert all(s >= 0.2 for s in seconds)
    assert sum(seconds) <= took + 0.1


def test_a_retry_keeps_the_failed_try_and_times_only_itself(
    emulator, django_capture_on_commit_callbacks
):
    """A retry that copies the first attempt's outputs again adds its own entry; the failed
    one stays, and neither counts the time the request sat failed in between."""
    emulator.add_fault("download", Fault.corrupt())
    request = generate(PROMPT, seed=42)
    assert request.status == Status.FAILED
    job_time = next(iter(emulator.jobs.values())).generation_time
    time.sleep(1.0)  # the request sits failed until someone retries it

    with django_capture_on_commit_callbacks(execute=True):
        pipeline.submit(request)
    request.refresh_from_db()

    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["text2img"] == 1  # the retry copied the same job's outputs
    first, second = request.model_attempts
    assert (first["attempt"], first["model_id"], first["outcome"]) == (1, "flux", "failed")
    assert "Not a PNG, JPEG" in first["error"]
    assert first["provider_seconds"] == job_time
    assert (second["attempt"], second["model_id"], second["outcome"]) == (2, "flux", "succeeded")
    assert second["continued"] is True and second["track_id"] == first["track_id"]
    assert second["seconds"] < 1.0  # this try's own time, not since the first began
    assert second["provider_seconds"] is None  # no new job: ModelsLab reported no new time


def test_the_provider_time_of_each_model_is_kept(emulator):
    emulator.configure(models={"sdxl"})

    request = generate(PROMPT, seed=7, model_id="gone", fallback_models=["sdxl"])

    assert request.status == Status.SUCCEEDED, request.error
    (job,) = emulator.jobs.values()
    assert [(e["model_id"], e["provider_seconds"]) for e in request.model_attempts] == [
        ("gone", None),  # refused at once: no job, no time
        ("sdxl", job.generation_time),
    ]
