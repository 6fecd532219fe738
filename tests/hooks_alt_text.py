"""ALT_TEXT_HOOK targets for tests/test_alt_text.py."""

from __future__ import annotations

from django.conf import settings


def describe(image, generation) -> str:
    return f"  A {image.width}x{image.height} {image.format} picture:\n{generation.prompt}  "


def broken(image, generation) -> str:
    # A secret in an error message (the API key would trip the sentinel where it is raised).
    raise RuntimeError(f"captioning refused {settings.MODELSLAB['WEBHOOK_SECRETS'][0]}")


def nothing(image, generation) -> int:
    return 42
