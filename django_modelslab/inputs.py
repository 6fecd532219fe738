"""Input images (image to image, inpaint, upscale): stored by content, handed to ModelsLab.

An uploaded input is verified with Pillow like every output and stored content-addressed under
``<UPLOAD_PREFIX>inputs/``; a generated image used as an input is referenced by its own key.
ModelsLab gets the stored copy as ``INPUT_IMAGE_TRANSPORT`` says: a time-limited URL it can
reach (S3: a presigned link valid ``INPUT_URL_TTL`` seconds) or the bytes inline as a base64
``data:`` URL. Inline data is never logged: the client elides it from whatever it keeps.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
from typing import IO

from django.core.files.base import ContentFile
from django.core.files.storage import Storage
from PIL import Image

from .conf import get_setting
from .exceptions import InvalidImage, ModelsLabConfigurationError
from .imaging.verify import FORMATS, ImageInfo, inspect_image
from .storage import get_image_storage, signs_urls
from .storage.content import StoredImage, storage_errors, store_file

#: Sub-folder of UPLOAD_PREFIX for input images.
INPUTS_DIR = "inputs/"
_CONTENT_TYPES = {extension: content_type for extension, content_type in FORMATS.values()}
_DATA_URL = re.compile(r"data:(?P<type>[\w.+/-]*)(?P<params>(?:;[^,;]*)*),(?P<data>.*)", re.S)


def input_prefix() -> str:
    """``<UPLOAD_PREFIX>inputs/``: where uploaded inputs are stored."""
    prefix = get_setting("UPLOAD_PREFIX")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return prefix + INPUTS_DIR


def _size_of(file: IO[bytes]) -> int:
    size = getattr(file, "size", None)
    if isinstance(size, int):
        return size
    file.seek(0, os.SEEK_END)
    size = file.tell()
    file.seek(0)
    return size


def check_input(file: IO[bytes]) -> ImageInfo:
    """Verify an input image (format, size, pixels) without storing it; InvalidImage if bad."""
    limit = get_setting("MAX_IMAGE_BYTES")
    size = _size_of(file)
    if size > limit:
        raise InvalidImage(f"The image is {size} bytes, more than MAX_IMAGE_BYTES ({limit}).")
    if size == 0:
        raise InvalidImage("The image is empty.")
    return inspect_image(file, max_pixels=get_setting("MAX_IMAGE_PIXELS"))


def store_input(file: IO[bytes]) -> StoredImage:
    """Verify ``file`` and store it under ``<UPLOAD_PREFIX>inputs/`` by its content."""
    info = check_input(file)  # verified once: store_file does not decode it again
    return store_file(file, prefix=input_prefix(), metadata={"role": "input"}, info=info)


def decode_data_url(text: str) -> ContentFile:
    """Bytes of a ``data:image/...;base64,...`` URL (or bare base64); InvalidImage if not."""
    text = text.strip()
    match = _DATA_URL.fullmatch(text)
    if match is not None:
        if ";base64" not in match["params"].lower():
            raise InvalidImage("Only base64 data: URLs are accepted (data:image/png;base64,...).")
        text = match["data"]
    limit = get_setting("MAX_IMAGE_BYTES")
    if len(text) > limit * 4 // 3 + 4:
        raise InvalidImage(f"The image is more than MAX_IMAGE_BYTES ({limit}) bytes.")
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidImage(
            "Not base64 image data: send a data: URL (data:image/png;base64,...)."
        ) from None
    return ContentFile(data, name="input")


def stored_size(name: str, storage: Storage | None = None) -> tuple[int, int]:
    """Width and height of a stored image, from its header (the pixels are not decoded)."""
    storage = get_image_storage() if storage is None else storage
    with (
        storage_errors(name, storage, "Reading"),
        storage.open(name, "rb") as file,
        Image.open(file) as img,
    ):
        return img.size


# --- what ModelsLab gets --------------------------------------------------------------------


def transport(storage: Storage | None = None) -> str:
    """``"url"`` or ``"base64"``: ``INPUT_IMAGE_TRANSPORT``, with ``"auto"`` resolved."""
    mode = get_setting("INPUT_IMAGE_TRANSPORT")
    if mode != "auto":
        return mode
    storage = get_image_storage() if storage is None else storage
    return "url" if signs_urls(storage) else "base64"


def provider_image(name: str) -> str:
    """The stored image ``name`` as ModelsLab takes it: a URL it can reach, or a data: URL."""
    storage = get_image_storage()
    if transport(storage) == "url":
        return input_url(name, storage)
    return data_url(name, storage)


def input_url(name: str, storage: Storage | None = None) -> str:
    """An absolute URL to the stored image: presigned for ``INPUT_URL_TTL`` s when signed."""
    storage = get_image_storage() if storage is None else storage
    if signs_urls(storage):
        url = storage.url(name, expire=int(get_setting("INPUT_URL_TTL")))  # type: ignore[call-arg]
    else:
        url = storage.url(name)
    if "://" in url:
        return url
    base = get_setting("PUBLIC_BASE_URL")
    if not base:
        raise ModelsLabConfigurationError(
            "MODELSLAB['INPUT_IMAGE_TRANSPORT'] is 'url' but the storage gives relative URLs "
            f"({url}) and PUBLIC_BASE_URL is not set: set it, or use 'base64'."
        )
    return base.rstrip("/") + "/" + url.lstrip("/")


def data_url(name: str, storage: Storage | None = None) -> str:
    """The stored image inline: ``data:<type>;base64,<bytes>``."""
    storage = get_image_storage() if storage is None else storage
    buffer = io.BytesIO()
    with storage_errors(name, storage, "Reading"), storage.open(name, "rb") as file:
        for chunk in file.chunks():
            buffer.write(chunk)
    content_type = _CONTENT_TYPES.get(name.rsplit(".", 1)[-1].lower(), "image/png")
    return f"data:{content_type};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"
