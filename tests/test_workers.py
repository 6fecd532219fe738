"""Generation on a real worker: ``db_worker`` (django-tasks-db) in its own process against
PostgreSQL, and two runs racing for one request."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone
from django.utils.module_loading import import_string

from django_modelslab import pipeline
from django_modelslab.models import GenerationRequest
from django_modelslab.testing import Fault

from .helpers import new_request, process_env

try:
    from django.tasks import Task
except ImportError:  # Django < 6.0
    from django_tasks.base import Task

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
Status = GenerationRequest.Status
DB_WORKER = [sys.executable, "-m", "django", "db_worker", "--no-startup-delay"]
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="runs in the PostgreSQL pass (make test-pg: python -m tests.pgcluster)",
)


def worker_env(emulator, settings) -> dict[str, str]:
    """A worker process on this test's database, emulator and media directory."""
    return process_env(emulator, settings, MODELSLAB_TEST_TASKS="db")


def run_worker_until_idle(emulator, settings) -> None:
    """One ``db_worker --batch`` process: it runs every queued task, then exits."""
    worker = subprocess.run(
        [*DB_WORKER, "--batch"],
        cwd=ROOT,
        env=worker_env(emulator, settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert worker.returncode == 0, worker.stderr


@postgres_only
def test_db_worker_process_generates_what_the_pipeline_enqueued(emulator, settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    requests = [new_request(f"worker {n}", seed=n) for n in range(3)]
    for request in requests:
        assert pipeline.submit(request).status == Status.QUEUED
    assert emulator.calls["text2img"] == 0  # nothing runs in this process

    run_worker_until_idle(emulator, settings)

    assert emulator.calls["text2img"] == 3
    for request in requests:
        request.refresh_from_db()
        assert request.status == Status.SUCCEEDED, request.error
        image = request.images.get()
        data = (Path(settings.MEDIA_ROOT) / image.image.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image.sha256


@pytest.mark.parametrize("name", ["run_generation", "resume_generation", "sweep_stale_generations"])
def test_task_paths_resolve_old_and_new(name):
    task = import_string(f"django_modelslab.tasks.{name}")  # as queues stored them
    assert isinstance(task, Task)
    assert import_string(task.module_path) is task  # as queues store them now


@postgres_only
def test_db_worker_runs_a_task_stored_under_its_old_path(emulator, settings):
    """A queue written before the pipeline owned its tasks holds ``django_modelslab.tasks.*``."""
    from django_tasks_db.models import DBTaskResult

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    request = new_request("old path", seed=4)
    pipeline.submit(request)
    assert DBTaskResult.objects.update(task_path="django_modelslab.tasks.run_generation") == 1

    run_worker_until_idle(emulator, settings)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert DBTaskResult.objects.get().status == "SUCCESSFUL"


def test_two_runs_racing_for_one_request_submit_one_job(emulator):
    emulator.latency = 0.3  # widen the window in which both runs are in flight
    request = new_request("race", seed=1)
    barrier = threading.Barrier(2)
    results: list[str] = []

    def run() -> None:
        try:
            barrier.wait()
            results.append(pipeline.run(request.pk).status)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED
    assert emulator.calls["text2img"] == 1
    assert request.attempts == 1
    assert request.images.count() == 1
    assert sorted(results) == ["processing", "succeeded"]  # the loser saw the winner at work


@postgres_only
def test_worker_killed_mid_poll_is_picked_up_without_a_second_job(emulator, settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    emulator.mode = "processing"
    emulator.add_fault("text2img", Fault.never_finish())
    request = new_request("killed", seed=7)
    pipeline.submit(request)
    worker = subprocess.Popen(DB_WORKER, cwd=ROOT, env=worker_env(emulator, settings))
    try:
        deadline = time.monotonic() + 30
        while not GenerationRequest.objects.filter(pk=request.pk).exclude(provider_id="").exists():
            assert time.monotonic() < deadline, "the worker never submitted the job"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    request.refresh_from_db()
    assert request.status == Status.PROCESSING  # left behind by the dead worker
    for job in emulator.jobs.values():
        job.never_finish = False  # ModelsLab finishes the job meanwhile

    later = timezone.now() + timedelta(seconds=settings.MODELSLAB.get("STALE_AFTER", 300) + 60)
    assert pipeline.sweep_stale(now=later) == [request.pk]
    run_worker_until_idle(emulator, settings)

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["text2img"] == 1  # polled again, never resubmitted
    assert request.attempts == 2
    assert request.images.count() == 1


@postgres_only
def test_two_worker_processes_on_one_request_submit_one_job(emulator, settings):
    """The task delivered twice, to two db_worker processes at once: one provider job."""
    from django_modelslab.tasks import run_generation

    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    emulator.latency = 0.5  # both workers are in flight together
    request = new_request("twice", seed=3)
    pipeline.submit(request)
    run_generation.enqueue(request.pk)  # a duplicate delivery of the same task

    workers = [
        subprocess.Popen(
            [*DB_WORKER, "--batch", "--max-tasks", "1"],
            cwd=ROOT,
            env=worker_env(emulator, settings),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=120)
        assert worker.returncode == 0, stderr

    request.refresh_from_db()
    assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["text2img"] == 1
    assert request.attempts == 1
    assert request.images.count() == 1


@postgres_only
def test_regenerate_images_interrupted_then_resumed_submits_each_job_once(emulator, settings):
    emulator.latency = 1.0
    requests = [new_request(f"bulk {n}", seed=n) for n in range(4)]
    command = [sys.executable, "-m", "django", "regenerate_images", "--status", "pending"]
    first = subprocess.Popen(
        [*command, "--concurrency", "2", "--yes"],
        cwd=ROOT,
        env=worker_env(emulator, settings),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 30
    unmarked = GenerationRequest.objects.filter(regeneration_batch="")
    while emulator.calls["text2img"] < 2 or unmarked.exists():  # two jobs in flight, all marked
        assert time.monotonic() < deadline, "the command never called ModelsLab"
        time.sleep(0.05)
    first.send_signal(signal.SIGINT)  # Ctrl-C
    output, _ = first.communicate(timeout=60)

    assert first.returncode == 130, output
    batch = output.split("--resume ")[-1].split()[0]
    statuses = set(GenerationRequest.objects.values_list("status", flat=True))
    assert Status.QUEUED in statuses  # two were never started

    resumed = subprocess.run(
        [sys.executable, "-m", "django", "regenerate_images", "--resume", batch, "--yes"],
        cwd=ROOT,
        env=worker_env(emulator, settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for request in requests:
        request.refresh_from_db()
        assert request.status == Status.SUCCEEDED, request.error
    assert emulator.calls["text2img"] == 4  # each request's job submitted exactly once
