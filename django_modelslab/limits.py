"""ModelsLab's parameter limits, checked at every edge (admin form, API) before any call.

ModelsLab's API reference for the v6 text2img, img2img and inpaint fields: sides 256 to 1024
pixels in multiples of 8, 1 to 4 samples, a seed that fits 32 bits; its pages disagree on
steps (1 to 20 on some, 20 to 50 on others), so 1 to 50. Also the bounds of what the faces
read: row ids, and JSON bodies.
"""

from __future__ import annotations

import json
import math
from typing import Any

MIN_SIDE = 256
MAX_SIDE = 1024
SIDE_STEP = 8
MIN_SAMPLES = 1
MAX_SAMPLES = 4
MAX_STEPS = 50
MAX_SEED = 2**32 - 1

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
