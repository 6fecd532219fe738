"""``manage.py verify_images``: check that every stored image is there and intact.

For each ``GeneratedImage``: the object under its key exists, its bytes hash to the SHA-256
in its name and in the row, and its size matches the row; its thumbnail, when it has one,
exists and hashes to its name. Each key is read once however many rows share it. Reports,
never deletes or rewrites; exits with status 1 when anything is wrong.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_modelslab.integrity import Inspector, check_images
from django_modelslab.models import GeneratedImage


class Command(BaseCommand):
    help = (
        "Check that every generated image (and thumbnail) exists in storage and that its "
        "bytes hash to its name. Reports only; exits with status 1 if anything is wrong."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--id", dest="ids", type=int, nargs="+", metavar="ID", help="Only these image ids."
        )
        parser.add_argument(
            "--limit", type=int, metavar="N", help="Check at most N images (lowest ids first)."
        )

    def handle(self, *args: Any, ids: list[int] | None, limit: int | None, **options: Any) -> None:
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
        checked = bad = 0
        for image, problems in check_images(images.iterator(), inspector):
            checked += 1
            for problem in problems:
                self.stdout.write(f"image {image.pk} (request {image.request_id}): {problem}")
            bad += bool(problems)
        summary = (
            f"Checked {checked} image(s), {len(inspector.seen)} object(s) in "
            f"{type(inspector.storage).__name__}: {checked - bad} OK, {bad} with problems."
        )
        if bad or (ids and checked < len(set(ids))):
            raise CommandError(summary)
        self.stdout.write(self.style.SUCCESS(summary))
