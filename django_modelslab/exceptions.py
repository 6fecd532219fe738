"""Errors raised by django-modelslab.

Every provider error keeps the evidence: the HTTP status, the provider's response and the
payload that was sent, both with the API key redacted. ``str()`` of an error shows the
provider's own message and never the key.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation


class ModelsLabError(Exception):
    """Base class for everything django-modelslab raises."""


class ModelsLabConfigurationError(ModelsLabError, ImproperlyConfigured):
    """The MODELSLAB settings cannot work (the message names the setting)."""


class ProviderError(ModelsLabError):
    """ModelsLab answered, or failed to answer, in a way that ends this call.

    ``retriable`` says whether trying the same call again later can succeed;
    ``may_have_been_accepted`` says whether the provider may have queued (and charged for)
    a generation although we saw no answer.
    """

    retriable = False
    may_have_been_accepted = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        response: Any = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.response = response  # parsed JSON (or text), key redacted
        self.payload = payload  # what was sent, key redacted

    def __str__(self) -> str:
        if self.status_code is None:
            return self.message
        return f"{self.message} (HTTP {self.status_code})"


class ProviderRejected(ProviderError):
    """ModelsLab refused the request (``status: "error"``): validation, unknown model…"""


class AuthenticationFailed(ProviderRejected):
    """The API key was refused (HTTP 401)."""


class InsufficientCredits(ProviderRejected):
    """The account has no credits left (HTTP 402)."""


class GenerationFailed(ProviderError):
    """The provider accepted the job, then reported it failed (``status: "failed"``)."""


class RateLimited(ProviderError):
    """Too many queued requests (HTTP 429); ``retry_after`` is in seconds when known."""

    retriable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class SlotWaitTimedOut(ProviderError):
    """No place among the account's jobs (``MAX_CONCURRENT_JOBS``) came free within
    ``SLOT_WAIT_TIMEOUT``; nothing was sent, so the request can simply be submitted again."""

    retriable = True


class ProviderUnavailable(ProviderError):
    """A server error (5xx) that did not clear up within the retries."""

    retriable = True


class ProviderTransportError(ProviderError):
    """No usable answer: connection refused, timed out, cut off."""

    retriable = True


class AmbiguousSubmission(ProviderError):
    """A generate call may have reached ModelsLab, but its answer was lost.

    Not retried automatically: a second call could start (and bill) a second job.
    """

    may_have_been_accepted = True


class InvalidProviderResponse(ProviderError):
    """The answer was not the JSON shape ModelsLab documents."""


class DownloadError(ModelsLabError):
    """An output image could not be copied into storage (the message says why)."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(message)
        self.url = url


class DownloadRefused(DownloadError):
    """The URL's host is not allowed (``ALLOWED_DOWNLOAD_HOSTS``) or is private."""


class InvalidImage(DownloadError):
    """The bytes are not an image we accept (format, size, decompression bomb)."""


class StorageError(ModelsLabError):
    """The image could not be written to (or read from) storage: credentials, missing bucket,
    unreachable endpoint, full disk. ``code`` and ``status_code`` are S3's when known."""

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        code: str | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.code = code
        self.status_code = status_code


class InvalidParameters(ModelsLabError, ValueError):
    """A request's parameters are outside ModelsLab's limits (``limits.LIMITS``).

    ``errors`` holds the messages for each field, the admin form's and the API's own;
    nothing is saved, queued or sent.
    """

    def __init__(self, message: str, *, errors: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.errors = errors


class ReservedParameters(InvalidParameters):
    """A request's ``extra`` tries to set payload fields the pipeline sets itself.

    ``names`` lists the refused keys as given; nothing is saved, queued or sent.
    """

    def __init__(self, message: str, *, names: list[str]) -> None:
        super().__init__(message, errors={"extra": [message]})
        self.names = names


class InputMissing(ModelsLabError):
    """A request's input image is not set or cannot be read: the request fails with this."""


class GenerationInProgress(ModelsLabError):
    """The request is queued or processing; it cannot be regenerated until it finishes."""


class WaitTimedOut(ModelsLabError):
    """ModelsLab was still processing the job when ``MAX_WAIT`` ran out."""


class BudgetExceeded(ModelsLabError):
    """A daily budget (``DAILY_BUDGET_PER_USER`` or ``DAILY_BUDGET``) refuses new work.

    Raised before anything is queued or sent; ``scope`` is ``"user"`` or ``"global"``,
    amounts are :class:`~decimal.Decimal` in ``COST_UNIT``.
    """

    def __init__(
        self,
        message: str,
        *,
        scope: str,
        budget: Any = None,
        spent: Any = None,
        estimate: Any = None,
    ) -> None:
        super().__init__(message)
        self.scope = scope
        self.budget = budget
        self.spent = spent
        self.estimate = estimate


class GenerationRefused(ModelsLabError):
    """The generation was refused on content grounds: the request ends ``refused``, not
    ``failed``. An editor can change the prompt and generate again."""


class PromptRejected(GenerationRefused):
    """The MODERATION_HOOK rejected the prompt; ModelsLab was not called."""


class SafetyRefused(GenerationRefused):
    """ModelsLab's safety checker flagged and blanked every output of the job."""


class WebhookRejected(ModelsLabError, SuspiciousOperation):
    """Bad secret or unreadable body: answered with 400 (Django's SuspiciousOperation)."""


class StillLocked(ModelsLabError):
    """SQLite stayed locked for ``contention.LOCKED_RETRY_FOR`` seconds; nothing was changed."""


class InvalidRenditionSpec(ModelsLabError, ValueError):
    """A rendition spec (``"fill-400x300|format-webp"``) cannot be read; the message says
    which part and what is accepted. Nothing is made or stored."""


class UnsupportedRenditionFormat(InvalidRenditionSpec):
    """The spec asks for a format this Pillow cannot write (AVIF without AVIF support)."""
