"""Identify and verify images with Pillow: only PNG, JPEG, WebP and GIF, checked whole.

What :func:`decode_image` finds is an :class:`ImageInfo`; storages name and label files
from it (:mod:`django_modelslab.storage.content`), never from a URL or a claimed type.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from typing import IO

from PIL import Image, UnidentifiedImageError

from ..exceptions import InvalidImage

#: Pillow format -> (extension, content type). Nothing else is accepted.
FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("png", "image/png"),
    "JPEG": ("jpg", "image/jpeg"),
    "WEBP": ("webp", "image/webp"),
    "GIF": ("gif", "image/gif"),
}
#: PNG and JPEG images with more pixels are checked without decoding them whole, so memory
#: stays bounded (RGBA at this size is 10 MB): see :func:`inspect_image`.
FULL_DECODE_PIXELS = 2_500_000
#: Formats always decoded whole (up to MAX_IMAGE_PIXELS), every frame: nothing short of
#: decoding finds corrupt image data in them.
ALWAYS_DECODED = ("GIF", "WEBP")
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class ImageInfo:
    """What Pillow found in the bytes."""

    format: str  # "PNG", "JPEG", "WEBP", "GIF"
    extension: str  # "png", "jpg", "webp", "gif"
    content_type: str
    width: int
    height: int


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
_ADAM7: tuple[tuple[int, int, int, int], ...]
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


def image_info(fmt: str, width: int, height: int) -> ImageInfo:
    """What :func:`inspect_image` would say of an image this package just encoded."""
    extension, content_type = FORMATS[fmt]
    return ImageInfo(fmt, extension, content_type, width, height)
