"""The public pages: the list of articles and one article with its hero."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from .models import Article


def article_list(request: HttpRequest) -> HttpResponse:
    articles = Article.objects.select_related("hero")
    return render(request, "articles/article_list.html", {"articles": articles})


def article_detail(request: HttpRequest, pk: int) -> HttpResponse:
    article = get_object_or_404(Article.objects.select_related("hero__request"), pk=pk)
    return render(request, "articles/article_detail.html", {"article": article})
