"""The generation requests' admin: the list, the form with its Generate / Regenerate button,
the images inline, the status endpoint the page's script polls, and the Costs page."""

from __future__ import annotations

import json
from functools import partial
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.contrib.messages.storage import default_storage
from django.core.exceptions import PermissionDenied
from django.db import router, transaction
from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .. import pipeline
from ..contention import StillLocked, retry_when_locked
from ..forms import GenerationRequestAdminForm
from ..models import GeneratedImage, GenerationRequest
from . import html
from .actions import SHOWN_FIELD, StartedSinceShown, can_generate, shown_at, start, started_since
from .costs import costs_page
from .scale import ModelIdFilter, ScaleMixin

if TYPE_CHECKING:
    from django.contrib.admin.options import _FieldsetSpec

Status = GenerationRequest.Status

#: The change form's submit buttons that generate: name -> whether it regenerates.
GENERATE_BUTTONS = {"_generate": False, "_regenerate": True}
#: The change form's "Keep the seed" checkbox, next to "Save and regenerate".
KEEP_SEED_FIELD = "_keep_seed"
#: Most ids one status call answers for.
STATUS_BATCH = 200


def current_images(generation: GenerationRequest) -> list[GeneratedImage]:
    """The images of the latest attempt, the chosen one first (uses prefetched rows)."""
    images = [image for image in generation.images.all() if not image.superseded]
    return sorted(images, key=lambda image: (not image.chosen, image.position))


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
        return html.thumbnail_html(image)

    @admin.display(description=_("size"))
    def dimensions(self, image: GeneratedImage) -> str:
        return html.dimensions(image)

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
        return html.label_html("modelslab-superseded", gettext("Superseded"), image.superseded)

    @admin.display(description=_("chosen"))
    def chosen_label(self, image: GeneratedImage) -> str:
        return html.label_html("modelslab-chosen", f"★ {gettext('Chosen')}", image.chosen)

    @admin.display(description=_("NSFW"))
    def nsfw_label(self, image: GeneratedImage) -> str:
        return html.label_html("modelslab-nsfw", gettext("Flagged NSFW"), bool(image.nsfw))

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


class GenerationRequestChangeList(ChangeList):
    """The list shows neither who asked nor a cache hit's source (only whether there is
    one): it joins neither (the change form's queryset does)."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet:
        return super().get_queryset(request, exclude_parameters).select_related(None)


class GenerationRequestAdmin(ScaleMixin, admin.ModelAdmin):
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
    list_filter = ("status", "kind", "api_version", ("model_id", ModelIdFilter), "created_at")
    #: Words in the prompts (PostgreSQL: the trigram indexes of migration 0012); a job or
    #: track id is pasted whole, so it matches exactly (its B-tree index): a contains-search
    #: on it would read every row and, in the OR, make the prompts' indexes useless.
    search_fields = ("prompt", "negative_prompt", "provider_id__exact", "track_id__exact")
    date_hierarchy = "created_at"
    list_per_page = 50  # as the images' list: each row renders a badge, thumbnails and a cost
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
        css = {"all": (html.STATIC_CSS,)}
        js = (html.STATIC_JS,)

    def get_queryset(self, request: HttpRequest) -> QuerySet[GenerationRequest]:
        return (
            super()
            .get_queryset(request)
            .select_related("requested_by", "cached_from")
            .prefetch_related(Prefetch("images", queryset=GeneratedImage.objects.order_by()))
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return GenerationRequestChangeList

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> _FieldsetSpec:
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

    # --- the change form: Generate / Regenerate buttons -----------------------------------

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """A posted form is saved in one transaction, tried again while SQLite is locked."""
        view = partial(super().changeform_view, request, object_id, form_url, extra_context)
        if request.method != "POST":
            return view()
        pressed = any(name in request.POST for name in GENERATE_BUTTONS)
        if pressed and not self.has_generate_permission(request):
            raise PermissionDenied
        try:
            return retry_when_locked(view, before_retry=partial(self._forget_the_try, request))
        except StillLocked as exc:
            return self._busy(request, str(exc))
        except StartedSinceShown as exc:
            self.message_user(request, str(exc), messages.WARNING)
            return HttpResponseRedirect(request.get_full_path())

    @staticmethod
    def _forget_the_try(request: HttpRequest) -> None:
        """Before the form is saved again: its messages were about a rolled-back save, and
        its uploads were read."""
        if hasattr(request, "_messages"):
            request._messages = default_storage(request)
        for _name, uploads in request.FILES.lists():
            for upload in uploads:
                upload.seek(0)

    def _busy(self, request: HttpRequest, reason: str) -> HttpResponse:
        """503 with a page saying nothing was saved: Back keeps the form's contents."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": gettext("The database is busy"),
            "reason": reason,
        }
        return TemplateResponse(request, "django_modelslab/admin/busy.html", context, status=503)

    def save_model(self, request: HttpRequest, obj: GenerationRequest, form, change) -> None:
        """Save; if Generate or Regenerate was pressed, start the request once the save is
        committed (it runs in the admin's transaction)."""
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
            obj.requested_by = request.user  # type: ignore[assignment]  # signed in: the admin
        super().save_model(request, obj, form, change)
        regenerate = self._pressed(request, change)
        if regenerate is not None:
            # Regenerating keeps the seed when "Keep the seed" is ticked or the seed was
            # changed in the form (a typed seed is what to send); else a seeded request gets
            # a new one.
            keep_seed = bool(request.POST.get(KEEP_SEED_FIELD)) or "seed" in form.changed_data
            transaction.on_commit(
                partial(start, self, request, [obj], regenerate=regenerate, keep_seed=keep_seed),
                using=router.db_for_write(self.model),
            )

    @staticmethod
    def _pressed(request: HttpRequest, change: bool) -> bool | None:
        """Whether the posted form's button regenerates; None when it generates nothing.
        (The add form has only Generate.)"""
        for name, regenerate in GENERATE_BUTTONS.items():
            if name in request.POST and (change or not regenerate):
                return regenerate
        return None

    def response_add(self, request: HttpRequest, obj: GenerationRequest, post_url_continue=None):
        if self._pressed(request, change=False) is None:
            return super().response_add(request, obj, post_url_continue)
        return self._saved(request, obj)

    def response_change(self, request: HttpRequest, obj: GenerationRequest) -> HttpResponse:
        if self._pressed(request, change=True) is None:
            return super().response_change(request, obj)
        return self._saved(request, obj)

    def _saved(self, request: HttpRequest, generation: GenerationRequest) -> HttpResponse:
        """After Generate / Regenerate: the request's page, where the generation shows."""
        self.message_user(
            request, gettext("“%(obj)s” was saved.") % {"obj": generation}, messages.SUCCESS
        )
        opts = self.model._meta
        return HttpResponseRedirect(
            reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[generation.pk])
        )

    def render_change_form(
        self,
        request: HttpRequest,
        context: dict[str, Any],
        add: bool = False,
        change: bool = False,
        form_url: str = "",
        obj: GenerationRequest | None = None,
    ) -> HttpResponse:
        shown: GenerationRequest | None = context.get("original")
        allowed = self.has_generate_permission(request) and (
            add or self.has_change_permission(request, shown)
        )
        button = None
        if allowed and (shown is None or shown.status in pipeline.SUBMITTABLE):
            button = ("_generate", gettext("Save and generate"))
        elif allowed and shown is not None and shown.status == Status.SUCCEEDED:
            button = ("_regenerate", gettext("Save and regenerate"))
        context.update(
            modelslab_button=button,
            modelslab_badge=self._badge(shown) if shown is not None and shown.pk else "",
            modelslab_shown_field=SHOWN_FIELD,
            modelslab_shown=timezone.now().isoformat(),
        )
        return super().render_change_form(request, context, add, change, form_url, obj)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {
            **(extra_context or {}),
            "modelslab_shown_field": SHOWN_FIELD,
            "modelslab_shown": timezone.now().isoformat(),
        }
        return super().changelist_view(request, extra_context)

    # --- the status endpoint polled by admin.js, and the Costs page ------------------------

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
                        "id": generation.pk,
                        "status": generation.status,
                        "label": generation.get_status_display(),
                        "active": generation.status in html.ACTIVE_STATUSES,
                        "eta": generation.eta,
                        "eta_label": html.eta_label(generation),
                        "error": generation.error,
                        "images": len(current_images(generation)),
                    }
                    for generation in rows
                ]
            }
        )

    def costs_view(self, request: HttpRequest) -> HttpResponse:
        """Totals by user and by model of the requests the list's filters select."""
        return costs_page(self, request)

    # --- columns --------------------------------------------------------------------------

    @admin.display(description=_("images"))
    def thumbnails(self, generation: GenerationRequest) -> str:
        return html.thumbnails_html(current_images(generation)[:4])

    @admin.display(description=_("prompt"))
    def short_prompt(self, generation: GenerationRequest) -> str:
        return generation.prompt_preview(80)

    @admin.display(description=_("status"), ordering="status")
    def status_display(self, generation: GenerationRequest) -> str:
        """The badge; in the list, a failed or refused request's error under it."""
        return self._badge(generation, error=True)

    def _badge(self, generation: GenerationRequest, *, error: bool = False) -> str:
        return html.status_badge(
            generation,
            poll_url=reverse("admin:django_modelslab_generationrequest_status"),
            poll_interval=self.status_poll_interval,
            error=error,
        )

    @admin.display(description=_("count"))
    def image_count(self, generation: GenerationRequest) -> int:
        return len(current_images(generation))

    @admin.display(description=_("stored inputs"))
    def input_preview(self, generation: GenerationRequest) -> str:
        return html.input_preview_html(generation)

    @admin.display(description=_("cost"), ordering="cost")
    def cost_display(self, generation: GenerationRequest) -> str:
        return html.cost_html(generation)

    @admin.display(description=_("charges (one per paid job)"))
    def charges_table(self, generation: GenerationRequest) -> str:
        return html.charges_html(generation)

    @admin.display(description=_("model attempts"))
    def model_attempts_table(self, generation: GenerationRequest) -> str:
        return html.model_attempts_html(generation)

    @admin.display(description=_("raw responses (API key redacted)"))
    def raw_responses(self, generation: GenerationRequest) -> str:
        text = json.dumps(generation.provider_responses, indent=2, sort_keys=True)
        return format_html('<pre class="modelslab-raw">{}</pre>', text)

    # --- actions: see actions.py ----------------------------------------------------------

    @admin.action(description=_("Generate selected requests"), permissions=["generate"])
    def generate(self, request: HttpRequest, queryset: QuerySet[GenerationRequest]) -> None:
        start(self, request, queryset, regenerate=False)

    @admin.action(
        description=_("Regenerate selected requests (keeps earlier images)"),
        permissions=["generate"],
    )
    def regenerate(self, request: HttpRequest, queryset: QuerySet[GenerationRequest]) -> None:
        start(self, request, queryset, regenerate=True)

    @admin.action(
        description=_("Regenerate selected requests with the same seed (repeats the paid job)"),
        permissions=["generate"],
    )
    def regenerate_keep_seed(
        self, request: HttpRequest, queryset: QuerySet[GenerationRequest]
    ) -> None:
        start(self, request, queryset, regenerate=True, keep_seed=True)
