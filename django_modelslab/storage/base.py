"""What every content-addressed storage does: names are final, and a stored key is kept."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import IO

from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File

from ..conf import get_setting

#: Files are read, hashed and copied in pieces of this size.
CHUNK = 64 * 1024

#: Files deleted per batch: S3's ``delete_objects`` takes at most 1000 keys, and names are
#: handed to ``still_wanted`` (one query per file field) this many at a time.
DELETE_BATCH = 1000

#: ``still_wanted(names)``: which of ``names`` a row references now (they are kept).
WantedCheck = Callable[[Sequence[str]], Collection[str]]


def refresh_age() -> float:
    """Seconds after which a stored file that a store reuses gets a new modification time:
    a quarter of ``PRUNE_GRACE``, so that any file old enough for a prune is refreshed."""
    return float(get_setting("PRUNE_GRACE")) / 4


@dataclass(frozen=True)
class StoredFile:
    """One stored file as a listing sees it: name (as the storage names it), size in bytes,
    and when it was last written or refreshed (seconds since the epoch)."""

    name: str
    size: int
    modified: float


@dataclass
class Deleted:
    """What :meth:`ContentAddressedStorageMixin.delete_stale` did with the names it got."""

    deleted: list[StoredFile] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # refreshed or referenced meanwhile
    gone: list[str] = field(default_factory=list)  # already absent
    errors: dict[str, str] = field(default_factory=dict)  # name -> why it was not deleted


def hash_chunks(chunks: Iterable[bytes]) -> tuple[str, int]:
    """SHA-256 and size of the bytes ``chunks`` gives."""
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


def hash_file(file: IO[bytes]) -> tuple[str, int]:
    """SHA-256 and size of ``file``, read from the start; the file is rewound."""
    file.seek(0)
    try:
        return hash_chunks(iter(partial(file.read, CHUNK), b""))
    finally:
        file.seek(0)


class ContentAddressedStorageMixin:
    """Make any Django storage content-addressed: names are final, existing keys kept.

    ``get_available_name`` never adds a random suffix, and saving a name that already exists
    writes nothing and returns that name. Subclasses write new keys in :meth:`put_if_absent`.
    """

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        name = str(name).replace("\\", "/")
        if max_length is not None and len(name) > max_length:
            raise SuspiciousFileOperation(
                f"Content-addressed name {name!r} is longer than the field's max_length "
                f"({max_length})"
            )
        return name

    def _save(self, name: str, content: File[bytes]) -> str:
        self.put_if_absent(name, content)
        return name

    def put_if_absent(self, name: str, content: File[bytes]) -> bool:
        """Store ``content`` under ``name`` unless present; True when bytes were written."""
        if self.refresh(name):
            return False
        super()._save(name, content)  # type: ignore[misc]
        return True

    def refresh(self, name: str) -> bool:
        """Whether ``name`` is stored; if so and older than :func:`refresh_age`, mark it as
        just used where the backend can (its modification time), so that a prune running
        now keeps it (docs/deleting.md)."""
        return bool(self.exists(name))  # type: ignore[attr-defined]

    def replace(self, name: str, content: File[bytes]) -> None:
        """Store ``content`` under ``name`` even when something is there (a repair)."""
        if self.exists(name):  # type: ignore[attr-defined]
            self.delete(name)  # type: ignore[attr-defined]
        super()._save(name, content)  # type: ignore[misc]

    def iter_stored(self, prefix: str) -> Iterator[StoredFile]:
        """Every file stored under ``prefix`` (a folder name ending with ``/``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its files")

    def delete_stale(
        self, names: Iterable[str], *, before: float, still_wanted: WantedCheck
    ) -> Deleted:
        """Delete those of ``names`` not modified since ``before`` (epoch seconds) and not
        ``still_wanted``, checked as late as the backend allows (see docs/deleting.md), in
        batches of :data:`DELETE_BATCH`."""
        result = Deleted()
        batch: list[str] = []
        for name in names:
            batch.append(name)
            if len(batch) == DELETE_BATCH:
                self._delete_batch(batch, before, still_wanted, result)
                batch = []
        if batch:
            self._delete_batch(batch, before, still_wanted, result)
        return result

    def _delete_batch(
        self, names: list[str], before: float, still_wanted: WantedCheck, result: Deleted
    ) -> None:
        """Delete one batch of :meth:`delete_stale`, adding what happened to ``result``."""
        raise NotImplementedError(f"{type(self).__name__} cannot delete stale files")

    def digest(self, name: str) -> tuple[str, int]:
        """SHA-256 and size of the stored bytes (``FileNotFoundError`` when absent)."""
        with self.open(name, "rb") as stored:  # type: ignore[attr-defined]
            return hash_chunks(stored.chunks(CHUNK))
