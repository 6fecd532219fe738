"""Rate limits through DRF scopes, off until the project sets a rate.

Scopes (rates in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, e.g. ``"60/min"``):

- ``modelslab`` — every API call, reads included;
- ``modelslab_generate`` — calls that start a generation (create, regenerate and the
  OpenAI-compatible endpoint), counted in addition to ``modelslab``.

Each is counted per user (per IP address for anonymous calls) in Django's default cache.
"""

from __future__ import annotations

from typing import cast

from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, UserRateThrottle

READ_SCOPE = "modelslab"
GENERATE_SCOPE = "modelslab_generate"


class ModelsLabScopedThrottle(UserRateThrottle):
    """DRF's per-user throttle (per IP address when anonymous) for one of our scopes."""

    scope: str

    def __init__(self, scope: str) -> None:
        self.scope = scope
        super().__init__()

    def get_rate(self) -> str | None:
        """The scope's rate, read at request time; unset means no limit (DRF would raise)."""
        rates = cast("dict[str, str | None]", api_settings.DEFAULT_THROTTLE_RATES)  # strings
        return rates.get(self.scope)


def api_throttles(defaults: list[BaseThrottle], *, generating: bool) -> list[BaseThrottle]:
    """The project's default throttles plus our scopes."""
    throttles: list[BaseThrottle] = [*defaults, ModelsLabScopedThrottle(READ_SCOPE)]
    if generating:
        throttles.append(ModelsLabScopedThrottle(GENERATE_SCOPE))
    return throttles
