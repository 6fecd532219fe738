"""Admin for generation requests and their images (a face: it calls the pipeline only).

Viewing follows Django's view permission; generating, regenerating and choosing an image need
``django_modelslab.generate_images``. Without it the actions and buttons are hidden and the
POST endpoints answer 403.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from functools import partial
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.messages.storage import default_storage
from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
    JsonResponse,
)
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from . import pipeline
from .admin_costs import charges_html, cost_html, costs_page
from .contention import StillLocked, retry_when_locked
from .exceptions import BudgetExceeded, ReservedParameters
from .forms import GenerationRequestAdminForm
from .models import GeneratedImage, GenerationRequest, WebhookDelivery

GENERATE_PERMISSION = "django_modelslab.generate_images"

Status = GenerationRequest.Status

#: Statuses during which pages poll for news.
ACTIVE_STATUSES = (Status.QUEUED, Status.PROCESSING)
#: Submit-button names of the change form.
GENERATE_BUTTON = "_generate"
REGENERATE_BUTTON = "_regenerate"
#: The change form's "Keep the seed" checkbox, next to "Save and regenerate".
KEEP_SEED_FIELD = "_keep_seed"
#: Most ids one status call answers for.
STATUS_BATCH = 200
#: Hidden field of the change form and the changelist: when the page was shown. A press of
#: Generate / Regenerate does not start a request that was started after that (a double
#: click, a second tab): see :func:`started_since`.
SHOWN_FIELD = "_modelslab_shown"

#: The multiplication sign, as in 512 x 512 (written escaped for ruff).
TIMES = "\u00d7"

STATIC_CSS = "django_modelslab/admin.css"
STATIC_JS = "django_modelslab/admin.js"


def can_generate(request: HttpRequest) -> bool:
    """Whether the user may generate, regenerate and choose images."""
    return request.user.has_perm(GENERATE_PERMISSION)


def shown_at(request: HttpRequest) -> datetime | None:
    """When the posting page was shown (its :data:`SHOWN_FIELD`), or None."""
    value = request.POST.get(SHOWN_FIELD, "")
    try:
        return parse_datetime(value) if value else None
    except ValueError:
        return None


def started_since(submitted_at: datetime | None, shown: datetime | None) -> bool:
    """Whether a request was (re)started after the page that asks to start it was shown."""
    return shown is not None and submitted_at is not None and submitted_at > shown


class StartedSinceShown(Exception):
    """A change form posted from a page shown before the request was last (re)started."""

    def __init__(self, pk: Any) -> None:
        super().__init__(
            gettext(
                "Nothing was saved: this request was started again after the page was shown "
                "(#%(id)s). Its current state is below; make your changes again."
            )
            % {"id": pk}
        )


# --- small HTML pieces ------------------------------------------------------------------


def thumbnail_url(image: GeneratedImage) -> str:
    """The stored thumbnail's URL; the full image's when no thumbnail was made."""
    return image.thumbnail.url if image.thumbnail else image.image.url


def thumbnail_html(image: GeneratedImage, size: int = 96, *, link: bool = True) -> str:
    """A thumbnail (never the full image) linking to the full image.

    ``size`` (64, 96, 128 or 256) picks a CSS class, not an inline style: CSP-friendly.
    ``link=False`` gives the thumbnail alone, for a cell the changelist already makes a link
    (a link inside a link is invalid HTML).
    """
    if not image.image:
        return "—"
    img = format_html(
        '<img class="modelslab-thumb--{}" src="{}" alt="{}" loading="lazy">',
        size,
        thumbnail_url(image),
        gettext("Image %(pk)s of request %(request)s")
        % {"pk": image.pk, "request": image.request_id},
    )
    if not link:
        return format_html('<span class="modelslab-thumb">{}</span>', img)
    return format_html(
        '<a class="modelslab-thumb" href="{}" title="{}">{}</a>',
        image.image.url,
        gettext("Open the full image (%(size)s)") % {"size": f"{image.width}{TIMES}{image.height}"},
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


def current_images(request: GenerationRequest) -> list[GeneratedImage]:
    """The images of the latest attempt, the chosen one first (uses prefetched rows)."""
    images = [image for image in request.images.all() if not image.superseded]
    return sorted(images, key=lambda image: (not image.chosen, image.position))


def nsfw_html(image: GeneratedImage) -> str:
    """A warning label for an image ModelsLab flagged NSFW (blank otherwise)."""
    if image.nsfw:
        return format_html('<span class="modelslab-nsfw">{}</span>', gettext("Flagged NSFW"))
    return ""


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{value:.2f} s"


def model_attempts_html(obj: GenerationRequest) -> str:
    """``model_attempts`` as a table, one row per try of every attempt: attempt, model,
    outcome, ModelsLab's own time for the job, the time the try took here, error."""
    if not obj.model_attempts:
        return "—"
    continued = format_html(
        ' <span class="modelslab-continued">{}</span>', gettext("(same job, continued)")
    )
    rows = format_html_join(
        "",
        '<tr class="modelslab-try--{}"><td>{}</td><td><code>{}</code>{}</td><td>{}</td>'
        '<td class="modelslab-provider-time">{}</td><td>{}</td><td>{}</td></tr>',
        (
            (
                entry.get("outcome", ""),
                entry.get("attempt", ""),
                entry.get("model_id", ""),
                continued if entry.get("continued") else "",
                entry.get("outcome", ""),
                _seconds(entry.get("provider_seconds")),
                _seconds(entry.get("seconds")),
                entry.get("error", ""),
            )
            for entry in obj.model_attempts
        ),
    )
    return format_html(
        '<table class="modelslab-attempts"><thead><tr><th>{}</th><th>{}</th><th>{}</th>'
        '<th title="{}">{}</th><th title="{}">{}</th><th>{}</th></tr></thead><tbody>{}</tbody>'
        "</table>",
        gettext("Attempt"),
        gettext("Model"),
        gettext("Outcome"),
        gettext("The job's time as ModelsLab reported it"),
        gettext("ModelsLab time"),
        gettext("From the start of this try to its end, here"),
        gettext("Took"),
        gettext("Error"),
        rows,
    )


def eta_label(obj: GenerationRequest) -> str:
    """ModelsLab's estimate while the request is queued or processing, else blank."""
    if obj.status in ACTIVE_STATUSES and obj.eta:
        return gettext("about %(seconds)d s") % {"seconds": round(obj.eta)}
    return ""


def status_badge(obj: GenerationRequest, *, poll_url: str, poll_interval: float) -> str:
    """The status as a coloured badge; the admin's script polls ``poll_url`` while active."""
    return format_html(
        '<span class="modelslab-status modelslab-status--{}" data-modelslab-id="{}" '
        'data-modelslab-status="{}" data-modelslab-url="{}" data-modelslab-poll="{}" '
        'data-modelslab-finished="{}">'
        '<span class="modelslab-status__label">{}</span></span>'
        ' <span class="modelslab-eta" data-modelslab-eta-for="{}">{}</span>',
        obj.status,
        obj.pk,
        obj.status,
        poll_url,
        poll_interval,
        gettext("Generation finished. Save or reload the page to see the result."),
        obj.get_status_display(),
        obj.pk,
        eta_label(obj),
    )


# --- requests ---------------------------------------------------------------------------


class GeneratedImageInline(admin.TabularInline):
    """The request's images, newest attempt first; read-only, with a "choose" button."""

    model = GeneratedImage
    extra = 0
    can_delete = False
    show_change_link = True
    classes = ("modelslab-images",)
    base_fields = (
        "preview",
        "dimensions",
        "format",
        "size",
        "sha256_code",
        "seed",
        "attempt",
        "superseded_label",
        "chosen_label",
        "nsfw_label",
    )
    readonly_fields = (*base_fields, "choose_button")

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if can_generate(request):
            return (*self.base_fields, "choose_button")
        return self.base_fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[GeneratedImage]:
        return super().get_queryset(request).order_by("-attempt", "position")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Images are part of their request: whoever may see the request sees them."""
        opts = GenerationRequest._meta
        return super().has_view_permission(request, obj) or any(
            request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")
            for action in ("view", "change")
        )

    @admin.display(description=_("preview"))
    def preview(self, image: GeneratedImage) -> str:
        return thumbnail_html(image)

    @admin.display(description=_("size"))
    def dimensions(self, image: GeneratedImage) -> str:
        return f"{image.width}{TIMES}{image.height}"

    @admin.display(description=_("bytes"))
    def size(self, image: GeneratedImage) -> str:
        return filesizeformat(image.bytes)

    @admin.display(description="sha256")
    def sha256_code(self, image: GeneratedImage) -> str:
        return format_html(
            '<code class="modelslab-sha" title="{}">{}…</code>', image.sha256, image.sha256[:12]
        )

    @admin.display(description=_("superseded"))
    def superseded_label(self, image: GeneratedImage) -> str:
        if image.superseded:
            return format_html(
                '<span class="modelslab-superseded">{}</span>', gettext("Superseded")
            )
        return ""

    @admin.display(description=_("chosen"))
    def chosen_label(self, image: GeneratedImage) -> str:
        if image.chosen:
            return format_html('<span class="modelslab-chosen">★ {}</span>', gettext("Chosen"))
        return ""

    @admin.display(description=_("NSFW"))
    def nsfw_label(self, image: GeneratedImage) -> str:
        return nsfw_html(image)

    @admin.display(description="")
    def choose_button(self, image: GeneratedImage) -> str:
        if image.chosen:
            return ""
        # formaction: the change form's CSRF token goes along; the endpoint ignores the rest.
        return format_html(
            '<button type="submit" class="button modelslab-choose" formaction="{}" '
            'formmethod="post" formnovalidate>{}</button>',
            reverse("admin:django_modelslab_generatedimage_choose", args=[image.pk]),
            gettext("Mark as chosen"),
        )


@admin.register(GenerationRequest)
class GenerationRequestAdmin(admin.ModelAdmin):
    form = GenerationRequestAdminForm
    change_form_template = "django_modelslab/admin/generationrequest/change_form.html"
    change_list_template = "django_modelslab/admin/generationrequest/change_list.html"
    list_display = (
        "id",
        "thumbnails",
        "short_prompt",
        "model_id",
        "status_display",
        "image_count",
        "cost_display",
        "created_at",
    )
    list_display_links = ("id", "short_prompt")
    list_filter = ("status", "kind", "api_version", "model_id", "created_at")
    search_fields = ("prompt", "negative_prompt", "provider_id", "track_id")
    date_hierarchy = "created_at"
    actions = ("generate", "regenerate", "regenerate_keep_seed")
    inlines = (GeneratedImageInline,)
    raw_id_fields = ("init_from",)
    #: Seconds between status polls while a request is queued or processing.
    status_poll_interval = 2.0
    readonly_fields = (
        "error",
        "produced_by",
        "model_attempts_table",
        "attempts",
        "provider_id",
        "track_id",
        "eta",
        "cached_from",
        "requested_by",
        "created_at",
        "submitted_at",
        "started_at",
        "finished_at",
        "raw_responses",
        "input_preview",
        "cost_display",
        "cost_source",
        "charges_table",
    )
    fieldsets = (
        (None, {"fields": ("prompt", "negative_prompt", "model_id", "width", "height", "samples")}),
        (
            _("Kind and input images"),
            {
                "classes": ("collapse",),  # opened for other kinds: see get_fieldsets
                "fields": (
                    "kind",
                    "api_version",
                    "init_upload",
                    "init_from",
                    "mask_upload",
                    "strength",
                    "scale",
                    "input_preview",
                ),
                "description": _(
                    "Image to image and upscale need an input image, inpaint an input and a "
                    "mask. v7 serves text to image and image to image."
                ),
            },
        ),
        (
            _("Advanced"),
            {
                "classes": ("collapse",),
                "fields": (
                    "seed",
                    "steps",
                    "guidance",
                    "use_cache",
                    "extra",
                    "fallback_models",
                    "safety_checker",
                ),
            },
        ),
        (
            _("Models tried"),
            {
                "fields": ("produced_by", "model_attempts_table"),
                "description": _("Each model tried, in order, with its outcome and error."),
            },
        ),
        (
            _("Details"),
            {
                "classes": ("collapse",),
                "fields": (
                    "attempts",
                    "provider_id",
                    "track_id",
                    "eta",
                    "cached_from",
                    "cost_display",
                    "cost_source",
                    "charges_table",
                    "requested_by",
                    "created_at",
                    "submitted_at",
                    "started_at",
                    "finished_at",
                ),
            },
        ),
        (
            _("Provider responses"),
            {
                "classes": ("collapse",),
                "fields": ("raw_responses",),
                "description": _("Every raw answer from ModelsLab, the API key redacted."),
            },
        ),
    )

    class Media:
        css = {"all": (STATIC_CSS,)}
        js = (STATIC_JS,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[GenerationRequest]:
        return (
            super()
            .get_queryset(request)
            .select_related("requested_by", "cached_from")
            .prefetch_related(Prefetch("images", queryset=GeneratedImage.objects.order_by()))
        )

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list:
        """Fold the inputs section away for text to image; open it for the other kinds and
        on a posted form (where its errors must show)."""
        fieldsets = super().get_fieldsets(request, obj)
        kind = obj.kind if obj is not None else request.GET.get("kind", "")
        if request.method == "POST" or (kind and kind != GenerationRequest.Kind.TEXT2IMG):
            fieldsets = [
                (name, {**options, "classes": ()})
                if "init_upload" in options["fields"]
                else (name, options)
                for name, options in fieldsets
            ]
        return fieldsets

    def get_urls(self) -> list:
        opts = self.model._meta
        return [
            path(
                "status/",
                self.admin_site.admin_view(self.status_view),
                name=f"{opts.app_label}_{opts.model_name}_status",
            ),
            path(
                "costs/",
                self.admin_site.admin_view(self.costs_view),
                name=f"{opts.app_label}_{opts.model_name}_costs",
            ),
            *super().get_urls(),
        ]

    def has_generate_permission(self, request: HttpRequest) -> bool:
        """Actions with ``permissions=["generate"]`` are hidden without this permission."""
        return can_generate(request)

    def save_model(self, request: HttpRequest, obj: GenerationRequest, form, change) -> None:
        if change:
            # Under the save's transaction (the row locked where the database can): a page
            # older than the row's last start would undo what that start wrote (its seed).
            submitted = (
                GenerationRequest.objects.select_for_update()
                .filter(pk=obj.pk)
                .values_list("submitted_at", flat=True)
                .first()
            )
            if started_since(submitted, shown_at(request)):
                raise StartedSinceShown(obj.pk)
        if obj.requested_by_id is None:
            obj.requested_by = request.user
        # A seed typed in the form is what "Save and regenerate" should send.
        request._modelslab_seed_changed = "seed" in form.changed_data  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    # --- the change form: Generate / Regenerate buttons -----------------------------------

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        pressed = GENERATE_BUTTON in request.POST or REGENERATE_BUTTON in request.POST
        if request.method == "POST" and pressed and not self.has_generate_permission(request):
            raise PermissionDenied
        if request.method != "POST":
            return super().changeform_view(request, object_id, form_url, extra_context)
        view = super().changeform_view
        try:
            response = self._retry_when_locked(
                request, lambda: view(request, object_id, form_url, extra_context)
            )
        except StillLocked as exc:
            return self._busy(request, str(exc))
        except StartedSinceShown as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return HttpResponseRedirect(request.get_full_path())
        # The admin saves inside a transaction; generate once the saved form is committed.
        start = getattr(request, "_modelslab_start", None)
        if start is not None:
            obj, regenerate, keep_seed = start
            self._start(request, [obj], regenerate=regenerate, keep_seed=keep_seed)
        return response

    def _retry_when_locked(self, request: HttpRequest, work: Callable[[], HttpResponse]):
        """``work`` (a posted form, saved in one transaction), again while SQLite is locked."""

        def forget_the_try() -> None:
            request.__dict__.pop("_modelslab_start", None)
            if hasattr(request, "_messages"):  # its messages were about a rolled-back save
                request._messages = default_storage(request)
            for files in request.FILES.lists():
                for upload in files[1]:
                    upload.seek(0)

        return retry_when_locked(work, before_retry=forget_the_try)

    def _busy(self, request: HttpRequest, reason: str) -> HttpResponse:
        """503 with a page saying nothing was saved: Back keeps the form's contents."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("The database is busy"),
            "reason": reason,
        }
        return TemplateResponse(request, "django_modelslab/admin/busy.html", context, status=503)

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], add=False, change=False, **kwargs
    ) -> HttpResponse:
        obj: GenerationRequest | None = context.get("original")
        allowed = self.has_generate_permission(request) and (
            add or self.has_change_permission(request, obj)
        )
        button = None
        if allowed and (obj is None or obj.status in pipeline.SUBMITTABLE):
            button = (GENERATE_BUTTON, gettext("Save and generate"))
        elif allowed and obj.status == Status.SUCCEEDED:
            button = (REGENERATE_BUTTON, gettext("Save and regenerate"))
        context.update(
            modelslab_button=button,
            modelslab_badge=self._badge(obj) if obj is not None and obj.pk else "",
            modelslab_shown_field=SHOWN_FIELD,
            modelslab_shown=timezone.now().isoformat(),
        )
        return super().render_change_form(request, context, add, change, **kwargs)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {
            **(extra_context or {}),
            "modelslab_shown_field": SHOWN_FIELD,
            "modelslab_shown": timezone.now().isoformat(),
        }
        return super().changelist_view(request, extra_context)

    def response_add(self, request: HttpRequest, obj: GenerationRequest, post_url_continue=None):
        if GENERATE_BUTTON in request.POST:
            return self._generate_from_form(request, obj, regenerate=False)
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: GenerationRequest) -> HttpResponse:
        for name, regenerate in ((GENERATE_BUTTON, False), (REGENERATE_BUTTON, True)):
            if name in request.POST:
                return self._generate_from_form(request, obj, regenerate=regenerate)
        return super().response_change(request, obj)

    def _generate_from_form(
        self, request: HttpRequest, obj: GenerationRequest, *, regenerate: bool
    ) -> HttpResponse:
        """Saved: say so, and have ``changeform_view`` start the generation after commit.

        Regenerating keeps the seed when "Keep the seed" is ticked or the seed was changed in
        the form; otherwise a seeded request gets a new one.
        """
        self.message_user(request, gettext("“%(obj)s” was saved.") % {"obj": obj}, messages.SUCCESS)
        keep_seed = bool(request.POST.get(KEEP_SEED_FIELD)) or getattr(
            request, "_modelslab_seed_changed", False
        )
        request._modelslab_start = (obj, regenerate, keep_seed)  # type: ignore[attr-defined]
        opts = self.model._meta
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
        )

    # --- the status endpoint polled by admin.js -------------------------------------------

    def status_view(self, request: HttpRequest) -> JsonResponse:
        """``GET status/?id=1&id=2``: the status of a few requests, for the polling script."""
        if not self.has_view_or_change_permission(request):
            return JsonResponse({"detail": "Forbidden"}, status=403)
        ids = [value for value in request.GET.getlist("id") if value.isdigit()][:STATUS_BATCH]
        rows = self.get_queryset(request).filter(pk__in=ids)
        return JsonResponse(
            {
                "requests": [
                    {
                        "id": obj.pk,
                        "status": obj.status,
                        "label": obj.get_status_display(),
                        "active": obj.status in ACTIVE_STATUSES,
                        "eta": obj.eta,
                        "eta_label": eta_label(obj),
                        "error": obj.error,
                        "images": len(current_images(obj)),
                    }
                    for obj in rows
                ]
            }
        )

    def costs_view(self, request: HttpRequest) -> HttpResponse:
        """Totals by user and by model of the requests the list's filters select."""
        return costs_page(self, request)

    # --- columns --------------------------------------------------------------------------

    @admin.display(description=_("images"))
    def thumbnails(self, obj: GenerationRequest) -> str:
        images = current_images(obj)[:4]
        if not images:
            return "—"
        return format_html(
            '<span class="modelslab-thumbs">{}</span>',
            format_html_join("", "{}", ((thumbnail_html(image, 64),) for image in images)),
        )

    @admin.display(description=_("prompt"))
    def short_prompt(self, obj: GenerationRequest) -> str:
        return obj.prompt if len(obj.prompt) <= 80 else obj.prompt[:79] + "…"

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, obj: GenerationRequest) -> str:
        """The badge; in the list, a failed or refused request's error under it."""
        badge = self._badge(obj)
        if obj.status in (Status.FAILED, Status.REFUSED) and obj.error:
            error = obj.error if len(obj.error) <= 160 else obj.error[:159] + "…"
            return format_html(
                '{}<div class="modelslab-status-error" title="{}">{}</div>', badge, obj.error, error
            )
        return badge

    def _badge(self, obj: GenerationRequest) -> str:
        return status_badge(
            obj,
            poll_url=reverse("admin:django_modelslab_generationrequest_status"),
            poll_interval=self.status_poll_interval,
        )

    @admin.display(description=_("count"))
    def image_count(self, obj: GenerationRequest) -> int:
        return len(current_images(obj))

    @admin.display(description=_("stored inputs"))
    def input_preview(self, obj: GenerationRequest) -> str:
        return input_preview_html(obj)

    @admin.display(description=_("cost"), ordering="cost")
    def cost_display(self, obj: GenerationRequest) -> str:
        return cost_html(obj)

    @admin.display(description=_("charges (one per paid job)"))
    def charges_table(self, obj: GenerationRequest) -> str:
        return charges_html(obj)

    @admin.display(description=_("model attempts"))
    def model_attempts_table(self, obj: GenerationRequest) -> str:
        return model_attempts_html(obj)

    @admin.display(description=_("raw responses (API key redacted)"))
    def raw_responses(self, obj: GenerationRequest) -> str:
        text = json.dumps(obj.provider_responses, indent=2, sort_keys=True)
        return format_html('<pre class="modelslab-raw">{}</pre>', text)

    # --- actions --------------------------------------------------------------------------

    @admin.action(description=_("Generate selected requests"), permissions=["generate"])
    def generate(self, request: HttpRequest, queryset: QuerySet[GenerationRequest]) -> None:
        self._start(request, queryset, regenerate=False)

    @admin.action(
        description=_("Regenerate selected requests (keeps earlier images)"),
        permissions=["generate"],
    )
    def regenerate(self, request: HttpRequest, queryset: QuerySet[GenerationRequest]) -> None:
        self._start(request, queryset, regenerate=True)

    @admin.action(
        description=_("Regenerate selected requests with the same seed (repeats the paid job)"),
        permissions=["generate"],
    )
    def regenerate_keep_seed(
        self, request: HttpRequest, queryset: QuerySet[GenerationRequest]
    ) -> None:
        self._start(request, queryset, regenerate=True, keep_seed=True)

    def _start(
        self,
        request: HttpRequest,
        objs: Iterable[GenerationRequest],
        *,
        regenerate: bool,
        keep_seed: bool = False,
    ) -> None:
        """Submit (or regenerate) each request through the pipeline and report counts.

        Regenerating draws a new seed for a seeded request unless ``keep_seed``. A request
        started after the posting page was shown is left alone (a double click must not pay
        twice); SQLite's "database is locked" is waited out.
        """
        objs = list(objs)
        shown = shown_at(request)
        submitted = dict(
            GenerationRequest.objects.filter(pk__in=[obj.pk for obj in objs]).values_list(
                "pk", "submitted_at"
            )
        )
        results: list[GenerationRequest] = []
        busy: list[GenerationRequest] = []
        done_before: list[GenerationRequest] = []
        started: list[GenerationRequest] = []
        not_started: dict[str, list[GenerationRequest]] = {}
        for obj in objs:
            if started_since(submitted.get(obj.pk), shown):
                started.append(obj)
            elif obj.status in ACTIVE_STATUSES:
                busy.append(obj)
            elif not regenerate and obj.status == Status.SUCCEEDED:
                done_before.append(obj)
            else:
                call = (
                    partial(pipeline.regenerate, obj, keep_seed=keep_seed)
                    if regenerate
                    else partial(pipeline.submit, obj)
                )
                try:
                    results.append(retry_when_locked(call))
                except pipeline.GenerationInProgress:
                    busy.append(obj)
                except (BudgetExceeded, ReservedParameters, StillLocked) as exc:  # not queued
                    not_started.setdefault(str(exc), []).append(obj)
        self._report(request, results, busy=busy, done_before=done_before, started=started)
        for reason, objs in not_started.items():
            self.message_user(
                request,
                ngettext(
                    "%(n)d request not started (%(ids)s): %(why)s",
                    "%(n)d requests not started (%(ids)s): %(why)s",
                    len(objs),
                )
                % {"n": len(objs), "ids": _ids(objs), "why": reason},
                messages.ERROR,
            )

    def _report(
        self,
        request: HttpRequest,
        results: list[GenerationRequest],
        *,
        busy: list[GenerationRequest],
        done_before: list[GenerationRequest],
        started: Iterable[GenerationRequest] = (),
    ) -> None:
        started = list(started)
        if started:
            self.message_user(
                request,
                ngettext(
                    "%(n)d request not started again: it was started after this page was "
                    "shown (%(ids)s). Its status is below.",
                    "%(n)d requests not started again: they were started after this page was "
                    "shown (%(ids)s). Their status is below.",
                    len(started),
                )
                % {"n": len(started), "ids": _ids(started)},
                messages.WARNING,
            )
        succeeded = sum(1 for obj in results if obj.status == Status.SUCCEEDED)
        failed = [obj for obj in results if obj.status == Status.FAILED]
        refused = [obj for obj in results if obj.status == Status.REFUSED]
        waiting = len(results) - succeeded - len(failed) - len(refused)
        if succeeded:
            self.message_user(
                request,
                ngettext("%d request succeeded.", "%d requests succeeded.", succeeded) % succeeded,
                messages.SUCCESS,
            )
        if waiting:
            self.message_user(
                request,
                ngettext(
                    "%d request is queued; this page updates when it finishes.",
                    "%d requests are queued; this page updates when they finish.",
                    waiting,
                )
                % waiting,
                messages.INFO,
            )
        if failed:
            reasons = "; ".join(f"#{obj.pk}: {obj.error}" for obj in failed)
            self.message_user(
                request,
                ngettext(
                    "%(n)d request failed: %(why)s", "%(n)d requests failed: %(why)s", len(failed)
                )
                % {"n": len(failed), "why": reasons},
                messages.ERROR,
            )
        if refused:
            reasons = "; ".join(f"#{obj.pk}: {obj.error}" for obj in refused)
            self.message_user(
                request,
                ngettext(
                    "%(n)d request refused: %(why)s",
                    "%(n)d requests refused: %(why)s",
                    len(refused),
                )
                % {"n": len(refused), "why": reasons},
                messages.WARNING,
            )
        if busy:
            self.message_user(
                request,
                ngettext(
                    "%(n)d request skipped: it is still in progress (%(ids)s).",
                    "%(n)d requests skipped: they are still in progress (%(ids)s).",
                    len(busy),
                )
                % {"n": len(busy), "ids": _ids(busy)},
                messages.WARNING,
            )
        if done_before:
            self.message_user(
                request,
                ngettext(
                    "%(n)d request skipped: it already has images (%(ids)s); "
                    "use Regenerate for new ones.",
                    "%(n)d requests skipped: they already have images (%(ids)s); "
                    "use Regenerate for new ones.",
                    len(done_before),
                )
                % {"n": len(done_before), "ids": _ids(done_before)},
                messages.WARNING,
            )


def _ids(objs: list[GenerationRequest]) -> str:
    return ", ".join(f"#{obj.pk}" for obj in objs)


# --- images -----------------------------------------------------------------------------


@admin.register(GeneratedImage)
class GeneratedImageAdmin(admin.ModelAdmin):
    """A gallery of every stored image: previews, filters, search by prompt, choose."""

    change_form_template = "django_modelslab/admin/generatedimage/change_form.html"
    list_display = (
        "preview",
        "id",
        "request_link",
        "prompt",
        "model_id_column",
        "dimensions",
        "format",
        "size",
        "seed",
        "chosen",
        "superseded",
        "created_at",
    )
    list_display_links = ("preview", "id")
    list_filter = ("request__model_id", "format", "created_at", "chosen", "superseded", "nsfw")
    search_fields = ("request__prompt",)
    list_select_related = ("request",)
    list_per_page = 50
    date_hierarchy = "created_at"
    actions = ("choose",)
    fields = (
        "large_preview",
        "request_link",
        "prompt",
        "full_image",
        "dimensions",
        "format",
        "size",
        "sha256",
        "seed",
        "attempt",
        "position",
        "chosen",
        "superseded",
        "nsfw",
        "source_url",
        "source_expires_at",
        "created_at",
        "use_as_input",
    )
    readonly_fields = fields

    class Media:
        css = {"all": (STATIC_CSS,)}

    def get_urls(self) -> list:
        opts = self.model._meta
        return [
            path(
                "<path:object_id>/choose/",
                self.admin_site.admin_view(self.choose_view),
                name=f"{opts.app_label}_{opts.model_name}_choose",
            ),
            *super().get_urls(),
        ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # images are records of what came back; only "choose" changes them

    def has_generate_permission(self, request: HttpRequest) -> bool:
        return can_generate(request)

    def render_change_form(
        self, request: HttpRequest, context: dict[str, Any], add=False, change=False, **kwargs
    ) -> HttpResponse:
        obj = context.get("original")
        context["modelslab_choose_url"] = (
            reverse("admin:django_modelslab_generatedimage_choose", args=[obj.pk])
            if obj is not None and not obj.chosen and self.has_generate_permission(request)
            else ""
        )
        return super().render_change_form(request, context, add, change, **kwargs)

    def choose_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """``POST <id>/choose/``: make this image the chosen one of its request."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.has_generate_permission(request):
            raise PermissionDenied
        image = self.get_object(request, unquote(object_id))
        if image is None:
            raise Http404(gettext("No such image."))
        try:
            retry_when_locked(partial(pipeline.choose, image))
        except StillLocked as exc:
            self.message_user(request, str(exc), messages.ERROR)
            return HttpResponseRedirect(
                reverse("admin:django_modelslab_generationrequest_change", args=[image.request_id])
            )
        self.message_user(
            request,
            gettext("Image #%(image)s is now the chosen image of request #%(request)s.")
            % {"image": image.pk, "request": image.request_id},
            messages.SUCCESS,
        )
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(
            target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
        ):
            target = reverse(
                "admin:django_modelslab_generationrequest_change", args=[image.request_id]
            )
        return HttpResponseRedirect(target)

    @admin.action(
        description=_("Mark as the chosen image of its request"), permissions=["generate"]
    )
    def choose(self, request: HttpRequest, queryset: QuerySet[GeneratedImage]) -> None:
        by_request: dict[int, list[GeneratedImage]] = {}
        for image in queryset:
            by_request.setdefault(image.request_id, []).append(image)
        chosen = [pipeline.choose(images[0]) for images in by_request.values() if len(images) == 1]
        ambiguous = [pk for pk, images in by_request.items() if len(images) > 1]
        if chosen:
            self.message_user(
                request,
                ngettext("%d image marked as chosen.", "%d images marked as chosen.", len(chosen))
                % len(chosen),
                messages.SUCCESS,
            )
        if ambiguous:
            self.message_user(
                request,
                gettext("Pick one image per request; nothing changed for %(ids)s.")
                % {"ids": ", ".join(f"#{pk}" for pk in ambiguous)},
                messages.WARNING,
            )

    # --- columns --------------------------------------------------------------------------

    @admin.display(description=_("preview"))
    def preview(self, image: GeneratedImage) -> str:
        return thumbnail_html(image, 128, link=False)  # the cell links to the image's page

    @admin.display(description=_("preview"))
    def large_preview(self, image: GeneratedImage) -> str:
        return thumbnail_html(image, 256)

    @admin.display(description=_("use as input"))
    def use_as_input(self, image: GeneratedImage) -> str:
        """Links to a new request with this image as its input (the add form, pre-filled)."""
        add = reverse("admin:django_modelslab_generationrequest_add")
        links = [
            (f"{add}?{urlencode({'kind': kind, 'init_from': image.pk, 'prompt': prompt})}", label)
            for kind, label, prompt in (
                ("img2img", gettext("Image to image"), image.request.prompt),
                ("upscale", gettext("Upscale"), image.request.prompt),
            )
        ]
        return format_html_join(" | ", '<a href="{}">{}</a>', links)

    @admin.display(description=_("full image"))
    def full_image(self, image: GeneratedImage) -> str:
        return format_html('<a href="{}">{}</a>', image.image.url, image.image.name)

    @admin.display(description=_("request"), ordering="request")
    def request_link(self, image: GeneratedImage) -> str:
        url = reverse("admin:django_modelslab_generationrequest_change", args=[image.request_id])
        return format_html('<a href="{}">#{}</a>', url, image.request_id)

    @admin.display(description=_("prompt"), ordering="request__prompt")
    def prompt(self, image: GeneratedImage) -> str:
        text = image.request.prompt
        return text if len(text) <= 60 else text[:59] + "…"

    # Not ``model``: that name is ModelAdmin's own (the model class), set on every instance.
    @admin.display(description=_("model"), ordering="request__model_id")
    def model_id_column(self, image: GeneratedImage) -> str:
        return image.request.model_id

    @admin.display(description=_("size"))
    def dimensions(self, image: GeneratedImage) -> str:
        return f"{image.width}{TIMES}{image.height}"

    @admin.display(description=_("bytes"), ordering="bytes")
    def size(self, image: GeneratedImage) -> str:
        return filesizeformat(image.bytes)


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    """Every POST ModelsLab made to the webhook view, read-only (bodies are redacted)."""

    list_display = (
        "received_at",
        "outcome",
        "valid",
        "count",
        "track_id",
        "provider_id",
        "request",
    )
    list_filter = ("outcome", "valid", "received_at")
    search_fields = ("track_id", "provider_id")
    list_select_related = ("request",)
    date_hierarchy = "received_at"
    readonly_fields = (
        "received_at",
        "count",
        "valid",
        "outcome",
        "error",
        "remote_addr",
        "track_id",
        "provider_id",
        "request",
        "body",
        "raw_body",
    )
    fields = readonly_fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
