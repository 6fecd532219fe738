"""What the API reads (a generation's parameters) and writes (requests, images, links)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.reverse import reverse

from ..conf import get_setting
from ..fallbacks import MAX_FALLBACK_MODELS, clean_model_ids
from ..limits import MAX_SAMPLES, MAX_SEED, MAX_SIDE, MAX_STEPS, MIN_SIDE, SIDE_STEP
from ..models import GeneratedImage, GenerationRequest

NAMESPACE = "modelslab-api"
UNKNOWN_FIELD = "unknown_field"


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know (a typo must not silently fall back to a default)."""

    def to_internal_value(self, data: Any) -> Any:
        if hasattr(data, "keys"):
            unknown = sorted(set(data.keys()) - set(self.fields))
            if unknown:
                message = ErrorDetail(str(_("Unknown field.")), UNKNOWN_FIELD)
                raise serializers.ValidationError({name: [message] for name in unknown})
        return super().to_internal_value(data)


def validate_side(value: int) -> int:
    if value % SIDE_STEP:
        raise serializers.ValidationError(_("Must be a multiple of 8."))
    return value


def validate_model_id(value: str) -> str:
    """Blank means DEFAULT_MODEL; with ALLOWED_MODELS set, only those ids."""
    allowed = get_setting("ALLOWED_MODELS")
    if value and allowed is not None and value not in allowed:
        raise serializers.ValidationError(
            _("Unknown model %(model)r; allowed: %(allowed)s.")
            % {"model": value, "allowed": ", ".join(sorted(allowed))}
        )
    return value


@extend_schema_field(
    {"type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE, "multipleOf": SIDE_STEP}
)
class SideField(serializers.IntegerField):
    """An image side in pixels: 256 to 1024, a multiple of 8."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            min_value=MIN_SIDE, max_value=MAX_SIDE, validators=[validate_side], **kwargs
        )


def prompt_field(**kwargs: Any) -> serializers.CharField:
    return serializers.CharField(max_length=get_setting("MAX_PROMPT_LENGTH"), **kwargs)


class GenerationCreateSerializer(StrictSerializer):
    """A text-to-image request. Omitted fields take the model's defaults."""

    prompt = serializers.CharField()  # max_length from settings: see get_fields
    negative_prompt = serializers.CharField(required=False, allow_blank=True)
    model_id = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        validators=[validate_model_id],
        help_text=_("A ModelsLab model id; blank or omitted means the DEFAULT_MODEL setting."),
    )
    width = SideField(default=512, help_text=_("Pixels: 256 to 1024, a multiple of 8."))
    height = SideField(default=512, help_text=_("Pixels: 256 to 1024, a multiple of 8."))
    samples = serializers.IntegerField(
        min_value=1, max_value=MAX_SAMPLES, default=1, help_text=_("Images to generate: 1 to 4.")
    )
    steps = serializers.IntegerField(
        min_value=1, max_value=MAX_STEPS, required=False, allow_null=True
    )
    guidance = serializers.FloatField(
        min_value=1.0, max_value=20.0, required=False, allow_null=True
    )
    seed = serializers.IntegerField(
        min_value=0,
        max_value=MAX_SEED,
        required=False,
        allow_null=True,
        help_text=_("Fixed seed: an identical earlier request's images are reused."),
    )
    use_cache = serializers.BooleanField(default=True)
    fallback_models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        max_length=MAX_FALLBACK_MODELS,
        help_text=_(
            "Model ids tried in order when the model fails; omitted or empty: the "
            "FALLBACK_MODELS setting."
        ),
    )
    safety_checker = serializers.BooleanField(
        required=False,
        allow_null=True,
        default=None,
        help_text=_(
            "Ask ModelsLab to check outputs (it blanks NSFW ones); null: ModelsLab's default "
            "or the SAFETY_CHECKER setting."
        ),
    )

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["prompt"] = prompt_field(help_text=_("What to draw."))
        fields["negative_prompt"] = prompt_field(required=False, allow_blank=True)
        return fields

    def validate_prompt(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError(_("This field may not be blank."))
        return value

    def validate_fallback_models(self, value: list[str]) -> list[str]:
        try:
            return clean_model_ids(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc


def _link(request: Any, name: str, pk: int) -> str:
    return reverse(f"{NAMESPACE}:{name}", args=[pk], request=request)


def _file_url(request: Any, field: Any) -> str | None:
    if not field:
        return None
    url = field.url
    return request.build_absolute_uri(url) if request is not None else url


class ImageLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    request = serializers.URLField()
    choose = serializers.URLField()


class ImageSerializer(serializers.ModelSerializer):
    """One stored image; ``url`` and ``thumbnail_url`` are permanent, absolute storage URLs."""

    url = serializers.SerializerMethodField(help_text=_("The stored image (permanent)."))
    thumbnail_url = serializers.SerializerMethodField(help_text=_("A small WebP copy."))
    links = serializers.SerializerMethodField()

    class Meta:
        model = GeneratedImage
        fields = (
            "id",
            "request",
            "url",
            "thumbnail_url",
            "width",
            "height",
            "format",
            "bytes",
            "sha256",
            "seed",
            "attempt",
            "position",
            "chosen",
            "superseded",
            "nsfw",
            "created_at",
            "links",
        )
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, image: GeneratedImage) -> str | None:
        return _file_url(self.context.get("request"), image.image)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_thumbnail_url(self, image: GeneratedImage) -> str | None:
        return _file_url(self.context.get("request"), image.thumbnail)

    @extend_schema_field(ImageLinksSerializer)
    def get_links(self, image: GeneratedImage) -> dict[str, str]:
        request = self.context.get("request")
        return {
            "self": _link(request, "image-detail", image.pk),
            "request": _link(request, "generation-detail", image.request_id),
            "choose": _link(request, "image-choose", image.pk),
        }


@extend_schema_field(
    {
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "model_id": {"type": "string"},
                "outcome": {
                    "type": "string",
                    "enum": ["started", "succeeded", "failed", "refused", "abandoned"],
                },
                "error": {"type": "string"},
                "seconds": {"type": "number", "nullable": True},
                "at": {"type": "string", "format": "date-time"},
                "attempt": {"type": "integer"},
                "track_id": {"type": "string"},
            },
        },
    }
)
class ModelAttemptsField(serializers.JSONField):
    """``GenerationRequest.model_attempts``: one object per model tried."""


class GenerationLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    regenerate = serializers.URLField()


class GenerationSerializer(serializers.ModelSerializer):
    """A generation request: what was asked, where it stands, and every image it produced."""

    finished = serializers.BooleanField(source="is_finished", read_only=True)
    cost_source = serializers.ChoiceField(
        choices=GenerationRequest.CostSource.choices,
        allow_blank=True,
        read_only=True,
        help_text=_("Where cost came from; blank when unknown or reused from the cache."),
    )
    fallback_models = serializers.ListField(
        child=serializers.CharField(),
        read_only=True,
        help_text=_("Model ids tried after model_id; empty: the FALLBACK_MODELS setting."),
    )
    model_attempts = ModelAttemptsField(
        read_only=True, help_text=_("Each model tried, in order: outcome, error, seconds.")
    )
    images = ImageSerializer(many=True, read_only=True)
    links = serializers.SerializerMethodField()

    class Meta:
        model = GenerationRequest
        fields = (
            "id",
            "status",
            "finished",
            "error",
            "eta",
            "attempts",
            "prompt",
            "negative_prompt",
            "model_id",
            "width",
            "height",
            "samples",
            "steps",
            "guidance",
            "seed",
            "use_cache",
            "fallback_models",
            "safety_checker",
            "produced_by",
            "model_attempts",
            "cached_from",
            "cost",
            "cost_source",
            "created_at",
            "submitted_at",
            "started_at",
            "finished_at",
            "images",
            "links",
        )
        read_only_fields = fields

    @extend_schema_field(GenerationLinksSerializer)
    def get_links(self, generation: GenerationRequest) -> dict[str, str]:
        request = self.context.get("request")
        return {
            "self": _link(request, "generation-detail", generation.pk),
            "regenerate": _link(request, "generation-regenerate", generation.pk),
        }


#: DRF's error bodies, for the schema.
ErrorSerializer = inline_serializer(
    "Error",
    fields={"detail": serializers.CharField(help_text=_("What went wrong."))},
)
#: A 400: messages keyed by field name (``non_field_errors`` for the body as a whole).
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Messages for each field that failed, keyed by the field's name.",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
