"""Content-addressed image storage: verified bytes stored once, under a name from their hash.

Key = ``<UPLOAD_PREFIX><sha256[:2]>/<sha256>.<ext>``; the extension comes from the format
Pillow finds in the bytes, never from the URL. Storing bytes that are already stored writes
nothing. :func:`store_file` works with any Django storage; the
:class:`ContentAddressedStorageMixin` storages also never rename and skip existing keys when
saved through a ``FileField``.

Storage hook: what gets saved is a :class:`VerifiedImage` (a Django ``File``) carrying
``.info`` (an :class:`ImageInfo`), ``.content_type`` (from the real format) and ``.metadata``
(``sha256`` plus what the caller adds). :class:`ContentAddressedS3Storage` (django-storages'
``S3Storage``) turns these into the object's ``Content-Type``, ``Cache-Control`` and
``x-amz-meta-*`` headers and writes with a conditional ``If-None-Match: *`` PUT. It is
imported lazily: projects on the filesystem storage never import boto3.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote

from django.conf import settings
from django.core.exceptions import SuspiciousFileOperation
from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.files.utils import validate_file_name
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.functional import LazyObject, empty
from PIL import Image, UnidentifiedImageError

from .conf import DEFAULTS, get_setting
from .exceptions import InvalidImage, StorageError

#: Pillow format -> (extension, content type). Nothing else is accepted.
FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}
#: A year, immutable: a content-addressed key never changes meaning (``CACHE_CONTROL``).
CACHE_CONTROL: str = DEFAULTS["CACHE_CONTROL"]
#: PNG and JPEG images with more pixels are checked without decoding them whole, so memory
#: stays bounded (RGBA at this size is 10 MB): see :func:`inspect_image`.
FULL_DECODE_PIXELS = 2_500_000
#: Formats always decoded whole (up to MAX_IMAGE_PIXELS), every frame: nothing short of
#: decoding finds corrupt image data in them.
ALWAYS_DECODED = ("GIF", "WEBP")
#: S3 allows 2 KB of user metadata in all; a prompt (when allowed) is cut to fit.
MAX_PROMPT_METADATA = 1024
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
    metadata: dict[str, str] = field(default_factory=dict)  # what the object was given


class VerifiedImage(File):
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


def inspect_image(file: IO[bytes], *, max_pixels: int) -> ImageInfo:
    """Identify and verify an image; raise :class:`InvalidImage` when it is not acceptable.

    Only PNG, JPEG, WebP and GIF are accepted. The pixel count is checked from the header
    before anything is decoded (Pillow's own ``Image.MAX_IMAGE_PIXELS`` guard applies too).
    Then truncated or corrupt files are refused. Every frame is decoded, one at a time, for
    images up to :data:`FULL_DECODE_PIXELS` and for GIF and WebP of any size (memory grows
    with the pixel count, bounded by ``max_pixels``). PNG and JPEG above that size are
    checked in bounded memory: PNG chunk by chunk (every CRC through ``IEND``) with its
    pixel data inflated piece by piece to exactly the size the header promises, JPEG
    decoded at 1/8 scale (every byte of entropy-coded data is still read, so a truncated
    file fails). The file is rewound.
    """
    return decode_image(file, max_pixels=max_pixels)[0]


def decode_image(file: IO[bytes], *, max_pixels: int) -> tuple[ImageInfo, Image.Image | None]:
    """:func:`inspect_image`, also giving the pixels when it decoded the image whole.

    They are the first frame's, and ``None`` for PNG and JPEG above
    :data:`FULL_DECODE_PIXELS`, where the checks do not decode the whole image. They hold
    nothing open (the file is the caller's, and rewound).
    """
    file.seek(0)
    pixels = None
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
            img.verify()  # PNG: every chunk's CRC, through IEND; others: little or nothing
        file.seek(0)
        if fmt in ALWAYS_DECODED or width * height <= FULL_DECODE_PIXELS:
            pixels = _decode_whole(file, fmt)
        else:
            _check_large_image(file, fmt, width, height)
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
    return image_info(fmt, width, height), pixels


def _decode_whole(file: IO[bytes], fmt: str) -> Image.Image:
    """Decode every frame, one at a time (verify() does not catch corrupt JPEG, WebP or GIF
    data); the first frame's pixels are returned."""
    with Image.open(file, formats=[fmt]) as image:  # leaving lets go of the file, not the pixels
        image.load()
        frames = getattr(image, "n_frames", 1)
        if frames > 1:
            for frame in range(1, frames):
                image.seek(frame)
                image.load()
            image.seek(0)
            image.load()
    return image


def _check_large_image(file: IO[bytes], fmt: str, width: int, height: int) -> None:
    """Validate an image too large to decode whole (memory stays a few MB)."""
    if fmt == "JPEG":
        with Image.open(file, formats=[fmt]) as img:
            img.draft(img.mode, (-(-width // 8), -(-height // 8)))
            img.load()
    elif fmt == "PNG":  # verify() has checked every chunk's CRC; now the pixel data
        _check_png_data(file, width, height)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2))
_ADAM7 += ((0, 1, 1, 2),)


def _check_png_data(file: IO[bytes], width: int, height: int) -> None:
    """Inflate the IDAT stream in bounded pieces: it must end, with exactly the bytes the
    header promises (zlib checks its Adler-32). Nothing is kept but counters."""
    file.seek(8)
    length, kind = struct.unpack(">I4s", file.read(8))
    ihdr = file.read(length)
    if kind != b"IHDR" or len(ihdr) < 13:
        raise InvalidImage("Unreadable or corrupt image: PNG header missing")
    depth, color, interlace = ihdr[8], ihdr[9], ihdr[12]
    bits = _PNG_CHANNELS.get(color, 0) * depth
    passes = _ADAM7 if interlace else ((0, 0, 1, 1),)
    expected = 0
    for x0, y0, dx, dy in passes:
        columns, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        if columns > 0 and rows > 0:
            expected += rows * (1 + -(-columns * bits // 8))
    file.seek(8 + 8 + length + 4)
    inflate = zlib.decompressobj()
    produced = 0
    while header := file.read(8):
        length, kind = struct.unpack(">I4s", header)
        if kind == b"IEND":
            break
        if kind != b"IDAT":
            file.seek(length + 4, os.SEEK_CUR)
            continue
        remaining = length
        while remaining:
            data = file.read(min(remaining, _CHUNK))
            remaining -= len(data)
            while data and not inflate.eof:
                produced += len(inflate.decompress(data, _CHUNK))
                data = inflate.unconsumed_tail
        file.seek(4, os.SEEK_CUR)
    while not inflate.eof and (out := inflate.decompress(b"", _CHUNK)):
        produced += len(out)
    if not inflate.eof or produced != expected:
        raise InvalidImage(
            f"Unreadable or corrupt image: PNG pixel data is {produced} bytes, {expected} expected"
        )


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


def image_info(fmt: str, width: int, height: int) -> ImageInfo:
    """What :func:`inspect_image` would say of an image this package just encoded."""
    extension, content_type = FORMATS[fmt]
    return ImageInfo(fmt, extension, content_type, width, height)


def _hash_file(file: IO[bytes]) -> tuple[str, int]:
    file.seek(0)
    digest = hashlib.sha256()
    size = 0
    while chunk := file.read(_CHUNK):
        digest.update(chunk)
        size += len(chunk)
    file.seek(0)
    return digest.hexdigest(), size


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
def _storage_errors(key: str, storage: Storage, action: str = "Storing") -> Iterator[None]:
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
    verification: what :func:`decode_image` said of exactly these bytes, or of bytes this
    package encoded itself (thumbnails).
    A failing storage (credentials, missing bucket, unreachable endpoint, full disk) raises
    :class:`StorageError`.
    """
    if sha256 is None or size is None:
        sha256, size = _hash_file(file)
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
        with _storage_errors(key, storage):
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
    sha256, size = _hash_file(file)
    claimed = os.path.splitext(os.path.basename(name))[0].lower()
    if sha256 != claimed:
        raise InvalidImage(f"These bytes hash to {sha256}: they are not {name}")
    storage = image_storage if storage is None else storage
    max_pixels = get_setting("MAX_IMAGE_PIXELS") if max_pixels is None else max_pixels
    info = inspect_image(file, max_pixels=max_pixels)
    object_metadata = {**(metadata or {}), "sha256": sha256}
    content = VerifiedImage(file, info, name=name, size=size, metadata=object_metadata)
    with _storage_errors(name, storage):
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
    with _storage_errors(name, storage, "Reading"):
        try:
            if isinstance(storage, ContentAddressedStorageMixin):
                return storage.digest(name)
            with storage.open(name, "rb") as stored:
                return _hash_chunks(stored.chunks(_CHUNK))
        except FileNotFoundError:
            return None


def _hash_chunks(chunks: Any) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    for chunk in chunks:
        digest.update(chunk)
        size += len(chunk)
    return digest.hexdigest(), size


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

    def _save(self, name: str, content: File) -> str:
        self.put_if_absent(name, content)
        return name

    def put_if_absent(self, name: str, content: File) -> bool:
        """Store ``content`` under ``name`` unless present; True when bytes were written."""
        if self.exists(name):  # type: ignore[attr-defined]
            return False
        super()._save(name, content)  # type: ignore[misc]
        return True

    def replace(self, name: str, content: File) -> None:
        """Store ``content`` under ``name`` even when something is there (a repair)."""
        if self.exists(name):  # type: ignore[attr-defined]
            self.delete(name)  # type: ignore[attr-defined]
        super()._save(name, content)  # type: ignore[misc]

    def digest(self, name: str) -> tuple[str, int]:
        """SHA-256 and size of the stored bytes (``FileNotFoundError`` when absent)."""
        with self.open(name, "rb") as stored:  # type: ignore[attr-defined]
            return _hash_chunks(stored.chunks(_CHUNK))


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
        tmp_path = self._write_temporary(full_path, content)
        try:
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

    def replace(self, name: str, content: File) -> None:
        """Atomically put ``content`` in place of whatever ``name`` holds (a repair)."""
        full_path = self.path(name)
        tmp_path = self._write_temporary(full_path, content)
        try:
            os.replace(tmp_path, full_path)
            self._ensure_location_group_id(full_path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)

    def _write_temporary(self, full_path: str, content: File) -> str:
        """``content`` in a new temporary file beside ``full_path``, synced; its path."""
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
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_path)
            raise
        return tmp_path

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


#: Multipart settings for S3 uploads: images up to 64 MB go in one PUT streamed straight
#: from the spooled file; larger ones go up in 5 MiB parts, one at a time, one read ahead
#: (boto3 copies each part into memory: ~13 MB at most, measured).
S3_TRANSFER: dict[str, Any] = {
    "multipart_threshold": 64 * 1024 * 1024,
    "multipart_chunksize": 5 * 1024 * 1024,
    "max_concurrency": 1,
    "max_in_memory_upload_chunks": 1,
}


def s3_transfer_config(**overrides: Any) -> Any:
    """The bounded-memory ``TransferConfig`` S3 uploads use unless ``transfer_config`` is set
    (``overrides`` replace :data:`S3_TRANSFER` entries)."""
    from boto3.s3.transfer import TransferConfig

    options = {**S3_TRANSFER, **overrides}
    in_memory = options.pop("max_in_memory_upload_chunks")
    config = TransferConfig(**options)
    config.max_in_memory_upload_chunks = in_memory  # not a boto3 argument, but honoured
    return config


def _if_none_match(params: dict[str, Any], **kwargs: Any) -> None:
    params.setdefault("IfNoneMatch", "*")


#: While :meth:`ContentAddressedS3Storage.url` signs, the time it signs as (this thread).
_signing = threading.local()
#: Where the signing time travels to the signer, in botocore's request context.
_SIGNED_AT = "modelslab_signed_at"
#: botocore's presigning signers -> ours, which sign as of ``_SIGNED_AT`` (registered in
#: ``botocore.auth.AUTH_TYPE_MAPS`` when the S3 storage is built). SigV4 ("v4" is what
#: botocore's own hooks turn into S3's "s3v4"), or SigV2 when the client is configured
#: with ``signature_version="s3"``.
_WINDOWED_SIGNERS = {
    "s3-query": "modelslab-window-s3-query",
    "s3v4-query": "modelslab-window-s3v4-query",
    "v4-query": "modelslab-window-s3v4-query",
}


def signing_window_start(window: int, now: float | None = None) -> int:
    """The start of the ``window``-second period ``now`` falls in (epoch seconds)."""
    now = time.time() if now is None else now
    return int(now) // window * window


def _choose_windowed_signer(
    signature_version: Any, context: dict[str, Any], **kwargs: Any
) -> str | None:
    """botocore ``choose-signer`` hook: while :meth:`url` signs, use a windowed signer."""
    signed_at = getattr(_signing, "at", None)
    windowed = _WINDOWED_SIGNERS.get(signature_version) if signed_at is not None else None
    if windowed is None:
        return None  # anything else (S3 Express, a request being sent) signs as usual
    context[_SIGNED_AT] = signed_at
    return windowed


def _register_windowed_signers() -> None:
    """Add signers that take their time from the request context to botocore's table."""
    from botocore import auth

    class WindowedS3SigV4QueryAuth(auth.S3SigV4QueryAuth):
        def _modify_request_before_signing(self, request: Any) -> None:
            signed_at = request.context.get(_SIGNED_AT)
            if signed_at is not None:  # everything after this reads the timestamp from here
                stamp = time.strftime(auth.SIGV4_TIMESTAMP, time.gmtime(signed_at))
                request.context["timestamp"] = stamp
            super()._modify_request_before_signing(request)

    class WindowedHmacV1QueryAuth(auth.HmacV1QueryAuth):
        _signed_at: int | None = None

        def add_auth(self, request: Any) -> None:
            self._signed_at = request.context.get(_SIGNED_AT)
            super().add_auth(request)

        def _get_date(self) -> str:  # SigV2's Expires: an absolute time
            if self._signed_at is None:
                return super()._get_date()
            return str(self._signed_at + int(self._expires))

    auth.AUTH_TYPE_MAPS.setdefault(_WINDOWED_SIGNERS["s3-query"], WindowedHmacV1QueryAuth)
    auth.AUTH_TYPE_MAPS.setdefault(_WINDOWED_SIGNERS["s3v4-query"], WindowedS3SigV4QueryAuth)


def _build_s3_storage() -> type[Storage]:
    """Define :class:`ContentAddressedS3Storage` (imports boto3 and django-storages)."""
    from botocore.exceptions import ClientError
    from storages.backends.s3 import S3Storage
    from storages.utils import clean_name

    _register_windowed_signers()

    class ContentAddressedS3Storage(ContentAddressedStorageMixin, S3Storage):
        """django-storages' ``S3Storage``, content-addressed: keys are final, never overwritten.

        Options are ``S3Storage``'s (``bucket_name``, ``endpoint_url``, ``custom_domain``,
        ``querystring_auth``, ``default_acl``, ``location``, ``object_parameters`` …) plus
        ``conditional_writes`` (default True): write with ``If-None-Match: *`` so two
        workers storing the same key at once leave one object; turn it off for an S3
        clone that rejects the header. Every object gets the decoded format's
        ``ContentType``, ``MODELSLAB["CACHE_CONTROL"]`` (unless ``object_parameters`` sets
        ``CacheControl``) and the metadata :func:`store_file` passes (``sha256`` …).

        Presigned URLs (``url(name)``, no ``expire``) are signed as of the start of the
        current ``MODELSLAB["URL_SIGNING_WINDOW"]``-second window and valid
        ``querystring_expire`` seconds past its end: within a window every call (in any
        process) gives the same URL, so browsers and CDNs can cache the image.
        """

        def get_default_settings(self) -> dict[str, Any]:
            defaults = super().get_default_settings()
            defaults["conditional_writes"] = True
            if defaults["transfer_config"] is None:
                defaults["transfer_config"] = s3_transfer_config()
            return defaults

        @property
        def connection(self) -> Any:
            new = getattr(self._connections, "connection", None) is None
            connection = super().connection
            if new:
                events = connection.meta.client.meta.events
                events.register("choose-signer.s3.GetObject", _choose_windowed_signer)
            if new and self.conditional_writes:
                for operation in ("PutObject", "CompleteMultipartUpload"):
                    events.register(f"before-parameter-build.s3.{operation}", _if_none_match)
            return connection

        def url(
            self,
            name: str,
            parameters: dict[str, Any] | None = None,
            expire: int | None = None,
            http_method: str | None = None,
        ) -> str:
            """A presigned URL that stays the same within a ``URL_SIGNING_WINDOW``.

            An explicit ``expire`` (input images sent to ModelsLab) signs as of now, as
            django-storages does; so does a window of 0. Unsigned and ``custom_domain`` URLs
            are django-storages' own.
            """
            window = int(get_setting("URL_SIGNING_WINDOW"))
            if expire is not None or not window or not self.querystring_auth or self.custom_domain:
                return super().url(name, parameters, expire, http_method)
            _signing.at = signing_window_start(window)
            try:
                return super().url(name, parameters, self.querystring_expire + window, http_method)
            finally:
                _signing.at = None

        def get_object_parameters(self, name: str) -> dict[str, Any]:
            params = super().get_object_parameters(name)
            cache_control = get_setting("CACHE_CONTROL")
            if cache_control:
                params.setdefault("CacheControl", cache_control)
            return params

        def _get_write_parameters(self, name: str, content: Any = None) -> dict[str, Any]:
            params = super()._get_write_parameters(name, content)
            if isinstance(content, VerifiedImage):
                params["ContentType"] = content.content_type
                params["Metadata"] = {**params.get("Metadata", {}), **content.metadata}
            return params

        def put_if_absent(self, name: str, content: File) -> bool:
            """HEAD, then a conditional PUT; losing a race to the same key is not an error."""
            try:
                return super().put_if_absent(name, content)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code in ("PreconditionFailed", "412"):
                    return False  # another writer stored these bytes first
                if code in ("ConditionalRequestConflict", "409") and self.exists(name):
                    return False
                raise

        def digest(self, name: str) -> tuple[str, int]:
            """Stream the object's body through SHA-256 (never the whole object in memory)."""
            key = self._normalize_name(clean_name(name))
            try:
                response = self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=key)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    raise FileNotFoundError(f"No object {key!r} in {self.bucket_name}") from exc
                raise
            body = response["Body"]
            try:
                return _hash_chunks(body.iter_chunks(_CHUNK))
            finally:
                body.close()

    ContentAddressedS3Storage.__module__ = __name__
    ContentAddressedS3Storage.__qualname__ = "ContentAddressedS3Storage"
    return ContentAddressedS3Storage


_lazy_lock = threading.Lock()


def __getattr__(name: str) -> Any:
    """``ContentAddressedS3Storage`` is built on first access, so boto3 loads only for S3."""
    if name == "ContentAddressedS3Storage":
        with _lazy_lock:
            if name not in globals():
                globals()[name] = _build_s3_storage()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
