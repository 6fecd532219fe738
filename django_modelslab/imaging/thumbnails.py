"""Small derived images for lists, rendered from a verified image (stored by
:func:`django_modelslab.storage.content.store_thumbnail`)."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import IO

from PIL import Image, ImageOps

from .verify import ImageInfo, image_info


@dataclass(frozen=True)
class Thumbnail:
    """An encoded thumbnail, not yet stored."""

    file: IO[bytes]
    info: ImageInfo


def render_thumbnail(source: IO[bytes] | Image.Image, *, size: int) -> Thumbnail:
    """A WebP no larger than ``size`` px on its longest side, upright (EXIF orientation).

    ``source`` is a verified image: the pixels :func:`.verify.decode_image` gave (not
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
