"""One limit of jobs at ModelsLab for the whole site (``MAX_CONCURRENT_JOBS``): slot leases
in the database, shared by threads, processes and ``db_worker`` workers, against an emulator
that answers 429 past its own limit (``max_queued_jobs``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from django.db import connection
from django.utils import timezone

from django_modelslab import pipeline
from django_modelslab.exceptions import SlotWaitTimedOut
from django_modelslab.models import GenerationRequest, ProviderSlot
from django_modelslab.pipeline.slots import SiteSlots
from django_modelslab.testing import Fault

from .helpers import configure, new_request, process_env
from .test_async_pipeline import arun

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
Status = GenerationRequest.Status
PROMPT = "a lighthouse keeping one place in line"
DB_WORKER = [sys.executable, "-m", "django", "db_worker", "--no-startup-delay", "--batch"]
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="runs in the PostgreSQL pass (make test-pg: python -m tests.pgcluster)",
)


def text2img(emulator, seed: int) -> int:
    body = {"key": "k", "prompt": PROMPT, "model_id": "flux", "width": 256, "height": 256}
    body |= {"samples": 1, "seed": seed}
    return httpx.post(f"{emulator.base_url}/v6/images/text2img", json=body, timeout=10).status_code


def test_emulator_answers_429_past_its_queued_job_limit(emulator):
    emulator.configure(max_queued_jobs=2, mode="processing")
    emulator.add_fault("text2img", Fault.never_finish(), times=2)  # two jobs stay queued
    assert [text2img(emulator, n) for n in range(2)] == [200, 200]

    assert text2img(emulator, 3) == 429  # the account's queue is full
    assert emulator.calls["queue_full"] == 1
    for job in emulator.jobs.values():
        job.succeed()  # ModelsLab finishes them
    assert text2img(emulator, 4) == 200
    assert emulator.config()["max_queued_jobs"] == 2


def test_emulator_429_has_modelslabs_shape(emulator):
    emulator.configure(max_queued_jobs=1, mode="processing")
    emulator.add_fault("text2img", Fault.never_finish())
    assert text2img(emulator, 1) == 200
    body = {"key": "k", "prompt": PROMPT, "model_id": "flux", "width": 256, "height": 256}
    answer = httpx.post(f"{emulator.base_url}/v6/images/text2img", json=body, timeout=10)
    assert answer.status_code == 429
    assert answer.json() == {
        "status": "error",
        "message": "Rate limit exceeded. Maximum 1 queued requests allowed.",
        "retry_after": 1,
    }


def test_a_run_takes_a_site_slot_for_its_job_and_gives_it_back(emulator, settings):
    configure(settings, MAX_CONCURRENT_JOBS=1)
    emulator.latency = 0.3
    seen: list[int] = []
    watching = threading.Event()

    def watch() -> None:
        try:
            while not watching.is_set():
                seen.append(ProviderSlot.objects.filter(held=True).count())
                time.sleep(0.02)
        finally:
            connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        request = pipeline.run(new_request(PROMPT, seed=1).pk)
    finally:
        watching.set()
        watcher.join()

    assert request.status == Status.SUCCEEDED, request.error
    assert max(seen) == 1  # held while ModelsLab had the job
    assert not ProviderSlot.objects.exists()  # given back


def test_a_slot_wait_that_times_out_fails_the_attempt_without_sending_it(emulator, settings):
    configure(settings, MAX_CONCURRENT_JOBS=1, SLOT_WAIT_TIMEOUT=0.3)
    other = SiteSlots(1)
    other.acquire()  # another worker has the only place
    try:
        request = pipeline.run(new_request(PROMPT, seed=2).pk)
    finally:
        other.release()

    assert request.status == Status.FAILED
    assert "SLOT_WAIT_TIMEOUT" in request.error
    assert emulator.calls["text2img"] == 0
    assert request.track_id == ""  # nothing sent: submitting it again is safe
    assert pipeline.run(pipeline.submit(request).pk).status == Status.SUCCEEDED


def test_arun_waits_for_a_site_slot_too(emulator, settings):
    configure(settings, MAX_CONCURRENT_JOBS=1, SLOT_WAIT_TIMEOUT=0.3)
    other = SiteSlots(1)
    other.acquire()
    try:
        request = arun(pipeline.submit(new_request(PROMPT, seed=3), enqueue=False))
    finally:
        other.release()
    assert request.status == Status.FAILED
    assert "SLOT_WAIT_TIMEOUT" in request.error
    assert emulator.calls["text2img"] == 0

    request = arun(pipeline.submit(request, enqueue=False))
    assert request.status == Status.SUCCEEDED, request.error
    assert not ProviderSlot.objects.exists()


@postgres_only
def test_threads_on_separate_connections_never_exceed_the_limit():
    """Six "machines" (each its own connection) racing for two places, three jobs each."""
    limit, lock, busy, peak = 2, threading.Lock(), [0], [0]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def machine() -> None:
        try:
            start.wait()
            for _ in range(3):
                slots = SiteSlots(limit, timeout=30)
                slots.acquire()
                with lock:
                    busy[0] += 1
                    peak[0] = max(peak[0], busy[0])
                held = ProviderSlot.objects.filter(held=True).count()
                time.sleep(0.1)
                with lock:
                    busy[0] -= 1
                slots.release()
                assert held <= limit
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=machine) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert peak[0] == limit
    assert not ProviderSlot.objects.exists()


@postgres_only
def test_waiters_are_served_oldest_first():
    holder = SiteSlots(1)
    holder.acquire()
    served: list[str] = []

    def wait(name: str) -> None:
        try:
            slots = SiteSlots(1, timeout=30)
            slots.acquire()
            served.append(name)
            time.sleep(0.05)
            slots.release()
        finally:
            connection.close()

    threads = []
    for name in ("first", "second", "third"):
        thread = threading.Thread(target=wait, args=(name,))
        thread.start()
        threads.append(thread)
        deadline = time.monotonic() + 10
        while ProviderSlot.objects.filter(held=False).count() < len(threads):
            assert time.monotonic() < deadline, f"{name} never joined the line"
            time.sleep(0.01)
    holder.release()
    for thread in threads:
        thread.join(timeout=30)

    assert served == ["first", "second", "third"]


@postgres_only
def test_a_lease_is_renewed_while_held_and_expires_when_not():
    holder = SiteSlots(1, lease=0.6)
    holder.acquire()
    time.sleep(1.5)  # more than twice the lease: only renewal keeps it
    with pytest.raises(SlotWaitTimedOut):
        SiteSlots(1, timeout=0.3).acquire()
    assert ProviderSlot.objects.filter(held=True).count() == 1
    assert ProviderSlot.objects.filter(held=False).count() == 0  # the waiter left the line

    holder._stop.set()  # the renewal stops, as when a process hangs
    holder._renewer.join()
    ProviderSlot.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    taker = SiteSlots(1, timeout=1)
    assert taker.acquire()
    assert list(ProviderSlot.objects.values_list("holder", flat=True)) == [taker.holder]
    taker.release()


HOLD_A_SLOT = """
import django, sys, time
django.setup()
from django_modelslab.pipeline.slots import SiteSlots
from django_modelslab.testing import Fault
SiteSlots(1, lease=2).acquire()
print("held", flush=True)
time.sleep(600)
"""


@postgres_only
def test_a_killed_process_slot_comes_back_after_its_lease(emulator, settings):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_SLOT],
        cwd=ROOT,
        env=process_env(emulator, settings),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
    assert ProviderSlot.objects.filter(held=True).count() == 1  # left by the dead process

    started = time.monotonic()
    slots = SiteSlots(1, timeout=15)
    assert slots.acquire()
    waited = time.monotonic() - started
    slots.release()

    assert 0.5 < waited < 5  # the rest of the 2 s lease, then the place is free again
    assert not ProviderSlot.objects.exists()


@postgres_only
@pytest.mark.parametrize("limit", [2, None])
def test_db_workers_share_the_limit_and_get_no_429(emulator, settings, limit):
    """Four db_worker processes, ten requests, ModelsLab taking two jobs at a time."""
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    emulator.configure(max_queued_jobs=2, latency=0.5)
    requests = [new_request(f"{PROMPT} {n}", seed=n) for n in range(10)]
    for request in requests:
        pipeline.submit(request)
    extra = {"MODELSLAB_TEST_TASKS": "db"}
    if limit:
        extra["MODELSLAB_TEST_MAX_CONCURRENT_JOBS"] = str(limit)
    workers = [
        subprocess.Popen(
            DB_WORKER,
            cwd=ROOT,
            env=process_env(emulator, settings, **extra),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr

    statuses = list(GenerationRequest.objects.values_list("status", flat=True))
    if limit is None:  # the comparison: each process on its own runs into ModelsLab's limit
        assert emulator.calls["queue_full"] > 0
        return
    assert emulator.calls["queue_full"] == 0, json.dumps(emulator.stats()["calls"])
    assert statuses == [Status.SUCCEEDED] * 10
    assert emulator.calls["text2img"] == 10
    assert not ProviderSlot.objects.exists()
