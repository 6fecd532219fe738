"""What the admin pages show of a request or an image.

The HTML is in templates under ``django_modelslab/admin/`` (a project may override them);
this module gathers what they show.
"""

from __future__ import annotations

from typing import Any

from django.template.loader import render_to_string
from django.utils.safestring import SafeString
from django.utils.translation import gettext

from ..amounts import format_amount
from ..conf import get_setting
from ..models import GeneratedImage, GenerationRequest

Status = GenerationRequest.Status

#: Statuses during which pages poll for news.
ACTIVE_STATUSES = (Status.QUEUED, Status.PROCESSING)

#: The multiplication sign, as in 512 x 512 (written escaped for ruff).
TIMES = "\u00d7"

STATIC_CSS = "django_modelslab/admin.css"
STATIC_JS = "django_modelslab/admin.js"


def dimensions(image: GeneratedImage) -> str:
    """Width and height, as the pages show them."""
    return f"{image.width}{TIMES}{image.height}"


def render(name: str, **context: Any) -> SafeString:
    """The template ``django_modelslab/admin/<name>.html`` (a project may override it)."""
    return render_to_string(f"django_modelslab/admin/{name}.html", context)


def thumbnail_html(image: GeneratedImage, size: int = 96, *, link: bool = True) -> SafeString:
    """A thumbnail (never the full image) linking to the full image.

    ``size`` (64, 96, 128 or 256) picks a CSS class, not an inline style: CSP-friendly.
    ``link=False`` gives the thumbnail alone, for a cell the changelist already makes a link
    (a link inside a link is invalid HTML). Without a stored thumbnail, the full image.
    """
    return render("thumbnail", image=image, size=size, link=link, dimensions=dimensions(image))


def thumbnails_html(images: list[GeneratedImage]) -> SafeString:
    """Small linked thumbnails side by side, for the list."""
    return render("thumbnails", images=[(image, dimensions(image)) for image in images])


def input_preview_html(generation: GenerationRequest) -> SafeString:
    """The request's stored input and mask images, small, linking to the full files."""
    files = ((gettext("input"), generation.init_image), (gettext("mask"), generation.mask_image))
    return render("input_preview", inputs=[(label, file) for label, file in files if file])


def label_html(css_class: str, text: str, shown: bool) -> SafeString:
    """The chosen, superseded and NSFW labels: ``<span class="…">text</span>`` if ``shown``."""
    return render("label", css_class=css_class, text=text, shown=shown)


def eta_label(generation: GenerationRequest) -> str:
    """ModelsLab's estimate while the request is queued or processing, else blank."""
    if generation.status in ACTIVE_STATUSES and generation.eta:
        return gettext("about %(seconds)d s") % {"seconds": round(generation.eta)}
    return ""


def status_badge(
    generation: GenerationRequest, *, poll_url: str, poll_interval: float, error: bool = False
) -> SafeString:
    """The status as a coloured badge; the admin's script polls ``poll_url`` while active.

    ``error``: a failed or refused request's error under the badge (cut to 160 characters).
    """
    shown_error = error and generation.status in (Status.FAILED, Status.REFUSED)
    return render(
        "status_badge",
        generation=generation,
        eta=eta_label(generation),
        poll_url=poll_url,
        poll=poll_interval,
        error=generation.error if shown_error else "",
    )


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{value:.2f} s"


def model_attempts_html(generation: GenerationRequest) -> SafeString:
    """``model_attempts`` as a table, one row per try of every attempt: attempt, model,
    outcome, ModelsLab's own time for the job, the time the try took here, error."""
    tries = [
        {
            **entry,
            "provider_time": _seconds(entry.get("provider_seconds")),
            "took": _seconds(entry.get("seconds")),
        }
        for entry in generation.model_attempts or ()
    ]
    return render("model_attempts", tries=tries)


def cost_html(generation: GenerationRequest) -> SafeString:
    """``0.0094 credits`` with where it came from, or a dash when unknown."""
    cost = generation.cost
    amount = None if cost is None else format_amount(cost)
    return render("cost", generation=generation, amount=amount, unit=get_setting("COST_UNIT"))


def charges_html(generation: GenerationRequest) -> SafeString:
    """The request's charges (the ledger), oldest first: when, attempt, model, amount, source,
    user. Read-only: a table, not a formset."""
    charges = generation.charges.select_related("user").order_by("created_at", "pk")
    return render(
        "charges",
        charges=[(charge, format_amount(charge.amount)) for charge in charges]
        if generation.pk
        else [],
        unit=get_setting("COST_UNIT"),
    )
