"""Budgets in the API: the BUDGET_HOOK, then the daily budgets; a refusal is HTTP 429."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .. import costs
from ..conf import load_hook
from ..exceptions import BudgetExceeded
from ..models import GenerationRequest
from .exceptions import OverBudget


def check_budget(user: Any, generation: GenerationRequest, *, regenerating: bool = False) -> None:
    """Ask the hook, then the daily budgets, about ``generation`` (unsaved when new).

    The hook returns None or True to allow, False or a message to refuse; it may also
    raise :class:`~django_modelslab.api.exceptions.OverBudget` itself. The daily
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
    except BudgetExceeded as exc:
        raise OverBudget(str(exc)) from exc


def _ask_hook(user: Any, generation: GenerationRequest) -> None:
    hook = load_hook("BUDGET_HOOK")
    verdict = hook(user, generation) if hook else None
    if verdict is None or verdict is True:
        return
    raise OverBudget(verdict if isinstance(verdict, str) and verdict else None)
