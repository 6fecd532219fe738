"""Admin for generation requests and their images (a face: it calls the pipeline only)."""

from __future__ import annotations

import json

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from . import pipeline
from .models import GeneratedImage, GenerationRequest

GENERATE_PERMISSION = "django_modelslab.generate_images"


class GeneratedImageInline(admin.TabularInline):
    model = GeneratedImage
    extra = 0
    can_delete = False
    show_change_link = True
    fields = (
        "preview",
        "image",
        "width",
        "height",
        "format",
        "bytes",
        "sha256",
        "seed",
        "superseded",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    @admin.display(description=_("preview"))
    def preview(self, image: GeneratedImage) -> str:
        return _thumbnail(image)


@admin.register(GenerationRequest)
class GenerationRequestAdmin(admin.ModelAdmin):
    list_display = ("id", "short_prompt", "model_id", "status", "image_count", "created_at")
    list_filter = ("status", "kind", "model_id", "created_at")
    search_fields = ("prompt", "negative_prompt", "provider_id", "track_id")
    date_hierarchy = "created_at"
    actions = ("generate", "regenerate")
    inlines = (GeneratedImageInline,)
    readonly_fields = (
        "status",
        "error",
        "attempts",
        "provider_id",
        "track_id",
        "eta",
        "cached_from",
        "created_at",
        "submitted_at",
        "started_at",
        "finished_at",
        "raw_responses",
    )
    fieldsets = (
        (None, {"fields": ("prompt", "negative_prompt", "model_id", "width", "height", "samples")}),
        (
            _("Advanced"),
            {"classes": ("collapse",), "fields": ("kind", "seed", "steps", "guidance", "extra")},
        ),
        (
            _("State"),
            {
                "fields": (
                    "status",
                    "error",
                    "attempts",
                    "provider_id",
                    "track_id",
                    "eta",
                    "cached_from",
                    "created_at",
                    "submitted_at",
                    "started_at",
                    "finished_at",
                )
            },
        ),
        (_("Provider responses"), {"classes": ("collapse",), "fields": ("raw_responses",)}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[GenerationRequest]:
        return super().get_queryset(request).prefetch_related("images")

    def has_generate_permission(self, request: HttpRequest) -> bool:
        """Actions with ``permissions=["generate"]`` are hidden without this permission."""
        return request.user.has_perm(GENERATE_PERMISSION)

    def save_model(self, request: HttpRequest, obj: GenerationRequest, form, change) -> None:
        if obj.requested_by_id is None:
            obj.requested_by = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description=_("prompt"))
    def short_prompt(self, obj: GenerationRequest) -> str:
        return obj.prompt if len(obj.prompt) <= 80 else obj.prompt[:79] + "…"

    @admin.display(description=_("images"))
    def image_count(self, obj: GenerationRequest) -> int:
        return sum(1 for image in obj.images.all() if not image.superseded)

    @admin.display(description=_("raw responses (API key redacted)"))
    def raw_responses(self, obj: GenerationRequest) -> str:
        text = json.dumps(obj.provider_responses, indent=2, sort_keys=True)
        return format_html("<pre style='white-space: pre-wrap'>{}</pre>", text)

    @admin.action(description=_("Generate selected requests"), permissions=["generate"])
    def generate(self, request: HttpRequest, queryset: QuerySet[GenerationRequest]) -> None:
        started = [pipeline.submit(obj) for obj in queryset]
        self._report(request, started)

    @admin.action(
        description=_("Regenerate selected requests (keeps earlier images)"),
        permissions=["generate"],
    )
    def regenerate(self, request: HttpRequest, queryset: QuerySet[GenerationRequest]) -> None:
        done = []
        for obj in queryset:
            try:
                done.append(pipeline.regenerate(obj))
            except pipeline.GenerationInProgress as exc:
                self.message_user(request, str(exc), messages.WARNING)
        self._report(request, done)

    def _report(self, request: HttpRequest, results: list[GenerationRequest]) -> None:
        succeeded = sum(1 for obj in results if obj.status == GenerationRequest.Status.SUCCEEDED)
        failed = [obj for obj in results if obj.status == GenerationRequest.Status.FAILED]
        waiting = len(results) - succeeded - len(failed)
        if succeeded:
            self.message_user(
                request,
                ngettext("%d request succeeded.", "%d requests succeeded.", succeeded) % succeeded,
                messages.SUCCESS,
            )
        if waiting:
            self.message_user(
                request,
                ngettext("%d request is queued.", "%d requests are queued.", waiting) % waiting,
                messages.INFO,
            )
        for obj in failed:
            self.message_user(request, f"#{obj.pk} failed: {obj.error}", messages.ERROR)


@admin.register(GeneratedImage)
class GeneratedImageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "preview",
        "request_link",
        "width",
        "height",
        "format",
        "bytes",
        "superseded",
    )
    list_filter = ("format", "superseded", "request__model_id", "created_at")
    search_fields = ("request__prompt", "sha256")
    list_select_related = ("request",)
    readonly_fields = (
        "preview",
        "request",
        "image",
        "sha256",
        "width",
        "height",
        "format",
        "bytes",
        "source_url",
        "source_expires_at",
        "seed",
        "attempt",
        "position",
        "created_at",
    )
    fields = (*readonly_fields, "superseded")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description=_("preview"))
    def preview(self, image: GeneratedImage) -> str:
        return _thumbnail(image)

    @admin.display(description=_("request"), ordering="request")
    def request_link(self, image: GeneratedImage) -> str:
        url = reverse("admin:django_modelslab_generationrequest_change", args=[image.request_id])
        return format_html('<a href="{}">{}</a>', url, image.request)


def _thumbnail(image: GeneratedImage, size: int = 96) -> str:
    if not image.image:
        return "—"
    return format_html(
        '<a href="{0}"><img src="{0}" alt="" loading="lazy" '
        'style="max-width:{1}px;max-height:{1}px"></a>',
        image.image.url,
        size,
    )
