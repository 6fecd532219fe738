"""One provider limit for the whole site: ``db_worker`` processes on PostgreSQL against an
emulator (its own process) that takes at most LIMIT jobs at once, each with LATENCY s.

Run once with ``MAX_CONCURRENT_JOBS = LIMIT`` (the workers share the limit through slot
leases in the database), then the same without it (each process sends what it has; the
emulator answers 429 past its limit and the client retries with its default backoff).
Ideal = N / min(LIMIT, WORKERS) x LATENCY: the provider's latency alone, at the limit.
Targets, for the run with the limit: 0 answers 429, 0 failed requests, wall <= 1.1 x ideal.
The run without it is printed for comparison, with no target. The wall time runs from the
moment the N requests are submitted (the workers are already up) until every request has
finished.

WORKERS defaults to 8: a ``db_worker`` runs one task at a time, so 4 workers never have more
than 4 jobs at ModelsLab and a limit of 5 never binds (ideal 50 s with or without it).

Usage: python bench/provider_limit.py [N] [WORKERS] [LIMIT] [LATENCY]
Without ``MODELSLAB_TEST_POSTGRES`` it starts a throwaway cluster (tests/pgcluster.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import beside_a_cluster, control, create_database, start_emulator  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
WORKERS = int(sys.argv[2]) if len(sys.argv) > 2 else 8
LIMIT = int(sys.argv[3]) if len(sys.argv) > 3 else 5
LATENCY = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
TARGET = 1.1
DB_NAME = "modelslab_bench"
SETTINGS = "bench.provider_limit_settings"
DB_WORKER = [sys.executable, "-m", "django", "db_worker", "--no-startup-delay"]


def bare_calls(base_url: str) -> float:
    """The baseline: N bare generate calls, LIMIT threads at once, nothing else (no Django
    work, no database, no copies): what the emulator and client alone take on this machine."""
    from concurrent.futures import ThreadPoolExecutor

    from django_modelslab.client import ModelsLabClient

    def call(n: int) -> None:
        params = {"model_id": "flux", "prompt": f"bare {n}", "width": 256, "height": 256}
        with ModelsLabClient(api_key="bench", base_url=base_url) as client:
            client.generate("text2img", {**params, "seed": n}, api_version="v6")

    httpx.post(control(base_url, "reset"), json={}, timeout=5).raise_for_status()
    with ThreadPoolExecutor(min(LIMIT, WORKERS)) as pool:
        started = time.perf_counter()
        list(pool.map(call, range(N)))
        return time.perf_counter() - started


def wait_for_workers(tag: str) -> None:
    """Warm up: 2 x WORKERS requests, until every worker has taken one and all are done."""
    from django_tasks_db.models import DBTaskResult

    from django_modelslab import pipeline
    from django_modelslab.models import GenerationRequest

    for n in range(2 * WORKERS):
        pipeline.submit(GenerationRequest.objects.create(prompt=f"warm-up {tag} {n}", seed=n))
    deadline = time.monotonic() + 600
    while True:
        ids = {i for ids in DBTaskResult.objects.values_list("worker_ids", flat=True) for i in ids}
        busy = GenerationRequest.objects.exclude(status__in=["succeeded", "failed", "refused"])
        if len(ids) >= WORKERS and not busy.exists():
            break
        if time.monotonic() > deadline:
            sys.exit(f"only {len(ids)} of {WORKERS} workers started within 600 s")
        time.sleep(0.5)
    GenerationRequest.objects.all().delete()


def run(base_url: str, env: dict[str, str], limit: int | None) -> dict[str, float]:
    """N requests through WORKERS db_worker processes: wall time, 429s, outcomes."""
    from django.db.models import Max, Min
    from django.utils import timezone
    from django_tasks_db.models import DBTaskResult

    from django_modelslab import pipeline
    from django_modelslab.models import GenerationRequest, ProviderSlot

    httpx.post(control(base_url, "reset"), json={}, timeout=5).raise_for_status()
    GenerationRequest.objects.all().delete()
    ProviderSlot.objects.all().delete()
    DBTaskResult.objects.all().delete()
    worker_env = {**env, "MODELSLAB_TEST_MAX_CONCURRENT_JOBS": str(limit or "")}
    workers = [
        subprocess.Popen(
            [*DB_WORKER, "--interval", "0.1", "--verbosity", "0"],
            cwd=ROOT,
            env=worker_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(WORKERS)
    ]
    try:
        tag = "limit" if limit else "nolimit"
        wait_for_workers(tag)  # they start (Django, the database) before the clock does
        httpx.post(control(base_url, "reset"), json={}, timeout=5).raise_for_status()
        requests = GenerationRequest.objects.bulk_create(
            GenerationRequest(prompt=f"{tag} {n}", width=256, height=256, seed=n) for n in range(N)
        )
        started, submitted = time.perf_counter(), timezone.now()
        for request in requests:
            pipeline.submit(request)
        ideal = N / min(LIMIT, WORKERS) * LATENCY
        over = {"succeeded", "failed", "refused"}
        while GenerationRequest.objects.exclude(status__in=over).exists():
            if time.perf_counter() - started > 20 * ideal:
                print("  gave up waiting: some requests never finished")
                break
            time.sleep(0.1)
        wall = time.perf_counter() - started
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.wait(timeout=30)
    stats = httpx.get(control(base_url, "stats"), timeout=5).json()
    span = GenerationRequest.objects.aggregate(first=Min("started_at"), last=Max("finished_at"))
    if span["first"] and span["last"]:
        print(
            f"  ({'with' if limit else 'without'} the limit: first start "
            f"{(span['first'] - submitted).total_seconds():.1f} s after submitting, last end "
            f"{(span['last'] - submitted).total_seconds():.1f} s after)"
        )
    return {
        "wall": wall,
        "ideal": ideal,
        "queue_full": stats["calls"].get("queue_full", 0),
        "calls": stats["calls"].get("text2img", 0),
        "succeeded": GenerationRequest.objects.filter(status="succeeded").count(),
        "failed": GenerationRequest.objects.exclude(status="succeeded").count(),
    }


def main() -> int:
    status = beside_a_cluster()
    if status is not None:
        return status
    emulator, base_url = start_emulator("--latency", str(LATENCY), "--max-queued-jobs", str(LIMIT))
    try:
        with tempfile.TemporaryDirectory(prefix="modelslab-bench-") as media:
            create_database(DB_NAME)
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": SETTINGS,
                "MODELSLAB_TEST_DB_NAME": DB_NAME,
                "MODELSLAB_TEST_BASE_URL": base_url,
                "MODELSLAB_TEST_TASKS": "db",
                "TEST_MEDIA_ROOT": media,
            }
            os.environ.update(env)
            import django
            from django.core.management import call_command

            django.setup()
            call_command("migrate", verbosity=0)
            print(
                f"{N} requests, {WORKERS} db_worker processes, the emulator taking {LIMIT} jobs "
                f"at once, {LATENCY} s each (python {sys.version.split()[0]}, PostgreSQL)"
            )
            bare = bare_calls(base_url)
            with_limit = run(base_url, env, LIMIT)
            without = run(base_url, env, None)
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    ideal = with_limit["ideal"]
    print(f"ideal = {N} / min({LIMIT}, {WORKERS}) x {LATENCY} s = {ideal:.1f} s")
    print(
        f"  baseline, bare generate calls ({min(LIMIT, WORKERS)} threads): {bare:.1f} s = "
        f"{bare / ideal:.3f}x ideal"
    )
    for name, figures in (
        (f"MAX_CONCURRENT_JOBS = {LIMIT}", with_limit),
        ("no limit (comparison)", without),
    ):
        print(
            f"  {name}: {figures['wall']:.1f} s = {figures['wall'] / ideal:.3f}x ideal, "
            f"{figures['queue_full']} answers 429, {figures['calls']} generate calls, "
            f"{figures['succeeded']}/{N} succeeded, {figures['failed']} failed; "
            f"{figures['wall'] / bare:.3f}x the baseline"
        )
    ratio = with_limit["wall"] / ideal
    met = ratio <= TARGET and with_limit["queue_full"] == 0 and with_limit["failed"] == 0
    print(
        f"  ratio with the limit: {ratio:.3f}x (target <= {TARGET}x, 0 answers 429, 0 failed) "
        f"-> {'OK' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
