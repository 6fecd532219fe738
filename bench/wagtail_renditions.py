"""Renditions in a Wagtail site: ``{% modelslab_image %}`` against Wagtail's own tag.

100 generated images (512 x 512 PNG, as in bench/renditions.py) added to Wagtail's image
library with ``add_to_library`` (the library images share the generated files). Then the
same page of 100 images, same sizes and format, rendered two ways:

- ours: ``{% modelslab_image generated "fill-240x180|format-webp" %}`` (1x 240 x 180 and 2x
  480 x 360: two renditions per image);
- Wagtail's: ``{% srcset_image library fill-{240x180,480x360} format-webp %}`` on the library
  images (the ``{% image %}`` family's tag for 1x + 2x: the same two renditions per image).

Measured: the first render (every rendition made and stored, a row each), best of 3 runs,
renditions deleted between runs. Target: ours <= 1.1 x Wagtail's. Exits 1 on a miss.
Usage: python bench/wagtail_renditions.py (needs the wagtail extra).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from renditions import IMAGES, SIDE, originals, store  # noqa: E402  (after sys.path)
from renditions import setup as renditions_setup  # noqa: E402

SPEC = "fill-240x180|format-webp"
WAGTAIL_SPEC = "fill-{240x180,480x360} format-webp"
TARGET = 1.1
RUNS = 3


def setup(workdir: Path) -> None:
    renditions_setup(
        workdir,
        apps=(
            # The app's Wagtail views share the Django admin widget's (django_modelslab.admin).
            "django.contrib.admin",
            "wagtail.images",
            "wagtail.search",
            "wagtail.admin",
            "wagtail",
            "taggit",
            "modelcluster",
            "django_modelslab.contrib.wagtail",
        ),
        WAGTAILSEARCH_BACKENDS={"default": {"BACKEND": "wagtail.search.backends.database"}},
    )


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        setup(workdir)
        from django.template import Context, Template
        from wagtail.images import get_image_model

        from django_modelslab.contrib.wagtail import add_to_library
        from django_modelslab.models import GeneratedImage, Rendition

        ids = store(originals())
        generated = list(GeneratedImage.objects.filter(pk__in=ids).order_by("pk"))
        library_ids = [add_to_library(image).pk for image in generated]
        image_model = get_image_model()
        wagtail_rendition = image_model.get_rendition_model()
        media = workdir / "media"
        shared = sum(
            1 for image in image_model.objects.all() if image.file.name.startswith("modelslab/")
        )

        ours_page = Template(
            "{% load modelslab %}{% for image in images %}"
            "{% modelslab_image image '" + SPEC + "' %}{% endfor %}"
        )
        wagtail_page = Template(
            "{% load wagtailimages_tags %}{% for image in images %}"
            "{% srcset_image image " + WAGTAIL_SPEC + " %}{% endfor %}"
        )

        def render_ours() -> str:
            images = GeneratedImage.objects.filter(pk__in=ids).prefetch_renditions()
            return ours_page.render(Context({"images": images}))

        def render_wagtail() -> str:
            images = image_model.objects.filter(pk__in=library_ids).prefetch_renditions()
            return wagtail_page.render(Context({"images": images}))

        def clear() -> None:
            for rendition in wagtail_rendition.objects.all():
                rendition.file.delete(save=False)
            wagtail_rendition.objects.all().delete()
            Rendition.objects.all().delete()
            for stored in (media / "modelslab" / "renditions").rglob("*.webp"):
                stored.unlink()

        ours, theirs = [], []
        for _run in range(RUNS):
            clear()
            started = time.perf_counter()
            html = render_wagtail()
            theirs.append(time.perf_counter() - started)
            assert html.count("<img") == IMAGES, html[:500]
            started = time.perf_counter()
            html = render_ours()
            ours.append(time.perf_counter() - started)
            assert html.count("<img") == IMAGES

        our_files = [p for p in (media / "modelslab" / "renditions").rglob("*") if p.is_file()]
        their_files = [p for p in (media / "images").rglob("*") if p.is_file()]
        ratio = min(ours) / min(theirs)
        print(f"images: {IMAGES} ({SIDE}x{SIDE} PNG) in the library ({shared} sharing our file)")
        print(f"specs: {SPEC!r} (ours) / {WAGTAIL_SPEC!r} (Wagtail): 1x + 2x each")
        print(f"Wagtail's {{% srcset_image %}}: {min(theirs) * 1000:.0f} ms (best of {RUNS})")
        print(f"our {{% modelslab_image %}}: {min(ours) * 1000:.0f} ms (best of {RUNS})")
        print(f"ratio: {ratio:.2f}x (target <= {TARGET}x)")
        print(
            f"renditions made: ours {Rendition.objects.count()} rows, {len(our_files)} files; "
            f"Wagtail's {wagtail_rendition.objects.count()} rows, {len(their_files)} files "
            f"(expected {2 * IMAGES} each)"
        )
        ok = (
            ratio <= TARGET
            and Rendition.objects.count() == len(our_files) == 2 * IMAGES
            and wagtail_rendition.objects.count() == len(their_files) == 2 * IMAGES
            and shared == IMAGES
        )
        print("OK" if ok else "MISSED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
