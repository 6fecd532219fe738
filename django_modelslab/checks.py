"""System checks for the MODELSLAB settings (ids ``django_modelslab.E0xx`` / ``W0xx``).

Each rule of the settings table (:data:`django_modelslab.conf.SETTINGS`) is a check of its
own; the functions here add what crosses settings: the key with BASE_URL, webhooks, storage
and task aliases, input links, budgets without prices, and a new site's setup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.core.files.storage import FileSystemStorage
from django.urls import NoReverseMatch, reverse

from .conf import (
    NEW_SECRET_HINT,
    SETTINGS,
    SETTINGS_NAME,
    get_settings,
    odd_character,
    user_settings,
)
from .downloads import is_exactly_listed
from .fallbacks import clean_model_ids
from .storage import get_image_storage, signs_urls

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
MIN_SECRET_LENGTH = 24
#: The longest a presigned S3 URL may live (SigV4: seven days).
MAX_PRESIGNED_SECONDS = 7 * 24 * 60 * 60
#: Apps the REST API (``django_modelslab.api.urls``) needs in INSTALLED_APPS.
API_APPS = ("rest_framework", "rest_framework.authtoken")


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
    return [
        *_check_unknown_names(),
        *_check_rules(conf),
        *_check_key(conf),
        *_check_storage(conf),
        *_check_signing_window(conf),
        *_check_webhooks(conf),
        *_check_task_backend(conf),
        *_check_input_links(conf),
        *_check_fallbacks(conf),
        *_check_budgets(conf),
        *_check_c2pa(conf),
    ]


def _check_rules(conf: dict[str, Any]) -> list[CheckMessage]:
    """One message per setting whose value fails a rule of the table (its first)."""
    messages: list[CheckMessage] = []
    for name, setting in SETTINGS.items():
        for rule in setting.rules:
            if problem := rule.problem(conf[name]):
                hint = rule.hint or f"The default is {setting.default!r}."
                messages.append(
                    Error(f"{SETTINGS_NAME}[{name!r}] {problem}.", hint=hint, id=rule.id)
                )
                break
    return messages


def _valid(conf: dict[str, Any], *names: str) -> bool:
    """Whether these settings pass their rules (else the table's checks report them)."""
    return not any(rule.problem(conf[name]) for name in names for rule in SETTINGS[name].rules)


def _check_unknown_names() -> list[CheckMessage]:
    unknown = sorted(set(user_settings()) - set(SETTINGS))
    if not unknown:
        return []
    return [
        Warning(
            f"{SETTINGS_NAME} has unknown setting(s): {', '.join(unknown)}.",
            hint=f"Known settings: {', '.join(sorted(SETTINGS))}.",
            id="django_modelslab.W001",
        )
    ]


def _check_key(conf: dict[str, Any]) -> list[CheckMessage]:
    """No key is fine only with BASE_URL on this machine (the emulator)."""
    if not _valid(conf, "API_KEY", "BASE_URL") or conf["API_KEY"]:
        return []  # a bad key or BASE_URL is E001 / E004 / E011
    if is_loopback_url(conf["BASE_URL"]):
        return []
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


def _check_storage(conf: dict[str, Any]) -> list[CheckMessage]:
    alias = conf["STORAGE"]
    if "STORAGE" in user_settings() and alias not in settings.STORAGES:
        return [
            Error(
                f"{SETTINGS_NAME}['STORAGE'] names the storage alias {alias!r}, "
                "which is not in settings.STORAGES.",
                hint=f"Known aliases: {', '.join(sorted(settings.STORAGES))}.",
                id="django_modelslab.E002",
            )
        ]
    return []


def _check_signing_window(conf: dict[str, Any]) -> list[CheckMessage]:
    """A URL signed at the start of its window must not outlive what S3 allows."""
    window = conf["URL_SIGNING_WINDOW"]
    if not _valid(conf, "URL_SIGNING_WINDOW") or window == 0:  # 0 is off
        return []
    try:
        storage = get_image_storage()
        expire = getattr(storage, "querystring_expire", None)
        signed = getattr(storage, "querystring_auth", False) and hasattr(storage, "bucket_name")
    except Exception:  # a broken storage is reported when it is used
        return []
    if not signed or not isinstance(expire, int) or expire + window <= MAX_PRESIGNED_SECONDS:
        return []
    return [
        Error(
            f"{SETTINGS_NAME}['URL_SIGNING_WINDOW'] ({window} s) plus the storage's "
            f"querystring_expire ({expire} s) is longer than S3 lets a presigned URL live "
            f"({MAX_PRESIGNED_SECONDS} s): URLs would be refused.",
            hint="Shorten the window or querystring_expire; 0 turns the window off.",
            id="django_modelslab.E013",
        )
    ]


def _check_task_backend(conf: dict[str, Any]) -> list[CheckMessage]:
    alias = conf["TASK_BACKEND"]
    tasks = getattr(settings, "TASKS", None)
    aliases = set(tasks) if isinstance(tasks, dict) else {"default"}
    if alias in aliases:
        return []
    return [
        Error(
            f"{SETTINGS_NAME}['TASK_BACKEND'] names the task backend {alias!r}, "
            "which is not in settings.TASKS.",
            hint=f"Known aliases: {', '.join(sorted(aliases))}.",
            id="django_modelslab.E009",
        )
    ]


def _check_webhooks(conf: dict[str, Any]) -> list[CheckMessage]:
    base_url, secrets = conf["PUBLIC_BASE_URL"], conf["WEBHOOK_SECRETS"]
    if not _valid(conf, "WEBHOOK_SECRETS"):
        return []
    messages: list[CheckMessage] = [
        Error(
            f"{SETTINGS_NAME}['WEBHOOK_SECRETS'] entry {number} contains whitespace or "
            f"a control character ({where}).",
            hint=f"Surrounding whitespace is stripped. {NEW_SECRET_HINT}",
            id="django_modelslab.E012",
        )
        for number, secret in enumerate(secrets, 1)
        if (where := odd_character(secret))
    ]
    if base_url and _valid(conf, "PUBLIC_BASE_URL"):
        if not secrets:
            messages.append(
                Warning(
                    f"{SETTINGS_NAME}['PUBLIC_BASE_URL'] is set but WEBHOOK_SECRETS is empty: "
                    "webhooks stay off and requests are polled.",
                    hint="Add a long random secret to WEBHOOK_SECRETS to turn webhooks on.",
                    id="django_modelslab.W002",
                )
            )
        else:
            try:
                reverse("modelslab:webhook", kwargs={"secret": "x"})
            except NoReverseMatch:
                messages.append(
                    Error(
                        "Webhooks are on but the webhook view has no URL.",
                        hint='Add path("modelslab/", include("django_modelslab.urls")) to '
                        "your ROOT_URLCONF.",
                        id="django_modelslab.E008",
                    )
                )
    if any(len(secret) < MIN_SECRET_LENGTH for secret in secrets):
        messages.append(
            Warning(
                f"A WEBHOOK_SECRETS entry is shorter than {MIN_SECRET_LENGTH} characters.",
                hint=NEW_SECRET_HINT,
                id="django_modelslab.W003",
            )
        )
    return messages


def _check_input_links(conf: dict[str, Any]) -> list[CheckMessage]:
    """INPUT_IMAGE_TRANSPORT "url" needs links ModelsLab can reach (docs/kinds.md)."""
    if conf["INPUT_IMAGE_TRANSPORT"] != "url" or conf["PUBLIC_BASE_URL"]:
        return []
    try:
        storage = get_image_storage()
        relative = not signs_urls(storage) and "://" not in storage.url("x.png")
    except Exception:  # a broken storage is reported by its own check
        relative = False
    if not relative:
        return []
    return [
        Error(
            f"{SETTINGS_NAME}['INPUT_IMAGE_TRANSPORT'] is 'url' but the storage gives "
            "relative URLs and PUBLIC_BASE_URL is not set: ModelsLab could not reach "
            "input images.",
            hint="Set PUBLIC_BASE_URL (the site's public origin), or use 'base64'.",
            id="django_modelslab.E042",
        )
    ]


def _check_fallbacks(conf: dict[str, Any]) -> list[CheckMessage]:
    """FALLBACK_MODELS, each in ALLOWED_MODELS when that is set."""
    try:
        clean_model_ids(conf["FALLBACK_MODELS"])
    except ValueError as exc:
        return [
            Error(
                f"{SETTINGS_NAME}['FALLBACK_MODELS'] must be a list of model ids: {exc}",
                hint='e.g. ["flux", "sdxl"]; [] tries only the request\'s own model.',
                id="django_modelslab.E030",
            )
        ]
    return []


def _check_budgets(conf: dict[str, Any]) -> list[CheckMessage]:
    """A daily budget with no PRICES (docs/costs.md)."""
    if conf["PRICES"] or (conf["DAILY_BUDGET_PER_USER"] is None and conf["DAILY_BUDGET"] is None):
        return []
    return [
        Warning(
            "A daily budget is set but PRICES is empty: new requests are estimated at 0, "
            "so a budget refuses work only once recorded spending has reached it.",
            hint="Add the price per image of the models you use to PRICES.",
            id="django_modelslab.W050",
        )
    ]


def _check_c2pa(conf: dict[str, Any]) -> list[CheckMessage]:
    """C2PA signing as configured works: the extra, the files, the key, the algorithm."""
    if not conf["C2PA"] or not _valid(conf, "C2PA"):
        return []  # off, or a malformed dict (E080)
    from .imaging.credentials import configuration_problem  # only when C2PA is set

    problem = configuration_problem(conf["C2PA"])
    if not problem:
        return []
    return [
        Error(
            problem,
            hint=(
                "Every image would fail to be stored. Fix the files (see docs/provenance.md), "
                "or set MODELSLAB['C2PA'] to None to store images unsigned."
            ),
            id="django_modelslab.E081",
        )
    ]


@register(Tags.compatibility)
def check_site_setup(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """A new site's mistakes: the emulator's images refused, no media settings, API apps missing."""
    if not isinstance(getattr(settings, SETTINGS_NAME, None) or {}, dict):
        return []  # reported as E010
    conf = get_settings()
    return [*_check_emulator_downloads(conf), *_check_media(), *_check_api_apps()]


def _check_emulator_downloads(conf: dict[str, Any]) -> list[CheckMessage]:
    """BASE_URL on loopback (the emulator) whose host the download allow-list refuses."""
    base_url, hosts = conf["BASE_URL"], conf["ALLOWED_DOWNLOAD_HOSTS"]
    if not _valid(conf, "BASE_URL") or not is_loopback_url(base_url):
        return []
    if isinstance(hosts, str) or not isinstance(hosts, list | tuple):
        return []  # reported as E005
    host = urlsplit(base_url).hostname or ""
    if is_exactly_listed(host, hosts):
        return []
    return [
        Warning(
            f"{SETTINGS_NAME}['BASE_URL'] is on this machine (the bundled emulator?) but "
            f"{host} is not in ALLOWED_DOWNLOAD_HOSTS: generations will fail when their "
            "images are downloaded.",
            hint=f'Add "{host}" to {SETTINGS_NAME}["ALLOWED_DOWNLOAD_HOSTS"]: the emulator '
            "serves its images from there, and loopback hosts must be listed exactly.",
            id="django_modelslab.W060",
        )
    ]


def _check_media() -> list[CheckMessage]:
    """Images on the file system with no MEDIA_ROOT (stored in the cwd) or MEDIA_URL (404s)."""
    try:
        storage = get_image_storage()
    except Exception:  # a broken STORAGES entry is reported by Django and E002
        return []
    if not isinstance(storage, FileSystemStorage):
        return []
    messages: list[CheckMessage] = []
    if not str(storage.base_location):
        messages.append(
            Warning(
                "Generated images are stored on the file system, but MEDIA_ROOT is not set: "
                "they would be written under the current working directory.",
                hint='Set MEDIA_ROOT, e.g. MEDIA_ROOT = BASE_DIR / "media".',
                id="django_modelslab.W061",
            )
        )
    if storage.base_url in ("", "/"):  # Django serves an empty MEDIA_URL as "/"
        messages.append(
            Warning(
                "Generated images are stored on the file system, but MEDIA_URL is not set: "
                "their URLs start at the site's root (/modelslab/...), where nothing serves "
                "them, so the admin's images and thumbnails do not load.",
                hint='Set MEDIA_URL = "/media/" and, in development, add '
                "static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT) to urlpatterns.",
                id="django_modelslab.W062",
            )
        )
    return messages


def _check_api_apps() -> list[CheckMessage]:
    """The REST API's URLs are included but the apps it needs are not installed."""
    try:
        reverse("modelslab-api:schema")
    except NoReverseMatch:
        return []  # the API is not used
    missing = [name for name in API_APPS if not apps.is_installed(name)]
    if not missing:
        return []
    return [
        Error(
            "The REST API (django_modelslab.api.urls) is in your URLs but "
            f"{' and '.join(map(repr, missing))} {'is' if len(missing) == 1 else 'are'} not in "
            "INSTALLED_APPS.",
            hint="Add them, then migrate. Without rest_framework.authtoken, tokens "
            "(Authorization: Bearer / Token) are refused and anonymous calls get 403 instead "
            "of 401; without rest_framework, the browsable API has no templates.",
            id="django_modelslab.E060",
        )
    ]
