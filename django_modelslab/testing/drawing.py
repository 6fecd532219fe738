"""Deterministic placeholder images for the emulator, drawn with Pillow.

Same prompt, seed, size and format give identical bytes; a different seed gives different
bytes. Each picture is a hashed gradient, a few shapes and the prompt text, so a person can
tell generations apart at a glance.
"""

from __future__ import annotations

import hashlib
import io
import random
import textwrap
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
EXTENSIONS = {"png": "png", "jpeg": "jpg", "webp": "webp"}
_SAVE = {"png": ("PNG", {"compress_level": 1}), "jpeg": ("JPEG", {"quality": 85}),
         "webp": ("WEBP", {"quality": 85})}  # fmt: skip

_MAX_TEXT_LINES = 6


def normalize_format(fmt: str) -> str:
    """``"png"``, ``"jpeg"`` (``"jpg"`` accepted) or ``"webp"``; else a ValueError."""
    fmt = fmt.lower()
    if fmt == "jpg":
        fmt = "jpeg"
    if fmt not in FORMATS:
        raise ValueError(f"image format must be 'png', 'jpeg' or 'webp', not {fmt!r}")
    return fmt


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # pragma: no cover - Pillow without FreeType
        return ImageFont.load_default()


def _color(rng: random.Random) -> tuple[int, int, int]:
    return (rng.randrange(256), rng.randrange(256), rng.randrange(256))


def _background(rng: random.Random, width: int, height: int) -> Image.Image:
    if rng.random() < 0.5:
        mask = Image.linear_gradient("L")
        mask = mask.transpose(rng.choice(list(Image.Transpose)))
    else:
        mask = Image.radial_gradient("L")
    mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    start = Image.new("RGB", (width, height), _color(rng))
    end = Image.new("RGB", (width, height), _color(rng))
    return Image.composite(start, end, mask)


def _shapes(draw: ImageDraw.ImageDraw, rng: random.Random, width: int, height: int) -> None:
    for _ in range(rng.randint(3, 7)):
        x0, y0 = rng.randrange(width), rng.randrange(height)
        size = rng.randint(min(width, height) // 10, min(width, height) // 3)
        box = (x0 - size, y0 - size, x0 + size, y0 + size)
        fill, outline = _color(rng), _color(rng)
        shape = rng.randrange(3)
        if shape == 0:
            draw.ellipse(box, fill=fill, outline=outline, width=3)
        elif shape == 1:
            draw.rectangle(box, fill=fill, outline=outline, width=3)
        else:
            points = [(rng.randrange(width), rng.randrange(height)) for _ in range(3)]
            draw.polygon(points, fill=fill, outline=outline)


def _caption(draw: ImageDraw.ImageDraw, prompt: str, seed: int, width: int, height: int) -> None:
    font_size = max(10, min(width, height) // 32)
    font = _font(font_size)
    chars = max(8, int(width * 0.9 / (font_size * 0.55)))
    lines = textwrap.wrap(" ".join(prompt.split()), width=chars) or [""]
    if len(lines) > _MAX_TEXT_LINES:
        lines = [*lines[: _MAX_TEXT_LINES - 1], lines[_MAX_TEXT_LINES - 1][: chars - 3] + "..."]
    lines.append(f"seed {seed}")
    if not isinstance(font, ImageFont.FreeTypeFont):  # pragma: no cover - bitmap font
        lines = [line.encode("latin-1", "replace").decode("latin-1") for line in lines]
    text = "\n".join(lines)
    pad = max(4, font_size // 2)
    left, top, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
    box_h = bottom - top + 2 * pad
    y = max(0, height - box_h - pad)
    draw.rectangle(
        (pad, y, min(width - 1, pad + right - left + 2 * pad), y + box_h), fill=(0, 0, 0)
    )
    draw.multiline_text((2 * pad - left, y + pad - top), text, font=font, fill=(255, 255, 255))


def draw_image(prompt: str, seed: int, width: int, height: int, fmt: str = "png") -> bytes:
    """Encoded image bytes (``fmt`` ``"png"``, ``"jpeg"`` or ``"webp"``) for one emulated sample."""
    fmt = normalize_format(fmt)
    digest = hashlib.sha256(f"{seed}\x00{width}x{height}\x00{prompt}".encode()).digest()
    rng = random.Random(digest)  # pictures, not secrets
    image = _background(rng, width, height)
    draw = ImageDraw.Draw(image)
    _shapes(draw, rng, width, height)
    _caption(draw, prompt, seed, width, height)
    out = io.BytesIO()
    name, options = _SAVE[fmt]
    image.save(out, format=name, **options)
    return out.getvalue()


# --- image operations for the editing routes (img2img, inpaint, upscale) ------------------


def open_rgb(data: bytes) -> Image.Image:
    """Decode an input image to RGB (ValueError when it is not an image)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except (OSError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"not an image: {exc}") from exc


def encode(image: Image.Image, fmt: str = "png") -> bytes:
    """``image`` as PNG, JPEG or WebP bytes."""
    fmt = normalize_format(fmt)
    out = io.BytesIO()
    name, options = _SAVE[fmt]
    image.save(out, format=name, **options)
    return out.getvalue()


def _drawn(prompt: str, seed: int, size: tuple[int, int]) -> Image.Image:
    return open_rgb(draw_image(prompt, seed, size[0], size[1], "png"))


def img2img(init: bytes, prompt: str, seed: int, strength: float, fmt: str = "png") -> bytes:
    """The init image blended with the prompt's picture: 0 keeps the init, 1 replaces it."""
    base = open_rgb(init)
    return encode(Image.blend(base, _drawn(prompt, seed, base.size), strength), fmt)


def inpaint(
    init: bytes, mask: bytes, prompt: str, seed: int, strength: float, fmt: str = "png"
) -> bytes:
    """The prompt's picture painted where the mask is white (blended by ``strength``);
    everywhere else the init image's pixels, untouched. The mask is scaled to the init."""
    base = open_rgb(init)
    painted = Image.blend(base, _drawn(prompt, seed, base.size), strength)
    with Image.open(io.BytesIO(mask)) as img:
        gray = img.convert("L").resize(base.size, Image.Resampling.NEAREST)
    where = gray.point(lambda value: 255 if value >= 128 else 0)
    return encode(Image.composite(painted, base, where), fmt)


def upscale(init: bytes, scale: int, fmt: str = "png") -> bytes:
    """The init image resized ``scale`` times (Lanczos)."""
    base = open_rgb(init)
    size = (base.width * scale, base.height * scale)
    return encode(base.resize(size, Image.Resampling.LANCZOS), fmt)


def blank_image(width: int, height: int, fmt: str = "png") -> bytes:
    """A solid black image: what a safety checker puts in place of a flagged output."""
    fmt = normalize_format(fmt)
    out = io.BytesIO()
    Image.new("RGB", (width, height), (0, 0, 0)).save(out, format="PNG" if fmt == "png" else "JPEG")
    return out.getvalue()
