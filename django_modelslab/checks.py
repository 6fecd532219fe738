"""System checks for the MODELSLAB settings (ids ``django_modelslab.E0xx`` / ``W0xx``)."""

from __future__ import annotations

import ipaddress
import unicodedata
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.urls import NoReverseMatch, reverse

from .amounts import parse_amount
from .conf import DEFAULTS, POSITIVE_NUMBERS, SETTINGS_NAME, get_settings, user_settings

LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}
#: Settings that must be whole numbers, with their minimum.
WHOLE_NUMBERS = {"MAX_RETRIES": 0, "MAX_ATTEMPTS": 1, "URL_SIGNING_WINDOW": 0}
MIN_SECRET_LENGTH = 24
NEW_SECRET_HINT = "Make one with: python -c 'import secrets; print(secrets.token_urlsafe())'"  # noqa: S105  (a hint, not a secret)


def odd_character(secret: str) -> str:
    """Where ``secret`` has whitespace or a control character, e.g. ``"U+000A at position
    21"`` (never the secret itself); ``""`` when it has none."""
    for position, char in enumerate(secret, 1):
        if char.isspace() or unicodedata.category(char).startswith("C"):
            return f"U+{ord(char):04X} at position {position}"
    return ""


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
    messages += _check_signing_window(conf)
    messages += _check_hosts(conf)
    messages += _check_webhooks(conf)
    messages += _check_task_backend(conf)
    messages += _check_api(conf)
    messages += _check_kinds(conf)
    messages += _check_costs(conf)
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
    if where := odd_character(key):
        return [
            Error(
                f"{SETTINGS_NAME}['API_KEY'] contains whitespace or a control character ({where}).",
                hint=(
                    "Surrounding whitespace is stripped; a ModelsLab key has none inside. "
                    "Copy the key again from the ModelsLab dashboard."
                ),
                id="django_modelslab.E011",
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
    for name, minimum in WHOLE_NUMBERS.items():
        value = conf[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            messages.append(
                Error(
                    f"{SETTINGS_NAME}[{name!r}] must be a whole number >= {minimum}, "
                    f"got {value!r}.",
                    hint=f"The default is {DEFAULTS[name]!r}.",
                    id="django_modelslab.E003",
                )
            )
    return messages


#: The longest a presigned S3 URL may live (SigV4: seven days).
MAX_PRESIGNED_SECONDS = 7 * 24 * 60 * 60


def _check_signing_window(conf: dict[str, Any]) -> list[CheckMessage]:
    """A URL signed at the start of its window must not outlive what S3 allows."""
    from .storage import get_image_storage

    window = conf["URL_SIGNING_WINDOW"]
    if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
        return []  # 0 is off; a bad value is E003
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
    if not isinstance(secrets, list | tuple) or not all(
        isinstance(secret, str) and secret for secret in secrets
    ):
        return [
            Error(
                f"{SETTINGS_NAME}['WEBHOOK_SECRETS'] must be a list of non-empty strings.",
                hint=NEW_SECRET_HINT,
                id="django_modelslab.E006",
            )
        ]
    messages: list[CheckMessage] = []
    for number, secret in enumerate(secrets, 1):
        if where := odd_character(secret):
            messages.append(
                Error(
                    f"{SETTINGS_NAME}['WEBHOOK_SECRETS'] entry {number} contains whitespace or "
                    f"a control character ({where}).",
                    hint=f"Surrounding whitespace is stripped. {NEW_SECRET_HINT}",
                    id="django_modelslab.E012",
                )
            )
    if base_url:
        parts = urlsplit(base_url) if isinstance(base_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            messages.append(
                Error(
                    f"{SETTINGS_NAME}['PUBLIC_BASE_URL'] must be an http(s) URL, got {base_url!r}.",
                    hint="The site's public origin, e.g. https://www.example.com",
                    id="django_modelslab.E007",
                )
            )
        elif not secrets:
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


def _check_api(conf: dict[str, Any]) -> list[CheckMessage]:
    """The REST API's settings: ALLOWED_MODELS, MODEL_ALIASES, API_REQUIRE_GENERATE_PERMISSION
    and BUDGET_HOOK."""
    messages: list[CheckMessage] = []
    allowed = conf["ALLOWED_MODELS"]
    if allowed is not None and (
        isinstance(allowed, str)
        or not isinstance(allowed, list | tuple | set | frozenset)
        or not all(isinstance(model, str) and model.strip() for model in allowed)
    ):
        messages.append(
            Error(
                f"{SETTINGS_NAME}['ALLOWED_MODELS'] must be None or a list of model ids.",
                hint='None accepts any model id; e.g. ["flux", "sdxl"] accepts only those.',
                id="django_modelslab.E020",
            )
        )
    aliases = conf["MODEL_ALIASES"]
    if not isinstance(aliases, dict) or not all(
        isinstance(name, str) and isinstance(model, str) for name, model in aliases.items()
    ):
        messages.append(
            Error(
                f"{SETTINGS_NAME}['MODEL_ALIASES'] must be a dict of OpenAI model names to "
                "ModelsLab model ids.",
                hint='e.g. {"dall-e-3": "flux"}; "" maps a name to DEFAULT_MODEL.',
                id="django_modelslab.E021",
            )
        )
    if not isinstance(conf["API_REQUIRE_GENERATE_PERMISSION"], bool):
        messages.append(
            Error(
                f"{SETTINGS_NAME}['API_REQUIRE_GENERATE_PERMISSION'] must be True or False.",
                hint="False (the default): any authenticated user may generate through the API.",
                id="django_modelslab.E023",
            )
        )
    hook = conf["BUDGET_HOOK"]
    if hook is not None:
        messages += _check_budget_hook(hook)
    return messages


def _check_budget_hook(hook: Any) -> list[CheckMessage]:
    from django.utils.module_loading import import_string

    problem = ""
    if not isinstance(hook, str):
        problem = f"must be a dotted path to a callable, got {type(hook).__name__}"
    else:
        try:
            target = import_string(hook)
        except ImportError as exc:
            problem = f"cannot be imported ({exc})"
        else:
            if not callable(target):
                problem = f"names {hook!r}, which is not callable"
    if not problem:
        return []
    return [
        Error(
            f"{SETTINGS_NAME}['BUDGET_HOOK'] {problem}.",
            hint='e.g. "myproject.budget.allow_generation"; None disables the hook.',
            id="django_modelslab.E022",
        )
    ]


def _check_kinds(conf: dict[str, Any]) -> list[CheckMessage]:
    """Input images and default models of img2img, inpaint, upscale and v7 (docs/kinds.md)."""
    from .inputs import TRANSPORTS, signs_urls
    from .storage import get_image_storage

    messages: list[CheckMessage] = []
    for name in ("DEFAULT_UPSCALE_MODEL", "DEFAULT_V7_MODEL"):
        value = conf[name]
        if not isinstance(value, str) or not value.strip():
            messages.append(
                Error(
                    f"{SETTINGS_NAME}[{name!r}] must be a ModelsLab model id.",
                    hint=f"The default is {DEFAULTS[name]!r}.",
                    id="django_modelslab.E041",
                )
            )
    mode = conf["INPUT_IMAGE_TRANSPORT"]
    if mode not in TRANSPORTS:
        messages.append(
            Error(
                f"{SETTINGS_NAME}['INPUT_IMAGE_TRANSPORT'] must be one of "
                f"{', '.join(map(repr, TRANSPORTS))}, got {mode!r}.",
                hint="'auto' sends a signed link when the storage makes them (S3), else base64.",
                id="django_modelslab.E040",
            )
        )
    elif mode == "url" and not conf["PUBLIC_BASE_URL"]:
        try:
            storage = get_image_storage()
            relative = not signs_urls(storage) and "://" not in storage.url("x.png")
        except Exception:  # a broken storage is reported by its own check
            relative = False
        if relative:
            messages.append(
                Error(
                    f"{SETTINGS_NAME}['INPUT_IMAGE_TRANSPORT'] is 'url' but the storage gives "
                    "relative URLs and PUBLIC_BASE_URL is not set: ModelsLab could not reach "
                    "input images.",
                    hint="Set PUBLIC_BASE_URL (the site's public origin), or use 'base64'.",
                    id="django_modelslab.E042",
                )
            )
    return messages


def _check_costs(conf: dict[str, Any]) -> list[CheckMessage]:
    """PRICES, DAILY_BUDGET_PER_USER, DAILY_BUDGET and COST_UNIT (docs/costs.md)."""
    messages: list[CheckMessage] = []
    prices = conf["PRICES"]
    if not isinstance(prices, dict) or not all(
        isinstance(model, str) and model.strip() and parse_amount(price) is not None
        for model, price in prices.items()
    ):
        messages.append(
            Error(
                f"{SETTINGS_NAME}['PRICES'] must be a dict of model ids to prices per image "
                "(numbers or numeric strings, >= 0).",
                hint='e.g. {"flux": "0.0047", "*": "0.002"}; "*" prices any other model.',
                id="django_modelslab.E050",
            )
        )
    for name in ("DAILY_BUDGET_PER_USER", "DAILY_BUDGET"):
        value = conf[name]
        if value is not None and parse_amount(value) is None:
            messages.append(
                Error(
                    f"{SETTINGS_NAME}[{name!r}] must be None or an amount >= 0, got {value!r}.",
                    hint='None means no limit; e.g. "5.00" (in COST_UNIT).',
                    id="django_modelslab.E051",
                )
            )
    if not isinstance(conf["COST_UNIT"], str):
        messages.append(
            Error(
                f"{SETTINGS_NAME}['COST_UNIT'] must be a string.",
                hint='e.g. "credits" or "USD".',
                id="django_modelslab.E052",
            )
        )
    budgets = conf["DAILY_BUDGET_PER_USER"] is not None or conf["DAILY_BUDGET"] is not None
    if budgets and not prices:
        messages.append(
            Warning(
                "A daily budget is set but PRICES is empty: new requests are estimated at 0, "
                "so a budget refuses work only once recorded spending has reached it.",
                hint="Add the price per image of the models you use to PRICES.",
                id="django_modelslab.W050",
            )
        )
    return messages


@register(Tags.compatibility)
def check_fallbacks_and_safety(
    app_configs: Iterable[Any] | None = None, **kwargs: Any
) -> list[CheckMessage]:
    """FALLBACK_MODELS, FALLBACK_ON_SAFETY, SAFETY_CHECKER and MODERATION_HOOK."""
    if not isinstance(getattr(settings, SETTINGS_NAME, None) or {}, dict):
        return []  # reported as E010
    from .fallbacks import clean_model_ids

    conf = get_settings()
    messages: list[CheckMessage] = []
    try:
        clean_model_ids(conf["FALLBACK_MODELS"])
    except ValueError as exc:
        messages.append(
            Error(
                f"{SETTINGS_NAME}['FALLBACK_MODELS'] must be a list of model ids: {exc}",
                hint='e.g. ["flux", "sdxl"]; [] tries only the request\'s own model.',
                id="django_modelslab.E030",
            )
        )
    if not isinstance(conf["FALLBACK_ON_SAFETY"], bool):
        messages.append(
            Error(
                f"{SETTINGS_NAME}['FALLBACK_ON_SAFETY'] must be True or False.",
                hint="False (the default): a safety refusal is final.",
                id="django_modelslab.E031",
            )
        )
    if conf["SAFETY_CHECKER"] not in (None, True, False):
        messages.append(
            Error(
                f"{SETTINGS_NAME}['SAFETY_CHECKER'] must be None, True or False.",
                hint="None leaves ModelsLab's default; True/False send safety_checker yes/no.",
                id="django_modelslab.E032",
            )
        )
    hook = conf["MODERATION_HOOK"]
    if hook is not None:
        problem = _hook_problem(hook)
        if problem:
            messages.append(
                Error(
                    f"{SETTINGS_NAME}['MODERATION_HOOK'] {problem}.",
                    hint='e.g. "myproject.moderation.check_prompt"; None disables the hook.',
                    id="django_modelslab.E033",
                )
            )
    return messages


def _hook_problem(hook: Any) -> str:
    """Why a dotted path does not name a callable ("" when it does)."""
    from django.utils.module_loading import import_string

    if not isinstance(hook, str):
        return f"must be a dotted path to a callable, got {type(hook).__name__}"
    try:
        target = import_string(hook)
    except ImportError as exc:
        return f"cannot be imported ({exc})"
    return "" if callable(target) else f"names {hook!r}, which is not callable"


#: Apps the REST API (``django_modelslab.api.urls``) needs in INSTALLED_APPS.
API_APPS = ("rest_framework", "rest_framework.authtoken")


@register(Tags.compatibility)
def check_site_setup(app_configs: Iterable[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """A new site's mistakes: the emulator's images refused, no media settings, API apps missing."""
    if not isinstance(getattr(settings, SETTINGS_NAME, None) or {}, dict):
        return []  # reported as E010
    conf = get_settings()
    return [*_check_emulator_downloads(conf), *_check_media(), *_check_api_apps()]


def _check_emulator_downloads(conf: dict[str, Any]) -> list[CheckMessage]:
    """BASE_URL on loopback (the emulator) whose host the download allow-list refuses."""
    from .downloads import is_exactly_listed

    base_url, hosts = conf["BASE_URL"], conf["ALLOWED_DOWNLOAD_HOSTS"]
    if not isinstance(base_url, str) or not is_loopback_url(base_url):
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
    from django.core.files.storage import FileSystemStorage

    from .storage import get_image_storage

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
    from django.apps import apps

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
