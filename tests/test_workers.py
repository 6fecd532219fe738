"""Generation on a real worker: ``db_worker`` (django-tasks-db) in its own process against
PostgreSQL, and two runs racing for one request."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from django.db import connection

from django_modelslab import pipeline
from django_modelslab.models import GenerationRequest

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parent.parent
Status = GenerationRequest.Status
postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="runs in the PostgreSQL pass (make test-pg: python -m tests.pgcluster)",
)


@postgres_only
def test_db_worker_process_generates_what_the_pipeline_enqueued(emulator, settings):
    settings.TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
    requests = [
        GenerationRequest.objects.create(prompt=f"worker {n}", seed=n, width=256, height=256)
        for n in range(3)
    ]
    for request in requests:
        assert pipeline.submit(request).status == Status.QUEUED
    assert emulator.calls["text2img"] == 0  # nothing runs in this process

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "MODELSLAB_TEST_DB_NAME": connection.settings_dict["NAME"],
        "MODELSLAB_TEST_BASE_URL": emulator.base_url,
        "MODELSLAB_TEST_TASKS": "db",
        "TEST_MEDIA_ROOT": str(settings.MEDIA_ROOT),
    }
    worker = subprocess.run(
        [sys.executable, "-m", "django", "db_worker", "--batch", "--no-startup-delay"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert worker.returncode == 0, worker.stderr
    assert emulator.calls["text2img"] == 3
    for request in requests:
        request.refresh_from_db()
        assert request.status == Status.SUCCEEDED, request.error
        image = request.images.get()
        data = (Path(settings.MEDIA_ROOT) / image.image.name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image.sha256


def test_two_runs_racing_for_one_request_submit_one_job(emulator):
    emulator.latency = 0.3  # widen the window in which both runs are in flight
    request = GenerationRequest.objects.create(prompt="race", seed=1, width=256, height=256)
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
