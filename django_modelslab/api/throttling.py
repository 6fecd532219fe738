"""Rate limits through DRF scopes, off until the project sets a rate.

Scopes (rates in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``, e.g. ``"60/min"``):

- ``modelslab`` — every API call, reads included;
- ``modelslab_generate`` — calls that start a generation (create, regenerate and the
  OpenAI-compatible endpoint), counted in addition to ``modelslab``.

Each is counted per user (per IP address for anonymous calls) in Django's default cache.
"""

from __future__ import annotations

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle, ScopedRateThrottle

READ_SCOPE = "modelslab"
GENERATE_SCOPE = "modelslab_generate"


class ModelsLabScopedThrottle(ScopedRateThrottle):
    """DRF's scoped throttle for one fixed scope; rates read at request time, unset = no limit."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def allow_request(self, request: Any, view: Any) -> bool:
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        # SimpleRateThrottle.allow_request: ScopedRateThrottle's would replace our scope.
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.history = self.cache.get(self.key, [])
        self.now = self.timer()
        while self.history and self.history[-1] <= self.now - self.duration:
            self.history.pop()
        if len(self.history) >= self.num_requests:
            return self.throttle_failure()
        return self.throttle_success()


def api_throttles(defaults: list[BaseThrottle], *, generating: bool) -> list[BaseThrottle]:
    """The project's default throttles plus our scopes."""
    throttles: list[BaseThrottle] = [*defaults, ModelsLabScopedThrottle(READ_SCOPE)]
    if generating:
        throttles.append(ModelsLabScopedThrottle(GENERATE_SCOPE))
    return throttles
