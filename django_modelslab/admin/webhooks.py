"""The webhook deliveries' admin: every POST ModelsLab made to the webhook view, read-only."""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest


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
