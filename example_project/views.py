"""The home page, and a small page that uses the REST API from the browser (plain HTML + JS,
no build step)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie


def home(request: HttpRequest) -> HttpResponse:
    """Links to the admin, the articles and the studio."""
    return render(request, "example_project/home.html")


@login_required(login_url="admin:login")
@ensure_csrf_cookie
def studio(request: HttpRequest) -> HttpResponse:
    """Post a prompt, poll the request, show the images (see static/example_project/studio.js)."""
    return render(request, "example_project/studio.html")
