"""What the API reads (a generation's parameters) and writes (requests, images, links)."""

from __future__ import annotations

import logging
from typing import Any

from django.db import models
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ErrorDetail
from rest_framework.fields import empty
from rest_framework.reverse import reverse
from rest_framework.serializers import as_serializer_error

from .. import inputs, kinds
from ..alttext import clean_alt_text
from ..conf import get_setting
from ..exceptions import InvalidImage, StorageError
from ..fallbacks import MAX_FALLBACK_MODELS, clean_model_ids
from ..limits import MAX_ID, MAX_SIDE, MIN_SIDE, SIDE_STEP, check_side
from ..models import ALT_TEXT_MAX_LENGTH, GeneratedImage, GenerationRequest
from .permissions import sees_everything, visible_images

logger = logging.getLogger(__name__)

NAMESPACE = "modelslab-api"
UNKNOWN_FIELD = "unknown_field"
RESERVED_FIELD = "reserved_field"


class StrictSerializer(serializers.Serializer):
    """Rejects fields it does not know (a typo must not silently fall back to a default).

    An unknown field named in ``reserved`` (any case) gets a message saying that the pipeline
    sets it (:data:`kinds.PIPELINE_PARAMS`: the key, the webhook, the track id...). Unknown
    fields are reported first, together with every other error of the body.
    """

    reserved: frozenset[str] = frozenset()

    def run_validation(self, data: Any = empty) -> Any:
        unknown: dict[str, list[Any]] = {}
        if hasattr(data, "keys"):
            names = sorted(set(data.keys()) - set(self.fields))
            unknown = {name: [self._refusal(name)] for name in names}
        try:
            value = super().run_validation(data)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError(_merged(unknown, as_serializer_error(exc))) from None
        if unknown:
            raise serializers.ValidationError(unknown)
        return value

    def _refusal(self, name: Any) -> ErrorDetail:
        if str(name).strip().lower() in self.reserved:
            return ErrorDetail(
                str(_("django-modelslab sets this parameter itself; it cannot be sent.")),
                RESERVED_FIELD,
            )
        return ErrorDetail(str(_("Unknown field.")), UNKNOWN_FIELD)


def _merged(first: dict[str, list[Any]], then: dict[str, Any]) -> dict[str, Any]:
    """Two error dicts as one; ``first``'s keys come first, a key in both has both lists."""
    errors: dict[str, Any] = {name: list(messages) for name, messages in first.items()}
    for name, messages in then.items():
        if name in errors and isinstance(messages, list):
            errors[name] += messages
        else:
            errors.setdefault(name, messages)
    return errors


class DefaultedBooleanField(serializers.BooleanField):
    """A boolean whose omission means its default in forms too (DRF reads a boolean missing
    from form data as an unticked checkbox: false)."""

    default_empty_html = empty


def validate_model_id(value: str) -> str:
    """Blank means DEFAULT_MODEL; with ALLOWED_MODELS set, only those ids."""
    allowed = get_setting("ALLOWED_MODELS")
    if value and allowed is not None and value not in allowed:
        raise serializers.ValidationError(
            _("Unknown model %(model)r; allowed: %(allowed)s.")
            % {"model": value, "allowed": ", ".join(sorted(allowed))}
        )
    return value


def model_rules(name: str) -> list[Any]:
    """A ``GenerationRequest`` field's validators (:mod:`..limits`): the API checks what the
    admin form and the pipeline check, with their messages; the schema shows their range."""
    field = GenerationRequest._meta.get_field(name)
    assert isinstance(field, models.Field), name  # a column, not a relation
    return list(field.validators)


@extend_schema_field(
    {"type": "integer", "minimum": MIN_SIDE, "maximum": MAX_SIDE, "multipleOf": SIDE_STEP}
)
class SideField(serializers.IntegerField):
    """An image side in pixels: 256 to 1024, a multiple of 8 (:func:`..limits.check_side`)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(validators=[check_side], **kwargs)


def prompt_field(**kwargs: Any) -> serializers.CharField:
    """A prompt: blank or whitespace alone is refused; at most MAX_PROMPT_LENGTH characters."""
    return serializers.CharField(max_length=get_setting("MAX_PROMPT_LENGTH"), **kwargs)


@extend_schema_field(
    {
        "type": "string",
        "description": "An image file (multipart/form-data) or a base64 data: URL (JSON), "
        "e.g. data:image/png;base64,iVBORw0...",
    }
)
class InputImageField(serializers.Field):
    """An input image: an uploaded file (multipart) or a base64 ``data:`` URL (JSON)."""

    default_error_messages = {
        "invalid": _(
            "Send an image file (multipart/form-data) or a data: URL (data:image/png;base64,...)."
        ),
    }

    def to_internal_value(self, data: Any) -> Any:
        try:
            if isinstance(data, str):
                file = inputs.decode_data_url(data)
            elif hasattr(data, "read") and hasattr(data, "seek"):
                file = data
            else:
                self.fail("invalid")
            inputs.check_input(file)
        except InvalidImage as exc:
            raise serializers.ValidationError(str(exc), code="invalid_image") from exc
        return file

    def to_representation(self, value: Any) -> None:
        return None  # write-only: responses give the stored copy's URL


class GenerationCreateSerializer(StrictSerializer):
    """A generation request. Omitted fields take the model's defaults.

    ``kind`` text2img (default), img2img, inpaint or upscale; the last three take an input
    image (``init_image`` or ``init_image_id``), inpaint a ``mask_image`` too, and their
    output size follows the input (width and height are ignored). An upscale's prompt is not
    sent to ModelsLab: it labels the request.
    """

    reserved = kinds.PIPELINE_PARAMS

    kind = serializers.ChoiceField(
        choices=GenerationRequest.Kind.choices, default=GenerationRequest.Kind.TEXT2IMG
    )
    api_version = serializers.ChoiceField(
        choices=GenerationRequest.ApiVersion.choices,
        default=GenerationRequest.ApiVersion.V6,
        help_text=_("v7 serves text2img and img2img (provider models, e.g. flux-2-pro)."),
    )
    init_image = InputImageField(
        required=False, help_text=_("img2img, inpaint, upscale: the input image.")
    )
    init_image_id = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_ID,
        help_text=_("img2img, inpaint, upscale: the id of one of your images, as the input."),
    )
    mask_image = InputImageField(
        required=False, help_text=_("inpaint: white is repainted, black kept.")
    )
    strength = serializers.FloatField(
        min_value=0.0,
        max_value=1.0,
        required=False,
        allow_null=True,
        help_text=_("img2img, inpaint: 0 keeps the input, 1 ignores it."),
    )
    scale = serializers.IntegerField(
        min_value=kinds.MIN_SCALE,
        max_value=kinds.MAX_SCALE,
        required=False,
        allow_null=True,
        help_text=_("upscale: the factor, 2 to 4 (default 2)."),
    )

    prompt = serializers.CharField()  # max_length from settings: see get_fields
    negative_prompt = serializers.CharField(required=False, allow_blank=True)
    model_id = serializers.CharField(
        required=False,
        allow_blank=True,
        max_length=200,
        validators=[validate_model_id],  # type: ignore[list-item]  # its return value is unused
        help_text=_("A ModelsLab model id; blank or omitted means the DEFAULT_MODEL setting."),
    )
    width = SideField(default=512, help_text=_("Pixels: 256 to 1024, a multiple of 8."))
    height = SideField(default=512, help_text=_("Pixels: 256 to 1024, a multiple of 8."))
    samples = serializers.IntegerField(
        default=1, validators=model_rules("samples"), help_text=_("Images to generate: 1 to 4.")
    )
    steps = serializers.IntegerField(
        required=False, allow_null=True, validators=model_rules("steps")
    )
    guidance = serializers.FloatField(
        required=False, allow_null=True, validators=model_rules("guidance")
    )
    seed = serializers.IntegerField(
        required=False,
        allow_null=True,
        validators=model_rules("seed"),
        help_text=_("Fixed seed: an identical earlier request's images are reused."),
    )
    use_cache = DefaultedBooleanField(default=True)
    fallback_models = serializers.ListField(
        child=serializers.CharField(max_length=200),
        required=False,
        max_length=MAX_FALLBACK_MODELS,
        help_text=_(
            "Model ids tried in order when the model fails; omitted or empty: the "
            "FALLBACK_MODELS setting (not for upscale or v7)."
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

    def validate_fallback_models(self, value: list[str]) -> list[str]:
        try:
            return clean_model_ids(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def validate_init_image_id(self, value: int) -> GeneratedImage:
        request = self.context.get("request")
        user = getattr(request, "user", None)
        image = visible_images(user).filter(pk=value).first() if user is not None else None
        if image is None:
            raise serializers.ValidationError(_("No image with this id that you may use."))
        return image

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "init_image" in attrs and "init_image_id" in attrs:
            raise serializers.ValidationError(
                {"init_image_id": [_("Send init_image or init_image_id, not both.")]}
            )
        errors = kinds.input_errors(
            attrs["kind"],
            attrs["api_version"],
            init="init_image" in attrs or "init_image_id" in attrs,
            mask="mask_image" in attrs,
            strength=attrs.get("strength"),
            scale=attrs.get("scale"),
        )
        if errors:
            raise serializers.ValidationError({name: [text] for name, text in errors.items()})
        return attrs

    def build(self, **fields: Any) -> GenerationRequest:
        """An unsaved request from the validated data, its input images stored by content."""
        data = dict(self.validated_data)
        init_file = data.pop("init_image", None)
        init_from = data.pop("init_image_id", None)
        mask_file = data.pop("mask_image", None)
        generation = GenerationRequest(**data, **fields)
        kinds.set_inputs(generation, init_file=init_file, init_from=init_from, mask_file=mask_file)
        return generation


class RegenerateSerializer(StrictSerializer):
    """``POST generations/<id>/regenerate/``: how to generate again (an empty body is fine).

    The parameters stay the request's own: to change the prompt or size, create a new request.
    """

    keep_seed = DefaultedBooleanField(
        default=False,
        help_text=_(
            "Send the same seed again: the same job repeated on purpose (and paid again), "
            "not served from the cache. By default a seeded request gets a new random seed, "
            "so the new images differ; an unseeded request has no seed to keep."
        ),
    )


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


class RenditionSerializer(serializers.Serializer):
    url = serializers.URLField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    format = serializers.CharField()


class ImageSerializer(serializers.ModelSerializer):
    """One stored image; ``url`` and ``thumbnail_url`` are permanent, absolute storage URLs."""

    url = serializers.SerializerMethodField(help_text=_("The stored image (permanent)."))
    thumbnail_url = serializers.SerializerMethodField(help_text=_("A small WebP copy."))
    rendition = serializers.SerializerMethodField(
        help_text=_("The rendition ?rendition= asked for (made on first use); else null.")
    )
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
            "alt_text",
            "rendition",
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

    @extend_schema_field(RenditionSerializer(allow_null=True))
    def get_rendition(self, image: GeneratedImage) -> dict[str, Any] | None:
        spec = self.context.get("rendition")
        if spec is None:
            return None
        try:
            rendition = image.get_rendition(spec)
        except StorageError as exc:  # the original is unreadable: say so on this image only
            logger.warning("No rendition %s of image #%s: %s", spec, image.pk, exc)
            return None
        return {
            "url": _file_url(self.context.get("request"), rendition.file),
            "width": rendition.width,
            "height": rendition.height,
            "format": rendition.format,
        }

    @extend_schema_field(ImageLinksSerializer)
    def get_links(self, image: GeneratedImage) -> dict[str, str]:
        request = self.context.get("request")
        return {
            "self": _link(request, "image-detail", image.pk),
            "request": _link(request, "generation-detail", image.request_id),
            "choose": _link(request, "image-choose", image.pk),
        }


class ImageUpdateSerializer(StrictSerializer):
    """``PATCH images/<id>/``: what an editor may change on a stored image (its alt text)."""

    alt_text = serializers.CharField(
        required=False,
        max_length=ALT_TEXT_MAX_LENGTH,
        allow_blank=True,
        help_text=_("Describes the image for people who cannot see it (blank: decorative)."),
    )

    def validate_alt_text(self, value: str) -> str:
        return clean_alt_text(value)


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
                "provider_seconds": {"type": "number", "nullable": True},
                "at": {"type": "string", "format": "date-time"},
                "attempt": {"type": "integer"},
                "track_id": {"type": "string"},
                "continued": {"type": "boolean"},
            },
        },
    }
)
class ModelAttemptsField(serializers.JSONField):
    """``GenerationRequest.model_attempts``: one object per model tried."""


#: Annotation a view may add (``cached_from__requested_by``) to save a query per request.
CACHED_FROM_OWNER = "cached_from_owner_id"
_UNKNOWN = object()


class GenerationLinksSerializer(serializers.Serializer):
    self = serializers.URLField()
    regenerate = serializers.URLField()


class GenerationSerializer(serializers.ModelSerializer):
    """A generation request: what was asked, where it stands, and every image it produced."""

    finished = serializers.BooleanField(source="is_finished", read_only=True)
    eta = serializers.SerializerMethodField(
        help_text=_("Seconds ModelsLab expected the job to take; null once the request is final.")
    )
    init_image = serializers.SerializerMethodField(help_text=_("The stored input image."))
    mask_image = serializers.SerializerMethodField(help_text=_("The stored mask image."))
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
        read_only=True,
        help_text=_(
            "Each model tried, in order, in every attempt: outcome, error, seconds here, "
            "provider_seconds (ModelsLab's own time)."
        ),
    )
    cached_from = serializers.SerializerMethodField(
        help_text=_(
            "The request whose images were reused (cache hit); null when none, or when it is "
            "another user's request you may not see."
        )
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
            "kind",
            "api_version",
            "prompt",
            "negative_prompt",
            "model_id",
            "width",
            "height",
            "samples",
            "steps",
            "guidance",
            "seed",
            "init_image",
            "init_from",
            "mask_image",
            "strength",
            "scale",
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

    @extend_schema_field(serializers.FloatField(allow_null=True))
    def get_eta(self, generation: GenerationRequest) -> float | None:
        return None if generation.is_finished else generation.eta

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_init_image(self, generation: GenerationRequest) -> str | None:
        return _file_url(self.context.get("request"), generation.init_image)

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_mask_image(self, generation: GenerationRequest) -> str | None:
        return _file_url(self.context.get("request"), generation.mask_image)

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_cached_from(self, generation: GenerationRequest) -> int | None:
        """The source's id, shown only to its owner or to someone who may see every request:
        a cache hit shares the images, not the link to another user's request."""
        source_id = generation.cached_from_id
        if source_id is None:
            return None
        user = getattr(self.context.get("request"), "user", None)
        if sees_everything(user):
            return source_id
        owner_id = getattr(generation, CACHED_FROM_OWNER, _UNKNOWN)
        if owner_id is _UNKNOWN:
            owner_id = (
                GenerationRequest.objects.filter(pk=source_id)
                .values_list("requested_by_id", flat=True)
                .first()
            )
        mine = user is not None and owner_id is not None and owner_id == user.pk
        return source_id if mine else None

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
_MESSAGES: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
#: A 400: messages keyed by field name (``non_field_errors`` for the body as a whole); a
#: list field's messages are keyed by the failing item's index.
VALIDATION_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "Messages for each field that failed, keyed by the field's name (for a "
    "list, by the index of each failing item).",
    "additionalProperties": {
        "anyOf": [_MESSAGES, {"type": "object", "additionalProperties": _MESSAGES}]
    },
}
