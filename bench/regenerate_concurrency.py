"""``regenerate_images --concurrency 16`` over 128 requests vs the ideal, in one run.

The emulator runs in its own process (as ModelsLab is remote), first with 0.5 s latency
per generate call, then with 3 s (closer to the real API). Ideal = ceil(N / CONCURRENCY) x
latency: the provider's latency alone, as if our own work (download, verify, store,
thumbnail, database) took no time. Targets, for the median of REPEATS runs of the command
(each on N fresh requests; all are printed): <= 1.15 x ideal at 0.5 s, <= 1.03 x at 3 s,
every request succeeded. For scale, the baseline: the same number of bare generate calls
(a ModelsLabClient per thread, CONCURRENCY threads, nothing else) timed in the same run.
Usage: python bench/regenerate_concurrency.py [N] [CONCURRENCY] [LATENCY]  (LATENCY: only
that one, against the nearest target)
"""

from __future__ import annotations

import io
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import control, start_emulator  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 128
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 16
TARGETS = {0.5: 1.15, 3.0: 1.03}  # latency (s) -> the median's ratio to the ideal
if len(sys.argv) > 3:
    LATENCY = float(sys.argv[3])
    TARGETS = {LATENCY: TARGETS[min(TARGETS, key=lambda known: abs(known - LATENCY))]}
REPEATS = 3  # the median counts: one run on a shared 2-core VM swings by several percent
SIZE = 256


def set_latency(base_url: str, latency: float) -> None:
    httpx.post(control(base_url, "config"), json={"latency": latency}, timeout=5).raise_for_status()


def bare_calls(base_url: str) -> float:
    """N generate calls, CONCURRENCY threads at once, with nothing done between them."""
    from django_modelslab.client import ModelsLabClient

    def call(n: int) -> None:
        params = {"model_id": "flux", "prompt": f"bare {n}", "width": SIZE, "height": SIZE}
        with ModelsLabClient(api_key="bench", base_url=base_url) as client:
            client.generate("text2img", {**params, "seed": n}, api_version="v6")

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        started = time.perf_counter()
        list(pool.map(call, range(N)))
        return time.perf_counter() - started


def command_runs(latency: float) -> tuple[list[float], list[int]]:
    """REPEATS runs of the command, each on N fresh pending requests: wall times, successes."""
    from django.core.management import call_command

    from django_modelslab.models import GenerationRequest

    walls, succeeded = [], []
    for repeat in range(REPEATS):  # fresh prompts and seeds: nothing deduplicated
        generations = GenerationRequest.objects.bulk_create(
            GenerationRequest(
                prompt=f"bench {latency} {repeat}-{n}", width=SIZE, height=SIZE, seed=repeat * N + n
            )
            for n in range(N)
        )
        started = time.perf_counter()
        call_command(
            "regenerate_images",
            *("--status", "pending", "--concurrency", str(CONCURRENCY), "--yes"),
            stdout=io.StringIO(),
        )
        walls.append(time.perf_counter() - started)
        ids = [generation.pk for generation in generations]
        succeeded.append(GenerationRequest.objects.filter(pk__in=ids, status="succeeded").count())
    return walls, succeeded


def main() -> int:
    from bench.pipeline import configure_django

    emulator, base_url = start_emulator()
    ok = True
    try:
        with tempfile.TemporaryDirectory(prefix="modelslab-bench-") as tmp:
            configure_django(Path(tmp), base_url)
            from django.core.management import call_command

            from django_modelslab.models import GenerationRequest

            # Warm-up, and a figure for one request alone (imports, connections).
            alone = GenerationRequest.objects.create(prompt="alone", width=SIZE, height=SIZE)
            started = time.perf_counter()
            call_command("regenerate_images", "--id", str(alone.pk), "--yes", stdout=io.StringIO())
            print(
                f"{N} requests, --concurrency {CONCURRENCY}, {SIZE}x{SIZE} "
                f"(python {sys.version.split()[0]}); one request alone, no latency: "
                f"{time.perf_counter() - started:.3f} s"
            )
            for latency, target in TARGETS.items():
                set_latency(base_url, latency)
                walls, succeeded = command_runs(latency)
                bare = bare_calls(base_url)
                ideal = math.ceil(N / CONCURRENCY) * latency
                ratio = statistics.median(walls) / ideal
                print(
                    f"latency {latency} s: ideal = ceil({N}/{CONCURRENCY}) x {latency} "
                    f"= {ideal:.2f} s"
                )
                print(f"  baseline, bare generate calls: {bare:.2f} s = {bare / ideal:.3f}x")
                for wall, done in zip(walls, succeeded, strict=True):
                    print(
                        f"  regenerate_images: {wall:.2f} s = {wall / ideal:.3f}x, "
                        f"{done}/{N} succeeded"
                    )
                met = ratio <= target and all(done == N for done in succeeded)
                print(
                    f"  ratio (median of {REPEATS}): {ratio:.3f}x (target <= {target}x) -> "
                    f"{'OK' if met else 'MISSED'}"
                )
                ok = ok and met
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
