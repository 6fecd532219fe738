"""What the admin pages show of a request or an image.

The HTML is in templates under ``django_modelslab/admin/`` (a project may override them);
this module gathers what they show.

The changelists show a status badge, thumbnails and a cost on every row: rendered by the
template engine, those cells were most of a page's time (about 0.35 ms a row). While the
templates in use are this package's own, those cells are built here in Python, the same
HTML byte for byte (``tests/test_admin.py`` compares both ways); a project that overrides
one of them gets its template rendered, as before.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from django.db import models
from django.template.loader import get_template, render_to_string
from django.utils.formats import localize
from django.utils.html import conditional_escape, format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
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


#: This package's templates, where ``overridden`` looks for the templates in use.
OWN_TEMPLATES = os.path.realpath(Path(__file__).resolve().parent.parent / "templates") + os.sep


@functools.cache
def _own_file(path: str) -> bool:
    return os.path.realpath(path).startswith(OWN_TEMPLATES)


def overridden(*names: str) -> bool:
    """Whether any of the templates ``django_modelslab/admin/<name>.html`` in use is a
    project's own (found before this package's). Asked on every call (the template loaders
    cache the lookup): a template added while the server runs is picked up as before."""
    for name in names:
        origin = getattr(get_template(f"django_modelslab/admin/{name}.html"), "origin", None)
        if origin is None or not _own_file(str(origin.name)):
            return True
    return False


#: The end of each template's file, which its output keeps; a dash, for a cell with nothing.
NEWLINE = SafeString("\n")
DASH = SafeString("\u2014\n")


def _label(choices: type[models.TextChoices], value: str) -> str:
    """``get_<field>_display()`` for a field with these choices, without rebuilding the
    field's choices dict on every call (a third of a badge's time)."""
    try:
        return str(choices(value).label)
    except ValueError:
        return value


def _unlocalized(value: Any) -> str:
    """A value as ``{% localize off %}{{ value }}`` shows it (before escaping)."""
    if type(value) is int:  # what localize() gives an int, without its lookups
        return str(value)
    return str(localize(value, use_l10n=False))


def _blocktranslate(translated: str, **values: Any) -> SafeString:
    """``{% blocktranslate with name=value %}`` in a ``{% localize off %}`` block, given
    the message's translation: each value escaped (the translation is not, as the tag)."""
    values = {k: conditional_escape(_unlocalized(v)) for k, v in values.items()}
    return mark_safe(translated % values)  # noqa: S308  # the values are escaped


#: thumbnail.html's messages (msgids, translated where used).
THUMBNAIL_ALT = "Image %(pk)s of request %(request)s"
THUMBNAIL_TITLE = "Open the full image (%(size)s)"


def thumbnail_html(image: GeneratedImage, size: int = 96, *, link: bool = True) -> SafeString:
    """A thumbnail (never the full image) linking to the full image.

    ``size`` (64, 96, 128 or 256) picks a CSS class, not an inline style: CSP-friendly.
    ``link=False`` gives the thumbnail alone, for a cell the changelist already makes a link
    (a link inside a link is invalid HTML). Without a stored thumbnail, the full image.
    """
    if overridden("thumbnail"):
        return render("thumbnail", image=image, size=size, link=link, dimensions=dimensions(image))
    return _thumbnail(image, size, link, gettext(THUMBNAIL_ALT), gettext(THUMBNAIL_TITLE))


def _thumbnail(image: GeneratedImage, size: int, link: bool, alt: str, title: str) -> SafeString:
    """``thumbnail.html``, in Python (as each of these, ending with the file's newline);
    ``alt`` and ``title``: its messages, translated once for a row's thumbnails."""
    if not image.image:
        return DASH
    full = image.image.url
    values = {
        "full": full,
        "size": _unlocalized(size),
        "src": image.thumbnail.url if image.thumbnail else full,
        "alt": _blocktranslate(alt, pk=image.pk, request=image.request_id),
    }
    picture = '<img class="modelslab-thumb--{size}" src="{src}" alt="{alt}" loading="lazy">'
    if not link:
        return format_html(f'<span class="modelslab-thumb">{picture}</span>\n', **values)
    title = _blocktranslate(title, size=dimensions(image))
    html = f'<a class="modelslab-thumb" href="{{full}}" title="{{title}}">{picture}</a>\n'
    return format_html(html, title=title, **values)


def thumbnails_html(images: list[GeneratedImage]) -> SafeString:
    """Small linked thumbnails side by side, for the list."""
    if overridden("thumbnails", "thumbnail"):
        return render("thumbnails", images=[(image, dimensions(image)) for image in images])
    if not images:
        return DASH
    alt, title = gettext(THUMBNAIL_ALT), gettext(THUMBNAIL_TITLE)
    thumbnails = format_html_join(
        "", "{}", ((_thumbnail(image, 64, True, alt, title),) for image in images)
    )
    return format_html('<span class="modelslab-thumbs">{}</span>', thumbnails) + NEWLINE


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
    eta, shown = eta_label(generation), generation.error if shown_error else ""
    if overridden("status_badge"):
        return render(
            "status_badge",
            generation=generation,
            eta=eta,
            poll_url=poll_url,
            poll=poll_interval,
            error=shown,
        )
    return _status_badge(generation, eta, poll_url, poll_interval, shown)


def _status_badge(
    generation: GenerationRequest, eta: str, poll_url: str, poll: float, error: str
) -> SafeString:
    """``status_badge.html``, in Python."""
    badge = format_html(
        '<span class="modelslab-status modelslab-status--{status}" data-modelslab-id="{pk}" '
        'data-modelslab-status="{status}" data-modelslab-url="{url}" '
        'data-modelslab-poll="{poll}" data-modelslab-finished="{finished}">'
        '<span class="modelslab-status__label">{label}</span></span> '
        '<span class="modelslab-eta" data-modelslab-eta-for="{pk}">{eta}</span>',
        status=_unlocalized(generation.status),
        pk=_unlocalized(generation.pk),
        url=poll_url,
        poll=_unlocalized(poll),
        finished=gettext("Generation finished. Save or reload the page to see the result."),
        label=_label(Status, generation.status),
        eta=eta,
    )
    if error:
        error_html = '<div class="modelslab-status-error" title="{}">{}</div>'
        badge += format_html(error_html, error, Truncator(error).chars(160))
    return badge + NEWLINE


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
    unit = get_setting("COST_UNIT")
    if overridden("cost"):
        return render("cost", generation=generation, amount=amount, unit=unit)
    if amount is None:
        return DASH
    if generation.cost_source:
        title = _label(GenerationRequest.CostSource, generation.cost_source)
    elif generation.cached_from_id:
        title = gettext("Reused from the cache")
    else:
        title = ""
    cost_html = '<span class="modelslab-cost" title="{}">{} {}</span>'
    return format_html(cost_html, title, amount, unit) + NEWLINE


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
