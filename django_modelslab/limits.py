"""ModelsLab's parameter limits, and the validators that check them, with one message each.

ModelsLab's API reference for the v6 text2img, img2img and inpaint fields: sides 256 to 1024
pixels in multiples of 8 (for text to image; other kinds take the input's size), 1 to 4
samples, a guidance of 1 to 20, a seed that fits 32 bits; its pages disagree on steps (1 to 20
on some, 20 to 50 on others), so 1 to 50. The model's fields carry the validators; the admin
form and the API's serializers take them from there, and ``pipeline.submit`` checks them
before anything is saved. Also the bounds of what the faces read: row ids, and JSON bodies.
"""

from __future__ import annotations

import json
import math
from typing import Any, NamedTuple

from django.core.exceptions import ValidationError
from django.core.validators import BaseValidator, MaxValueValidator, MinValueValidator
from django.utils.text import format_lazy
from django.utils.translation import gettext_lazy as _

MIN_SIDE = 256
MAX_SIDE = 1024
SIDE_STEP = 8
MIN_SAMPLES = 1
MAX_SAMPLES = 4
MAX_STEPS = 50
MAX_SEED = 2**32 - 1


class Limit(NamedTuple):
    low: float
    high: float
    #: Said after Django's own sentence ("Ensure this value is less than or equal to 4."):
    #: ``%(low)s``, ``%(high)s`` and ``%(value)s`` are filled in.
    hint: Any


SIDE = Limit(MIN_SIDE, MAX_SIDE, _("Use %(low)s to %(high)s pixels (got %(value)s)."))
#: Each limited field of ``GenerationRequest``: its range. A text-to-image request's width and
#: height are also multiples of SIDE_STEP (:func:`check_side`); other kinds take the input's.
LIMITS: dict[str, Limit] = {
    "width": SIDE,
    "height": SIDE,
    "samples": Limit(
        MIN_SAMPLES, MAX_SAMPLES, _("Ask for %(low)s to %(high)s images at a time (got %(value)s).")
    ),
    "steps": Limit(1, MAX_STEPS, _("Use %(low)s to %(high)s steps (got %(value)s).")),
    "guidance": Limit(1.0, 20.0, _("Use a guidance of %(low)s to %(high)s (got %(value)s).")),
    "seed": Limit(0, MAX_SEED, _("Use a seed of %(low)s to %(high)s (got %(value)s).")),
}


class _Bound(BaseValidator):
    """One end of a :data:`LIMITS` range. Its message is Django's, then the whole range and
    the value given. It deconstructs to its name alone: a number changed here needs no
    migration. drf-spectacular reads it as a ``minimum`` / ``maximum``."""

    end: int  # which end of the range: 0 low, 1 high

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(LIMITS[name][self.end])

    def __call__(self, value: Any) -> None:
        if value is not None and self.compare(value, self.limit_value):
            low, high, hint = LIMITS[self.name]
            raise ValidationError(
                format_lazy("{} {}", self.message, hint),
                code=self.code,
                params={"limit_value": self.limit_value, "low": low, "high": high, "value": value},
            )

    def deconstruct(self) -> tuple[str, tuple[str], dict[str, Any]]:
        return f"{__name__}.{type(self).__name__}", (self.name,), {}


class AtLeast(_Bound, MinValueValidator):
    end = 0


class AtMost(_Bound, MaxValueValidator):
    end = 1


def bounds(name: str) -> list[_Bound]:
    """The validators of a :data:`LIMITS` range, for a field's ``validators``."""
    return [AtLeast(name), AtMost(name)]


def check_side(value: int | None) -> None:
    """ValidationError unless ``value`` is a side ModelsLab draws (one message: range first)."""
    for bound in bounds("width"):
        bound(value)
    if value is not None and value % SIDE_STEP:
        lower = value - value % SIDE_STEP
        raise ValidationError(
            _("Use a multiple of %(step)s pixels, e.g. %(lower)s or %(upper)s (got %(value)s)."),
            code="size_step",
            params={"step": SIDE_STEP, "lower": lower, "upper": lower + SIDE_STEP, "value": value},
        )


#: The largest row id (a 64-bit signed primary key); a larger one is invalid input.
MAX_ID = 2**63 - 1
#: JSON bodies nest at most this deep (ours nest 2 deep, ModelsLab's callbacks about 4).
MAX_JSON_DEPTH = 32
TOO_DEEP = f"nested more than {MAX_JSON_DEPTH} levels deep"


def load_json(text: str | bytes) -> Any:
    """``json.loads``, strictly: ValueError for bad JSON and what :func:`check_json` refuses.

    Without these checks a body of a few hundred kilobytes of brackets ends in a
    RecursionError, and ``NaN`` or a lone surrogate in an error when the value is stored.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    check_json(value)
    return value


def check_json(value: Any) -> None:
    """ValueError unless ``value`` can be stored and sent as JSON again.

    That is: lists and objects nested at most MAX_JSON_DEPTH deep, finite numbers, and
    strings (keys too) without lone surrogates. Iterative: the check itself never recurses.
    """
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str):
            if not item.isascii():
                _check_text(item)
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError(f"{item} is not a JSON number")
        elif isinstance(item, dict | list):
            if depth > MAX_JSON_DEPTH:
                raise ValueError(TOO_DEEP)
            if isinstance(item, dict):
                pending.extend((key, depth) for key in item)
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds a lone surrogate (\\ud800 to \\udfff)") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")
