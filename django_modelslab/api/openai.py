"""``POST v1/images/generations``: OpenAI's Images API, answered by the pipeline.

Clients written for OpenAI (its SDKs, LiteLLM) work with only ``base_url`` and ``api_key``
changed: the key is a DRF token sent as ``Authorization: Bearer <key>``. The view creates a
generation request, waits for it (up to OPENAI_WAIT_TIMEOUT) and answers with our permanent
storage URLs (or the stored bytes, base64), never ModelsLab's temporary ones.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.utils.translation import gettext_lazy as _
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import exceptions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from .. import pipeline
from ..conf import get_setting
from ..limits import check_side
from ..models import GeneratedImage, GenerationRequest
from . import idempotency
from .auth import api_authenticators
from .budget import budget_refusals, check_budget
from .dispatch import AsyncDispatchMixin
from .exceptions import IdempotencyKeyReused, OverBudget
from .parsers import LimitedJSONParser
from .permissions import CanGenerate
from .schema import IDEMPOTENCY_HEADER, documented
from .serializers import NAMESPACE, UNKNOWN_FIELD, StrictSerializer, model_rules, prompt_field
from .throttling import api_throttles

logger = logging.getLogger("django_modelslab.api")

SIZE_PATTERN = re.compile(r"^(\d{1,5})x(\d{1,5})$")
DEFAULT_SIDE = 512


class OpenAIError(exceptions.APIException):
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int = status.HTTP_400_BAD_REQUEST,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error = {"message": str(message), "type": type, "param": param, "code": code}
        self.headers = headers or {}


# --- request and response bodies ----------------------------------------------------------


def parse_size(value: str | None) -> tuple[int, int]:
    """``"WxH"`` → ``(W, H)``; None or ``"auto"`` → 512x512."""
    if value is None or value == "auto":
        return DEFAULT_SIDE, DEFAULT_SIDE
    match = SIZE_PATTERN.match(value)
    if match is None:
        raise serializers.ValidationError(_('Use "WIDTHxHEIGHT", e.g. "512x512", or "auto".'))
    sides = int(match[1]), int(match[2])
    for side in sides:
        check_side(side)  # Django's ValidationError: DRF reports its message
    return sides


class ImagesGenerateSerializer(StrictSerializer):
    """OpenAI's ``images.generate`` body. ``quality``, ``style`` and ``user`` are accepted."""

    prompt = serializers.CharField()  # max_length from settings: see get_fields
    model = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        max_length=200,
        help_text=_("An alias from MODEL_ALIASES or a ModelsLab model id; default DEFAULT_MODEL."),
    )
    n = serializers.IntegerField(
        required=False, allow_null=True, default=1, validators=model_rules("samples")
    )
    size = serializers.CharField(
        required=False,
        allow_null=True,
        max_length=11,
        help_text=_('"WIDTHxHEIGHT", sides 256 to 1024 in steps of 8, or "auto" (512x512).'),
    )
    response_format = serializers.ChoiceField(
        choices=["url", "b64_json"], required=False, allow_null=True, default="url"
    )
    quality = serializers.CharField(required=False, allow_null=True, max_length=50)
    # a declared field: the serializer's metaclass takes it off the class (Field.style stays)
    style = serializers.CharField(required=False, allow_null=True, max_length=50)  # type: ignore[assignment]
    user = serializers.CharField(required=False, allow_null=True, max_length=256)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["prompt"] = prompt_field(help_text=_("What to draw."))
        return fields

    def validate_size(self, value: str | None) -> str | None:
        parse_size(value)
        return value


class ImageDataSerializer(serializers.Serializer):
    url = serializers.URLField(required=False, help_text=_("Permanent URL of the stored image."))
    b64_json = serializers.CharField(required=False, help_text=_("The stored image, base64."))
    revised_prompt = serializers.CharField()


class ImagesResponseSerializer(serializers.Serializer):
    created = serializers.IntegerField(help_text=_("Unix time the request was created."))
    data = ImageDataSerializer(many=True)  # type: ignore[assignment]  # a field, as style above


class ErrorBodySerializer(serializers.Serializer):
    message = serializers.CharField()
    type = serializers.CharField()
    param = serializers.CharField(allow_null=True)
    code = serializers.CharField(allow_null=True)


class OpenAIErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


def _error(description: str) -> OpenApiResponse:
    return OpenApiResponse(OpenAIErrorSerializer, description=description)


# --- errors -------------------------------------------------------------------------------


def openai_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Every error of the view in OpenAI's shape, with OpenAI's types and codes."""
    if isinstance(exc, OpenAIError):
        return Response({"error": exc.error}, status=exc.status_code, headers=exc.headers)
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("v1/images/generations failed", exc_info=exc)
        return Response(
            {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )
    detail = response.data.get("detail") if isinstance(response.data, dict) else None
    error_type, code = "invalid_request_error", getattr(exc, "default_code", None)
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        code = "invalid_api_key"
    elif isinstance(exc, OverBudget):
        error_type = code = "insufficient_quota"
        response["x-should-retry"] = "false"  # OpenAI's SDKs retry a 429 within seconds
    elif isinstance(exc, exceptions.Throttled):
        error_type, code = "requests", "rate_limit_exceeded"
    elif isinstance(exc, IdempotencyKeyReused):
        code = "idempotency_key_reused"
    response.data = {
        "error": {
            "message": str(detail if detail is not None else response.data),
            "type": error_type,
            "param": None,
            "code": code,
        }
    }
    return response


def _validation_error(exc: serializers.ValidationError) -> OpenAIError:
    """The first failing field of a body, as OpenAI reports it."""
    detail = exc.detail
    if not isinstance(detail, dict) or not detail:
        return OpenAIError(str(detail))
    param, messages = next(iter(detail.items()))
    message = messages[0] if isinstance(messages, list) and messages else messages
    if param == "non_field_errors":
        return OpenAIError(str(message))
    if getattr(message, "code", None) == UNKNOWN_FIELD:
        return OpenAIError(f"Unrecognized request argument supplied: {param}", param=param)
    missing = getattr(message, "code", None) == "required"
    return OpenAIError(
        f"Invalid '{param}': {message}",
        param=param,
        code="missing_required_parameter" if missing else "invalid_value",
    )


# --- the view -----------------------------------------------------------------------------


class ImagesGenerationsView(AsyncDispatchMixin, APIView):  # type: ignore[misc]  # as views.py
    """OpenAI-compatible image generation; under ASGI its wait holds no thread."""

    permission_classes = (IsAuthenticated, CanGenerate)
    schema = AutoSchema()  # whatever the project's DEFAULT_SCHEMA_CLASS
    parser_classes = (LimitedJSONParser,)
    renderer_classes = (JSONRenderer,)

    def get_authenticators(self) -> list[BaseAuthentication]:
        return api_authenticators(super().get_authenticators())

    def get_throttles(self) -> list[BaseThrottle]:
        return api_throttles(super().get_throttles(), generating=True)

    def get_exception_handler(self) -> Any:
        return openai_exception_handler

    @documented(
        operation_id="openai_images_generations",
        summary="Generate images (OpenAI Images API compatible)",
        tags=["openai"],
        request=ImagesGenerateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            200: ImagesResponseSerializer,
            400: _error("Invalid body, or a refused prompt (code content_policy_violation)."),
            401: _error("Missing or wrong API key (a DRF token, sent as Bearer)."),
            403: _error("Authenticated but not allowed."),
            404: _error("Unknown model (code model_not_found)."),
            413: _error("The body is larger than allowed (code request_too_large)."),
            422: _error("The Idempotency-Key was used with another body."),
            429: _error("Throttled (rate_limit_exceeded) or budget used up (insufficient_quota)."),
            500: _error("Unexpected server error."),
            502: _error("ModelsLab failed to generate the images (code generation_failed)."),
            504: _error("Still generating after OPENAI_WAIT_TIMEOUT (code timeout)."),
        },
    )
    async def post(self, request: Request) -> Response:
        generation, response_format, run_here = await sync_to_async(self._start)(request)
        if run_here:  # an inline task backend: this call runs the generation, awaiting ModelsLab
            generation = await pipeline.arun(generation.pk, inline=True)
        else:
            generation = await _wait(generation)
        return await sync_to_async(self._answer)(generation, response_format)

    def _start(self, request: Request) -> tuple[GenerationRequest, str, bool]:
        """The request this call answers with, its response format, and whether this call
        runs it (True with an inline task backend; it is then queued, not yet run)."""
        key = idempotency.header_key(request)
        digest = idempotency.body_hash(request.data)
        if key is not None and (
            earlier := idempotency.replayed(
                request.user, key, digest, endpoint=idempotency.OPENAI_IMAGES
            )
        ):
            return earlier, _response_format(request.data), False
        body = ImagesGenerateSerializer(data=request.data)
        try:
            body.is_valid(raise_exception=True)
        except serializers.ValidationError as exc:
            raise _validation_error(exc) from exc
        params = body.validated_data
        width, height = parse_size(params.get("size"))
        generation = GenerationRequest(
            requested_by=request.user,  # type: ignore[misc]  # signed in: IsAuthenticated
            prompt=params["prompt"],
            model_id=_model_id(params.get("model")),
            width=width,
            height=height,
            samples=params.get("n") or 1,
        )
        check_budget(request.user, generation)
        inline = pipeline.runs_inline()
        with budget_refusals():
            generation, replayed = idempotency.create_once(
                request.user,
                key,
                digest,
                lambda: pipeline.submit(generation, enqueue=not inline),
                endpoint=idempotency.OPENAI_IMAGES,
            )
        run_here = inline and not replayed and generation.status == GenerationRequest.Status.QUEUED
        return generation, params.get("response_format") or "url", run_here

    def _answer(self, generation: GenerationRequest, response_format: str) -> Response:
        link = reverse(f"{NAMESPACE}:generation-detail", args=[generation.pk], request=self.request)
        # A retry would pay for the same images again: tell OpenAI's SDKs not to.
        no_retry = {"x-should-retry": "false", "Location": link}
        if generation.status == GenerationRequest.Status.REFUSED:
            # OpenAI's answer to a prompt its safety system rejects.
            raise OpenAIError(
                generation.error or "Your request was rejected by the safety system.",
                code="content_policy_violation",
                headers=no_retry,
            )
        if generation.status == GenerationRequest.Status.FAILED:
            raise OpenAIError(
                generation.error or "The generation failed.",
                status_code=status.HTTP_502_BAD_GATEWAY,
                type="server_error",
                code="generation_failed",
                headers=no_retry,
            )
        if generation.status != GenerationRequest.Status.SUCCEEDED:
            raise OpenAIError(
                f"Still generating after {get_setting('OPENAI_WAIT_TIMEOUT'):g} s; "
                f"follow {link} for the result.",
                status_code=status.HTTP_504_GATEWAY_TIMEOUT,
                type="server_error",
                code="timeout",
                headers=no_retry,
            )
        images = generation.images.filter(superseded=False).order_by("position")
        data = [self._item(image, generation.prompt, response_format) for image in images]
        return Response({"created": int(generation.created_at.timestamp()), "data": data})

    def _item(self, image: GeneratedImage, prompt: str, response_format: str) -> dict[str, str]:
        if response_format == "b64_json":
            with image.image.open("rb") as file:
                encoded = base64.b64encode(file.read()).decode("ascii")
            return {"b64_json": encoded, "revised_prompt": prompt}
        return {"url": self.request.build_absolute_uri(image.image.url), "revised_prompt": prompt}


def _response_format(data: Any) -> str:
    value = data.get("response_format") if isinstance(data, dict) else None
    return "b64_json" if value == "b64_json" else "url"


def _model_id(model: str | None) -> str:
    """OpenAI's model name → a ModelsLab id ("" = DEFAULT_MODEL); 404 when not allowed."""
    if not model:
        return ""
    aliases = get_setting("MODEL_ALIASES")
    model_id = aliases.get(model, model)
    allowed = get_setting("ALLOWED_MODELS")
    if model_id and allowed is not None and model_id not in allowed:
        raise OpenAIError(
            f"The model `{model}` does not exist or you do not have access to it.",
            status_code=status.HTTP_404_NOT_FOUND,
            param="model",
            code="model_not_found",
        )
    return model_id


async def _wait(generation: GenerationRequest) -> GenerationRequest:
    """Re-read the request until it has finished or OPENAI_WAIT_TIMEOUT has passed."""
    deadline = time.monotonic() + get_setting("OPENAI_WAIT_TIMEOUT")
    pause = min(get_setting("POLL_INTERVAL"), 1.0)
    reread = sync_to_async(_reread)
    await reread(generation)
    while not generation.is_finished and time.monotonic() + pause <= deadline:
        await asyncio.sleep(pause)
        await reread(generation)
    return generation


def _reread(generation: GenerationRequest) -> None:
    """Refresh ``generation``; hold no database connection while waiting for the next look."""
    generation.refresh_from_db()
    pipeline.release_connection()
