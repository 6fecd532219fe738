"""ALT_TEXT_HOOK targets for tests/test_alt_text.py."""

from __future__ import annotations

from django.conf import settings


def describe(image, generation) -> str:
    return f"  A {image.width}x{image.height} {image.format} picture:\n{generation.prompt}  "


def broken(image, generation) -> str:
    raise RuntimeError(f"captioning service refused key {settings.MODELSLAB['API_KEY']}")


def nothing(image, generation) -> int:
    return 42
