"""What keeps the changelists fast on large tables: estimated counts (see ``counts``) and a
model filter whose choices come from an index instead of a ``DISTINCT`` over every row."""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib import admin
from django.contrib.admin import helpers
from django.db import connection
from django.db.models import Model
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext

from ..counts import EstimatedCountPaginator
from ..imaging.verify import FORMATS
from ..models import GenerationRequest

#: PostgreSQL: the distinct model ids by a loose index scan on modelslab_req_model_new (one
#: index probe per model instead of reading every row).
DISTINCT_MODELS_SQL = """
WITH RECURSIVE m AS (
    (SELECT model_id FROM {table} ORDER BY model_id LIMIT 1)
    UNION ALL
    SELECT (SELECT model_id FROM {table} WHERE model_id > m.model_id ORDER BY model_id LIMIT 1)
    FROM m WHERE m.model_id IS NOT NULL
)
SELECT model_id FROM m WHERE model_id IS NOT NULL
"""


def model_ids() -> list[str]:
    """Every model id a request names, sorted."""
    if connection.vendor != "postgresql":
        rows = GenerationRequest.objects.order_by("model_id").values_list("model_id", flat=True)
        return list(rows.distinct())
    with connection.cursor() as cursor:
        cursor.execute(DISTINCT_MODELS_SQL.format(table=GenerationRequest._meta.db_table))
        return [row[0] for row in cursor.fetchall()]


class ModelIdFilter(admin.AllValuesFieldListFilter):
    """``model_id`` (or ``request__model_id``) by value; its choices are every model id in
    use, read from the index (not a ``DISTINCT`` over the filtered list)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookup_choices = model_ids()  # type: ignore[assignment]  # a list is iterated alike


class FormatFilter(admin.AllValuesFieldListFilter):
    """An image's ``format``: the choices are the formats the pipeline stores, not a
    ``DISTINCT`` over every image."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lookup_choices = sorted(FORMATS)  # type: ignore[assignment]


class ScaleMixin:
    """No full-table count on the changelist; the page count is estimated on large tables;
    the rows' checkboxes without the form renderer."""

    show_full_result_count = False
    paginator: ClassVar[type] = EstimatedCountPaginator

    def action_checkbox(self, obj: Model) -> SafeString:
        """Django's own checkbox, the same HTML (tests/test_admin.py compares them), without
        rendering a widget's three templates on every row (about 0.1 ms a row)."""
        label = format_html(gettext("Select this object for an action - {}"), str(obj))
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            label,
        )
