"""The admin's "Costs" page: the charges of a period, by user and by model.

It totals the charges (the ledger, :class:`~django_modelslab.models.Charge`) made in a period
(``since`` / ``until``, dates in TIME_ZONE, both included) for the requests the changelist
shows with the same filters (status, model, search...).
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.dateparse import parse_date
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import costs
from ..amounts import format_amount
from ..conf import get_setting
from ..models import Charge

COSTS_TEMPLATE = "django_modelslab/admin/generationrequest/costs.html"
PERIOD_PARAMS = ("since", "until")


def costs_page(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """The charges of a period, for the changelist's current selection, by user and model."""
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    since, until = _period(request)  # also takes them out of request.GET for the changelist
    try:
        generations = model_admin.get_changelist_instance(request).queryset
    except IncorrectLookupParameters:
        messages.error(request, gettext("Unknown filters were ignored."))
        generations = model_admin.get_queryset(request)
    start = None if since is None else costs.midnight(since)
    end = None if until is None else costs.midnight(until + timedelta(days=1))
    charges = Charge.objects.filter(request__in=generations.order_by().values("pk"))
    unknown = generations
    if start is not None:
        charges = charges.filter(created_at__gte=start)
        unknown = unknown.filter(finished_at__gte=start)
    if end is not None:
        charges = charges.filter(created_at__lt=end)
        unknown = unknown.filter(finished_at__lt=end)
    opts = model_admin.model._meta
    query = request.GET.urlencode()
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": _("Generation costs"),
        "totals": costs.totals(charges, unknown),
        "unit": get_setting("COST_UNIT"),
        "filtered": bool(query),
        "filters": [(name, value) for name, values in request.GET.lists() for value in values],
        "since": since,
        "until": until,
        "periods": _periods(request, since, until),
        "changelist_url": f"{changelist}?{query}" if query else changelist,
        "today": _today(request),
    }
    return TemplateResponse(request, COSTS_TEMPLATE, context)


def _period(request: HttpRequest) -> tuple[date | None, date | None]:
    """``since`` and ``until`` from the query (removed from it); a bad date is reported."""
    params = request.GET.copy()
    found: list[date | None] = []
    for name in PERIOD_PARAMS:
        text = (params.pop(name, None) or [""])[-1].strip()
        try:
            day = parse_date(text) if text else None
        except ValueError:
            day = None
        if text and day is None:
            messages.error(
                request,
                gettext("%(name)s: %(value)r is not a date (YYYY-MM-DD); ignored.")
                % {"name": name, "value": text},
            )
        found.append(day)
    request.GET = params  # type: ignore[assignment]  # the query without the period: mutable
    since, until = found
    if since is not None and until is not None and until < since:
        messages.error(request, gettext("The period ends before it starts; showing no charges."))
    return since, until


def _periods(request: HttpRequest, since: date | None, until: date | None) -> list[dict[str, Any]]:
    """Quick links: today, the last 7 days, this month, all time (the filters kept)."""
    day = costs.today()
    choices = [
        (gettext("Today"), day, day),
        (gettext("Last 7 days"), day - timedelta(days=6), day),
        (gettext("This month"), day.replace(day=1), day),
        (gettext("All time"), None, None),
    ]
    links = []
    for label, start, end in choices:
        params = request.GET.copy()
        if start is not None and end is not None:  # both set, or neither
            params["since"], params["until"] = start.isoformat(), end.isoformat()
        links.append(
            {
                "label": label,
                "query": params.urlencode(),
                "current": (start, end) == (since, until),
            }
        )
    return links


def _today(request: HttpRequest) -> list[dict[str, Any]]:
    """Today's spending against the budgets that are set (everyone's, then the viewer's)."""
    rows = []
    for name, user, label in (
        ("DAILY_BUDGET", None, gettext("Everyone")),
        ("DAILY_BUDGET_PER_USER", request.user, request.user.get_username()),
    ):
        budget = get_setting(name)
        spent = costs.spent_today(user)
        queued = costs.committed(user)
        rows.append(
            {
                "label": label,
                "spent": format_amount(spent),
                "queued": format_amount(queued),
                "budget": format_amount(Decimal(str(budget))) if budget is not None else None,
            }
        )
    return rows
