"""Renditions' pixels: an original cropped and resized to a :class:`~django_modelslab.specs.Plan`
and encoded, in bounded memory (stored by :mod:`django_modelslab.renditions`)."""

from __future__ import annotations

import io
from typing import IO

from PIL import Image, features

from ..exceptions import UnsupportedRenditionFormat
from ..specs import Plan
from .thumbnails import Thumbnail
from .verify import ImageInfo

#: Output format -> (extension, content type, Pillow save options). Fixed options: the same
#: original and spec always give the same bytes (and so the same content key).
ENCODERS: dict[str, tuple[str, str, dict[str, object]]] = {
    "JPEG": ("jpg", "image/jpeg", {"quality": 85, "optimize": False, "progressive": False}),
    "PNG": ("png", "image/png", {"compress_level": 6}),
    "WEBP": ("webp", "image/webp", {"quality": 80, "method": 4}),
    "AVIF": ("avif", "image/avif", {"quality": 60, "speed": 8}),
}
#: An original's format -> the rendition's when the spec names none.
SAME_FORMAT = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WEBP", "GIF": "PNG"}


def output_format(original_format: str, asked: str | None) -> str:
    """Pillow's name for the rendition's format: the one asked, else the original's."""
    fmt = asked.upper() if asked else SAME_FORMAT.get(original_format.upper(), "PNG")
    if fmt == "AVIF" and not features.check("avif"):
        raise UnsupportedRenditionFormat(
            "This Pillow cannot write AVIF (built without libavif): ask for format-webp."
        )
    return fmt


def render_rendition(source: IO[bytes], plan: Plan, fmt: str) -> Thumbnail:
    """Crop and resize the image in ``source`` to ``plan``; encode it as ``fmt``.

    Memory stays bounded: a JPEG is decoded at a reduced scale (``draft``) and every image
    is box-reduced by the whole factor before Lanczos resamples what is left
    (``reducing_gap``), as the thumbnails are. Pixels are taken as stored (the plan is made
    from the stored width and height; generated images carry no EXIF rotation). The result
    carries its :class:`ImageInfo`.
    """
    source.seek(0)
    with Image.open(source) as opened:
        ow, oh = opened.size
        crop_w, crop_h = plan.box[2] - plan.box[0], plan.box[3] - plan.box[1]
        # draft() may shrink a JPEG by 1/2, 1/4, 1/8 while decoding: ask for enough pixels
        # that the cropped part stays at least the output's size.
        scale = max(plan.width / crop_w, plan.height / crop_h)
        opened.draft(opened.mode, (max(1, round(ow * scale)), max(1, round(oh * scale))))
        factor = ow / opened.size[0]
        opened.load()
        image: Image.Image = opened
    box = tuple(edge / factor for edge in plan.box)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        alpha = "transparency" in image.info or "A" in image.mode
        image = image.convert("RGBA" if alpha else "RGB")
    if (plan.width, plan.height) != image.size or box != (0, 0, *image.size):
        image = image.resize(
            (plan.width, plan.height),
            Image.Resampling.LANCZOS,
            box=box,  # type: ignore[arg-type]
            reducing_gap=1.0,
        )
    extension, content_type, options = ENCODERS[fmt]
    if fmt == "JPEG" and image.mode != "RGB":
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    buffer.seek(0)
    return Thumbnail(buffer, ImageInfo(fmt, extension, content_type, *image.size))
