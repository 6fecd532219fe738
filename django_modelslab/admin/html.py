"""What the admin pages show of a request or an image.

One element is built here with :func:`~django.utils.html.format_html`; anything larger (the
status badge, the tables) is a template under ``django_modelslab/admin/``, which a project
may override.
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext

from ..amounts import format_amount
from ..conf import get_setting
from ..models import GeneratedImage, GenerationRequest

#: Statuses during which pages poll for news.
ACTIVE_STATUSES = (GenerationRequest.Status.QUEUED, GenerationRequest.Status.PROCESSING)

#: The multiplication sign, as in 512 x 512 (written escaped for ruff).
TIMES = "\u00d7"

STATIC_CSS = "django_modelslab/admin.css"
STATIC_JS = "django_modelslab/admin.js"


def dimensions(image: GeneratedImage) -> str:
    """Width and height, as the pages show them."""
    return f"{image.width}{TIMES}{image.height}"


def thumbnail_html(image: GeneratedImage, size: int = 96, *, link: bool = True) -> str:
    """A thumbnail (never the full image) linking to the full image.

    ``size`` (64, 96, 128 or 256) picks a CSS class, not an inline style: CSP-friendly.
    ``link=False`` gives the thumbnail alone, for a cell the changelist already makes a link
    (a link inside a link is invalid HTML). Without a stored thumbnail, the full image.
    """
    if not image.image:
        return "—"
    img = format_html(
        '<img class="modelslab-thumb--{}" src="{}" alt="{}" loading="lazy">',
        size,
        image.thumbnail.url if image.thumbnail else image.image.url,
        gettext("Image %(pk)s of request %(request)s")
        % {"pk": image.pk, "request": image.request_id},
    )
    if not link:
        return format_html('<span class="modelslab-thumb">{}</span>', img)
    return format_html(
        '<a class="modelslab-thumb" href="{}" title="{}">{}</a>',
        image.image.url,
        gettext("Open the full image (%(size)s)") % {"size": dimensions(image)},
        img,
    )


def input_preview_html(obj: GenerationRequest) -> str:
    """The request's stored input and mask images, small, linking to the full files."""
    parts = [
        (label, field.url, field.name)
        for label, field in ((gettext("input"), obj.init_image), (gettext("mask"), obj.mask_image))
        if field
    ]
    if not parts:
        return "—"
    return format_html_join(
        " ",
        '<a class="modelslab-thumb" href="{1}" title="{2}">'
        '<img class="modelslab-thumb--128" src="{1}" alt="{0}" loading="lazy"></a>',
        parts,
    )


def label_html(css_class: str, text: str, shown: bool) -> str:
    """The chosen, superseded and NSFW labels: ``<span class="…">text</span>`` if ``shown``."""
    return format_html('<span class="{}">{}</span>', css_class, text) if shown else ""


def eta_label(obj: GenerationRequest) -> str:
    """ModelsLab's estimate while the request is queued or processing, else blank."""
    if obj.status in ACTIVE_STATUSES and obj.eta:
        return gettext("about %(seconds)d s") % {"seconds": round(obj.eta)}
    return ""


def status_badge(obj: GenerationRequest, *, poll_url: str, poll_interval: float) -> str:
    """The status as a coloured badge; the admin's script polls ``poll_url`` while active."""
    context = {"obj": obj, "eta": eta_label(obj), "poll_url": poll_url, "poll": poll_interval}
    return render_to_string("django_modelslab/admin/status_badge.html", context)


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{value:.2f} s"


def model_attempts_html(obj: GenerationRequest) -> str:
    """``model_attempts`` as a table, one row per try of every attempt: attempt, model,
    outcome, ModelsLab's own time for the job, the time the try took here, error."""
    tries = [
        {
            **entry,
            "provider_time": _seconds(entry.get("provider_seconds")),
            "took": _seconds(entry.get("seconds")),
        }
        for entry in obj.model_attempts or ()
    ]
    return render_to_string("django_modelslab/admin/model_attempts.html", {"tries": tries})


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


def charges_html(obj: GenerationRequest) -> str:
    """The request's charges (the ledger), oldest first: when, attempt, model, amount, source,
    user. Read-only: a table, not a formset."""
    charges = obj.charges.select_related("user").order_by("created_at", "pk") if obj.pk else ()
    context = {
        "charges": [(charge, format_amount(charge.amount)) for charge in charges],
        "unit": get_setting("COST_UNIT"),
    }
    return render_to_string("django_modelslab/admin/charges.html", context)
