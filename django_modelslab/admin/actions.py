"""Generate and Regenerate, from an action or a button: who may, when, and what is said after.

A press starts each request through the pipeline, never one started after the page was shown
(a double click, a second tab, must not pay twice), and waits out SQLite's "database is
locked". Then one message per outcome, from :data:`REPORTS`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.http import HttpRequest
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext, ngettext_lazy

from .. import pipeline
from ..contention import StillLocked, retry_when_locked
from ..exceptions import BudgetExceeded, InvalidParameters
from ..models import GenerationRequest
from .html import ACTIVE_STATUSES

GENERATE_PERMISSION = "django_modelslab.generate_images"

#: Hidden field of the change form and the changelist: when the page was shown. A press of
#: Generate / Regenerate does not start a request that was started after that: see
#: :func:`started_since`.
SHOWN_FIELD = "_modelslab_shown"

Status = GenerationRequest.Status

#: What a press reports, one message per outcome that happened, in this order. Each is
#: formatted with ``n`` (how many), ``ids`` ("#1, #2"), ``errors`` ("#1: why; #2: why") and
#: ``why`` (the reason a group was not started).
REPORTS = {
    "started": (
        ngettext_lazy(
            "%(n)d request not started again: it was started after this page was shown "
            "(%(ids)s). Its status is below.",
            "%(n)d requests not started again: they were started after this page was shown "
            "(%(ids)s). Their status is below.",
            "n",
        ),
        messages.WARNING,
    ),
    "succeeded": (
        ngettext_lazy("%(n)d request succeeded.", "%(n)d requests succeeded.", "n"),
        messages.SUCCESS,
    ),
    "queued": (
        ngettext_lazy(
            "%(n)d request is queued; this page updates when it finishes.",
            "%(n)d requests are queued; this page updates when they finish.",
            "n",
        ),
        messages.INFO,
    ),
    "failed": (
        ngettext_lazy("%(n)d request failed: %(errors)s", "%(n)d requests failed: %(errors)s", "n"),
        messages.ERROR,
    ),
    "refused": (
        ngettext_lazy(
            "%(n)d request refused: %(errors)s", "%(n)d requests refused: %(errors)s", "n"
        ),
        messages.WARNING,
    ),
    "busy": (
        ngettext_lazy(
            "%(n)d request skipped: it is still in progress (%(ids)s).",
            "%(n)d requests skipped: they are still in progress (%(ids)s).",
            "n",
        ),
        messages.WARNING,
    ),
    "done": (
        ngettext_lazy(
            "%(n)d request skipped: it already has images (%(ids)s); use Regenerate for new ones.",
            "%(n)d requests skipped: they already have images (%(ids)s); "
            "use Regenerate for new ones.",
            "n",
        ),
        messages.WARNING,
    ),
    "not_started": (
        ngettext_lazy(
            "%(n)d request not started (%(ids)s): %(why)s",
            "%(n)d requests not started (%(ids)s): %(why)s",
            "n",
        ),
        messages.ERROR,
    ),
}


def can_generate(request: HttpRequest) -> bool:
    """Whether the user may generate, regenerate and choose images."""
    return request.user.has_perm(GENERATE_PERMISSION)


def shown_at(request: HttpRequest) -> datetime | None:
    """When the posting page was shown (its :data:`SHOWN_FIELD`), or None."""
    value = request.POST.get(SHOWN_FIELD, "")
    try:
        return parse_datetime(value) if value else None
    except ValueError:
        return None


def started_since(submitted_at: datetime | None, shown: datetime | None) -> bool:
    """Whether a request was (re)started after the page that asks to start it was shown."""
    return shown is not None and submitted_at is not None and submitted_at > shown


class StartedSinceShown(Exception):
    """A change form posted from a page shown before the request was last (re)started."""

    def __init__(self, pk: Any) -> None:
        super().__init__(
            gettext(
                "Nothing was saved: this request was started again after the page was shown "
                "(#%(id)s). Its current state is below; make your changes again."
            )
            % {"id": pk}
        )


def start(
    model_admin: ModelAdmin,
    request: HttpRequest,
    generations: Iterable[GenerationRequest],
    *,
    regenerate: bool,
    keep_seed: bool = False,
) -> None:
    """Submit (or regenerate) each request through the pipeline and report what happened.

    Regenerating draws a new seed for a seeded request unless ``keep_seed``.
    """
    generations = list(generations)
    shown = shown_at(request)
    submitted = dict(
        GenerationRequest.objects.filter(
            pk__in=[generation.pk for generation in generations]
        ).values_list("pk", "submitted_at")
    )
    # outcome -> why -> requests, for REPORTS
    found: dict[str, dict[str, list[GenerationRequest]]] = defaultdict(lambda: defaultdict(list))
    for generation in generations:
        outcome, why = "", ""
        if started_since(submitted.get(generation.pk), shown):
            outcome = "started"
        elif generation.status in ACTIVE_STATUSES:
            outcome = "busy"
        elif not regenerate and generation.status == Status.SUCCEEDED:
            outcome = "done"
        else:
            call = (
                partial(pipeline.regenerate, generation, keep_seed=keep_seed)
                if regenerate
                else partial(pipeline.submit, generation)
            )
            try:
                generation = retry_when_locked(call)
                finished = generation.status in (Status.SUCCEEDED, Status.FAILED, Status.REFUSED)
                outcome = generation.status if finished else "queued"
            except pipeline.GenerationInProgress:
                outcome = "busy"
            except (BudgetExceeded, InvalidParameters, StillLocked) as exc:  # not queued
                outcome, why = "not_started", str(exc)
        found[outcome][why].append(generation)
    for outcome, (message, level) in REPORTS.items():
        for why, group in found.get(outcome, {}).items():
            values = {
                "n": len(group),
                "ids": ", ".join(f"#{generation.pk}" for generation in group),
                "errors": "; ".join(
                    f"#{generation.pk}: {generation.error}" for generation in group
                ),
                "why": why,
            }
            model_admin.message_user(request, message % values, level)
