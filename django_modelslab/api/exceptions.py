"""HTTP errors of the API beyond DRF's own."""

from __future__ import annotations

from django.utils.translation import gettext_lazy as _
from rest_framework import status
from rest_framework.exceptions import APIException


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = _("The request is being generated; try again once it has finished.")
    default_code = "generation_in_progress"


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = _("This Idempotency-Key was already used with a different request body.")
    default_code = "idempotency_key_reused"


class OverBudget(APIException):
    """The BUDGET_HOOK or a daily budget refused the generation (HTTP 429).

    Not :class:`django_modelslab.exceptions.BudgetExceeded`, the pipeline's refusal, which
    :func:`~django_modelslab.api.budget.budget_refusals` turns into this.
    """

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_detail = _("Your image generation budget is used up.")
    default_code = "budget_exceeded"


#: The former name, which a BUDGET_HOOK may raise.
BudgetExceeded = OverBudget


class RequestTooLarge(APIException):
    """A body larger than the endpoint parses (see ``api.parsers``)."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = _("The request body is too large.")
    default_code = "request_too_large"
