"""Renditions: a page of 100 generated images rendered with ``{% modelslab_image %}``.

100 originals (512 x 512 PNG, noisy gradients, stored content-addressed on the filesystem)
and a page rendering each with ``{% modelslab_image image "fill-240x180|format-webp" %}``
(1x 240 x 180 and 2x 480 x 360). Measured: the first render (every rendition made: read,
resize, encode, hash, store, one row each) against a baseline of Pillow doing the same
resizes directly (same crops, sizes, resampling, encoder settings, one file written per
rendition, no database). Then: each rendition made once (200 rows, 200 files), and a second
render, prefetched, runs the same number of queries for 10 images as for 100 and makes no
file. Target: first render <= 1.3 x the baseline (best of 3 runs each). Exits 1 on a miss.
Usage: python bench/renditions.py
"""

from __future__ import annotations

import io
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

IMAGES = 100
SIDE = 512
SPEC = "fill-240x180|format-webp"
TARGET = 1.3
RUNS = 3


def setup(workdir: Path, apps: tuple[str, ...] = (), **more: Any) -> None:
    """Configure Django for a bench in ``workdir`` (plus ``apps`` and ``more`` settings),
    then migrate."""
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=[
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django_modelslab",
            *apps,
        ],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": str(workdir / "db"),
                # SQLite as a site runs it (WAL); every row is still its own transaction.
                "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL"},
            }
        },
        USE_TZ=True,
        MEDIA_ROOT=str(workdir / "media"),
        MEDIA_URL="/media/",
        STATIC_URL="/static/",
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
            "modelslab": {"BACKEND": "django_modelslab.storage.ContentAddressedFileSystemStorage"},
        },
        TEMPLATES=[
            {"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}
        ],
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        **more,
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def originals() -> list[bytes]:
    from PIL import Image

    pictures = []
    for n in range(IMAGES):
        noise = Image.effect_noise((SIDE, SIDE), 40).convert("RGB")
        gradient = Image.linear_gradient("L").resize((SIDE, SIDE)).rotate(n * 3.6)
        tint = Image.new("RGB", (SIDE, SIDE), (n * 2, 255 - n * 2, (n * 37) % 256))
        picture = Image.composite(tint, noise, gradient)
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        pictures.append(buffer.getvalue())
    return pictures


def store(pictures: list[bytes]) -> list[int]:
    from django_modelslab.models import GeneratedImage, GenerationRequest
    from django_modelslab.storage.content import store_file

    generation = GenerationRequest.objects.create(
        prompt="bench renditions", width=SIDE, height=SIDE
    )
    ids = []
    for position, data in enumerate(pictures):
        stored = store_file(io.BytesIO(data))
        image = GeneratedImage.objects.create(
            request=generation,
            image=stored.key,
            sha256=stored.sha256,
            width=stored.info.width,
            height=stored.info.height,
            format=stored.info.format,
            bytes=stored.size,
            position=position,
            alt_text=f"bench picture {position}",
        )
        ids.append(image.pk)
    return ids


def baseline(paths: list[Path], out: Path) -> float:
    """Pillow directly: the same crops and sizes, encoder and settings; a file each."""
    from PIL import Image

    from django_modelslab.imaging.renditions import ENCODERS
    from django_modelslab.specs import parse_spec

    spec = parse_spec(SPEC)
    options = ENCODERS["WEBP"][2]
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    for n, path in enumerate(paths):
        for density in (1, 2):
            plan = spec.scaled(density).plan(SIDE, SIDE)
            with Image.open(path) as image:
                image.draft(image.mode, (plan.width, plan.height))
                resized = image.resize(
                    (plan.width, plan.height),
                    Image.Resampling.LANCZOS,
                    box=plan.box,
                    reducing_gap=1.0,
                )
            resized.save(out / f"{n}-{density}x.webp", "WEBP", **options)
    return time.perf_counter() - started


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        setup(workdir)
        from django.db import connection
        from django.template import Context, Template
        from django.test.utils import CaptureQueriesContext

        from django_modelslab.models import GeneratedImage, Rendition

        ids = store(originals())
        media = workdir / "media"
        paths = [media / image.image.name for image in GeneratedImage.objects.order_by("pk")]
        page = Template(
            "{% load modelslab %}{% for image in images %}"
            "{% modelslab_image image '" + SPEC + "' %}{% endfor %}"
        )

        def render(count: int = IMAGES) -> str:
            images = GeneratedImage.objects.filter(pk__in=ids[:count]).prefetch_renditions()
            return page.render(Context({"images": images}))

        pillow, ours = [], []
        for run in range(RUNS):
            pillow.append(baseline(paths, workdir / f"baseline-{run}"))
            Rendition.objects.all().delete()
            for stored in (media / "modelslab" / "renditions").rglob("*.webp"):
                stored.unlink()
            started = time.perf_counter()
            html = render()
            ours.append(time.perf_counter() - started)
            assert html.count("<img") == IMAGES

        renditions = Rendition.objects.count()
        files = sorted(p for p in (media / "modelslab" / "renditions").rglob("*") if p.is_file())
        with CaptureQueriesContext(connection) as hundred:
            render(IMAGES)
        with CaptureQueriesContext(connection) as ten:
            render(10)
        after = sorted(p for p in (media / "modelslab" / "renditions").rglob("*") if p.is_file())

        ratio = min(ours) / min(pillow)
        print(f"images: {IMAGES} ({SIDE}x{SIDE} PNG), spec {SPEC!r}, 1x + 2x")
        print(f"baseline (Pillow directly): {min(pillow) * 1000:.0f} ms (best of {RUNS})")
        print(f"first render ({{% modelslab_image %}}): {min(ours) * 1000:.0f} ms (best of {RUNS})")
        print(f"ratio: {ratio:.2f}x (target <= {TARGET}x)")
        print(f"renditions made: {renditions} rows, {len(files)} files (expected {2 * IMAGES})")
        print(
            f"second render queries: {len(hundred.captured_queries)} for {IMAGES} images, "
            f"{len(ten.captured_queries)} for 10; new files: {len(after) - len(files)}"
        )
        ok = (
            ratio <= TARGET
            and renditions == len(files) == 2 * IMAGES
            and len(hundred.captured_queries) == len(ten.captured_queries)
            and after == files
        )
        print("OK" if ok else "MISSED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
