"""The ``MODELSLAB`` settings dict: defaults in one place, read at call time.

Everything reads settings through :func:`get_setting` (or :func:`get_settings`), never at
import time, so ``override_settings(MODELSLAB=...)`` works in tests and a typo'd name fails
loudly instead of silently using a default.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

SETTINGS_NAME = "MODELSLAB"

#: Hosts ModelsLab has been seen serving outputs from (see docs/settings.md). Exact host
#: names, or ``.suffix`` to allow every subdomain.
DEFAULT_ALLOWED_DOWNLOAD_HOSTS: tuple[str, ...] = (
    ".r2.dev",
    "modelslab-bom.s3.amazonaws.com",
    ".stablediffusionapi.com",
    ".modelslab.com",
    "d9jy2smsrdjcq.cloudfront.net",
)

DEFAULTS: dict[str, Any] = {
    # Provider
    "API_KEY": "",
    "BASE_URL": "https://modelslab.com/api",
    "DEFAULT_MODEL": "flux",
    # HTTP
    "TIMEOUT": 60.0,  # seconds to wait for a response (read / write / pool)
    "CONNECT_TIMEOUT": 10.0,
    "MAX_RETRIES": 3,  # extra attempts after the first, for retriable failures
    "RETRY_BACKOFF": 1.0,  # first backoff in seconds; doubles each attempt, with jitter
    "RETRY_BACKOFF_MAX": 30.0,  # no single wait (Retry-After included) is longer
    # Waiting for a job in "processing"
    "POLL_INTERVAL": 2.0,  # shortest pause between fetches
    "POLL_INTERVAL_MAX": 15.0,
    "MAX_WAIT": 600.0,  # give up (request fails with a reason) after this many seconds
    # Copying outputs into storage
    "STORAGE": "modelslab",  # alias in settings.STORAGES; falls back to "default"
    "UPLOAD_PREFIX": "modelslab/",
    "ALLOWED_DOWNLOAD_HOSTS": list(DEFAULT_ALLOWED_DOWNLOAD_HOSTS),
    "DOWNLOAD_TIMEOUT": 60.0,
    "MAX_IMAGE_BYTES": 50 * 1024 * 1024,
    "MAX_IMAGE_PIXELS": 40_000_000,
    "OUTPUT_URL_TTL": 24 * 60 * 60,  # how long ModelsLab keeps an output URL alive
    "THUMBNAIL_SIZE": 256,  # longest side of the stored WebP thumbnail, in pixels
    # Cache-Control of stored objects (S3); "" sends none. Keys never change meaning.
    "CACHE_CONTROL": "public, max-age=31536000, immutable",
    # Presigned S3 URLs are signed as of the start of a window this long (seconds) and stay
    # the same within it, so browsers can cache them; 0 signs each URL as of now.
    "URL_SIGNING_WINDOW": 3600,
    "STORE_PROMPT_METADATA": False,  # put the prompt in object metadata (prompts can be private)
    # Provenance: XMP in stored PNG/JPEG files saying they are AI-generated (docs/provenance.md)
    "PROVENANCE": True,  # write it (source type and model id)
    "PROVENANCE_INCLUDE_PROMPT": False,  # add the prompt too (prompts can be private)
    # Kinds other than text2img, and v7 (docs/kinds.md)
    "DEFAULT_UPSCALE_MODEL": "realesr-general-x4v3",  # upscale requests with no model id
    "DEFAULT_V7_MODEL": "flux-2-pro",  # v7 requests with no model id
    # How input images reach ModelsLab: "url" (a time-limited link to the stored copy),
    # "base64" (the bytes inline) or "auto" (a link when the storage signs them, e.g. S3).
    "INPUT_IMAGE_TRANSPORT": "auto",
    "INPUT_URL_TTL": 3600,  # seconds an input image link stays valid (signed storages)
    # Pipeline
    "CACHE": True,  # reuse images of an identical, seeded, succeeded request
    "TASK_BACKEND": "default",  # alias in settings.TASKS
    "STALE_AFTER": 300.0,  # seconds without progress before a queued/processing request is stuck
    "MAX_ATTEMPTS": 5,  # a stuck request picked up this many times fails with a reason
    # Webhooks: on when both are set. ModelsLab POSTs to
    # PUBLIC_BASE_URL + reverse("modelslab:webhook", secret=WEBHOOK_SECRETS[0]).
    "PUBLIC_BASE_URL": "",  # e.g. "https://www.example.com"
    "WEBHOOK_SECRETS": [],  # the first is sent; all are accepted (rotation)
    # REST API (django_modelslab.api; see docs/api.md)
    "MAX_PROMPT_LENGTH": 2000,  # characters, for prompt and negative_prompt
    "ALLOWED_MODELS": None,  # None: any model id; else the list of ModelsLab ids the API accepts
    # OpenAI model names -> ModelsLab model ids ("" means DEFAULT_MODEL). A name not listed
    # here is used as a ModelsLab id as it is.
    "MODEL_ALIASES": {"dall-e-2": "", "dall-e-3": "", "gpt-image-1": ""},
    "OPENAI_WAIT_TIMEOUT": 120.0,  # seconds v1/images/generations waits for the images
    # True: creating (generations/, v1/images/generations) and regenerating through the API
    # need the generate_images permission, as in the admin; False: any authenticated user.
    "API_REQUIRE_GENERATE_PERMISSION": False,
    # Dotted path to ``hook(user, generation) -> None | bool | str``; False or a message
    # refuses the generation with HTTP 429 (see docs/api.md).
    "BUDGET_HOOK": None,
    # Costs and budgets (docs/costs.md). Amounts are numbers or numeric strings, in COST_UNIT.
    "PRICES": {},  # model id -> price per image, used when ModelsLab reports no cost; "*": any
    "DAILY_BUDGET_PER_USER": None,  # None: no limit; else each user's spending per day
    "DAILY_BUDGET": None,  # None: no limit; else everyone's spending per day
    "COST_UNIT": "credits",  # how amounts are labelled in messages and the admin
    # Fallbacks and safety (docs/fallbacks-and-safety.md)
    "FALLBACK_MODELS": [],  # model ids tried in order when a request's model fails
    "FALLBACK_ON_SAFETY": False,  # a safety refusal tries the next model too
    "SAFETY_CHECKER": None,  # None: ModelsLab's default; True/False: sent as "yes"/"no"
    # Dotted path to ``hook(request) -> None | bool | str``; False or a message refuses the
    # prompt before any ModelsLab call (the request ends "refused").
    "MODERATION_HOOK": None,
}

#: Settings that must be positive numbers, checked at start-up.
POSITIVE_NUMBERS = (
    "TIMEOUT",
    "CONNECT_TIMEOUT",
    "RETRY_BACKOFF",
    "RETRY_BACKOFF_MAX",
    "POLL_INTERVAL",
    "POLL_INTERVAL_MAX",
    "MAX_WAIT",
    "DOWNLOAD_TIMEOUT",
    "MAX_IMAGE_BYTES",
    "MAX_IMAGE_PIXELS",
    "OUTPUT_URL_TTL",
    "THUMBNAIL_SIZE",
    "STALE_AFTER",
    "MAX_PROMPT_LENGTH",
    "OPENAI_WAIT_TIMEOUT",
    "INPUT_URL_TTL",
)


def user_settings() -> dict[str, Any]:
    """The project's ``MODELSLAB`` dict as written (empty when absent)."""
    value = getattr(settings, SETTINGS_NAME, None)
    return value if isinstance(value, dict) else {}


def get_setting(name: str) -> Any:
    """One setting: the project's value, else the default. Unknown names raise KeyError."""
    if name not in DEFAULTS:
        raise KeyError(f"{SETTINGS_NAME}[{name!r}] is not a django-modelslab setting")
    return _cleaned(name, user_settings().get(name, DEFAULTS[name]))


def get_settings() -> dict[str, Any]:
    """All settings, defaults filled in."""
    conf = {**DEFAULTS, **{k: v for k, v in user_settings().items() if k in DEFAULTS}}
    return {name: _cleaned(name, value) for name, value in conf.items()}


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
