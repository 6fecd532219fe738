"""The ``MODELSLAB`` settings dict: one table of defaults and rules, read at call time.

Each setting is a row of :data:`SETTINGS`: its default and the rules its value must pass.
:mod:`django_modelslab.checks` turns every rule into a system check (ids
``django_modelslab.E0xx``), and adds the checks that cross settings. Everything reads
settings through :func:`get_setting` (or :func:`get_settings`), never at import time, so
``override_settings(MODELSLAB=...)`` works in tests and a typo'd name fails loudly instead of
silently using a default. Hook settings are import strings, imported by :func:`load_hook`.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.module_loading import import_string

from .amounts import parse_amount

SETTINGS_NAME = "MODELSLAB"
DEFAULT_BASE_URL = "https://modelslab.com/api"

#: Hosts ModelsLab has been seen serving outputs from (see docs/settings.md). Exact host
#: names, or ``.suffix`` to allow every subdomain.
DEFAULT_ALLOWED_DOWNLOAD_HOSTS: tuple[str, ...] = (
    ".r2.dev",
    "modelslab-bom.s3.amazonaws.com",
    ".stablediffusionapi.com",
    ".modelslab.com",
    "d9jy2smsrdjcq.cloudfront.net",
)
#: How input images may reach ModelsLab (``INPUT_IMAGE_TRANSPORT``).
INPUT_IMAGE_TRANSPORTS = ("auto", "url", "base64")
NEW_SECRET_HINT = "Make one with: python -c 'import secrets; print(secrets.token_urlsafe())'"  # noqa: S105  (a hint, not a secret)


@dataclass(frozen=True)
class Rule:
    """A test a setting's value must pass, and the system check that says when it fails.

    ``problem(value)`` is ``""`` when the value passes, else what follows the setting's name in
    the check's message (``"must be a string"``). ``hint`` None: "The default is ...".
    """

    id: str
    problem: Callable[[Any], str]
    hint: str | None = None


class Setting:
    """One setting: its default and its rules (the first that fails is reported)."""

    def __init__(self, default: Any, *rules: Rule) -> None:
        self.default = default
        self.rules = rules


def rule(id: str, test: Callable[[Any], bool], text: str, hint: str | None = None) -> Rule:
    """A rule reporting ``text`` (``{value!r}``: the value) when ``test`` fails."""
    return Rule(id, lambda value: "" if test(value) else text.format(value=value), hint)


def odd_character(secret: str) -> str:
    """Where ``secret`` has whitespace or a control character, e.g. ``"U+000A at position
    21"`` (never the secret itself); ``""`` when it has none."""
    for position, char in enumerate(secret, 1):
        if char.isspace() or unicodedata.category(char).startswith("C"):
            return f"U+{ord(char):04X} at position {position}"
    return ""


def is_http_url(value: Any) -> bool:
    """An ``http(s)://`` URL with a host."""
    parts = urlsplit(value) if isinstance(value, str) else None
    return parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)


def hook_problem(path: Any) -> str:
    """Why a hook setting does not name a callable (``""`` when unset or when it does)."""
    if path is None:
        return ""
    if not isinstance(path, str):
        return f"must be a dotted path to a callable, got {type(path).__name__}"
    try:
        target = import_string(path)
    except ImportError as exc:
        return f"cannot be imported ({exc})"
    return "" if callable(target) else f"names {path!r}, which is not callable"


E003 = "django_modelslab.E003"

#: ``MODELSLAB["C2PA"]``'s keys and their defaults (CERT_CHAIN and PRIVATE_KEY: required).
C2PA_KEYS: dict[str, Any] = {
    "CERT_CHAIN": None,  # the signing certificate, then its issuers: a PEM file's path or text
    "PRIVATE_KEY": None,  # the signing certificate's key: a PEM file's path or text
    "ALGORITHM": "es256",
    "TSA_URL": None,  # an RFC 3161 time-stamp authority, or None
    "INCLUDE_PROMPT": False,  # the prompt in the manifest (prompts can be private)
}
#: The signing algorithms C2PA allows (``MODELSLAB["C2PA"]["ALGORITHM"]``).
C2PA_ALGORITHMS = ("es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519")
C2PA_HINT = (
    'e.g. {"CERT_CHAIN": "/etc/c2pa/chain.pem", "PRIVATE_KEY": "/etc/c2pa/key.pem"}; '
    "None (the default) signs nothing."
)


def c2pa_problem(value: Any) -> str:
    """What is wrong with the shape of ``MODELSLAB["C2PA"]`` ("" when None or well formed).

    Whether the files can be read and the key signs is checked by ``checks`` (E081)."""
    if value is None:
        return ""
    if not isinstance(value, dict):
        return f"must be None or a dict, got {type(value).__name__}"
    unknown = sorted(set(value) - set(C2PA_KEYS))
    if unknown:
        return f"has unknown key(s) {', '.join(map(repr, unknown))} (known: {', '.join(C2PA_KEYS)})"
    for name in ("CERT_CHAIN", "PRIVATE_KEY"):
        if not isinstance(value.get(name), str | os.PathLike) or not str(value[name]).strip():
            return f"needs {name!r}: a PEM file's path or PEM text"
    algorithm = value.get("ALGORITHM", "es256")
    if not isinstance(algorithm, str) or algorithm.lower() not in C2PA_ALGORITHMS:
        return f"['ALGORITHM'] must be one of {', '.join(C2PA_ALGORITHMS)}, got {algorithm!r}"
    tsa = value.get("TSA_URL")
    if tsa is not None and not is_http_url(tsa):
        return f"['TSA_URL'] must be None or an http(s) URL, got {tsa!r}"
    if not isinstance(value.get("INCLUDE_PROMPT", False), bool):
        return "['INCLUDE_PROMPT'] must be True or False"
    return ""


def _odd_key(key: str) -> str:
    where = odd_character(key)
    return where and f"contains whitespace or a control character ({where})"


def _strings(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(isinstance(s, str) and s for s in value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def whole(minimum: int) -> Rule:
    """A whole number >= ``minimum`` (E003)."""
    return rule(
        E003,
        lambda v: _number(v) and isinstance(v, int) and v >= minimum,
        f"must be a whole number >= {minimum}, got {{value!r}}",
    )


def flag(id: str, hint: str) -> Rule:
    return rule(id, lambda v: isinstance(v, bool), "must be True or False", hint)


def hook(id: str, example: str) -> Rule:
    return Rule(id, hook_problem, f'e.g. "{example}"; None disables the hook.')


POSITIVE = rule(E003, lambda v: _number(v) and v > 0, "must be a positive number, got {value!r}")
MODEL_ID = rule(
    "django_modelslab.E041",
    lambda v: isinstance(v, str) and bool(v.strip()),
    "must be a ModelsLab model id",
)
AMOUNT_OR_NONE = rule(
    "django_modelslab.E051",
    lambda v: v is None or parse_amount(v) is not None,
    "must be None or an amount >= 0, got {value!r}",
    'None means no limit; e.g. "5.00" (in COST_UNIT).',
)
TRUE_FALSE_OR_NONE = rule(
    "django_modelslab.E032",
    lambda v: v in (None, True, False),
    "must be None, True or False",
    "None leaves ModelsLab's default; True/False send safety_checker yes/no.",
)

SETTINGS: dict[str, Setting] = {
    # Provider
    "API_KEY": Setting(
        "",
        rule(
            "django_modelslab.E001",
            lambda v: isinstance(v, str),
            "must be a string",
            "Read it from the environment, e.g. os.environ['MODELSLAB_API_KEY'].",
        ),
        Rule(  # the message names the character and where, never the key
            "django_modelslab.E011",
            _odd_key,
            "Surrounding whitespace is stripped; a ModelsLab key has none inside. "
            "Copy the key again from the ModelsLab dashboard.",
        ),
    ),
    "BASE_URL": Setting(
        DEFAULT_BASE_URL,
        rule(
            "django_modelslab.E004",
            is_http_url,
            "must be an http(s) URL, got {value!r}",
            f"The default is {DEFAULT_BASE_URL}.",
        ),
    ),
    "DEFAULT_MODEL": Setting("flux"),  # ModelsLab refuses an unknown model at the first call
    # HTTP
    "TIMEOUT": Setting(60.0, POSITIVE),  # seconds to wait for a response (read / write / pool)
    "CONNECT_TIMEOUT": Setting(10.0, POSITIVE),
    "MAX_RETRIES": Setting(3, whole(0)),  # extra attempts after the first, retriable failures
    "RETRY_BACKOFF": Setting(1.0, POSITIVE),  # first backoff (s); doubles each attempt, jitter
    "RETRY_BACKOFF_MAX": Setting(30.0, POSITIVE),  # no single wait (Retry-After too) is longer
    # Waiting for a job in "processing"
    "POLL_INTERVAL": Setting(2.0, POSITIVE),  # shortest pause between fetches
    "POLL_INTERVAL_MAX": Setting(15.0, POSITIVE),
    "MAX_WAIT": Setting(600.0, POSITIVE),  # give up (the request fails) after this many seconds
    # Copying outputs into storage
    "STORAGE": Setting("modelslab"),  # alias in settings.STORAGES; falls back to "default"
    "UPLOAD_PREFIX": Setting("modelslab/"),  # one that escapes the storage fails the first copy
    "ALLOWED_DOWNLOAD_HOSTS": Setting(
        list(DEFAULT_ALLOWED_DOWNLOAD_HOSTS),
        rule(
            "django_modelslab.E005",
            lambda v: _strings(v) and all(host.strip(".") for host in v),
            "must be a list of host names",
            'Exact hosts ("cdn.example.com") or suffixes (".r2.dev").',
        ),
    ),
    "DOWNLOAD_TIMEOUT": Setting(60.0, POSITIVE),
    "MAX_IMAGE_BYTES": Setting(50 * 1024 * 1024, POSITIVE),
    "MAX_IMAGE_PIXELS": Setting(40_000_000, POSITIVE),
    "OUTPUT_URL_TTL": Setting(24 * 60 * 60, POSITIVE),  # how long an output URL stays alive
    "THUMBNAIL_SIZE": Setting(256, POSITIVE),  # longest side of the stored WebP thumbnail (px)
    # Cache-Control of stored objects (S3); "" sends none. Keys never change meaning.
    "CACHE_CONTROL": Setting("public, max-age=31536000, immutable"),
    # Presigned S3 URLs are signed as of the start of a window this long (seconds) and stay
    # the same within it, so browsers can cache them; 0 signs each URL as of now.
    "URL_SIGNING_WINDOW": Setting(3600, whole(0)),
    # prune_images deletes unreferenced files older than this (seconds; its --grace); a
    # store reusing a file older than a quarter of it refreshes the file's time (S3).
    "PRUNE_GRACE": Setting(24 * 60 * 60, whole(1)),
    "STORE_PROMPT_METADATA": Setting(False),  # the prompt in object metadata (can be private)
    # Provenance: XMP in stored PNG/JPEG files saying they are AI-generated (docs/provenance.md)
    "PROVENANCE": Setting(True),  # write it (source type and model id)
    "PROVENANCE_INCLUDE_PROMPT": Setting(False),  # add the prompt too (prompts can be private)
    # Content Credentials: a signed C2PA manifest in every stored image (None: off); a dict
    # of C2PA_KEYS (docs/provenance.md). Needs the extra django-modelslab[c2pa].
    "C2PA": Setting(None, Rule("django_modelslab.E080", lambda v: c2pa_problem(v), C2PA_HINT)),
    # Kinds other than text2img, and v7 (docs/kinds.md)
    "DEFAULT_UPSCALE_MODEL": Setting("realesr-general-x4v3", MODEL_ID),  # upscales, no model id
    "DEFAULT_V7_MODEL": Setting("flux-2-pro", MODEL_ID),  # v7 requests with no model id
    # How input images reach ModelsLab: "url" (a time-limited link to the stored copy),
    # "base64" (the bytes inline) or "auto" (a link when the storage signs them, e.g. S3).
    "INPUT_IMAGE_TRANSPORT": Setting(
        "auto",
        rule(
            "django_modelslab.E040",
            lambda v: v in INPUT_IMAGE_TRANSPORTS,
            f"must be one of {', '.join(map(repr, INPUT_IMAGE_TRANSPORTS))}, got {{value!r}}",
            "'auto' sends a signed link when the storage makes them (S3), else base64.",
        ),
    ),
    "INPUT_URL_TTL": Setting(3600, POSITIVE),  # seconds an input link stays valid (signed)
    # Pipeline
    "CACHE": Setting(True),  # reuse images of an identical, seeded, succeeded request
    "TASK_BACKEND": Setting("default"),  # alias in settings.TASKS
    "STALE_AFTER": Setting(300.0, POSITIVE),  # seconds without progress before one is stuck
    "MAX_ATTEMPTS": Setting(5, whole(1)),  # a stuck request picked up this often fails
    # The account's limit of jobs at ModelsLab, shared by every process using this database
    # (pipeline/slots.py); None: no limit here (each 429 is retried).
    "MAX_CONCURRENT_JOBS": Setting(
        None,
        rule(
            "django_modelslab.E053",
            lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 1),
            "must be None or a whole number >= 1, got {value!r}",
            "Your ModelsLab plan's queued-request limit: 5, 10 or 15; None means no limit.",
        ),
    ),
    "SLOT_LEASE": Setting(60.0, POSITIVE),  # seconds a dead process's slot stays taken
    "SLOT_WAIT_TIMEOUT": Setting(600.0, POSITIVE),  # waiting longer fails the attempt
    # Webhooks: on when both are set. ModelsLab POSTs to
    # PUBLIC_BASE_URL + reverse("modelslab:webhook", secret=WEBHOOK_SECRETS[0]).
    "PUBLIC_BASE_URL": Setting(  # e.g. "https://www.example.com"
        "",
        rule(
            "django_modelslab.E007",
            lambda v: not v or is_http_url(v),
            "must be an http(s) URL, got {value!r}",
            "The site's public origin, e.g. https://www.example.com",
        ),
    ),
    "WEBHOOK_SECRETS": Setting(  # the first is sent; all are accepted (rotation)
        [],
        rule(
            "django_modelslab.E006",
            _strings,
            "must be a list of non-empty strings",
            NEW_SECRET_HINT,
        ),
    ),
    # REST API (django_modelslab.api; see docs/api.md)
    "MAX_PROMPT_LENGTH": Setting(2000, POSITIVE),  # characters, for prompt and negative_prompt
    "ALLOWED_MODELS": Setting(  # None: any model id; else the ModelsLab ids the API accepts
        None,
        rule(
            "django_modelslab.E020",
            lambda v: (
                v is None
                or (
                    isinstance(v, list | tuple | set | frozenset)
                    and all(isinstance(model, str) and model.strip() for model in v)
                )
            ),
            "must be None or a list of model ids",
            'None accepts any model id; e.g. ["flux", "sdxl"] accepts only those.',
        ),
    ),
    # OpenAI model names -> ModelsLab model ids ("" means DEFAULT_MODEL). A name not listed
    # here is used as a ModelsLab id as it is.
    "MODEL_ALIASES": Setting(
        {"dall-e-2": "", "dall-e-3": "", "gpt-image-1": ""},
        rule(
            "django_modelslab.E021",
            lambda v: (
                isinstance(v, dict)
                and all(
                    isinstance(name, str) and isinstance(model, str) for name, model in v.items()
                )
            ),
            "must be a dict of OpenAI model names to ModelsLab model ids",
            'e.g. {"dall-e-3": "flux"}; "" maps a name to DEFAULT_MODEL.',
        ),
    ),
    "OPENAI_WAIT_TIMEOUT": Setting(120.0, POSITIVE),  # seconds v1/images/generations waits
    # True: creating (generations/, v1/images/generations) and regenerating through the API
    # need the generate_images permission, as in the admin; False: any authenticated user.
    "API_REQUIRE_GENERATE_PERMISSION": Setting(
        False,
        flag(
            "django_modelslab.E023",
            "False (the default): any authenticated user may generate through the API.",
        ),
    ),
    # Lists at scale (docs/scaling.md): above this many rows by PostgreSQL's estimate, the
    # admin's (and, with API_ESTIMATED_COUNT, the API's) page counts are that estimate
    # instead of a COUNT(*); None: always count.
    "ESTIMATED_COUNT_ABOVE": Setting(
        10_000,
        rule(
            "django_modelslab.E024",
            lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= 0),
            "must be a whole number >= 0 or None, got {value!r}",
        ),
    ),
    "API_ESTIMATED_COUNT": Setting(
        False,
        flag(
            "django_modelslab.E025",
            "False (the default): the API's count is exact; True: estimated on large tables.",
        ),
    ),
    # Dotted path to ``hook(user, generation) -> None | bool | str``; False or a message
    # refuses the generation with HTTP 429 (see docs/api.md).
    "BUDGET_HOOK": Setting(
        None, hook("django_modelslab.E022", "myproject.budget.allow_generation")
    ),
    # Costs and budgets (docs/costs.md). Amounts are numbers or numeric strings, in COST_UNIT.
    "PRICES": Setting(  # model id -> price per image, when ModelsLab reports no cost; "*": any
        {},
        rule(
            "django_modelslab.E050",
            lambda v: (
                isinstance(v, dict)
                and all(
                    isinstance(model, str) and model.strip() and parse_amount(price) is not None
                    for model, price in v.items()
                )
            ),
            "must be a dict of model ids to prices per image (numbers or numeric strings, >= 0)",
            'e.g. {"flux": "0.0047", "*": "0.002"}; "*" prices any other model.',
        ),
    ),
    "DAILY_BUDGET_PER_USER": Setting(None, AMOUNT_OR_NONE),  # each user's spending per day
    "DAILY_BUDGET": Setting(None, AMOUNT_OR_NONE),  # everyone's spending per day
    "COST_UNIT": Setting(  # how amounts are labelled in messages and the admin
        "credits",
        rule(
            "django_modelslab.E052",
            lambda v: isinstance(v, str),
            "must be a string",
            'e.g. "credits" or "USD".',
        ),
    ),
    # Fallbacks and safety (docs/fallbacks-and-safety.md)
    "FALLBACK_MODELS": Setting([]),  # model ids tried in order when a request's model fails
    "FALLBACK_ON_SAFETY": Setting(  # a safety refusal tries the next model too
        False, flag("django_modelslab.E031", "False (the default): a safety refusal is final.")
    ),
    "SAFETY_CHECKER": Setting(None, TRUE_FALSE_OR_NONE),  # True/False: sent as "yes"/"no"
    # Dotted path to ``hook(request) -> None | bool | str``; False or a message refuses the
    # prompt before any ModelsLab call (the request ends "refused").
    "MODERATION_HOOK": Setting(
        None, hook("django_modelslab.E033", "myproject.moderation.check_prompt")
    ),
    # Dotted path to ``hook(image, generation) -> str``: the alt text of a newly stored image
    # (default: the prompt, cleaned). One that fails is logged and the default used.
    "ALT_TEXT_HOOK": Setting(None, hook("django_modelslab.E070", "myproject.images.alt_text")),
}

#: Every setting's default.
DEFAULTS: dict[str, Any] = {name: setting.default for name, setting in SETTINGS.items()}


def user_settings() -> dict[str, Any]:
    """The project's ``MODELSLAB`` dict as written (empty when absent)."""
    value = getattr(settings, SETTINGS_NAME, None)
    return value if isinstance(value, dict) else {}


def get_setting(name: str) -> Any:
    """One setting: the project's value, else the default. Unknown names raise KeyError."""
    if name not in SETTINGS:
        raise KeyError(f"{SETTINGS_NAME}[{name!r}] is not a django-modelslab setting")
    return _cleaned(name, user_settings().get(name, DEFAULTS[name]))


def get_settings() -> dict[str, Any]:
    """All settings, defaults filled in."""
    conf = {**DEFAULTS, **{k: v for k, v in user_settings().items() if k in DEFAULTS}}
    return {name: _cleaned(name, value) for name, value in conf.items()}


def load_hook(name: str) -> Any:
    """The callable a hook setting names by dotted path, or None when unset."""
    path = get_setting(name)
    return import_string(path) if path else None


def configured_secrets() -> list[str]:
    """The API key and the webhook secrets: what redaction cuts out of kept text."""
    secrets = get_setting("WEBHOOK_SECRETS")
    secrets = list(secrets) if isinstance(secrets, list | tuple) else []
    return [s for s in (get_setting("API_KEY"), *secrets) if isinstance(s, str) and s]


def _cleaned(name: str, value: Any) -> Any:
    """Credentials without surrounding whitespace.

    Keys and secrets read from a file often end in a newline, which would make an illegal
    HTTP header (and an error message quoting the key). Every consumer reads settings through
    here, so none sees the unstripped value; inner whitespace is refused by a system check.
    """
    if name == "API_KEY" and isinstance(value, str):
        return value.strip()
    if name == "WEBHOOK_SECRETS" and isinstance(value, list | tuple):
        return [s.strip() if isinstance(s, str) else s for s in value]
    return value
