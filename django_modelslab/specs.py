"""Rendition specs: ``fill-400x300``, ``width-640``, ``height-480``, ``max-800x600``, with an
optional ``format-webp|avif|jpeg|png``, as Wagtail spells them.

Operations are joined by ``|`` (``"fill-400x300|format-webp"``) or, as in Wagtail's template
tag, by spaces (``"fill-400x300 format-webp"``). :func:`parse_spec` reads one into a
:class:`Spec`; ``str(spec)`` is its canonical form (what a rendition row records), and
:meth:`Spec.plan` gives the output size and the crop for an original of a given size. No
rendition is ever larger than its original: a size past it is clamped (keeping the asked
aspect ratio for ``fill``). Pure functions: no Pillow, no Django.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .exceptions import InvalidRenditionSpec

#: Resize operations and the arguments they take ("WxH" or one number).
RESIZES = {"fill": "WxH", "max": "WxH", "width": "W", "height": "H"}
#: ``format-<name>`` -> Pillow's format name.
FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}
#: Longest side a spec may ask for (a typo must not ask for a gigapixel image).
MAX_SIDE = 10_000
#: Longest spec string read.
MAX_SPEC_LENGTH = 100
_ACCEPTED = "fill-WxH, max-WxH, width-W or height-H, optionally |format-webp|avif|jpeg|png"
_SIZE = re.compile(r"([1-9][0-9]{0,4})(?:x([1-9][0-9]{0,4}))?")


@dataclass(frozen=True)
class Plan:
    """What to make from an original: crop ``box`` (left, top, right, bottom), then resize
    to ``width`` x ``height``."""

    width: int
    height: int
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Spec:
    """One resize operation and an optional output format (``None``: the original's)."""

    operation: str  # "fill" | "max" | "width" | "height"
    width: int | None
    height: int | None
    format: str | None = None  # "jpeg" | "png" | "webp" | "avif"

    def __str__(self) -> str:
        if self.operation in ("fill", "max"):
            size = f"{self.width}x{self.height}"
        else:
            size = str(self.width if self.operation == "width" else self.height)
        text = f"{self.operation}-{size}"
        return f"{text}|format-{self.format}" if self.format else text

    def scaled(self, factor: int) -> Spec:
        """The same spec ``factor`` times as large (the 2x of a ``srcset``)."""
        return replace(
            self,
            width=None if self.width is None else self.width * factor,
            height=None if self.height is None else self.height * factor,
        )

    def plan(self, original_width: int, original_height: int) -> Plan:
        """Output size and crop for an original of this size, never larger than it."""
        ow, oh = original_width, original_height
        whole = (0, 0, ow, oh)
        if self.operation == "fill":
            assert self.width is not None and self.height is not None
            # Clamp: the asked box, scaled down (aspect kept) until it fits the original.
            scale = min(1.0, ow / self.width, oh / self.height)
            width = max(1, round(self.width * scale))
            height = max(1, round(self.height * scale))
            # Centre crop of the original with the output's aspect ratio.
            if ow * height > oh * width:  # original wider: crop the sides
                crop_w, crop_h = max(1, round(oh * width / height)), oh
            else:
                crop_w, crop_h = ow, max(1, round(ow * height / width))
            left, top = (ow - crop_w) // 2, (oh - crop_h) // 2
            return Plan(width, height, (left, top, left + crop_w, top + crop_h))
        if self.operation == "max":
            assert self.width is not None and self.height is not None
            scale = min(1.0, self.width / ow, self.height / oh)
        elif self.operation == "width":
            assert self.width is not None
            scale = min(1.0, self.width / ow)
        else:
            assert self.height is not None
            scale = min(1.0, self.height / oh)
        return Plan(max(1, round(ow * scale)), max(1, round(oh * scale)), whole)


def parse_spec(text: object) -> Spec:
    """Read a spec; :class:`InvalidRenditionSpec` names what is wrong and what is accepted."""
    if isinstance(text, Spec):
        return text
    if not isinstance(text, str) or not text.strip():
        raise InvalidRenditionSpec(f"A rendition spec is a string: {_ACCEPTED}.")
    if len(text) > MAX_SPEC_LENGTH:
        raise InvalidRenditionSpec(f"A rendition spec is at most {MAX_SPEC_LENGTH} characters.")
    resize: tuple[str, int | None, int | None] | None = None
    fmt: str | None = None
    for part in re.split(r"[|\s]+", text.strip()):
        name, _, argument = part.partition("-")
        name = name.lower()
        if name == "format":
            if fmt is not None:
                raise InvalidRenditionSpec(f"Invalid rendition spec {text!r}: two formats.")
            if argument.lower() not in FORMATS:
                raise InvalidRenditionSpec(
                    f"Invalid rendition spec {text!r}: unknown format {argument!r} "
                    "(webp, avif, jpeg or png)."
                )
            fmt = "jpeg" if argument.lower() == "jpg" else argument.lower()
            continue
        if name not in RESIZES:
            raise InvalidRenditionSpec(
                f"Invalid rendition spec {text!r}: unknown operation {part!r} ({_ACCEPTED})."
            )
        if resize is not None:
            raise InvalidRenditionSpec(f"Invalid rendition spec {text!r}: two resize operations.")
        resize = (name, *_size(text, name, argument))
    if resize is None:
        raise InvalidRenditionSpec(f"Invalid rendition spec {text!r}: no size ({_ACCEPTED}).")
    operation, width, height = resize
    return Spec(operation, width, height, fmt)


def _size(text: str, operation: str, argument: str) -> tuple[int | None, int | None]:
    shape = RESIZES[operation]
    match = _SIZE.fullmatch(argument)
    two = bool(match and match.group(2))
    if match is None or two != (shape == "WxH"):
        raise InvalidRenditionSpec(
            f"Invalid rendition spec {text!r}: {operation} takes {operation}-{shape} "
            f"(whole pixels >= 1), got {operation}-{argument}."
        )
    first, second = int(match.group(1)), int(match.group(2) or 0)
    if max(first, second) > MAX_SIDE:
        raise InvalidRenditionSpec(
            f"Invalid rendition spec {text!r}: sides are at most {MAX_SIDE} px."
        )
    if shape == "WxH":
        return first, second
    return (first, None) if operation == "width" else (None, first)
