"""The BUDGET_HOOK: a project callable that may refuse a generation (HTTP 429)."""

from __future__ import annotations

from typing import Any

from django.utils.module_loading import import_string

from ..conf import get_setting
from ..models import GenerationRequest
from .exceptions import BudgetExceeded


def check_budget(user: Any, generation: GenerationRequest) -> None:
    """Ask the hook about ``generation`` (not yet saved for a new one); raise to refuse.

    The hook returns None or True to allow, False or a message to refuse; it may also
    raise :class:`~django_modelslab.api.exceptions.BudgetExceeded` itself.
    """
    path = get_setting("BUDGET_HOOK")
    if not path:
        return
    verdict = import_string(path)(user, generation)
    if verdict is None or verdict is True:
        return
    if isinstance(verdict, str) and verdict:
        raise BudgetExceeded(verdict)
    raise BudgetExceeded()
