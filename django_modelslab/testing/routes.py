"""The API endpoints the emulator answers under ``/api/``: one :class:`Route` a line.

The paths and quirks are ModelsLab's documented ones: v6 text2img, img2img and inpaint
(fetched at ``v6/images/fetch``, the text key misspelt ``messege``), v6 image_editing
super_resolution (fetched at ``v6/image_editing/fetch``) and v7 text-to-image and
image-to-image (fetched at ``v7/images/fetch``, the key also accepted in a ``key`` header).
Fetch takes the id in the path or as ``request_id`` in the body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .validation import (
    validate_img2img,
    validate_inpaint,
    validate_text2img,
    validate_upscale,
    validate_v7_image,
)


@dataclass(frozen=True)
class Route:
    """One API endpoint under ``/api/``; add a line to ROUTES to grow the emulator."""

    name: str  # counter / fault key
    pattern: re.Pattern[str]
    kind: str  # "generate" | "fetch"
    validate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    fetch_path: str = ""  # for generate routes: where its jobs are fetched
    message_key: str = "messege"  # v6 images misspell it; realtime/image_editing do not
    family: str = "v6/images/fetch"  # jobs are fetched on the fetch route of the same family
    key_required: bool = False  # v7: a key in the body or the ``key`` header, else 401


ROUTES: list[Route] = [
    Route(
        "text2img",
        re.compile(r"v6/images/text2img/?"),
        "generate",
        validate_text2img,
        fetch_path="v6/images/fetch",
    ),
    Route("fetch", re.compile(r"v6/images/fetch(?:/(?P<id>[^/]+))?/?"), "fetch"),
    Route(
        "img2img",
        re.compile(r"v6/images/img2img/?"),
        "generate",
        validate_img2img,
        fetch_path="v6/images/fetch",
    ),
    Route(
        "inpaint",
        re.compile(r"v6/images/inpaint/?"),
        "generate",
        validate_inpaint,
        fetch_path="v6/images/fetch",
    ),
    Route(
        "upscale",
        re.compile(r"v6/image_editing/super_resolution/?"),
        "generate",
        validate_upscale,
        fetch_path="v6/image_editing/fetch",
        message_key="message",
        family="v6/image_editing/fetch",
    ),
    Route(
        "upscale_fetch",
        re.compile(r"v6/image_editing/fetch(?:/(?P<id>[^/]+))?/?"),
        "fetch",
        message_key="message",
        family="v6/image_editing/fetch",
    ),
    Route(
        "v7_text2img",
        re.compile(r"v7/images/text-to-image/?"),
        "generate",
        validate_text2img,
        fetch_path="v7/images/fetch",
        message_key="message",
        family="v7/images/fetch",
        key_required=True,
    ),
    Route(
        "v7_img2img",
        re.compile(r"v7/images/image-to-image/?"),
        "generate",
        validate_v7_image,
        fetch_path="v7/images/fetch",
        message_key="message",
        family="v7/images/fetch",
        key_required=True,
    ),
    Route(
        "v7_fetch",
        re.compile(r"v7/images/fetch(?:/(?P<id>[^/]+))?/?"),
        "fetch",
        message_key="message",
        family="v7/images/fetch",
        key_required=True,
    ),
]


def match_route(path: str) -> tuple[Route, re.Match[str]] | None:
    """The route of an ``/api/...`` path and its match (the job id of a path-form fetch)."""
    if not path.startswith("/api/"):
        return None
    rest = path[len("/api/") :]
    for route in ROUTES:
        match = route.pattern.fullmatch(rest)
        if match:
            return route, match
    return None
