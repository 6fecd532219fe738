"""``{% modelslab_date_hierarchy cl %}``: the admin's date drill-down without reading every
row (see docs/scaling-rows.md).

Django's tag finds the first and last date of the filtered list (``MIN``/``MAX``: a scan when
a filter crosses a join) and lists the years, months or days that have rows with ``SELECT
DISTINCT date_trunc(...)``, which reads the whole filtered table. This one takes the first
and last date of the unfiltered table (both from an index) and offers every year between
them, every month of the chosen year and every day of the chosen month; one without rows
leads to an empty list.
"""

from __future__ import annotations

import calendar
import datetime
from typing import Any

from django import template
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.db.models import Max, Min
from django.utils import timezone

register = template.Library()


class _Spans:
    """The changelist's queryset as Django's tag uses it: its MIN/MAX and its periods."""

    def __init__(self, cl: Any) -> None:
        self.cl = cl
        self.span: dict[str, Any] | None = None

    def aggregate(self, **aggregates: Any) -> dict[str, Any]:
        if self.span is None:
            field = self.cl.date_hierarchy
            self.span = self.cl.root_queryset.aggregate(first=Min(field), last=Max(field))
        return self.span

    def _bounds(self) -> tuple[datetime.date, datetime.date] | None:
        span = self.aggregate()
        if span["first"] is None or span["last"] is None:
            return None
        ends = [timezone.localtime(v) if timezone.is_aware(v) else v for v in span.values()]
        first, last = (v.date() if isinstance(v, datetime.datetime) else v for v in ends)
        return first, last

    def _lookup(self, part: str, default: int) -> int:
        value = self.cl.params.get(f"{self.cl.date_hierarchy}__{part}")
        if isinstance(value, list):
            value = value[-1] if value else None
        try:
            return int(value) if value is not None else default
        except ValueError:
            return default

    def datetimes(self, field: str, kind: str) -> list[datetime.date]:
        bounds = self._bounds()
        if bounds is None:
            return []
        first, last = bounds
        if kind == "year":
            return [datetime.date(year, 1, 1) for year in range(first.year, last.year + 1)]
        year = self._lookup("year", first.year)
        if kind == "month":
            months = [datetime.date(year, month, 1) for month in range(1, 13)]
            return [m for m in months if (first.year, first.month) <= (m.year, m.month) <= (
                last.year, last.month)]  # fmt: skip
        month = self._lookup("month", first.month)
        days = calendar.monthrange(year, month)[1]
        return [
            day
            for day in (datetime.date(year, month, n) for n in range(1, days + 1))
            if first <= day <= last
        ]

    dates = datetimes


class _ChangeList:
    """The changelist as Django's tag sees it, with :class:`_Spans` as its queryset."""

    def __init__(self, cl: Any) -> None:
        self._cl = cl
        self.queryset = _Spans(cl)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cl, name)


@register.inclusion_tag("admin/date_hierarchy.html")
def modelslab_date_hierarchy(cl: Any) -> dict[str, Any] | None:
    """Django's ``date_hierarchy``, its periods from the table's first and last date."""
    return date_hierarchy(_ChangeList(cl))  # type: ignore[arg-type]  # the attributes it reads
