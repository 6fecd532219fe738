"""Content-addressed image files: verified bytes stored once, under a name from their hash.

Key = ``<UPLOAD_PREFIX><sha256[:2]>/<sha256>.<ext>``; the extension comes from the format
Pillow finds in the bytes (:mod:`django_modelslab.imaging.verify`), never from the URL.
Storing bytes that are already stored writes nothing. :func:`store_file` works with any
Django storage; the :class:`~.base.ContentAddressedStorageMixin` storages also never rename
and skip existing keys when saved through a ``FileField``.

Storage hook: what gets saved is a :class:`VerifiedImage` (a Django ``File``) carrying
``.info`` (an :class:`~django_modelslab.imaging.verify.ImageInfo`), ``.content_type`` (from
the real format) and ``.metadata`` (``sha256`` plus what the caller adds), which
:class:`~.s3.ContentAddressedS3Storage` turns into the object's headers.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO
from urllib.parse import quote

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage
from django.core.files.utils import validate_file_name

from ..conf import get_setting
from ..exceptions import InvalidImage, StorageError
from ..imaging.thumbnails import Thumbnail
from ..imaging.verify import ImageInfo, inspect_image
from .base import CHUNK, ContentAddressedStorageMixin, hash_chunks, hash_file
from .selection import image_storage

#: S3 allows 2 KB of user metadata in all; a prompt (when allowed) is cut to fit.
MAX_PROMPT_METADATA = 1024
#: Thumbnails are stored under ``<UPLOAD_PREFIX>thumbs/``.
THUMBNAIL_FOLDER = "thumbs/"
#: Renditions (``GeneratedImage.get_rendition``) are stored under ``<UPLOAD_PREFIX>renditions/``.
RENDITION_FOLDER = "renditions/"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class StoredImage:
    """The result of :func:`store_file`: where the bytes live and what they are."""

    key: str
    sha256: str
    size: int
    info: ImageInfo
    uploaded: bool  # False when the key was already stored (nothing written)
    metadata: dict[str, str] = field(default_factory=dict)  # what the object was given


class VerifiedImage(File):  # type: ignore[type-arg]  # not subscriptable at run time
    """A file whose bytes were checked by :func:`inspect_image` (what storages receive)."""

    def __init__(
        self,
        file: IO[bytes],
        info: ImageInfo,
        name: str | None = None,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(file, name)
        self.info = info
        self.content_type = info.content_type
        self.metadata: dict[str, str] = dict(metadata or {})
        if size is not None:
            self.size = size


def content_key(sha256: str, extension: str, prefix: str) -> str:
    """``<prefix><sha256[:2]>/<sha256>.<extension>``; a non-empty prefix ends with ``/``."""
    sha256 = sha256.lower()
    if not _SHA256_RE.fullmatch(sha256):
        raise ValueError(f"Not a SHA-256 hex digest: {sha256!r}")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return f"{prefix}{sha256[:2]}/{sha256}.{extension}"


def image_metadata(
    *, request_id: object = None, model_id: str = "", prompt: str = ""
) -> dict[str, str]:
    """Object metadata for a generated image: request id, model id, and the prompt only
    when ``STORE_PROMPT_METADATA`` allows it (prompts can be private).

    Values are ASCII (S3 sends metadata as HTTP headers): the prompt is percent-encoded
    (UTF-8) and cut to :data:`MAX_PROMPT_METADATA` characters.
    """
    metadata: dict[str, str] = {}
    if request_id is not None:
        metadata["request-id"] = str(request_id)
    if model_id:
        metadata["model-id"] = quote(model_id, safe="/:@._-")
    if prompt and get_setting("STORE_PROMPT_METADATA"):
        encoded = quote(prompt, safe=" ,.;:!?'()/_-")[:MAX_PROMPT_METADATA]
        metadata["prompt"] = re.sub(r"%[0-9A-F]?$", "", encoded)  # no half escape at the end
    return metadata


def _storage_error_types() -> tuple[type[BaseException], ...]:
    """OSError, plus boto's errors when boto is loaded (it is whenever S3 is in use)."""
    types: list[type[BaseException]] = [OSError]
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None:
        types += [botocore.BotoCoreError, botocore.ClientError]
    boto3 = sys.modules.get("boto3.exceptions")
    if boto3 is not None:
        types.append(boto3.Boto3Error)
    return tuple(types)


_HINTS = {
    "403": "check the storage credentials and the bucket's permissions",
    "AccessDenied": "check the storage credentials and the bucket's permissions",
    "InvalidAccessKeyId": "check the storage access key",
    "SignatureDoesNotMatch": "check the storage secret key",
}


@contextlib.contextmanager
def storage_errors(key: str, storage: Storage, action: str = "Storing") -> Iterator[None]:
    """Turn a storage backend's failure into :class:`StorageError` naming key and reason."""
    try:
        yield
    except StorageError:
        raise
    except _storage_error_types() as exc:
        error = getattr(exc, "response", None) or {}
        code = str(error.get("Error", {}).get("Code", "")) or None
        status = error.get("ResponseMetadata", {}).get("HTTPStatusCode")
        hint = _HINTS.get(code or "", "")
        bucket = getattr(storage, "bucket_name", None)
        where = f"bucket {bucket!r}" if bucket else type(storage).__name__
        reason = str(exc) if code else f"{type(exc).__name__}: {exc}"
        message = f"{action} {key} in {where} failed: {reason}"
        raise StorageError(
            f"{message} ({hint})" if hint else message, key=key, code=code, status_code=status
        ) from exc


def store_file(
    file: IO[bytes],
    *,
    sha256: str | None = None,
    size: int | None = None,
    storage: Storage | None = None,
    prefix: str | None = None,
    max_pixels: int | None = None,
    metadata: Mapping[str, str] | None = None,
    known: Callable[[str], bool] | None = None,
    info: ImageInfo | None = None,
) -> StoredImage:
    """Verify ``file`` as an image and store it under its content key unless already there.

    ``sha256`` and ``size`` are what the download computed while streaming (both are
    computed here when omitted). Settings fill in ``storage`` (:data:`image_storage`),
    ``prefix`` (``UPLOAD_PREFIX``) and ``max_pixels`` (``MAX_IMAGE_PIXELS``).
    ``metadata`` goes onto the stored object with ``sha256`` (storages that keep object
    metadata, such as S3). ``known(key)`` returning True means the database already records
    that key: a remote storage is not asked at all (no HEAD). ``info`` skips the
    verification: what :func:`~django_modelslab.imaging.verify.decode_image` said of exactly
    these bytes, or of bytes this package encoded itself (thumbnails).
    A failing storage (credentials, missing bucket, unreachable endpoint, full disk) raises
    :class:`StorageError`.
    """
    if sha256 is None or size is None:
        sha256, size = hash_file(file)
    storage = image_storage if storage is None else storage
    prefix = get_setting("UPLOAD_PREFIX") if prefix is None else prefix
    max_pixels = get_setting("MAX_IMAGE_PIXELS") if max_pixels is None else max_pixels
    if info is None:
        info = inspect_image(file, max_pixels=max_pixels)
    key = content_key(sha256, info.extension, prefix)
    validate_file_name(key, allow_relative_path=True)  # a bad UPLOAD_PREFIX ("../") fails here
    object_metadata = {**(metadata or {}), "sha256": sha256}
    content = VerifiedImage(file, info, name=key, size=size, metadata=object_metadata)
    if known is not None and not isinstance(storage, FileSystemStorage) and known(key):
        uploaded = False  # a local disk is asked directly: a stat is cheaper than a query
    else:
        with storage_errors(key, storage):
            uploaded = _put(storage, key, content)
    file.seek(0)
    return StoredImage(
        key=key, sha256=sha256, size=size, info=info, uploaded=uploaded, metadata=object_metadata
    )


def restore_file(
    file: IO[bytes],
    name: str,
    *,
    storage: Storage | None = None,
    metadata: Mapping[str, str] | None = None,
    max_pixels: int | None = None,
) -> StoredImage:
    """Write ``file`` under ``name`` in place of missing or damaged bytes (a repair).

    ``name`` is a content key: the bytes must hash to the digest it names and be a valid
    image, else :class:`InvalidImage` and nothing is written. Unlike :func:`store_file`, an
    object already there is replaced (on the filesystem atomically; elsewhere deleted, then
    written). A failing storage raises :class:`StorageError`.
    """
    sha256, size = hash_file(file)
    claimed = os.path.splitext(os.path.basename(name))[0].lower()
    if sha256 != claimed:
        raise InvalidImage(f"These bytes hash to {sha256}: they are not {name}")
    storage = image_storage if storage is None else storage
    max_pixels = get_setting("MAX_IMAGE_PIXELS") if max_pixels is None else max_pixels
    info = inspect_image(file, max_pixels=max_pixels)
    object_metadata = {**(metadata or {}), "sha256": sha256}
    content = VerifiedImage(file, info, name=name, size=size, metadata=object_metadata)
    with storage_errors(name, storage):
        if isinstance(storage, ContentAddressedStorageMixin):
            storage.replace(name, content)
        else:
            if storage.exists(name):
                storage.delete(name)
            if storage.save(name, content) != name:
                raise StorageError(f"Storing {name} failed: the storage renamed it", key=name)
    file.seek(0)
    return StoredImage(name, sha256, size, info, uploaded=True, metadata=object_metadata)


def _put(storage: Storage, key: str, content: VerifiedImage) -> bool:
    if isinstance(storage, ContentAddressedStorageMixin):
        return storage.put_if_absent(key, content)
    if storage.exists(key):
        return False
    saved = storage.save(key, content)
    if saved != key:  # a renaming storage lost a race: the key holds the same bytes
        storage.delete(saved)
        return False
    return True


def stored_digest(storage: Storage, name: str) -> tuple[str, int] | None:
    """SHA-256 and size of the bytes stored under ``name``, read in chunks.

    None when nothing is stored there; :class:`StorageError` when the storage fails.
    """
    with storage_errors(name, storage, "Reading"):
        try:
            if isinstance(storage, ContentAddressedStorageMixin):
                return storage.digest(name)
            with storage.open(name, "rb") as stored:
                return hash_chunks(stored.chunks(CHUNK))
        except FileNotFoundError:
            return None


def store_thumbnail(
    thumbnail: Thumbnail, *, storage: Storage, prefix: str, folder: str = THUMBNAIL_FOLDER
) -> StoredImage:
    """Store ``thumbnail`` under its own hash, beside the images (stored once).

    Renditions are stored the same way, with ``folder=RENDITION_FOLDER``.
    """
    return store_file(
        thumbnail.file,
        storage=storage,
        prefix=f"{prefix}{folder}",
        info=thumbnail.info,  # our own encoder's output: not verified again
    )
