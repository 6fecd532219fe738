"""What the benchmarks share: the emulator in its own process, and a PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def start_emulator(*options: str) -> tuple[subprocess.Popen, str]:
    """``python -m django_modelslab.testing --port 0 OPTIONS``: the process, its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "django_modelslab.testing", "--port", "0", *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    base_url = process.stdout.readline().strip()
    httpx.get(control(base_url, "stats"), timeout=5).raise_for_status()
    return process, base_url


def control(base_url: str, what: str) -> str:
    """The URL of the emulator's control endpoint ``what`` (stats, reset, config)."""
    return base_url.rsplit("/api", 1)[0] + f"/_emulator/{what}"


def beside_a_cluster() -> int | None:
    """Without ``MODELSLAB_TEST_POSTGRES``: run this script again beside a throwaway
    PostgreSQL cluster (tests/pgcluster.py) and return its exit status; else None."""
    if os.environ.get("MODELSLAB_TEST_POSTGRES"):
        return None
    command = [sys.executable, "-m", "tests.pgcluster", "--", sys.executable, *sys.argv]
    return subprocess.call(command, cwd=ROOT)


def create_database(name: str, *, fresh: bool = True) -> None:
    """Database ``name`` in the cluster of ``MODELSLAB_TEST_POSTGRES``: dropped and made
    again when ``fresh``, else made only if missing (its data kept)."""
    import psycopg

    host, port = os.environ["MODELSLAB_TEST_POSTGRES"].rsplit(":", 1)
    with psycopg.connect(host=host, port=port, user="postgres", dbname="postgres") as conn:
        conn.autocommit = True
        if fresh:
            conn.execute(f"DROP DATABASE IF EXISTS {name}")
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f"CREATE DATABASE {name}")
