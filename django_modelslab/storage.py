"""Content-addressed image storage: verified bytes stored once, under a name from their hash.

Key = ``<UPLOAD_PREFIX><sha256[:2]>/<sha256>.<ext>``; the extension comes from the format
Pillow finds in the bytes, never from the URL. Storing bytes that are already stored writes
nothing. :func:`store_file` works with any Django storage; the
:class:`ContentAddressedStorageMixin` storages also never rename and skip existing keys when
saved through a ``FileField``.

Storage hook: what gets saved is a :class:`VerifiedImage` (a Django ``File``) carrying
``.info`` (an :class:`ImageInfo`) and ``.content_type`` (from the real format). django-storages'
``S3Storage`` already reads ``content.content_type`` for ``ContentType``; an S3 subclass adds
``Cache-Control`` in ``get_object_parameters`` and may override :meth:`put_if_absent` (for
example with a conditional ``IfNoneMatch="*"`` PUT).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import struct
from dataclasses import dataclass
from typing import IO, Any

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.files.utils import validate_file_name
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.functional import LazyObject, empty
from PIL import Image, UnidentifiedImageError

from .conf import get_setting
from .exceptions import InvalidImage

#: Pillow format -> (extension, content type). Nothing else is accepted.
FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}
#: A year, immutable: a content-addressed key never changes meaning.
CACHE_CONTROL = "public, max-age=31536000, immutable"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ImageInfo:
    """What Pillow found in the bytes."""

    format: str  # "PNG", "JPEG", "WEBP", "GIF"
    extension: str  # "png", "jpg", "webp", "gif"
    content_type: str
    width: int
    height: int


@dataclass(frozen=True)
class StoredImage:
    """The result of :func:`store_file`: where the bytes live and what they are."""

    key: str
    sha256: str
    size: int
    info: ImageInfo
    uploaded: bool  # False when the key was already stored (nothing written)


class VerifiedImage(File):
    """A file whose bytes were checked by :func:`inspect_image` (what storages receive)."""

    def __init__(
        self,
        file: IO[bytes],
        info: ImageInfo,
        name: str | None = None,
        size: int | None = None,
    ) -> None:
        super().__init__(file, name)
        self.info = info
        self.content_type = info.content_type
        if size is not None:
            self.size = size


def inspect_image(file: IO[bytes], *, max_pixels: int) -> ImageInfo:
    """Identify and verify an image; raise :class:`InvalidImage` when it is not acceptable.

    Only PNG, JPEG, WebP and GIF are accepted. The pixel count is checked from the header
    before anything is decoded (Pillow's own ``Image.MAX_IMAGE_PIXELS`` guard applies too),
    then the image is verified and fully decoded, so truncated files are refused. The file
    is rewound.
    """
    file.seek(0)
    try:
        with Image.open(file, formats=list(FORMATS)) as img:
            fmt = img.format or ""
            if fmt == "MPO":  # a JPEG with extra frames (phone cameras): still a JPEG
                fmt = "JPEG"
            width, height = img.size
            if fmt not in FORMATS:
                raise InvalidImage(f"Unsupported image format {fmt or 'unknown'}")
            if width <= 0 or height <= 0:
                raise InvalidImage(f"Invalid image size {width}x{height}")
            if width * height > max_pixels:
                raise _bomb(width * height, max_pixels, f"{width}x{height} ")
            img.verify()
        file.seek(0)
        with Image.open(file, formats=[fmt]) as img:
            img.load()  # decode: verify() does not catch truncated JPEG/WebP data
    except InvalidImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidImage(f"Image refused as a possible decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImage("Not a PNG, JPEG, WebP or GIF image") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error) as exc:
        raise InvalidImage(f"Unreadable or corrupt image: {exc}") from exc
    finally:
        file.seek(0)
    extension, content_type = FORMATS[fmt]
    return ImageInfo(fmt, extension, content_type, width, height)


def _bomb(pixels: int, max_pixels: int, size: str = "") -> InvalidImage:
    return InvalidImage(
        f"Image {size}has {pixels} pixels, more than MAX_IMAGE_PIXELS ({max_pixels}): "
        "refused as a possible decompression bomb"
    )


def content_key(sha256: str, extension: str, prefix: str) -> str:
    """``<prefix><sha256[:2]>/<sha256>.<extension>``; a non-empty prefix ends with ``/``."""
    sha256 = sha256.lower()
    if not _SHA256_RE.fullmatch(sha256):
        raise ValueError(f"Not a SHA-256 hex digest: {sha256!r}")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return f"{prefix}{sha256[:2]}/{sha256}.{extension}"


def _hash_file(file: IO[bytes]) -> tuple[str, int]:
    file.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := file.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    file.seek(0)
    return digest.hexdigest(), size


def store_file(
    file: IO[bytes],
    *,
    sha256: str | None = None,
    size: int | None = None,
    storage: Storage | None = None,
    prefix: str | None = None,
    max_pixels: int | None = None,
) -> StoredImage:
    """Verify ``file`` as an image and store it under its content key unless already there.

    ``sha256`` and ``size`` are what the download computed while streaming (both are
    computed here when omitted). Settings fill in ``storage`` (:data:`image_storage`),
    ``prefix`` (``UPLOAD_PREFIX``) and ``max_pixels`` (``MAX_IMAGE_PIXELS``).
    """
    if sha256 is None or size is None:
        sha256, size = _hash_file(file)
    storage = image_storage if storage is None else storage
    prefix = get_setting("UPLOAD_PREFIX") if prefix is None else prefix
    max_pixels = get_setting("MAX_IMAGE_PIXELS") if max_pixels is None else max_pixels
    info = inspect_image(file, max_pixels=max_pixels)
    key = content_key(sha256, info.extension, prefix)
    validate_file_name(key, allow_relative_path=True)  # a bad UPLOAD_PREFIX ("../") fails here
    content = VerifiedImage(file, info, name=key, size=size)
    if isinstance(storage, ContentAddressedStorageMixin):
        uploaded = storage.put_if_absent(key, content)
    elif storage.exists(key):
        uploaded = False
    else:
        saved = storage.save(key, content)
        uploaded = True
        if saved != key:  # a renaming storage lost a race: the key holds the same bytes
            storage.delete(saved)
            uploaded = False
    file.seek(0)
    return StoredImage(key=key, sha256=sha256, size=size, info=info, uploaded=uploaded)


class ContentAddressedStorageMixin:
    """Make any Django storage content-addressed: names are final, existing keys kept.

    ``get_available_name`` never adds a random suffix, and saving a name that already exists
    writes nothing and returns that name. Subclasses write new keys in :meth:`put_if_absent`.
    """

    cache_control = CACHE_CONTROL

    def get_available_name(self, name: str, max_length: int | None = None) -> str:
        name = str(name).replace("\\", "/")
        if max_length is not None and len(name) > max_length:
            raise SuspiciousFileOperation(
                f"Content-addressed name {name!r} is longer than the field's max_length "
                f"({max_length})"
            )
        return name

    def _save(self, name: str, content: File) -> str:
        self.put_if_absent(name, content)
        return name

    def put_if_absent(self, name: str, content: File) -> bool:
        """Store ``content`` under ``name`` unless present; True when bytes were written."""
        if self.exists(name):  # type: ignore[attr-defined]
            return False
        super()._save(name, content)  # type: ignore[misc]
        return True


class ContentAddressedFileSystemStorage(ContentAddressedStorageMixin, FileSystemStorage):
    """Content-addressed local storage with atomic, race-safe writes.

    Bytes go to a temporary file in the target directory, which is then hard-linked into
    place: readers never see a partial file, and when two writers store the same key at
    once the first link wins and the other simply drops its temporary file.
    """

    def put_if_absent(self, name: str, content: File) -> bool:
        full_path = self.path(name)
        if os.path.exists(full_path):
            return False
        directory = os.path.dirname(full_path)
        self._make_directories(directory)
        tmp_path = os.path.join(directory, f".tmp-{secrets.token_hex(8)}.part")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        fd = os.open(tmp_path, flags, 0o666)  # the umask applies, as in FileSystemStorage
        try:
            with os.fdopen(fd, "wb") as tmp:
                for chunk in content.chunks():
                    tmp.write(chunk if isinstance(chunk, bytes) else chunk.encode())
                tmp.flush()
                os.fsync(tmp.fileno())
            if self.file_permissions_mode is not None:
                os.chmod(tmp_path, self.file_permissions_mode)
            try:
                os.link(tmp_path, full_path)
            except FileExistsError:
                return False  # someone stored the same bytes first: keep theirs
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
                    raise
                os.replace(tmp_path, full_path)  # no hard links here: same bytes, atomic
            self._ensure_location_group_id(full_path)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

    def _make_directories(self, directory: str) -> None:
        mode = self.directory_permissions_mode
        missing = []
        path = directory
        while path and not os.path.isdir(path):
            missing.append(path)
            parent = os.path.dirname(path)
            if parent == path:
                break
            path = parent
        for path in reversed(missing):
            try:
                os.mkdir(path)
            except FileExistsError:
                if not os.path.isdir(path):
                    raise FileExistsError(f"{path} exists and is not a directory.") from None
                continue
            if mode is not None:
                os.chmod(path, mode)


def get_image_storage() -> Storage:
    """``storages[MODELSLAB["STORAGE"]]``, or ``storages["default"]`` when that alias is unset."""
    alias = get_setting("STORAGE")
    if alias in getattr(settings, "STORAGES", {}):
        return storages[alias]
    return storages["default"]


class ImageStorage(LazyObject):
    """Resolves :func:`get_image_storage` on first use (like ``default_storage``)."""

    def _setup(self) -> None:
        self._wrapped = get_image_storage()


image_storage: Any = ImageStorage()


def field_storage() -> Storage:
    """For ``FileField(storage=field_storage)``: migrations reference this, not a backend."""
    return image_storage


@receiver(setting_changed)
def _reset_image_storage(*, setting: str, **kwargs: Any) -> None:
    if setting in ("STORAGES", "MODELSLAB", "MEDIA_ROOT", "MEDIA_URL"):
        image_storage._wrapped = empty
