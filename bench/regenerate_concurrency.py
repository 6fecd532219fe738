"""``regenerate_images --concurrency 16`` over 128 requests vs the ideal, in one run.

The emulator runs in its own process (as ModelsLab is remote) with 0.5 s latency per
generate call. Ideal = ceil(128 / 16) x 0.5 s: the provider's latency alone, as if our own
work (download, verify, store, thumbnail, database) took no time. Target: <= 1.1 x ideal,
for the median of REPEATS runs of the command (each on N fresh requests; all are printed).
For scale, the same number of bare generate calls (AsyncModelsLabClient, CONCURRENCY at
once, nothing else) is timed in the same run: what the HTTP stack and the emulator cost.
Usage: python bench/regenerate_concurrency.py [N] [CONCURRENCY]
"""

from __future__ import annotations

import asyncio
import io
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N = int(sys.argv[1]) if len(sys.argv) > 1 else 128
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 16
REPEATS = 3  # the median counts: one run on a shared 2-core VM swings by several percent
LATENCY = 0.5
TARGET = 1.1
SIZE = 256


def start_emulator() -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django_modelslab.testing",
            "--port",
            "0",
            "--latency",
            str(LATENCY),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    base_url = process.stdout.readline().strip()
    httpx.get(base_url.rsplit("/api", 1)[0] + "/_emulator/stats", timeout=5).raise_for_status()
    return process, base_url


async def bare_calls(base_url: str) -> float:
    """N generate calls, CONCURRENCY at once, with nothing done between them."""
    from django_modelslab.client import AsyncModelsLabClient

    slots = asyncio.Semaphore(CONCURRENCY)
    async with AsyncModelsLabClient(api_key="bench", base_url=base_url) as client:

        async def call(n: int) -> None:
            params = {"model_id": "flux", "prompt": f"bare {n}", "width": SIZE, "height": SIZE}
            async with slots:
                await client.generate("text2img", {**params, "seed": n}, api_version="v6")

        await call(N)  # warm-up: the connection
        started = time.perf_counter()
        await asyncio.gather(*(call(n) for n in range(N)))
        return time.perf_counter() - started


def configure_django(workdir: Path, base_url: str) -> None:
    from bench.pipeline import configure_django as configure

    configure(workdir, base_url)


def main() -> int:
    emulator, base_url = start_emulator()
    try:
        with tempfile.TemporaryDirectory(prefix="modelslab-bench-") as tmp:
            configure_django(Path(tmp), base_url)
            from django.core.management import call_command

            from django_modelslab.models import GenerationRequest

            # Warm-up, and a figure for one request alone: the same command on one request
            # (the async HTTP stack is imported on first use, as Django was before timing).
            single = GenerationRequest.objects.create(prompt="alone", width=SIZE, height=SIZE)
            started = time.perf_counter()
            call_command("regenerate_images", "--id", str(single.pk), "--yes", stdout=io.StringIO())
            one = time.perf_counter() - started
            walls, succeeded = [], []
            for repeat in range(REPEATS):  # fresh requests and seeds: nothing deduplicated
                batch = GenerationRequest.objects.bulk_create(
                    GenerationRequest(
                        prompt=f"bench {repeat}-{n}", width=SIZE, height=SIZE, seed=repeat * N + n
                    )
                    for n in range(N)
                )
                started = time.perf_counter()
                call_command(
                    "regenerate_images",
                    "--status",
                    "pending",
                    "--concurrency",
                    str(CONCURRENCY),
                    "--yes",
                    stdout=io.StringIO(),
                )
                walls.append(time.perf_counter() - started)
                succeeded.append(
                    GenerationRequest.objects.filter(
                        pk__in=[request.pk for request in batch], status="succeeded"
                    ).count()
                )
            bare = asyncio.run(bare_calls(base_url))
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    ideal = math.ceil(N / CONCURRENCY) * LATENCY
    ratio = statistics.median(walls) / ideal
    print(
        f"{N} requests, --concurrency {CONCURRENCY}, emulator latency {LATENCY} s "
        f"(python {sys.version.split()[0]})"
    )
    print(
        f"one request alone: {one:.3f} s; ideal = ceil({N}/{CONCURRENCY}) x {LATENCY} "
        f"= {ideal:.2f} s"
    )
    print(f"bare generate calls (for scale): {bare:.2f} s = {bare / ideal:.3f}x the ideal")
    for wall, done in zip(walls, succeeded, strict=True):
        print(f"regenerate_images: {wall:.2f} s = {wall / ideal:.3f}x, {done}/{N} succeeded")
    print(
        f"ratio (median of {REPEATS}): {ratio:.3f}x (target <= {TARGET}x) -> "
        f"{'OK' if ratio <= TARGET else 'OVER'}"
    )
    return 0 if ratio <= TARGET and all(done == N for done in succeeded) else 1


if __name__ == "__main__":
    sys.exit(main())
