"""ModelsLab's parameter limits, checked at every edge (admin form, API) before any call.

From the API's documentation (../shared/modelslab-api.md §3.1): sides 256 to 1024 pixels in
multiples of 8, 1 to 4 samples, 1 to 50 steps, a seed that fits 32 bits. Also the bounds of
what the faces read: row ids, and the nesting of a JSON body.
"""

from __future__ import annotations

import json
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
    """``json.loads``; ValueError for bad JSON and for nesting deeper than MAX_JSON_DEPTH.

    Without the depth check a body of a few hundred kilobytes of brackets ends in a
    RecursionError, here or in whatever walks the parsed value next.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(TOO_DEEP) from None
    check_depth(value)
    return value


def check_depth(value: Any) -> None:
    """ValueError when lists and objects in ``value`` nest deeper than MAX_JSON_DEPTH."""
    pending = [(value, 1)]
    while pending:  # iterative: the check itself must not recurse
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > MAX_JSON_DEPTH:
            raise ValueError(TOO_DEEP)
        pending.extend((child, depth + 1) for child in children)
