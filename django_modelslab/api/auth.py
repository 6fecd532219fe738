"""``Authorization: Bearer <token>``: DRF's token authentication with OpenAI's keyword."""

from __future__ import annotations

from django.apps import apps
from rest_framework.authentication import BaseAuthentication, TokenAuthentication


class BearerTokenAuthentication(TokenAuthentication):
    """DRF ``authtoken`` tokens sent as ``Authorization: Bearer <key>``.

    This is what the OpenAI SDKs send, so a client only changes ``base_url`` and ``api_key``
    (the token's key). Needs ``rest_framework.authtoken`` in ``INSTALLED_APPS``.
    """

    keyword = "Bearer"


def api_authenticators(defaults: list[BaseAuthentication]) -> list[BaseAuthentication]:
    """Bearer tokens first (so anonymous calls get 401 with a challenge), then the project's."""
    if not apps.is_installed("rest_framework.authtoken"):
        return defaults
    others = [auth for auth in defaults if not isinstance(auth, BearerTokenAuthentication)]
    return [BearerTokenAuthentication(), *others]
