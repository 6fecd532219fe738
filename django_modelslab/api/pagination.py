"""Page-number pagination: ``?page=2&page_size=50``."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination

from ..counts import APIPaginator


class ModelsLabPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    #: Counts by PostgreSQL's estimate on large tables with API_ESTIMATED_COUNT.
    django_paginator_class = APIPaginator
