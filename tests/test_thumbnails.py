"""Thumbnails: rendered from the pixels verification decoded, or from the bytes; upright."""

from __future__ import annotations

import pytest
from PIL import Image as PILImage
from PIL import ImageDraw

from django_modelslab.imaging import verify
from django_modelslab.imaging.thumbnails import render_thumbnail
from django_modelslab.imaging.verify import decode_image

from .helpers import encoded, opened

ORIENTATION = 0x0112
ROTATED_90_CW = 6  # EXIF: the stored pixels must be turned 90° clockwise to be upright


def picture(mode: str = "RGB", size: tuple[int, int] = (400, 200)) -> PILImage.Image:
    """A picture with a bright left half, so that a turned thumbnail shows it."""
    image = PILImage.new(mode, size, "black")
    ImageDraw.Draw(image).rectangle((0, 0, size[0] // 2, size[1]), fill="white")
    return image


def test_from_decoded_pixels_and_from_bytes_the_thumbnail_is_the_same() -> None:
    file = encoded(picture(), "PNG")
    info, pixels = decode_image(file, max_pixels=10**6)
    assert pixels is not None and pixels.size == (400, 200)

    from_pixels = render_thumbnail(pixels, size=100)
    from_bytes = render_thumbnail(file, size=100)

    assert from_pixels.file.read() == from_bytes.file.read()
    assert (from_pixels.info.format, from_pixels.info.width, from_pixels.info.height) == (
        "WEBP",
        100,
        50,
    )
    assert file.tell() == 0  # the caller's file is rewound, still open for the upload
    assert info.format == "PNG"


@pytest.mark.parametrize("decoded", [True, False], ids=["from pixels", "from bytes"])
def test_a_turned_jpeg_gets_an_upright_thumbnail(decoded: bool) -> None:
    exif = PILImage.Exif()
    exif[ORIENTATION] = ROTATED_90_CW
    file = encoded(picture(), "JPEG", exif=exif.tobytes())
    pixels = decode_image(file, max_pixels=10**6)[1]

    thumbnail = render_thumbnail(pixels if decoded else file, size=100)

    thumb = opened(thumbnail.file.read())
    assert thumb.size == (50, 100) == (thumbnail.info.width, thumbnail.info.height)
    top, bottom = thumb.getpixel((25, 10)), thumb.getpixel((25, 90))
    assert sum(top) > 600 and sum(bottom) < 100  # the bright half is now on top


def test_transparency_is_kept() -> None:
    image = picture("RGBA")
    image.paste((0, 0, 0, 0), (300, 0, 400, 200))
    pixels = decode_image(encoded(image, "PNG"), max_pixels=10**6)[1]

    thumb = opened(render_thumbnail(pixels, size=100).file.read())

    assert thumb.mode == "RGBA"
    assert thumb.getpixel((95, 25))[3] == 0 and thumb.getpixel((10, 25))[3] == 255


def test_an_image_too_large_to_decode_whole_is_thumbnailed_from_its_bytes(monkeypatch) -> None:
    monkeypatch.setattr(verify, "FULL_DECODE_PIXELS", 400 * 200 - 1)
    file = encoded(picture(), "PNG")

    info, pixels = decode_image(file, max_pixels=10**6)
    thumbnail = render_thumbnail(file, size=100)

    assert pixels is None and (info.width, info.height) == (400, 200)
    assert opened(thumbnail.file.read()).size == (100, 50)
