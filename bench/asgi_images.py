"""The images endpoint under ASGI: N concurrent OpenAI-SDK calls against one uvicorn process.

The emulator runs in its own process and answers each generate call after LATENCY s (no
queue limit). The server runs the package's settings for tests (PostgreSQL, the immediate
task backend: each call runs its own generation) in one process. N calls of
``AsyncOpenAI().images.generate(prompt=..., size="256x256")`` are made at once, each with
its own prompt and its own client; the wall time runs from the first call to the last
answer. The server uses Django's PostgreSQL connection pool (16 connections).

Ideal = LATENCY (every call waits on ModelsLab at the same time). Target, for uvicorn:
every call succeeds, wall <= 1.25 x LATENCY. The baseline, in the same run: N bare
generate calls and downloads of their images at once, a client each (no Django, no
database, no storage): what the emulator and this machine take without the package. The
same load on a threaded WSGI server (gunicorn, one process, N threads) is printed for
comparison, with the peak memory (VmHWM) of each server process and the CPU time per call
of the server, PostgreSQL, the emulator and the calling process.

Usage: python bench/asgi_images.py [N] [LATENCY]
Without ``MODELSLAB_TEST_POSTGRES`` it starts a throwaway cluster (tests/pgcluster.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import ROOT, beside_a_cluster, create_database, start_emulator

N = int(sys.argv[1]) if len(sys.argv) > 1 else 200
LATENCY = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
TARGET = 1.25
DB_NAME = "modelslab_bench"
SETTINGS = "bench.asgi_images_settings"
PORT = 18931
SERVERS = {
    "uvicorn (ASGI)": [
        sys.executable, "-m", "uvicorn", "tests.asgi:application", "--host", "127.0.0.1",
        "--port", str(PORT), "--no-access-log", "--log-level", "warning",
        "--backlog", "4096", "--timeout-keep-alive", "60",
    ],
    "gunicorn (WSGI, threads)": [
        sys.executable, "-m", "gunicorn", "tests.wsgi:application", "--bind",
        f"127.0.0.1:{PORT}", "--workers", "1", "--worker-class", "gthread", "--threads", str(N),
        "--backlog", "4096", "--log-level", "warning", "--timeout", "120",
    ],
}  # fmt: skip


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def calls(key: str, tag: str) -> tuple[float, int, list[str]]:
    """N concurrent SDK calls: (wall time, how many succeeded, the first errors).

    Each caller has a client of its own, as N separate callers would: one client with N
    connections would spend more CPU in httpcore's pool (its bookkeeping grows with the
    square of the connections) than the server does.
    """
    import openai

    tls = ssl.create_default_context()  # shared: building one costs ~20 ms of CPU
    clients = [
        openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{PORT}/api/modelslab/v1",
            api_key=key,
            max_retries=0,
            timeout=120,
            http_client=httpx.AsyncClient(verify=tls),
        )
        for _ in range(N + 1)
    ]

    async def one(client: openai.AsyncOpenAI, n: int) -> str | None:
        try:
            answer = await client.images.generate(prompt=f"{tag} lighthouse {n}", size="256x256")
        except Exception as exc:  # reported, counted as a failure
            return f"{type(exc).__name__}: {exc}"
        return None if answer.data and answer.data[0].url else "no url"

    try:
        await one(clients[N], -1)  # warm-up: the server's first request imports and connects
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(one(clients[n], n) for n in range(N)))
        wall = time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.close() for client in clients))
    errors = [error for error in outcomes if error]
    return wall, N - len(errors), errors[:3]


async def bare_calls(base_url: str) -> float:
    """The baseline: N generate calls and image downloads at once, nothing else (a client
    each, as the server's calls have)."""
    from django_modelslab.client import AsyncModelsLabClient

    async def one(n: int) -> None:
        params = {"model_id": "flux", "prompt": f"bare {n}", "width": 256, "height": 256}
        async with (
            AsyncModelsLabClient(api_key="bench", base_url=base_url) as client,
            httpx.AsyncClient(verify=False) as downloads,
        ):
            answer = await client.generate("text2img", params)
            for url in answer.output_urls:
                (await downloads.get(url)).raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(N)))
    return time.perf_counter() - started


def serve(name: str, command: list[str], env: dict[str, str], key: str) -> dict[str, object]:
    server = subprocess.Popen(command, cwd=ROOT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{PORT}/api/modelslab/", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit(f"{name} did not start") from None
                time.sleep(0.2)
        pid = _worker_pid(server.pid)
        before = cpu_seconds(pid)
        wall, succeeded, errors = asyncio.run(calls(key, name.split()[0]))
        after = cpu_seconds(pid)
        print(
            f"  {name}: CPU s per call: "
            + ", ".join(f"{who} {(after[who] - before[who]) / N * 1000:.1f} ms" for who in after)
        )
        return {
            "wall": wall,
            "succeeded": succeeded,
            "errors": errors,
            "memory": peak_memory_mb(pid),
        }
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def cpu_seconds(server: int) -> dict[str, float]:
    """CPU time used so far by the server, PostgreSQL, the emulator and this process."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {"server": 0.0, "postgres": 0.0, "emulator": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        used = (int(fields[11]) + int(fields[12])) / tick
        if int(entry.name) == server:
            found["server"] += used
        elif b"postgres" in cmdline:
            found["postgres"] += used
        elif b"django_modelslab.testing" in cmdline:
            found["emulator"] += used
    times = os.times()
    found["client"] = times.user + times.system
    return found


def _worker_pid(pid: int) -> int:
    """The process serving requests: gunicorn's worker (the arbiter's child), else ``pid``."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    for _ in range(50):
        found = children.read_text().split() if children.exists() else []
        if found or "uvicorn" in Path(f"/proc/{pid}/cmdline").read_text():
            return int(found[0]) if found else pid
        time.sleep(0.1)
    return pid


def main() -> int:
    status = beside_a_cluster()
    if status is not None:
        return status
    emulator, base_url = start_emulator("--latency", str(LATENCY))
    try:
        with tempfile.TemporaryDirectory(prefix="modelslab-bench-") as media:
            create_database(DB_NAME)
            env = {
                **os.environ,
                "DJANGO_SETTINGS_MODULE": SETTINGS,
                "MODELSLAB_TEST_DB_NAME": DB_NAME,
                "MODELSLAB_TEST_BASE_URL": base_url,
                "TEST_MEDIA_ROOT": media,
            }
            os.environ.update(env)
            import django
            from django.core.management import call_command

            django.setup()
            call_command("migrate", verbosity=0)
            from django.contrib.auth.models import User
            from rest_framework.authtoken.models import Token

            user = User.objects.create_user("bench", is_staff=True)
            key = Token.objects.create(user=user).key
            print(
                f"{N} concurrent images.generate calls (256x256, one image each), the emulator "
                f"answering after {LATENCY} s (python {sys.version.split()[0]}, PostgreSQL)"
            )
            bare = asyncio.run(bare_calls(base_url))
            results = {name: serve(name, command, env, key) for name, command in SERVERS.items()}
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
    print(f"  baseline, bare calls: {bare:.2f} s = {bare / LATENCY:.2f}x the latency")
    for name, result in results.items():
        wall = float(result["wall"])  # type: ignore[arg-type]
        print(
            f"  {name}: {wall:.2f} s = {wall / LATENCY:.2f}x the latency, "
            f"{wall / bare:.2f}x the baseline, {result['succeeded']}/{N} succeeded, "
            f"peak memory {result['memory']:.0f} MB"
        )
        for error in result["errors"]:  # type: ignore[attr-defined]
            print(f"    e.g. {error}")
    asgi = results["uvicorn (ASGI)"]
    ratio = float(asgi["wall"]) / LATENCY  # type: ignore[arg-type]
    met = ratio <= TARGET and asgi["succeeded"] == N
    print(
        f"  ASGI: {ratio:.2f}x the latency (target <= {TARGET}x, all succeed) "
        f"-> {'OK' if met else 'MISSED'}"
    )
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
