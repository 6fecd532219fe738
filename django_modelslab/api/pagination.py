"""Page-number pagination: ``?page=2&page_size=50``."""

from __future__ import annotations

from rest_framework.pagination import PageNumberPagination


class ModelsLabPagination(PageNumberPagination):
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
