"""The admin's cost pieces: the cost column and the "Costs" page (totals by user and model).

The page totals the requests the changelist shows with the same filters (status, model,
created date, search...), so a period is picked with the changelist's date filters.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from . import costs
from .amounts import format_amount
from .conf import get_setting
from .models import GenerationRequest

COSTS_TEMPLATE = "django_modelslab/admin/generationrequest/costs.html"


def cost_html(obj: GenerationRequest) -> str:
    """``0.0094 credits`` with where it came from, or a dash when unknown."""
    if obj.cost is None:
        return "—"
    source = obj.get_cost_source_display() or (
        gettext("Reused from the cache") if obj.cached_from_id else ""
    )
    return format_html(
        '<span class="modelslab-cost" title="{}">{} {}</span>',
        source,
        format_amount(obj.cost),
        get_setting("COST_UNIT"),
    )


def costs_page(model_admin: admin.ModelAdmin, request: HttpRequest) -> HttpResponse:
    """Totals of the changelist's current selection, by user and by model."""
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    try:
        requests = model_admin.get_changelist_instance(request).queryset
    except IncorrectLookupParameters:
        messages.error(request, gettext("Unknown filters were ignored."))
        requests = model_admin.get_queryset(request)
    opts = model_admin.model._meta
    query = request.GET.urlencode()
    changelist = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": _("Generation costs"),
        "totals": costs.totals(requests),
        "unit": get_setting("COST_UNIT"),
        "filtered": bool(query),
        "changelist_url": f"{changelist}?{query}" if query else changelist,
        "today": _today(request),
    }
    return TemplateResponse(request, COSTS_TEMPLATE, context)


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
