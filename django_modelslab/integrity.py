"""Is every stored image still there, and still the bytes its name promises?

Pipeline layer: faces (``verify_images``, ``regenerate_images --missing-files``) ask this
module, which asks the storage. Each key is read (or looked up) once however many rows
share it. Nothing here writes or deletes.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from django.core.files.storage import Storage
from django.db.models import QuerySet

from .exceptions import StorageError
from .models import GeneratedImage, GenerationRequest
from .storage import get_image_storage, stored_digest


def name_digest(name: str) -> str:
    """The SHA-256 a content-addressed name claims (``ab/<sha256>.png`` → ``<sha256>``)."""
    return posixpath.splitext(posixpath.basename(name))[0].lower()


@dataclass(frozen=True)
class Stored:
    """What a key holds: its digest and size, or why it could not be read."""

    sha256: str = ""
    size: int = 0
    problem: str = ""  # "missing", or the storage's error


@dataclass
class Inspector:
    """Reads keys from one storage, each once."""

    storage: Storage = field(default_factory=get_image_storage)
    seen: dict[str, Stored] = field(default_factory=dict)

    def read(self, name: str) -> Stored:
        if name not in self.seen:
            try:
                digest = stored_digest(self.storage, name)
            except StorageError as exc:
                self.seen[name] = Stored(problem=f"unreadable: {exc.__cause__ or exc}")
            else:
                self.seen[name] = Stored(*digest) if digest else Stored(problem="missing")
        return self.seen[name]

    def exists(self, name: str) -> bool:
        if name not in self.seen:
            return self.storage.exists(name)
        return not self.seen[name].problem

    def problems(self, image: GeneratedImage) -> list[str]:
        """What is wrong with one image and its thumbnail (empty: all good)."""
        name = image.image.name
        problems = []
        claimed = name_digest(name)
        if claimed != image.sha256:
            problems.append(f"{name}: name says sha256 {claimed}, row says {image.sha256}")
        stored = self.read(name)
        if stored.problem:
            problems.append(f"{name}: {stored.problem}")
        else:
            if stored.sha256 != claimed:
                problems.append(f"{name}: corrupt: bytes hash to {stored.sha256}")
            if stored.size != image.bytes:
                problems.append(f"{name}: size {stored.size} bytes, row says {image.bytes}")
        if image.thumbnail:
            thumb = self.read(image.thumbnail.name)
            if thumb.problem:
                problems.append(f"thumbnail {image.thumbnail.name}: {thumb.problem}")
            elif thumb.sha256 != name_digest(image.thumbnail.name):
                problems.append(
                    f"thumbnail {image.thumbnail.name}: corrupt: bytes hash to {thumb.sha256}"
                )
        return problems


def check_images(
    images: Iterable[GeneratedImage], inspector: Inspector | None = None
) -> Iterator[tuple[GeneratedImage, list[str]]]:
    """Each image with its problems (an empty list when it is intact)."""
    inspector = inspector or Inspector()
    for image in images:
        yield image, inspector.problems(image)


def requests_with_missing_files(requests: QuerySet[GenerationRequest]) -> list[int]:
    """Ids of ``requests`` with a current image whose file is absent from storage.

    Asks the storage once per distinct key (a HEAD request on S3).
    """
    inspector = Inspector()
    images = GeneratedImage.objects.filter(request__in=requests, superseded=False)
    rows = images.values_list("request_id", "image").order_by("request_id")
    return sorted({request_id for request_id, name in rows if not inspector.exists(name)})
