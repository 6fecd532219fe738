"""Pipeline overhead: N images through django-modelslab vs the bare-httpx floor.

Both run against the same bundled emulator in one process and one run:
- floor: POST text2img, GET the output, sha256 it, write it under its hash (no Django);
- pipeline: a GenerationRequest per image through ``pipeline.submit`` (SQLite, inline task
  backend, validation with Pillow, content-addressed storage).
Each side runs ROUNDS times alternately and the best round counts. Prints the ratio and what
the pipeline adds per image (the row, the claim, the track id saved before the generate
call, one verification decode, the thumbnail, the fsync: the product, not overhead).
Target: <= 20 ms added per 512x512 image.  Usage: python bench/pipeline.py [N]
(BENCH_SIZE=256 for another size; the target stays the same.)

With c2pa-python installed (the extra ``c2pa``), the pipeline runs again with
``MODELSLAB["C2PA"]`` set (a throwaway test CA): what signing the image and its thumbnail
costs per image is reported beside the target, not counted in it (it is opt-in).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
ROUNDS = 3
SIZE = int(os.environ.get("BENCH_SIZE", "512"))  # pixels a side
TARGET_MS = 20.0  # added per image


def database(workdir: Path) -> dict:
    """SQLite in WAL mode by default; PostgreSQL under ``python -m tests.pgcluster``."""
    if os.environ.get("MODELSLAB_TEST_POSTGRES"):
        host, port = os.environ["MODELSLAB_TEST_POSTGRES"].rsplit(":", 1)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": host,
            "PORT": port,
            "USER": "postgres",
            "NAME": "postgres",
        }
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(workdir / "bench.sqlite3"),
        # WAL without an fsync per commit, as SQLite is run in production; IMMEDIATE
        # transactions so that concurrent writers queue instead of failing.
        "OPTIONS": {
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
        },
    }


def configure_django(workdir: Path, base_url: str) -> None:
    import django
    from django.conf import settings

    tasks_module = "django.tasks"
    installed = []
    try:
        import django.tasks
    except ImportError:
        tasks_module = "django_tasks"
        installed.append("django_tasks")
    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_modelslab",
            *installed,
        ],
        DATABASES={"default": database(workdir)},
        USE_TZ=True,
        MEDIA_ROOT=str(workdir / "media"),
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "modelslab": {"BACKEND": "django_modelslab.storage.ContentAddressedFileSystemStorage"},
        },
        TASKS={"default": {"BACKEND": f"{tasks_module}.backends.immediate.ImmediateBackend"}},
        MODELSLAB={
            "API_KEY": "bench",
            "BASE_URL": base_url,
            "ALLOWED_DOWNLOAD_HOSTS": ["127.0.0.1"],
            "CACHE": False,
        },
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def floor(base_url: str, outdir: Path, tag: str) -> float:
    import httpx

    started = time.perf_counter()
    with httpx.Client(timeout=30) as client:
        for i in range(N):
            body = client.post(
                f"{base_url}/v6/images/text2img",
                json={
                    "key": "bench",
                    "model_id": "flux",
                    "prompt": f"{tag} floor {i}",
                    "width": SIZE,
                    "height": SIZE,
                    "samples": 1,
                    "seed": i,
                },
            ).json()
            for url in body["output"]:
                data = client.get(url).content
                digest = hashlib.sha256(data).hexdigest()
                path = outdir / digest[:2] / f"{digest}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
    return time.perf_counter() - started


def through_pipeline(tag: str) -> float:
    from django_modelslab import pipeline
    from django_modelslab.models import GenerationRequest

    started = time.perf_counter()
    for i in range(N):
        request = pipeline.submit(
            GenerationRequest(prompt=f"{tag} floor {i}", width=SIZE, height=SIZE, seed=i)
        )
        if request.status != GenerationRequest.Status.SUCCEEDED:
            request.refresh_from_db()
            assert request.status == "succeeded", request.error
    return time.perf_counter() - started


def main() -> int:
    from django_modelslab.testing import Emulator

    with tempfile.TemporaryDirectory(prefix="modelslab-bench-") as tmp, Emulator() as emulator:
        workdir = Path(tmp)
        configure_django(workdir, emulator.base_url)
        floors, pipelines = [], []
        for round_ in range(ROUNDS):
            # Same prompts and seeds on both sides: the emulator draws the same images.
            floors.append(floor(emulator.base_url, workdir / f"floor{round_}", f"r{round_}"))
            pipelines.append(through_pipeline(f"r{round_}"))
        best_floor, best_pipeline = min(floors), min(pipelines)
        added = (best_pipeline - best_floor) / N * 1000
        print(
            f"N={N} images of {SIZE}x{SIZE}, best of {ROUNDS} rounds "
            f"(python {sys.version.split()[0]}, pid {os.getpid()})"
        )
        print(f"floor (bare httpx):  {best_floor:7.3f} s  {best_floor / N * 1000:6.2f} ms/image")
        print(
            f"pipeline:            {best_pipeline:7.3f} s  {best_pipeline / N * 1000:6.2f} ms/image"
        )
        print(f"ratio: {best_pipeline / best_floor:.3f}x")
        met = added <= TARGET_MS
        print(
            f"added by the pipeline: {added:.1f} ms/image (target <= {TARGET_MS:.0f} ms) -> "
            f"{'OK' if met else 'MISSED'}"
        )
        signed = signing_rounds(workdir)
        if signed is not None:
            print(
                f"pipeline with C2PA:  {signed:7.3f} s  {signed / N * 1000:6.2f} ms/image "
                f"(signing the image and its thumbnail: "
                f"{(signed - best_pipeline) / N * 1000:+.1f} ms/image)"
            )
    return 0 if met else 1


def signing_rounds(workdir: Path) -> float | None:
    """The best of ROUNDS pipeline rounds with MODELSLAB["C2PA"] set; None without the extra."""
    try:
        import c2pa  # noqa: F401

        from tests.c2pa_identity import make_credentials
    except ImportError:
        print("pipeline with C2PA: skipped (pip install 'django-modelslab[c2pa]' cryptography)")
        return None
    from django.conf import settings

    files = make_credentials(workdir)
    c2pa_setting = {"CERT_CHAIN": str(files["chain"]), "PRIVATE_KEY": str(files["key"])}
    settings.MODELSLAB = {**settings.MODELSLAB, "C2PA": c2pa_setting}
    try:
        return min(through_pipeline(f"r{round_}") for round_ in range(ROUNDS))
    finally:
        settings.MODELSLAB = {k: v for k, v in settings.MODELSLAB.items() if k != "C2PA"}


if __name__ == "__main__":
    sys.exit(main())
