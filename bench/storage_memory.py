"""Storage memory: copy a 50 MB image into S3 and into the filesystem with bounded memory.

A noise PNG of ~50 MB (incompressible, 4096 x 4096) is served by a local ``http.server``;
SeaweedFS (``weed mini``, auth enforced) is the S3 endpoint. Each scenario runs in a fresh
child process that first warms up (imports, clients, a small copy end to end), then takes
its resident memory as the baseline, then copies the big image exactly as the pipeline
does (``download`` into a spooled file while hashing, then ``store_file``: validation,
HEAD, streamed upload). Growth = peak RSS during the copy (``VmHWM``, reset after the
warm-up) minus the baseline. Targets: growth <= 16 MB in both storages; storing bytes that
are already stored sends 0 PUT requests.   ``s3-parts`` forces a multipart upload
(5 MiB parts) to show that path bounded too.   Usage: python bench/storage_memory.py
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SIDE = 4096  # 4096 x 4096 RGB noise: ~50.4 MB as PNG
BUDGET_MB = 16.0
WRITES = ("PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload")


# --- child: one scenario, its own memory ------------------------------------------------


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS (Linux >= 4.0)


def child(scenario: str, config: dict[str, Any]) -> dict[str, Any]:
    import django
    from django.conf import settings

    workdir = Path(config["workdir"])
    settings.configure(
        INSTALLED_APPS=[],
        USE_TZ=True,
        MEDIA_ROOT=str(workdir / "media"),
        MODELSLAB={"ALLOWED_DOWNLOAD_HOSTS": ["127.0.0.1"]},
    )
    django.setup()
    from django_modelslab.downloads import download
    from django_modelslab.storage import ContentAddressedFileSystemStorage
    from django_modelslab.storage.content import store_file

    if scenario == "fs":
        storage: Any = ContentAddressedFileSystemStorage(location=str(workdir / "media"))
    else:
        from django_modelslab.storage.s3 import ContentAddressedS3Storage, s3_transfer_config

        options = dict(config["s3"])
        if scenario == "s3-parts":  # the default transfer settings, but multipart from 5 MiB
            options["location"] = "bench-parts"
            options["transfer_config"] = s3_transfer_config(multipart_threshold=5 * 2**20)
        storage = ContentAddressedS3Storage(**options)
    calls: dict[str, int] = {}

    def count(model: Any, **kwargs: Any) -> None:
        calls[model.name] = calls.get(model.name, 0) + 1

    if scenario != "fs":
        storage.connection.meta.client.meta.events.register("before-call.s3", count)

    def copy(url: str) -> Any:
        with download(
            url, allowed_hosts=["127.0.0.1"], max_bytes=60 * 2**20, timeout=60, connect_timeout=5
        ) as fetched:
            return store_file(
                fetched.file, sha256=fetched.sha256, size=fetched.size, storage=storage
            )

    copy(config["small_url"])  # warm-up: every module, client and connection in place
    calls.clear()
    baseline = _status("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    stored = copy(config["big_url"])
    elapsed = time.perf_counter() - started
    peak = _status("VmHWM")
    return {
        "scenario": scenario,
        "baseline_mb": baseline / 2**20,
        "peak_mb": peak / 2**20,
        "growth_mb": (peak - baseline) / 2**20,
        "seconds": elapsed,
        "uploaded": stored.uploaded,
        "sha256": stored.sha256,
        "size": stored.size,
        "calls": calls,
    }


# --- parent: fixtures, children, report -------------------------------------------------


def make_images(directory: Path) -> tuple[Path, Path]:
    from PIL import Image

    big = directory / "big.png"
    noise = Image.frombytes("RGB", (SIDE, SIDE), os.urandom(SIDE * SIDE * 3))
    noise.save(big, "PNG", compress_level=1)
    small = directory / "small.png"
    Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3)).save(small, "PNG")
    return big, small


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def run_child(scenario: str, config: dict[str, Any]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", scenario],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if result.returncode:
        raise SystemExit(f"scenario {scenario} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    from tests.s3 import running_s3_server

    missing = str(Path(tempfile.gettempdir()) / "no-such-aws-file")
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        del os.environ[name]
    os.environ.update(AWS_CONFIG_FILE=missing, AWS_SHARED_CREDENTIALS_FILE=missing)
    with tempfile.TemporaryDirectory(prefix="modelslab-bench-") as tmp:
        workdir = Path(tmp)
        (workdir / "www").mkdir()
        big, _small = make_images(workdir / "www")
        digest = hashlib.sha256(big.read_bytes()).hexdigest()
        print(f"image: {big.stat().st_size / 2**20:.1f} MiB PNG, {SIDE}x{SIDE} noise")
        server, origin = serve(workdir / "www")
        try:
            with running_s3_server() as s3:
                options = s3.options(location="bench")
                options.pop("client_config")
                config = {
                    "workdir": str(workdir),
                    "big_url": f"{origin}/big.png",
                    "small_url": f"{origin}/small.png",
                    "s3": options,
                }
                results = [run_child(name, config) for name in ("fs", "s3", "s3-again", "s3-parts")]
        finally:
            server.shutdown()
    ok = True
    print(f"{'scenario':<10} {'baseline':>9} {'peak':>9} {'growth':>8} {'time':>7}  requests")
    for r in results:
        writes = sum(r["calls"].get(name, 0) for name in WRITES)
        print(
            f"{r['scenario']:<10} {r['baseline_mb']:7.1f}MB {r['peak_mb']:7.1f}MB "
            f"{r['growth_mb']:6.1f}MB {r['seconds']:6.2f}s  "
            f"{json.dumps(r['calls'], sort_keys=True) if r['calls'] else '-'}"
        )
        ok &= r["growth_mb"] <= BUDGET_MB and r["sha256"] == digest
        if r["scenario"] == "s3-again":
            ok &= writes == 0 and not r["uploaded"]
    print(f"target: growth <= {BUDGET_MB:g} MB each; 0 writes when already stored: ", end="")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], json.loads(sys.stdin.read()))))
    else:
        sys.exit(main())
