"""Query-string filters for the list endpoints, validated like request bodies (bad → 400)."""

from __future__ import annotations

import datetime
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..exceptions import InvalidRenditionSpec
from ..limits import MAX_ID
from ..models import GeneratedImage, GenerationRequest
from ..specs import MAX_SPEC_LENGTH, Spec, parse_spec


@extend_schema_field(OpenApiTypes.DATETIME)
class MomentField(serializers.Field):
    """An ISO 8601 datetime, or a date meaning its midnight (in the current time zone)."""

    default_error_messages = {"invalid": _("Use an ISO 8601 date or datetime.")}

    def to_internal_value(self, data: Any) -> datetime.datetime:
        text = str(data).strip()
        try:
            moment = parse_datetime(text)
            if moment is None:
                day = parse_date(text)
                if day is None:
                    self.fail("invalid")
                moment = datetime.datetime.combine(day, datetime.time())
        except ValueError:
            self.fail("invalid")
        try:
            if timezone.is_naive(moment):
                moment = timezone.make_aware(moment)
            # In UTC: PostgreSQL refuses offsets beyond ±15:59 that ISO 8601 allows.
            return moment.astimezone(datetime.UTC)
        except (OverflowError, ValueError):
            self.fail("invalid")

    def to_representation(self, value: datetime.datetime) -> str:
        return value.isoformat()


class GenerationFilter(serializers.Serializer):
    status = serializers.ChoiceField(
        choices=GenerationRequest.Status.choices, required=False, help_text=_("Only this status.")
    )
    model = serializers.CharField(required=False, help_text=_("Only this ModelsLab model id."))
    created_after = MomentField(required=False, help_text=_("Created at or after (ISO 8601)."))
    created_before = MomentField(required=False, help_text=_("Created before (ISO 8601)."))

    def apply(self, queryset: QuerySet[GenerationRequest]) -> QuerySet[GenerationRequest]:
        data = self.validated_data
        if "status" in data:
            queryset = queryset.filter(status=data["status"])
        if "model" in data:
            queryset = queryset.filter(model_id=data["model"])
        if "created_after" in data:
            queryset = queryset.filter(created_at__gte=data["created_after"])
        if "created_before" in data:
            queryset = queryset.filter(created_at__lt=data["created_before"])
        return queryset


class ImageFilter(serializers.Serializer):
    request = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text=_("Only this request's images.")
    )
    chosen = serializers.BooleanField(required=False, allow_null=True, default=None)
    superseded = serializers.BooleanField(required=False, allow_null=True, default=None)

    def apply(self, queryset: QuerySet[GeneratedImage]) -> QuerySet[GeneratedImage]:
        data = self.validated_data
        if "request" in data:
            queryset = queryset.filter(request_id=data["request"])
        for flag in ("chosen", "superseded"):
            if data.get(flag) is not None:
                queryset = queryset.filter(**{flag: data[flag]})
        return queryset


def filtered(
    filter_class: type[GenerationFilter] | type[ImageFilter], params: Any, queryset: QuerySet
) -> QuerySet:
    """``queryset`` narrowed by the query string; ValidationError (400) for bad values."""
    filter_set = filter_class(data=params)
    filter_set.is_valid(raise_exception=True)
    return filter_set.apply(queryset)


class RenditionQuery(serializers.Serializer):
    """``?rendition=fill-400x300``: each image also gets that rendition (made on first use)."""

    rendition = serializers.CharField(
        required=False,
        max_length=MAX_SPEC_LENGTH,
        help_text=_(
            "A rendition spec (fill-WxH, max-WxH, width-W or height-H, optionally "
            "|format-webp|avif|jpeg|png): each image then carries that rendition's URL and size."
        ),
    )

    def validate_rendition(self, value: str) -> Spec:
        try:
            return parse_spec(value)
        except InvalidRenditionSpec as exc:
            raise serializers.ValidationError(str(exc)) from exc


def rendition_spec(params: Any) -> Spec | None:
    """The spec ``?rendition=`` asks for (None: none); ValidationError (400) for a bad one."""
    query = RenditionQuery(data={k: params[k] for k in ("rendition",) if k in params})
    query.is_valid(raise_exception=True)
    return query.validated_data.get("rendition")
