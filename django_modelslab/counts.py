"""Row counts that do not scan a large table: PostgreSQL's own estimates, past a threshold.

:class:`EstimatedCountPaginator` is Django's ``Paginator`` whose ``count`` asks PostgreSQL
first: an unfiltered list takes the table's ``reltuples`` (kept by ``ANALYZE`` and
autovacuum), a filtered one the planner's row estimate. When the estimate is above
``ESTIMATED_COUNT_ABOVE`` it is the count; below it (and on other databases) the exact
``COUNT(*)`` runs, which is cheap there. The admin's changelists use it; the REST API's
pages do when ``API_ESTIMATED_COUNT`` is True.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import QuerySet
from django.utils.functional import cached_property

from .conf import get_setting


def _reltuples(queryset: QuerySet) -> int | None:
    """The table's estimated row count (None: never analyzed)."""
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


def estimated_count(queryset: QuerySet) -> int | None:
    """PostgreSQL's estimate of ``queryset.count()`` without running it (None elsewhere)."""
    if connections[queryset.db].vendor != "postgresql":
        return None
    query = queryset.query
    if query.is_sliced or query.distinct or query.combinator or query.group_by is not None:
        return None
    if not query.where:
        return _reltuples(queryset)
    plan = json.loads(queryset.order_by().explain(format="json"))
    return int(plan[0]["Plan"]["Plan Rows"])


def count_of(queryset: Any) -> int:
    """``queryset``'s row count: the estimate when it is above ESTIMATED_COUNT_ABOVE."""
    above = get_setting("ESTIMATED_COUNT_ABOVE")
    if above is not None and isinstance(queryset, QuerySet):
        estimate = estimated_count(queryset)
        if estimate is not None and estimate > above:
            return estimate
    return len(queryset) if not isinstance(queryset, QuerySet) else queryset.count()


#: From this offset on, an admin page reads its rows' keys first (``EstimatedCountPaginator``).
KEYS_FIRST_OFFSET = 1000


class EstimatedCountPaginator(Paginator):
    """A ``Paginator`` whose count is PostgreSQL's estimate on large tables (see above).

    A deep page (its offset at least ``KEYS_FIRST_OFFSET``) skips its offset over the keys
    alone: ``SELECT id ... ORDER BY created_at DESC, id DESC LIMIT 50 OFFSET 9950``, which
    an index holding the order's columns and the key (``modelslab_req_new``...) answers
    without reading the table, then reads the page's 50 rows by key, in the list's order.
    Skipping the offset over whole rows read each of them from the table.
    """

    @cached_property
    def count(self) -> int:
        return count_of(self.object_list)

    def page(self, number: int | str) -> Page:
        page = super().page(number)
        rows, whole = page.object_list, self.object_list
        if (
            isinstance(rows, QuerySet)
            and isinstance(whole, QuerySet)
            and rows.query.low_mark >= KEYS_FIRST_OFFSET
        ):
            keys = list(rows.values_list("pk", flat=True))
            page.object_list = whole.filter(pk__in=keys)  # in the list's order
        return page


class APIPaginator(Paginator):
    """The REST API's: estimated counts only when ``API_ESTIMATED_COUNT`` is True."""

    @cached_property
    def count(self) -> int:
        if get_setting("API_ESTIMATED_COUNT") is True:
            return count_of(self.object_list)
        return super().count
