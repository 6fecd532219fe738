"""Query-string filters for the list endpoints, validated like request bodies (bad → 400)."""

from __future__ import annotations

import datetime
from typing import Any, ClassVar

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..exceptions import InvalidRenditionSpec
from ..limits import MAX_ID
from ..models import GenerationRequest
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


class QueryFilter(serializers.Serializer):
    """Query parameters as ``filter()`` lookups: each given value (not None), by its field's
    name or the lookup :attr:`lookups` maps that name to."""

    lookups: ClassVar[dict[str, str]] = {}

    def apply(self, queryset: QuerySet) -> QuerySet:
        data = self.validated_data.items()
        return queryset.filter(**{self.lookups.get(k, k): v for k, v in data if v is not None})


class GenerationFilter(QueryFilter):
    status = serializers.ChoiceField(
        choices=GenerationRequest.Status.choices, required=False, help_text=_("Only this status.")
    )
    model = serializers.CharField(required=False, help_text=_("Only this ModelsLab model id."))
    created_after = MomentField(required=False, help_text=_("Created at or after (ISO 8601)."))
    created_before = MomentField(required=False, help_text=_("Created before (ISO 8601)."))

    lookups: ClassVar[dict[str, str]] = {
        "model": "model_id",
        "created_after": "created_at__gte",
        "created_before": "created_at__lt",
    }


class ImageFilter(QueryFilter):
    request = serializers.IntegerField(
        required=False, min_value=1, max_value=MAX_ID, help_text=_("Only this request's images.")
    )
    chosen = serializers.BooleanField(required=False, allow_null=True, default=None)
    superseded = serializers.BooleanField(required=False, allow_null=True, default=None)

    lookups: ClassVar[dict[str, str]] = {"request": "request_id"}


def filtered(filter_class: type[QueryFilter], params: Any, queryset: QuerySet) -> QuerySet:
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
