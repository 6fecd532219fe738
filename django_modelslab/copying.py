"""Copy a job's output URLs into permanent storage: download, tag, verify, store, thumbnail.

No models and no database here, so the async driver can run a copy on any worker thread
while Django's sync thread does the next request's database work.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import IO, Any

import httpx

from .conf import get_setting, get_settings
from .downloads import Download, download, make_client
from .exceptions import StorageError
from .imaging.credentials import (
    Credentials,
    Ingredient,
    load_credentials,
    sign_derived,
    sign_generated,
    sniff_mime,
)
from .imaging.thumbnails import Thumbnail, render_thumbnail
from .imaging.verify import ImageInfo, decode_image
from .provenance import add_provenance
from .storage import get_image_storage
from .storage.content import (
    StoredImage,
    image_metadata,
    storage_errors,
    store_file,
    store_thumbnail,
)

logger = logging.getLogger("django_modelslab.copying")

#: ``known(sha256, key)``: True when the database already records that image.
RecordedCheck = Callable[[str, str], bool]


@dataclass(frozen=True)
class CopyOutputs:
    """Copy ``urls`` (one job's outputs) into storage, in order: a step of the state machine."""

    urls: tuple[str, ...]
    request_id: int
    model_id: str
    prompt: str
    input_name: str = ""  # the stored input image (img2img, inpaint, upscale), if any


def copy_outputs(
    op: CopyOutputs, *, known: RecordedCheck | None = None
) -> list[tuple[StoredImage, StoredImage]]:
    """Store every output of ``op``; returns each image with its thumbnail.

    ``known`` lets a remote storage skip its existence check for images already recorded.
    """
    with make_client() as http:
        return [_copy_output(op, url, http, known) for url in op.urls]


def _copy_output(
    op: CopyOutputs, url: str, http: httpx.Client, known: RecordedCheck | None
) -> tuple[StoredImage, StoredImage]:
    conf = get_settings()
    storage = get_image_storage()
    credentials = load_credentials(conf["C2PA"])
    with (
        _download(url, conf, http) as fetched,
        _with_provenance(op, fetched) as tagged,
        _with_credentials(op, tagged, credentials) as (file, sha256, size),
        ExitStack() as stack,
    ):
        info, thumbnail = _verify_with_thumbnail(file, conf)
        if credentials is not None:
            thumbnail = sign_thumbnail(thumbnail, file, credentials, stack)
        image = store_file(
            file,
            sha256=sha256,
            size=size,
            storage=storage,
            prefix=conf["UPLOAD_PREFIX"],
            metadata=image_metadata(
                request_id=op.request_id, model_id=op.model_id, prompt=op.prompt
            ),
            known=(lambda key: known(sha256, key)) if known is not None else None,
            info=info,
        )
        stored_thumbnail = store_thumbnail(thumbnail, storage=storage, prefix=conf["UPLOAD_PREFIX"])
    return image, stored_thumbnail


@contextmanager
def fetch_again(
    url: str, *, request_id: int, model_id: str, prompt: str
) -> Iterator[tuple[IO[bytes], str, int]]:
    """Download ``url`` and tag it as a copy did: the bytes (and their SHA-256 and size) a
    copy stores, for putting back a stored image that was lost or damaged."""
    conf = get_settings()
    op = CopyOutputs((url,), request_id, model_id, prompt)
    with (
        _download(url, conf) as fetched,
        _with_provenance(op, fetched) as stored,
    ):
        yield stored


def _download(url: str, conf: dict[str, Any], client: httpx.Client | None = None) -> Download:
    """``url`` downloaded within the download settings of ``conf``."""
    return download(
        url,
        allowed_hosts=conf["ALLOWED_DOWNLOAD_HOSTS"],
        max_bytes=conf["MAX_IMAGE_BYTES"],
        timeout=conf["DOWNLOAD_TIMEOUT"],
        connect_timeout=conf["CONNECT_TIMEOUT"],
        client=client,
    )


def _verify_with_thumbnail(file: IO[bytes], conf: dict[str, Any]) -> tuple[ImageInfo, Thumbnail]:
    """Verify the bytes to store, and render their thumbnail from the same decode."""
    info, pixels = decode_image(file, max_pixels=conf["MAX_IMAGE_PIXELS"])
    # Checked without a whole decode (very large), the thumbnail reads the bytes again.
    return info, render_thumbnail(file if pixels is None else pixels, size=conf["THUMBNAIL_SIZE"])


def sign_thumbnail(
    thumbnail: Thumbnail, original: IO[bytes], credentials: Credentials, stack: ExitStack
) -> Thumbnail:
    """``thumbnail`` signed as a rendition of ``original`` (closed when ``stack`` is)."""
    signed = stack.enter_context(
        sign_derived(
            thumbnail.file,
            credentials,
            title=f"thumbnail.{thumbnail.info.extension}",
            parent=Ingredient(original, title="original"),
        )
    )
    return Thumbnail(signed.file, thumbnail.info)


@contextmanager
def _with_credentials(
    op: CopyOutputs, stored: tuple[IO[bytes], str, int], credentials: Credentials | None
) -> Iterator[tuple[IO[bytes], str, int]]:
    """The bytes to store: ``stored`` with a signed C2PA manifest (C2PA), else as they are.

    An input image (img2img, inpaint, upscale) is the manifest's parent ingredient.
    """
    if credentials is None:
        yield stored
        return
    file = stored[0]
    mime = sniff_mime(file)
    extension = (mime or "image/png").rsplit("/", 1)[-1].replace("jpeg", "jpg")
    prompt = op.prompt if credentials.include_prompt else None
    with ExitStack() as stack:
        parent = None
        if op.input_name:
            parent = _input_ingredient(op.input_name, stack)
        signed = stack.enter_context(
            sign_generated(
                file,
                credentials,
                mime=mime,
                title=f"modelslab-{op.request_id}.{extension}",
                model_id=op.model_id,
                prompt=prompt,
                parent=parent,
            )
        )
        yield signed.file, signed.sha256, signed.size


def _input_ingredient(name: str, stack: ExitStack) -> Ingredient | None:
    """The stored input image ``name`` as an ingredient; None (logged) when it is gone."""
    storage = get_image_storage()
    try:
        with storage_errors(name, storage, "Reading"):
            file = stack.enter_context(storage.open(name, "rb"))
    except (StorageError, FileNotFoundError) as exc:
        logger.warning("The input image is not recorded in the C2PA manifest: %s", exc)
        return None
    return Ingredient(file, title=name.rsplit("/", 1)[-1])


@contextmanager
def _with_provenance(op: CopyOutputs, fetched: Download) -> Iterator[tuple[IO[bytes], str, int]]:
    """The bytes to store: ``fetched`` with provenance XMP in it (PROVENANCE), else as is."""
    tagged = None
    if get_setting("PROVENANCE"):
        include_prompt = get_setting("PROVENANCE_INCLUDE_PROMPT")
        tagged = add_provenance(
            fetched.file, model_id=op.model_id, prompt=op.prompt if include_prompt else None
        )
    if tagged is None:
        yield fetched.file, fetched.sha256, fetched.size
        return
    with tagged:
        yield tagged.file, tagged.sha256, tagged.size
