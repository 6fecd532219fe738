"""The fault matrix: each fault ModelsLab may show, through the real pipeline, four properties each.

* **No image lost**: every output ModelsLab reported as succeeded is stored, or its request
  is left failed with a reason and the source URLs, and a rerun finishes it.
* **No double charge**: the emulator created exactly the provider jobs the scenario needs
  (``emulator.jobs``); ``emulator.calls["text2img"]`` is checked too.
* **Every failure has a reason** a person can read, and the raw provider response.
* **Bounded**: every run finishes within a stated number of seconds.

Each test records its figures with ``record_property`` (``tests/faults_report.py`` turns them
into ``docs/reliability.md``). Proved elsewhere and cited in that report: duplicate and forged
webhooks (``test_webhooks.py``), a webhook recovering a lost generate answer
(``test_webhooks.py::test_webhook_recovers_a_lost_generate_answer``), S3 errors on put
(``test_s3_storage.py``), two runs racing (``test_workers.py``) and the worker killed with
SIGKILL mid-poll (``test_workers.py``, PostgreSQL pass).
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.urls import reverse
from django.utils import timezone

from django_modelslab import pipeline
from django_modelslab.client import _urls
from django_modelslab.models import GeneratedImage, GenerationRequest, WebhookDelivery
from django_modelslab.testing import Emulator, Fault

from .helpers import configure, new_request

Status = GenerationRequest.Status
SECRET = "fault-matrix-webhook-secret-0123456789"
PROMPT = "a lighthouse in a storm"


class Ledger:
    """What one scenario did: runs (timed and bounded), then the four properties."""

    def __init__(self, emulator: Emulator, record: Callable[[str, Any], None]) -> None:
        self.emulator = emulator
        self.record = record
        self.steps: list[str] = []
        self.longest = 0.0
        self.app_5xx = 0

    def run(self, request: GenerationRequest, *, bound: float, how: str = "run") -> Any:
        """Run (``how``: run, submit, regenerate) and reload ``request``; assert the bound."""
        started = time.monotonic()
        if how == "run":
            pipeline.run(request.pk)
        elif how == "submit":
            pipeline.run(pipeline.submit(request, enqueue=False).pk)
        else:
            pipeline.run(pipeline.regenerate(request, enqueue=False).pk)
        elapsed = time.monotonic() - started
        self.longest = max(self.longest, elapsed)
        assert elapsed < bound, f"{how} took {elapsed:.2f} s, more than {bound} s"
        request.refresh_from_db()
        self.note(request, how)
        return request

    def note(self, request: GenerationRequest, how: str) -> None:
        step = f"{how}: {request.status}"
        if request.status == Status.FAILED:
            step += f" ({request.error})"
            self.check_failure(request)
        self.steps.append(step)

    def check_failure(self, request: GenerationRequest) -> None:
        """A readable reason, and the raw provider response when ModelsLab was asked."""
        assert len(request.error) > 20, request.error
        assert "Traceback" not in request.error
        if request.track_id or request.provider_id or request.output_urls:
            assert request.provider_responses or request.output_urls, "no raw response kept"

    def check(self, *, jobs: int, generate_calls: int | None = None, orphans: int = 0) -> None:
        """No image lost, no extra job; record the figures for the report."""
        reported: set[str] = set()
        retriable: set[str] = set()
        for request in GenerationRequest.objects.all():
            for entry in request.provider_responses:
                body = entry.get("body")
                if isinstance(body, dict) and body.get("status") == "success":
                    reported.update(_urls(body.get("output")))
            if request.status == Status.FAILED and request.error:
                retriable.update(request.output_urls)
        stored = set(GeneratedImage.objects.values_list("source_url", flat=True))
        lost = reported - stored - retriable
        made = len(self.emulator.jobs)
        # Jobs ModelsLab finished whose answer never reached the app (billed, nothing to copy).
        orphaned = sum(
            1
            for job in self.emulator.jobs.values()
            if job.status == "success" and not reported & set(job.output_urls)
        )
        self.record("images_lost", len(lost))
        self.record("double_submissions", max(0, made - jobs))
        self.record("provider_jobs", made)
        self.record("orphan_jobs", orphaned)
        self.record("app_5xx", self.app_5xx)
        self.record("generate_calls", self.emulator.calls["text2img"])
        self.record("longest_run_s", round(self.longest, 2))
        self.record("what_happened", " → ".join(self.steps))
        assert not lost, f"reported outputs neither stored nor retriable: {lost}"
        assert made == jobs, f"{made} provider jobs, expected {jobs}"
        if generate_calls is not None:
            assert self.emulator.calls["text2img"] == generate_calls
        assert orphaned == orphans, f"{orphaned} finished job(s) never reported, expected {orphans}"
        assert self.app_5xx == 0


@pytest.fixture
def ledger(emulator: Emulator, record_property, settings) -> Ledger:
    configure(settings, DOWNLOAD_TIMEOUT=2.0, CACHE=False)
    return Ledger(emulator, record_property)


# --- the provider API ---------------------------------------------------------------------

db = pytest.mark.django_db


@db
def test_429_with_retry_after_is_waited_out(emulator, ledger):
    """429 with retry_after on generate, twice"""
    emulator.add_fault("text2img", Fault.rate_limit(retry_after=0.05), times=2)

    request = ledger.run(new_request(PROMPT, seed=1), bound=2)

    assert request.status == Status.SUCCEEDED
    assert request.images.count() == 1
    ledger.check(jobs=1, generate_calls=3)


@db
def test_429_that_does_not_clear_fails_and_a_rerun_finishes(emulator, ledger, settings):
    """429 on every retry of generate (MAX_RETRIES + 1 times)"""
    configure(settings, MAX_RETRIES=2)
    emulator.add_fault("text2img", Fault.rate_limit(retry_after=0.05), times=3)

    request = ledger.run(new_request(PROMPT, seed=2), bound=2)

    assert request.status == Status.FAILED
    assert "Rate limit exceeded" in request.error
    assert request.provider_responses[-1]["status_code"] == 429
    assert request.provider_responses[-1]["body"]["retry_after"] == 0.05
    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=4)


@db
def test_503_burst_on_generate_is_retried(emulator, ledger):
    """503 burst on generate (a gateway: the job was certainly not queued)"""
    emulator.add_fault("text2img", Fault.http_error(503, "Service Unavailable"), times=3)

    request = ledger.run(new_request(PROMPT, seed=3), bound=2)

    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=4)


@db
def test_500_on_generate_is_never_resubmitted(emulator, ledger):
    """500 on generate (the job may have been queued)"""
    emulator.add_fault("text2img", Fault.http_error(500))

    request = ledger.run(new_request(PROMPT, seed=4), bound=2)
    assert request.status == Status.FAILED
    assert "may have been queued" in request.error
    assert request.provider_responses[-1]["status_code"] == 500

    request = ledger.run(request, bound=2, how="submit")  # a retry must not pay twice
    assert request.status == Status.FAILED
    assert "Regenerate" in request.error
    assert emulator.calls["text2img"] == 1

    request = ledger.run(request, bound=2, how="regenerate")  # a person's explicit choice
    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=2)


@db
def test_5xx_burst_on_fetch_is_retried(emulator, ledger):
    """500 burst on fetch while polling"""
    emulator.mode = "processing"
    emulator.eta = 0
    emulator.add_fault("fetch", Fault.http_error(500), times=3)

    request = ledger.run(new_request(PROMPT, seed=5), bound=3)

    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=1)


@db
def test_error_200_fails_with_the_providers_message_and_a_rerun_finishes(emulator, ledger):
    """HTTP 200 with status "error" on generate"""
    emulator.add_fault("text2img", Fault.error_200("Server error, please try again."))

    request = ledger.run(new_request(PROMPT, seed=6), bound=2)
    assert request.status == Status.FAILED
    assert "Server error, please try again." in request.error
    assert request.provider_responses[-1]["body"]["status"] == "error"

    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=2)


@db
def test_failed_job_reports_the_reason_and_a_rerun_starts_a_new_one(emulator, ledger):
    """The job is accepted, then reported "failed" """
    emulator.mode = "processing"
    emulator.eta = 0
    emulator.add_fault("text2img", Fault.failed("NSFW content detected"))

    request = ledger.run(new_request(PROMPT, seed=7), bound=2)
    assert request.status == Status.FAILED
    assert "NSFW content detected" in request.error
    assert request.provider_responses[-1]["body"]["status"] == "failed"

    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=2, generate_calls=2)  # the failed job is over: a retry is a new job


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A BASE_URL whose connections time out: the listen backlog is full, SYNs are dropped."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    yield f"http://127.0.0.1:{port}/api"
    for sock in (*fillers, server):
        sock.close()


@db
def test_connect_timeout_on_generate_is_retried_then_fails_and_a_rerun_finishes(
    emulator, ledger, settings, blackhole
):
    """Connect timeout on generate (nothing was sent)"""
    configure(settings, BASE_URL=blackhole, CONNECT_TIMEOUT=0.2, MAX_RETRIES=1)

    request = ledger.run(new_request(PROMPT, seed=8), bound=2)
    assert request.status == Status.FAILED
    assert "Could not reach ModelsLab" in request.error
    assert "ConnectTimeout" in request.error
    assert request.track_id == ""  # certainly never started: a rerun may submit

    configure(settings, BASE_URL=emulator.base_url)
    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=1)


@db
def test_read_timeout_on_fetch_is_retried(emulator, ledger, settings):
    """Read timeout on fetch"""
    configure(settings, TIMEOUT=0.3)
    emulator.mode = "processing"
    emulator.eta = 0
    emulator.add_fault("fetch", Fault.delay(1.0))

    request = ledger.run(new_request(PROMPT, seed=9), bound=3)

    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=1)


@db
def test_read_timeout_on_generate_is_never_resubmitted(emulator, ledger, settings):
    """Read timeout on generate (answer lost; webhooks off)"""
    configure(settings, TIMEOUT=0.3)
    emulator.add_fault("text2img", Fault.delay(0.6))

    request = ledger.run(new_request(PROMPT, seed=10), bound=2)
    assert request.status == Status.FAILED
    assert "may have been queued" in request.error
    assert request.track_id  # what was sent is known
    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.FAILED

    deadline = time.monotonic() + 2
    while not emulator.jobs and time.monotonic() < deadline:
        time.sleep(0.02)  # the emulator answers (too late) once its delay is over
    # ModelsLab did make (and bill) the job; without webhooks its answer never comes back.
    # A person regenerates (a second, deliberate job) or webhooks recover it
    # (test_webhooks.py::test_webhook_recovers_a_lost_generate_answer).
    ledger.check(jobs=1, generate_calls=1, orphans=1)


@db
def test_dropped_connection_on_generate_is_never_resubmitted(emulator, ledger):
    """Connection dropped after sending generate"""
    emulator.add_fault("text2img", Fault.drop_connection())

    request = ledger.run(new_request(PROMPT, seed=11), bound=2)
    assert request.status == Status.FAILED
    assert "may have been queued" in request.error

    request = ledger.run(request, bound=2, how="regenerate")
    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=2)


@db
def test_dropped_connection_on_fetch_is_retried(emulator, ledger):
    """Connection dropped on fetch"""
    emulator.mode = "processing"
    emulator.eta = 0
    emulator.add_fault("fetch", Fault.drop_connection(), times=2)

    request = ledger.run(new_request(PROMPT, seed=12), bound=2)

    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=1)


@db
def test_job_that_never_finishes_stops_at_max_wait_and_a_rerun_polls_it(emulator, ledger, settings):
    """A job that never finishes (MAX_WAIT)"""
    configure(settings, MAX_WAIT=0.5)
    emulator.mode = "processing"
    emulator.add_fault("text2img", Fault.never_finish())

    request = ledger.run(new_request(PROMPT, seed=13), bound=1.5)
    assert request.status == Status.FAILED
    assert "MAX_WAIT" in request.error
    assert request.provider_id

    for job in emulator.jobs.values():
        job.never_finish = False  # ModelsLab gets there in the end
    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=1)


# --- copying the outputs ------------------------------------------------------------------


def download_fault_case(ledger, emulator, settings, fault: Fault, expected: str, **limits):
    configure(settings, **limits)
    emulator.add_fault("download", fault)

    request = ledger.run(new_request(PROMPT, seed=20, samples=2), bound=2)
    assert request.status == Status.FAILED
    assert expected in request.error
    assert len(request.output_urls) == 2  # both kept for the retry: the source URLs
    assert request.images.count() == 0

    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.SUCCEEDED
    assert request.images.count() == 2
    assert {i.source_url for i in request.images.all()} == set(request.output_urls)
    ledger.check(jobs=1, generate_calls=1)


@db
def test_download_that_stalls_before_answering(emulator, ledger, settings):
    """Download stalls before any byte"""
    download_fault_case(
        ledger, emulator, settings, Fault.delay(2.0), "timed out", DOWNLOAD_TIMEOUT=0.3
    )


@db
def test_download_that_trickles(emulator, ledger, settings):
    """Download trickles (slower than DOWNLOAD_TIMEOUT allows)"""
    download_fault_case(
        ledger,
        emulator,
        settings,
        Fault.slow_download(bytes_per_second=2000),
        "DOWNLOAD_TIMEOUT",
        DOWNLOAD_TIMEOUT=0.3,
    )


@db
def test_download_cut_mid_stream(emulator, ledger, settings):
    """Download cut mid-stream"""
    download_fault_case(ledger, emulator, settings, Fault.cut_download(100), "was cut off")


@db
def test_corrupt_bytes(emulator, ledger, settings):
    """Corrupt / non-image bytes labelled as an image"""
    download_fault_case(ledger, emulator, settings, Fault.corrupt(), "Not a PNG, JPEG")


@db
def test_output_url_answering_404_before_the_copy(emulator, ledger, settings):
    """Output URL answers 404 (expired) before the copy, once"""
    download_fault_case(ledger, emulator, settings, Fault.expired(), "HTTP 404")


@db
def test_output_url_answering_403(emulator, ledger, settings):
    """Output URL answers 403 (signed URL expired), once"""
    download_fault_case(ledger, emulator, settings, Fault.http_error(403), "HTTP 403")


@db
def test_output_gone_for_good_is_not_paid_for_again_automatically(emulator, ledger):
    """Outputs deleted by ModelsLab before any copy (url_ttl 0)"""
    emulator.url_ttl = 0

    request = ledger.run(new_request(PROMPT, seed=21), bound=2)
    assert request.status == Status.FAILED
    assert "expired" in request.error
    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.FAILED  # tried the same URL again: no new job
    assert request.output_urls

    # Only an explicit regenerate pays for a new job.
    ledger.check(jobs=1, generate_calls=1)


@db
def test_storage_failing_on_put_keeps_the_urls_and_a_rerun_stores(emulator, ledger, settings):
    """Storage error on put (filesystem here; S3 in test_s3_storage.py)"""
    plain_file = Path(settings.MEDIA_ROOT).parent / f"blocker-{time.monotonic_ns()}"
    plain_file.write_bytes(b"")
    good = settings.STORAGES
    settings.STORAGES = {
        **good,
        "modelslab": {
            "BACKEND": "django_modelslab.storage.ContentAddressedFileSystemStorage",
            "OPTIONS": {"location": str(plain_file)},
        },
    }

    request = ledger.run(new_request(PROMPT, seed=22), bound=2)
    assert request.status == Status.FAILED
    assert "modelslab/" in request.error  # names the key it could not write
    assert request.output_urls

    settings.STORAGES = good
    request = ledger.run(request, bound=2, how="submit")
    assert request.status == Status.SUCCEEDED
    ledger.check(jobs=1, generate_calls=1)


# --- webhooks (late, out of order) -------------------------------------------------------


@pytest.fixture
def webhook_endpoint(settings, live_server, emulator):
    configure(settings, PUBLIC_BASE_URL=live_server.url, WEBHOOK_SECRETS=[SECRET])
    emulator.mode = "processing"
    emulator.webhook_auto_finish = False
    return live_server.url + reverse("modelslab:webhook", kwargs={"secret": SECRET})


def deliver(ledger: Ledger, url: str, body: dict[str, Any]) -> str:
    response = httpx.post(url, content=json.dumps(body), timeout=10)
    if response.status_code >= 500:
        ledger.app_5xx += 1
    assert response.status_code == 200, response.text
    return response.json()["outcome"]


def wait_for_status(
    request: GenerationRequest, status: str, timeout: float = 5.0
) -> GenerationRequest:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request.refresh_from_db()
        if request.status == status:
            return request
        time.sleep(0.05)
    raise AssertionError(f"still {request.status} after {timeout} s: {request.error}")


@pytest.mark.django_db(transaction=True)
def test_late_webhook_after_the_request_was_given_up(emulator, ledger, settings, webhook_endpoint):
    """Late webhook: arrives after the sweep failed the request (MAX_ATTEMPTS)"""
    configure(settings, MAX_ATTEMPTS=1)
    emulator.eta = 0
    emulator.add_fault("text2img", Fault.never_finish())
    request = ledger.run(new_request(PROMPT, seed=30), bound=2)
    assert request.status == Status.PROCESSING  # waiting for the webhook

    pipeline.sweep_stale(now=timezone.now() + timedelta(hours=1))
    request.refresh_from_db()
    ledger.note(request, "sweep_stale")
    assert request.status == Status.FAILED
    assert "MAX_ATTEMPTS" in request.error

    job = emulator.jobs[request.provider_id]
    job.never_finish = False
    job.pending_fetches = 0  # the next fetch finds it done
    outcome = deliver(
        ledger,
        webhook_endpoint,
        {"status": "success", "id": job.id, "track_id": request.track_id, "output": []},
    )
    assert outcome == WebhookDelivery.Outcome.ACCEPTED
    request = wait_for_status(request, Status.SUCCEEDED)
    ledger.note(request, "late webhook")
    assert request.images.count() == 1
    ledger.check(jobs=1, generate_calls=1)


@pytest.mark.django_db(transaction=True)
def test_out_of_order_failed_delivery_is_confirmed_not_believed(
    emulator, ledger, settings, webhook_endpoint
):
    """Out-of-order webhooks: "failed" before the job is done, then duplicates after"""
    emulator.eta = 0
    emulator.pending_fetches = 5
    request = ledger.run(new_request(PROMPT, seed=31), bound=2)
    assert request.status == Status.PROCESSING
    stale = {"status": "failed", "id": request.provider_id, "track_id": request.track_id}

    deliver(ledger, webhook_endpoint, stale)  # the fetch says "processing": nothing changes
    time.sleep(0.3)
    request.refresh_from_db()
    assert request.status == Status.PROCESSING

    emulator.jobs[request.provider_id].pending_fetches = 0  # now the job is done
    success = {**stale, "status": "success"}
    deliver(ledger, webhook_endpoint, success)
    request = wait_for_status(request, Status.SUCCEEDED)
    ledger.note(request, "webhooks")
    outcome = deliver(ledger, webhook_endpoint, stale)  # arriving after the success
    assert outcome == WebhookDelivery.Outcome.DUPLICATE
    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED
    assert request.images.count() == 1
    ledger.check(jobs=1, generate_calls=1)
