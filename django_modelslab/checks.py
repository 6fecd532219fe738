"""System checks for the MODELSLAB settings (ids ``django_modelslab.E0xx`` / ``W0xx``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register

from .conf import DEFAULTS, POSITIVE_NUMBERS, SETTINGS_NAME, get_settings, user_settings

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def is_loopback_url(url: str) -> bool:
    """True for http(s) URLs on this machine (the bundled emulator)."""
    host = (urlsplit(url).hostname or "").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@register(Tags.compatibility)
def check_settings(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    raw = getattr(settings, SETTINGS_NAME, None)
    if raw is not None and not isinstance(raw, dict):
        return [
            Error(
                f"{SETTINGS_NAME} must be a dict, not {type(raw).__name__}.",
                id="django_modelslab.E010",
            )
        ]
    conf = get_settings()
    messages: list[CheckMessage] = []
    messages += _check_unknown_names()
    messages += _check_base_url_and_key(conf)
    messages += _check_storage(conf)
    messages += _check_numbers(conf)
    messages += _check_hosts(conf)
    return messages


def _check_unknown_names() -> list[CheckMessage]:
    unknown = sorted(set(user_settings()) - set(DEFAULTS))
    if not unknown:
        return []
    return [
        Warning(
            f"{SETTINGS_NAME} has unknown setting(s): {', '.join(unknown)}.",
            hint=f"Known settings: {', '.join(sorted(DEFAULTS))}.",
            id="django_modelslab.W001",
        )
    ]


def _check_base_url_and_key(conf: dict[str, Any]) -> list[CheckMessage]:
    base_url = conf["BASE_URL"]
    parts = urlsplit(base_url) if isinstance(base_url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        return [
            Error(
                f"{SETTINGS_NAME}['BASE_URL'] must be an http(s) URL, got {base_url!r}.",
                hint="The default is https://modelslab.com/api.",
                id="django_modelslab.E004",
            )
        ]
    key = conf["API_KEY"]
    if not isinstance(key, str):
        return [
            Error(
                f"{SETTINGS_NAME}['API_KEY'] must be a string.",
                hint="Read it from the environment, e.g. os.environ['MODELSLAB_API_KEY'].",
                id="django_modelslab.E001",
            )
        ]
    if not key.strip() and not is_loopback_url(base_url):
        return [
            Error(
                f"{SETTINGS_NAME}['API_KEY'] is not set.",
                hint=(
                    "Set it from the environment (never commit it), or point BASE_URL at the "
                    "bundled emulator (python -m django_modelslab.testing) to work offline."
                ),
                id="django_modelslab.E001",
            )
        ]
    return []


def _check_storage(conf: dict[str, Any]) -> list[CheckMessage]:
    alias = conf["STORAGE"]
    explicitly_set = "STORAGE" in user_settings()
    if explicitly_set and alias not in settings.STORAGES:
        return [
            Error(
                f"{SETTINGS_NAME}['STORAGE'] names the storage alias {alias!r}, "
                "which is not in settings.STORAGES.",
                hint=f"Known aliases: {', '.join(sorted(settings.STORAGES))}.",
                id="django_modelslab.E002",
            )
        ]
    return []


def _check_numbers(conf: dict[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    for name in POSITIVE_NUMBERS:
        value = conf[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            messages.append(
                Error(
                    f"{SETTINGS_NAME}[{name!r}] must be a positive number, got {value!r}.",
                    hint=f"The default is {DEFAULTS[name]!r}.",
                    id="django_modelslab.E003",
                )
            )
    retries = conf["MAX_RETRIES"]
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        messages.append(
            Error(
                f"{SETTINGS_NAME}['MAX_RETRIES'] must be a whole number >= 0, got {retries!r}.",
                hint=f"The default is {DEFAULTS['MAX_RETRIES']!r}.",
                id="django_modelslab.E003",
            )
        )
    return messages


def _check_hosts(conf: dict[str, Any]) -> list[CheckMessage]:
    hosts = conf["ALLOWED_DOWNLOAD_HOSTS"]
    if (
        isinstance(hosts, str)
        or not isinstance(hosts, list | tuple)
        or not all(isinstance(host, str) and host.strip(".") for host in hosts)
    ):
        return [
            Error(
                f"{SETTINGS_NAME}['ALLOWED_DOWNLOAD_HOSTS'] must be a list of host names.",
                hint='Exact hosts ("cdn.example.com") or suffixes (".r2.dev").',
                id="django_modelslab.E005",
            )
        ]
    return []
