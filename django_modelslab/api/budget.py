"""Budgets in the API: the BUDGET_HOOK, then the daily budgets; a refusal is HTTP 429."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.utils.module_loading import import_string

from .. import costs
from .. import exceptions as errors
from ..conf import get_setting
from ..models import GenerationRequest
from .exceptions import BudgetExceeded


def check_budget(user: Any, generation: GenerationRequest, *, regenerating: bool = False) -> None:
    """Ask the hook, then the daily budgets, about ``generation`` (unsaved when new).

    The hook returns None or True to allow, False or a message to refuse; it may also
    raise :class:`~django_modelslab.api.exceptions.BudgetExceeded` itself. The daily
    budgets (DAILY_BUDGET_PER_USER, DAILY_BUDGET) are checked again by the pipeline.
    """
    _ask_hook(user, generation)
    with budget_refusals():
        costs.check_budget(generation, regenerating=regenerating)


@contextmanager
def budget_refusals() -> Iterator[None]:
    """The pipeline's :class:`~django_modelslab.exceptions.BudgetExceeded` as an HTTP 429."""
    try:
        yield
    except errors.BudgetExceeded as exc:
        raise BudgetExceeded(str(exc)) from exc


def _ask_hook(user: Any, generation: GenerationRequest) -> None:
    path = get_setting("BUDGET_HOOK")
    if not path:
        return
    verdict = import_string(path)(user, generation)
    if verdict is None or verdict is True:
        return
    if isinstance(verdict, str) and verdict:
        raise BudgetExceeded(verdict)
    raise BudgetExceeded()
