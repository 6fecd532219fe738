"""``manage.py verify_images``: check that every stored image is there and intact.

For each ``GeneratedImage``: the object under its key exists, its bytes hash to the SHA-256
in its name and in the row, and its size matches the row; its thumbnail, when it has one,
exists and hashes to its name. Each key is read once however many rows share it. Reports,
never deletes or rewrites; exits with status 1 when anything is wrong.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from django_modelslab.exceptions import StorageError
from django_modelslab.models import GeneratedImage
from django_modelslab.storage import get_image_storage, stored_digest


@dataclass(frozen=True)
class Stored:
    """What a key holds: its digest and size, or why it could not be read."""

    sha256: str = ""
    size: int = 0
    problem: str = ""  # "missing", or the storage's error


def name_digest(name: str) -> str:
    """The SHA-256 a content-addressed name claims (``ab/<sha256>.png`` → ``<sha256>``)."""
    return posixpath.splitext(posixpath.basename(name))[0].lower()


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
        storage = get_image_storage()
        cache: dict[str, Stored] = {}
        checked = bad = 0
        for image in images.iterator():
            checked += 1
            problems = self._check(storage, cache, image)
            for problem in problems:
                self.stdout.write(f"image {image.pk} (request {image.request_id}): {problem}")
            bad += bool(problems)
        summary = (
            f"Checked {checked} image(s), {len(cache)} object(s) in "
            f"{type(storage).__name__}: {checked - bad} OK, {bad} with problems."
        )
        if bad or (ids and checked < len(set(ids))):
            raise CommandError(summary)
        self.stdout.write(self.style.SUCCESS(summary))

    def _check(self, storage: Any, cache: dict[str, Stored], image: GeneratedImage) -> list[str]:
        name = image.image.name
        problems = []
        claimed = name_digest(name)
        if claimed != image.sha256:
            problems.append(f"{name}: name says sha256 {claimed}, row says {image.sha256}")
        stored = self._read(storage, cache, name)
        if stored.problem:
            problems.append(f"{name}: {stored.problem}")
        else:
            if stored.sha256 != claimed:
                problems.append(f"{name}: corrupt: bytes hash to {stored.sha256}")
            if stored.size != image.bytes:
                problems.append(f"{name}: size {stored.size} bytes, row says {image.bytes}")
        thumbnail = getattr(image, "thumbnail", None)
        if thumbnail:
            thumb = self._read(storage, cache, thumbnail.name)
            if thumb.problem:
                problems.append(f"thumbnail {thumbnail.name}: {thumb.problem}")
            elif thumb.sha256 != name_digest(thumbnail.name):
                problems.append(
                    f"thumbnail {thumbnail.name}: corrupt: bytes hash to {thumb.sha256}"
                )
        return problems

    def _read(self, storage: Any, cache: dict[str, Stored], name: str) -> Stored:
        if name not in cache:
            try:
                digest = stored_digest(storage, name)
            except StorageError as exc:
                cache[name] = Stored(problem=f"unreadable: {exc.__cause__ or exc}")
            else:
                cache[name] = Stored(*digest) if digest else Stored(problem="missing")
        return cache[name]
