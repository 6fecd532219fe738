"""Is every stored image still there, and still the bytes its name promises?

A part: faces (``verify_images``, ``regenerate_images --missing-files``) ask this
module, which asks the storage. Each key is read (or looked up) once however many rows
share it. Only :func:`repair` and :func:`copy_file` write: the first puts good bytes back
where it has them, the second copies objects from the storage a site used before.
"""

from __future__ import annotations

import posixpath
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import cast

from django.core.files.storage import Storage
from django.db.models import QuerySet
from django.utils import timezone

from .conf import get_setting
from .copying import fetch_again, sign_thumbnail
from .exceptions import InvalidImage, ModelsLabError, StorageError
from .imaging.credentials import ManifestCheck, check_manifest, load_credentials
from .imaging.thumbnails import Thumbnail, render_thumbnail
from .models import GeneratedImage, GenerationRequest
from .storage import get_image_storage
from .storage.base import CHUNK, hash_file
from .storage.content import (
    image_metadata,
    restore_file,
    storage_errors,
    store_thumbnail,
    stored_digest,
)

#: Copies between storages spool in memory up to this size, then on disk.
_SPOOL_BYTES = 8 * 1024 * 1024


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
    #: Validate C2PA manifests too (by default when ``MODELSLAB["C2PA"]`` is set).
    manifests: bool = field(default_factory=lambda: bool(get_setting("C2PA")))
    manifest_seen: dict[str, str] = field(default_factory=dict)

    def manifest(self, name: str) -> str:
        """What is wrong with the C2PA manifest of the (intact) file ``name``; "" if nothing."""
        if name not in self.manifest_seen:
            try:
                with (
                    storage_errors(name, self.storage, "Reading"),
                    self.storage.open(name, "rb") as stored,
                ):
                    check = check_manifest(stored)
            except (StorageError, FileNotFoundError) as exc:
                self.manifest_seen[name] = f"unreadable: {exc}"
            else:
                self.manifest_seen[name] = _manifest_problem(check)
        return self.manifest_seen[name]

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
        name = _name(image)
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
            if self.manifests and (problem := self.manifest(name)):
                problems.append(f"{name}: {problem}")
        thumbnail = image.thumbnail.name
        if thumbnail:
            thumb = self.read(thumbnail)
            if thumb.problem:
                problems.append(f"thumbnail {thumbnail}: {thumb.problem}")
            elif thumb.sha256 != name_digest(thumbnail):
                problems.append(f"thumbnail {thumbnail}: corrupt: bytes hash to {thumb.sha256}")
            elif self.manifests and (problem := self.manifest(thumbnail)):
                problems.append(f"thumbnail {thumbnail}: {problem}")
        return problems


def _manifest_problem(check: ManifestCheck) -> str:
    if check.state == "missing":
        return "C2PA manifest missing"
    if check.state == "invalid":
        mismatch = "assertion.dataHash.mismatch" in check.problems
        what = "no longer matches the bytes" if mismatch else "is invalid"
        return f"C2PA manifest {what} ({', '.join(check.problems)})"
    return ""


def _name(image: GeneratedImage) -> str:
    """The image's key: its file field is required, so never None (the stubs allow None)."""
    return cast(str, image.image.name)


def _damaged(stored: Stored, name: str) -> bool:
    """Missing, or bytes that do not hash to the name (unreadable is not damage we can fix)."""
    if stored.problem:
        return stored.problem == "missing"
    return stored.sha256 != name_digest(name)


def repair(image: GeneratedImage, inspector: Inspector) -> list[str]:
    """Put good bytes back for ``image``'s missing or corrupt file and thumbnail, if any.

    The image comes again from its source URL while ModelsLab still serves it, tagged as
    the copy was: only bytes hashing to its name are written. A thumbnail is rendered again
    from the intact image (stored under a new key, and the row updated, if the rendering
    has changed since). Returns a line for each thing repaired or left as it was.
    """
    notes: list[str] = []
    name = _name(image)
    if name_digest(name) == image.sha256 and _damaged(inspector.read(name), name):
        notes.append(_repair_image(image, inspector))
    thumbnail = image.thumbnail.name or ""
    if thumbnail and _damaged(inspector.read(thumbnail), thumbnail):
        if inspector.read(name).sha256 == name_digest(name):
            notes.append(_repair_thumbnail(image, inspector))
        else:
            notes.append(f"thumbnail {thumbnail}: not repaired: the image itself is damaged")
    return notes


def _repair_image(image: GeneratedImage, inspector: Inspector) -> str:
    name, url, expires = _name(image), image.source_url, image.source_expires_at
    if not url:
        return f"{name}: not repaired: no source URL is recorded"
    if expires is not None and expires <= timezone.now():
        return f"{name}: not repaired: its source URL expired at {expires:%Y-%m-%d %H:%M} UTC"
    generation = image.request
    model_id = generation.produced_by or generation.model_id
    try:
        with fetch_again(
            url, request_id=generation.pk, model_id=model_id, prompt=generation.prompt
        ) as (
            file,
            sha256,
            _size,
        ):
            if sha256 != image.sha256:
                return f"{name}: not repaired: its source URL now gives other bytes ({sha256})"
            metadata = image_metadata(
                request_id=generation.pk, model_id=model_id, prompt=generation.prompt
            )
            stored = restore_file(file, name, storage=inspector.storage, metadata=metadata)
    except ModelsLabError as exc:
        return f"{name}: not repaired: {exc}"
    inspector.seen[name] = Stored(stored.sha256, stored.size)
    return f"{name}: repaired from its source URL"


def _repair_thumbnail(image: GeneratedImage, inspector: Inspector) -> str:
    name, storage = image.thumbnail.name or "", inspector.storage  # set: see repair()
    credentials = load_credentials(get_setting("C2PA"))
    try:
        with ExitStack() as stack:
            source = stack.enter_context(storage.open(_name(image), "rb"))
            thumbnail = render_thumbnail(source, size=get_setting("THUMBNAIL_SIZE"))
            if credentials is not None:  # signed as the pipeline signs thumbnails
                thumbnail = sign_thumbnail(thumbnail, source, credentials, stack)
            return _store_thumbnail(image, name, thumbnail, inspector)
    except (ModelsLabError, OSError) as exc:
        return f"thumbnail {name}: not repaired: {exc}"


def _store_thumbnail(
    image: GeneratedImage, name: str, thumbnail: Thumbnail, inspector: Inspector
) -> str:
    """Put a thumbnail rendered again back under ``name``, or under its new key."""
    storage = inspector.storage
    if name_digest(name) == hash_file(thumbnail.file)[0]:
        stored = restore_file(thumbnail.file, name, storage=storage)
        inspector.seen[name] = Stored(stored.sha256, stored.size)
        return f"thumbnail {name}: repaired (rendered again)"
    stored = store_thumbnail(thumbnail, storage=storage, prefix=get_setting("UPLOAD_PREFIX"))
    GeneratedImage.objects.filter(thumbnail=name).update(thumbnail=stored.key)
    image.thumbnail.name = stored.key
    return f"thumbnail {name}: rendered again as {stored.key} (the rows now point there)"


def check_images(
    images: Iterable[GeneratedImage], inspector: Inspector | None = None
) -> Iterator[tuple[GeneratedImage, list[str]]]:
    """Each image with its problems (an empty list when it is intact)."""
    inspector = inspector or Inspector()
    for image in images:
        yield image, inspector.problems(image)


def requests_with_missing_files(generations: QuerySet[GenerationRequest]) -> list[int]:
    """Ids of ``generations`` with a current image whose file is absent from storage.

    Asks the storage once per distinct key (a HEAD request on S3).
    """
    inspector = Inspector()
    images = GeneratedImage.objects.filter(request__in=generations, superseded=False)
    rows = images.values_list("request_id", "image").order_by("request_id")
    return sorted({request_id for request_id, name in rows if not inspector.exists(name)})


# Moving to another storage -----------------------------------------------------------------


@dataclass(frozen=True)
class Copied:
    """What :func:`copy_file` did with one key."""

    name: str
    outcome: str  # "copied", "present", "would copy", or what went wrong
    size: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome in ("copied", "present", "would copy")


def referenced_files() -> Iterator[tuple[str, dict[str, str]]]:
    """Every file a row references (images, thumbnails, inputs), once each, with the object
    metadata the pipeline gave it."""
    seen: set[str] = set()
    images = GeneratedImage.objects.order_by("pk").values_list(
        "image", "thumbnail", "request_id", "request__produced_by", "request__model_id",
        "request__prompt",
    )  # fmt: skip
    for name, thumbnail, request_id, produced_by, model_id, prompt in images.iterator():
        if name and name not in seen:
            seen.add(name)
            model = produced_by or model_id
            yield name, image_metadata(request_id=request_id, model_id=model, prompt=prompt)
        if thumbnail and thumbnail not in seen:
            seen.add(thumbnail)
            yield thumbnail, {}
    inputs = GenerationRequest.objects.order_by("pk").values_list("init_image", "mask_image")
    for names in inputs.iterator():
        for name in names:
            if name and name not in seen:
                seen.add(name)
                yield name, {"role": "input"}


def copy_file(
    name: str,
    source: Storage,
    target: Storage,
    *,
    metadata: dict[str, str] | None = None,
    dry_run: bool = False,
) -> Copied:
    """Copy the object ``name`` from ``source`` into ``target`` unless ``target`` has it.

    The bytes are streamed through a spooled temporary file (bounded memory) and written
    only if they hash to the digest the name claims and are a valid image
    (:func:`restore_file`). Nothing raises for one bad key: the outcome says what happened.
    """
    try:
        with storage_errors(name, target, "Looking up"):
            present = target.exists(name)
        if present:
            return Copied(name, "present")
        if dry_run:
            return Copied(name, "would copy")
        with storage_errors(name, source, "Reading"):
            try:
                stored = source.open(name, "rb")
            except FileNotFoundError:
                return Copied(name, "missing from the old storage")
            with stored, tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
                try:
                    for chunk in stored.chunks(CHUNK):
                        spool.write(chunk)
                except FileNotFoundError:
                    return Copied(name, "missing from the old storage")
                copied = restore_file(spool, name, storage=target, metadata=metadata)
    except (InvalidImage, StorageError) as exc:
        return Copied(name, f"not copied: {exc}")
    return Copied(name, "copied", copied.size)
