"""Small derived images for lists: made once from the stored bytes, content-addressed too."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO

from django.core.files.storage import Storage
from PIL import Image, ImageOps

from .storage import ImageInfo, StoredImage, image_info, store_file

THUMBNAIL_FOLDER = "thumbs/"


@dataclass(frozen=True)
class Thumbnail:
    """An encoded thumbnail, not yet stored."""

    file: IO[bytes]
    info: ImageInfo


def render_thumbnail(source: IO[bytes] | Image.Image, *, size: int) -> Thumbnail:
    """A WebP no larger than ``size`` px on its longest side, upright (EXIF orientation).

    ``source`` is a verified image: the pixels :func:`.storage.decode_image` gave (not
    decoded again), or its bytes, for images too large to have been decoded whole (a JPEG is
    then decoded at a reduced scale). The same source always gives the same bytes.
    """
    if isinstance(source, Image.Image):
        image = ImageOps.exif_transpose(source)
    else:
        source.seek(0)
        with Image.open(source) as opened:
            opened.draft("RGB", (size, size))
            image = ImageOps.exif_transpose(opened)
        source.seek(0)
    # reducing_gap=1: box-reduce by the whole factor, then Lanczos for what is left: for a
    # list thumbnail as good as Lanczos all the way, at a fraction of the time.
    image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=1.0)
    mode = "RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB"
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, "WEBP", quality=80, method=0)
    buffer.seek(0)
    return Thumbnail(buffer, image_info("WEBP", *image.size))


def store_thumbnail(thumbnail: Thumbnail, *, storage: Storage, prefix: str) -> StoredImage:
    """Store ``thumbnail`` under its own hash, beside the images (stored once)."""
    return store_file(
        thumbnail.file,
        storage=storage,
        prefix=f"{prefix}{THUMBNAIL_FOLDER}",
        info=thumbnail.info,  # our own encoder's output: not verified again
    )
