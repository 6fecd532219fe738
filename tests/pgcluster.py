"""Run a command beside a throwaway PostgreSQL cluster (Debian's ``postgresql`` package).

``python -m tests.pgcluster -- pytest tests/test_workers.py`` starts a cluster in a
temporary directory on a free port on 127.0.0.1, runs the command with
``MODELSLAB_TEST_POSTGRES=127.0.0.1:<port>`` (tests/settings.py then uses it), and removes
the cluster afterwards. As root the server runs as the ``postgres`` user, which it insists on.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path


def postgres_bin() -> Path:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if not found:
        sys.exit("PostgreSQL is not installed: apt-get install postgresql")
    return Path(found[-1]).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def as_postgres(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def main(command: list[str]) -> int:
    binaries = postgres_bin()
    workdir = Path(tempfile.mkdtemp(prefix="modelslab-pg-"))
    if os.geteuid() == 0:
        shutil.chown(workdir, "postgres", "postgres")
    data, port = workdir / "data", free_port()
    pg_ctl = [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(workdir / "server.log")]
    options = f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off"
    try:
        subprocess.run(
            as_postgres(
                [
                    str(binaries / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            ),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            as_postgres([*pg_ctl, "-w", "-o", options, "start"]),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        env = {**os.environ, "MODELSLAB_TEST_POSTGRES": f"127.0.0.1:{port}"}
        return subprocess.call(command, env=env)
    finally:
        subprocess.run(
            as_postgres([*pg_ctl, "-m", "fast", "stop"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        sys.exit("usage: python -m tests.pgcluster -- COMMAND [ARGS...]")
    sys.exit(main(args))
