"""``manage.py verify_images``: check that every stored image is there and intact.

For each ``GeneratedImage``: the object under its key exists, its bytes hash to the SHA-256
in its name and in the row, and its size matches the row; its thumbnail, when it has one,
exists and hashes to its name. Each key is read once however many rows share it. Reports,
never deletes; with ``--repair`` puts good bytes back where it has them (the image from its
source URL while ModelsLab serves it, the thumbnail rendered again). Exits with status 1
when anything is (still) wrong.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_modelslab.integrity import Inspector, check_images
from django_modelslab.integrity import repair as repair_image
from django_modelslab.models import GeneratedImage


class Command(BaseCommand):
    help = (
        "Check that every generated image (and thumbnail) exists in storage and that its "
        "bytes hash to its name; --repair puts good bytes back where it can. Exits with "
        "status 1 if anything is (still) wrong."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--id", dest="ids", type=int, nargs="+", metavar="ID", help="Only these image ids."
        )
        parser.add_argument(
            "--limit", type=int, metavar="N", help="Check at most N images (lowest ids first)."
        )
        parser.add_argument(
            "--repair",
            action="store_true",
            help="Put back missing or corrupt files: images from their source URL while "
            "ModelsLab still serves it (24 h), thumbnails rendered again from the image.",
        )

    def handle(
        self,
        *args: Any,
        ids: list[int] | None,
        limit: int | None,
        repair: bool = False,
        **options: Any,
    ) -> None:
        if limit is not None and limit < 1:
            raise CommandError("--limit must be at least 1")
        images = GeneratedImage.objects.order_by("pk")
        if ids:
            images = images.filter(pk__in=ids)
            missing_ids = sorted(set(ids) - set(images.values_list("pk", flat=True)))
            if missing_ids:
                self.stderr.write(f"No image with id {', '.join(map(str, missing_ids))}")
        if limit is not None:
            images = images[:limit]
        inspector = Inspector()
        checked = bad = repaired = 0
        for image, problems in check_images(images.iterator(), inspector):
            checked += 1
            where = f"image {image.pk} (request {image.request_id})"
            for problem in problems:
                self.stdout.write(f"{where}: {problem}")
            if problems and repair:
                for note in repair_image(image, inspector):
                    self.stdout.write(f"{where}: {note}")
                left = inspector.problems(image)
                repaired += not left
                problems = left
            bad += bool(problems)
        summary = (
            f"Checked {checked} image(s), {len(inspector.seen)} object(s) in "
            f"{type(inspector.storage).__name__}: {checked - bad - repaired} OK, "
            + (f"{repaired} repaired, " if repair else "")
            + f"{bad} with problems."
        )
        if bad or (ids and checked < len(set(ids))):
            raise CommandError(summary)
        self.stdout.write(self.style.SUCCESS(summary))
