"""REST endpoints for generation requests and their images. They call the pipeline only."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db.models import F, Prefetch, QuerySet
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiResponse, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authentication import BaseAuthentication
from rest_framework.decorators import action
from rest_framework.pagination import BasePagination
from rest_framework.parsers import BaseParser
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.schemas.inspectors import ViewInspector
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from .. import pipeline
from ..models import GeneratedImage, GenerationRequest
from . import idempotency
from .auth import api_authenticators
from .budget import budget_refusals, check_budget
from .dispatch import AsyncDispatchMixin
from .exceptions import Conflict
from .filters import GenerationFilter, ImageFilter, RenditionQuery, filtered, rendition_spec
from .pagination import ModelsLabPagination
from .parsers import (
    GenerationJSONParser,
    LimitedFormParser,
    LimitedJSONParser,
    LimitedMultiPartParser,
)
from .permissions import CanGenerate, IsOwnerOrPermitted, visible_images, visible_requests
from .schema import IDEMPOTENCY_HEADER, documented
from .serializers import (
    CACHED_FROM_OWNER,
    NAMESPACE,
    VALIDATION_ERROR_SCHEMA,
    ErrorSerializer,
    GenerationCreateSerializer,
    GenerationSerializer,
    ImageSerializer,
    ImageUpdateSerializer,
    RegenerateSerializer,
)
from .throttling import api_throttles

if TYPE_CHECKING:
    from rest_framework.permissions import _PermissionClass

ERRORS: dict[int, Any] = {
    401: OpenApiResponse(ErrorSerializer, description="Not authenticated."),
    403: OpenApiResponse(ErrorSerializer, description="Authenticated but not allowed."),
    429: OpenApiResponse(ErrorSerializer, description="Throttled, or the budget is used up."),
}
NOT_FOUND = {404: OpenApiResponse(ErrorSerializer, description="No such object, or not yours.")}
NO_PAGE = {404: OpenApiResponse(ErrorSerializer, description="No such page.")}
BAD_REQUEST = {400: OpenApiResponse(VALIDATION_ERROR_SCHEMA, description="Invalid input.")}
BAD_BODY = {
    400: OpenApiResponse(
        {"anyOf": [VALIDATION_ERROR_SCHEMA, {"$ref": "#/components/schemas/Error"}]},
        description="Invalid input (messages by field), or a body that is not JSON (detail).",
    )
}
TOO_LARGE = {413: OpenApiResponse(ErrorSerializer, description="The body is larger than allowed.")}
QUEUED = OpenApiResponse(
    GenerationSerializer,
    description="Queued or still running (a worker task backend, or waiting for ModelsLab): "
    "poll links.self (also the Location header) until finished is true.",
)


class ModelsLabAPIMixin:
    """Authentication (Bearer tokens added), throttling scopes, pagination and permissions."""

    permission_classes: Sequence[_PermissionClass] = (
        IsAuthenticated,
        CanGenerate,
        IsOwnerOrPermitted,
    )
    parser_classes: Sequence[type[BaseParser]] = (LimitedJSONParser,)
    schema: ViewInspector | None = AutoSchema()  # whatever the project's DEFAULT_SCHEMA_CLASS
    pagination_class: type[BasePagination] | None = ModelsLabPagination
    #: Actions that start a generation (counted in the ``modelslab_generate`` scope too).
    generating_actions: tuple[str, ...] = ()

    def get_authenticators(self) -> list[BaseAuthentication]:
        return api_authenticators(super().get_authenticators())  # type: ignore[misc]

    def get_throttles(self) -> list[BaseThrottle]:
        generating = getattr(self, "action", None) in self.generating_actions
        return api_throttles(super().get_throttles(), generating=generating)  # type: ignore[misc]


def _serialized(queryset: QuerySet[GenerationRequest]) -> QuerySet[GenerationRequest]:
    """With what the serializer reads: the images in order, and who owns each request's cache
    source (the serializer shows the link only to them)."""
    images = GeneratedImage.objects.order_by("attempt", "position")
    return queryset.annotate(
        **{CACHED_FROM_OWNER: F("cached_from__requested_by")}
    ).prefetch_related(Prefetch("images", queryset=images))


@documented(tags=["generations"])
class GenerationViewSet(  # type: ignore[misc]  # an async dispatch in place of DRF's
    AsyncDispatchMixin,
    ModelsLabAPIMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Generation requests: create, list (newest first), retrieve, regenerate.

    Async (see :mod:`.dispatch`): under ASGI a create or regenerate that runs its generation
    (an inline task backend) awaits ModelsLab without holding a thread."""

    serializer_class = GenerationSerializer
    generating_actions = ("create", "regenerate")
    #: JSON (input images as data: URLs), forms, multipart (input images as files).
    parser_classes = (GenerationJSONParser, LimitedFormParser, LimitedMultiPartParser)

    def get_queryset(self) -> QuerySet[GenerationRequest]:
        if getattr(self, "swagger_fake_view", False):  # drf-spectacular inspecting types
            return GenerationRequest.objects.none()
        queryset = _serialized(visible_requests(self.request.user))
        if self.action == "list":
            queryset = filtered(GenerationFilter, self.request.query_params, queryset)
        return queryset.order_by("-created_at", "-pk")

    def _fresh(self, generation: GenerationRequest) -> GenerationRequest:
        """Re-read after the pipeline ran (with an inline task backend it may have finished)."""
        return _serialized(GenerationRequest.objects.all()).get(pk=generation.pk)

    @documented(
        summary="List generation requests",
        parameters=[GenerationFilter],
        responses={200: GenerationSerializer(many=True), **BAD_REQUEST, **NO_PAGE, **ERRORS},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)

    @documented(
        summary="Get a generation request with its images",
        responses={200: GenerationSerializer, **NOT_FOUND, **ERRORS},
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @documented(
        summary="Start a generation",
        request=GenerationCreateSerializer,
        parameters=[IDEMPOTENCY_HEADER],
        responses={
            201: OpenApiResponse(
                GenerationSerializer,
                description="Done (an inline task backend ran it): the finished request "
                "(succeeded, failed or refused); Location is its URL.",
            ),
            202: QUEUED,
            **BAD_BODY,
            **TOO_LARGE,
            **ERRORS,
            422: OpenApiResponse(
                ErrorSerializer, description="The Idempotency-Key was used with another body."
            ),
        },
    )
    async def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        generation, run_here, answer = await sync_to_async(self._start)(request)
        if answer is not None:
            return answer
        if run_here:  # an inline task backend: this call runs it, awaiting ModelsLab
            await pipeline.arun(generation.pk, inline=True)
        return await sync_to_async(self._created)(request, generation)

    def _start(self, request: Request) -> tuple[GenerationRequest, bool, Response | None]:
        """Validate and submit: the request, whether this call runs it (an inline task
        backend; it is queued, not yet run), and the answer to a replayed key, if any."""
        key = idempotency.header_key(request)
        digest = idempotency.body_hash(request.data)
        if key is not None:
            earlier = idempotency.replayed(
                request.user, key, digest, endpoint=idempotency.GENERATIONS
            )
            if earlier is not None:
                return earlier, False, self._replay(earlier, key)
        serializer = GenerationCreateSerializer(data=request.data, context={"request": request})
        serializer.is_valid(raise_exception=True)
        generation = serializer.build(requested_by=request.user)
        check_budget(request.user, generation)
        inline = pipeline.runs_inline()
        with budget_refusals():
            generation, replayed = idempotency.create_once(
                request.user,
                key,
                digest,
                lambda: pipeline.submit(generation, enqueue=not inline),
                endpoint=idempotency.GENERATIONS,
            )
        if replayed:  # another call with this key won the race
            return generation, False, self._replay(generation, key)
        return generation, inline and generation.status == GenerationRequest.Status.QUEUED, None

    def _created(self, request: Request, generation: GenerationRequest) -> Response:
        fresh = self._fresh(generation)
        code = status.HTTP_201_CREATED if fresh.is_finished else status.HTTP_202_ACCEPTED
        key = idempotency.header_key(request)
        if key is not None:
            idempotency.record_status(request.user, key, code, endpoint=idempotency.GENERATIONS)
        return self._answer(fresh, code)

    def _replay(self, generation: GenerationRequest, key: str | None) -> Response:
        """The original call's request with its status (202 while that call has not answered)."""
        code = None
        if key is not None:
            code = idempotency.original_status(
                self.request.user, key, endpoint=idempotency.GENERATIONS
            )
        fresh = self._fresh(generation)
        return self._answer(
            fresh, code or status.HTTP_202_ACCEPTED, {"Idempotent-Replayed": "true"}
        )

    def _answer(
        self, generation: GenerationRequest, code: int, headers: dict[str, str] | None = None
    ) -> Response:
        data = self.get_serializer(generation).data
        return Response(
            data, status=code, headers={"Location": data["links"]["self"], **(headers or {})}
        )

    @documented(  # type: ignore[type-var]  # DRF's stubs type actions as sync
        summary="Generate again: a new seed, unless kept (earlier images stay, superseded)",
        description="The request's own parameters are used again; the body may only say "
        "whether to keep the seed (any other field is refused: to change the prompt, size or "
        "model, create a new request). An empty body is fine.",
        request=RegenerateSerializer,
        responses={
            200: OpenApiResponse(
                GenerationSerializer,
                description="Done (an inline task backend ran it): the finished request.",
            ),
            202: QUEUED,
            **BAD_BODY,
            **TOO_LARGE,
            **NOT_FOUND,
            **ERRORS,
            409: OpenApiResponse(ErrorSerializer, description="Still queued or processing."),
        },
    )
    @action(
        detail=True,
        methods=["post"],
        parser_classes=(LimitedJSONParser, LimitedFormParser, LimitedMultiPartParser),
    )
    async def regenerate(self, request: Request, pk: str | None = None) -> Response:
        generation, run_here = await sync_to_async(self._regenerate)(request)
        if run_here:  # an inline task backend: this call runs it, awaiting ModelsLab
            await pipeline.arun(generation.pk, inline=True)
        fresh = await sync_to_async(self._fresh)(generation)
        code = status.HTTP_200_OK if fresh.is_finished else status.HTTP_202_ACCEPTED
        return await sync_to_async(self._answer)(fresh, code)

    def _regenerate(self, request: Request) -> tuple[GenerationRequest, bool]:
        generation = self.get_object()
        body = RegenerateSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        check_budget(request.user, generation, regenerating=True)
        inline = pipeline.runs_inline()
        try:
            with budget_refusals():
                generation = pipeline.regenerate(
                    generation, keep_seed=body.validated_data["keep_seed"], enqueue=not inline
                )
        except pipeline.GenerationInProgress as exc:
            raise Conflict(str(exc)) from exc
        return generation, inline and generation.status == GenerationRequest.Status.QUEUED


@documented(tags=["images"])
class ImageViewSet(ModelsLabAPIMixin, viewsets.ReadOnlyModelViewSet):
    """Stored images, with permanent absolute URLs; an editor can pick the chosen one."""

    serializer_class = ImageSerializer

    def get_queryset(self) -> QuerySet[GeneratedImage]:
        if getattr(self, "swagger_fake_view", False):
            return GeneratedImage.objects.none()
        queryset = visible_images(self.request.user).select_related("request")
        if self.action == "list":
            queryset = filtered(ImageFilter, self.request.query_params, queryset)
        if self.request.method == "GET" and "rendition" in self.request.query_params:
            queryset = queryset.prefetch_related("renditions")  # as prefetch_renditions()
        return queryset.order_by("-created_at", "-pk")

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        if self.request is not None and self.request.method == "GET":
            context["rendition"] = rendition_spec(self.request.query_params)
        return context

    @documented(
        summary="List images",
        parameters=[ImageFilter, RenditionQuery],
        responses={200: ImageSerializer(many=True), **BAD_REQUEST, **NO_PAGE, **ERRORS},
    )
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rendition_spec(request.query_params)  # a bad spec is a 400 before any query
        return super().list(request, *args, **kwargs)

    @documented(
        summary="Get an image",
        parameters=[RenditionQuery],
        responses={200: ImageSerializer, **BAD_REQUEST, **NOT_FOUND, **ERRORS},
    )
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        rendition_spec(request.query_params)
        return super().retrieve(request, *args, **kwargs)

    @documented(
        summary="Change an image's alt text",
        request=ImageUpdateSerializer,
        responses={200: ImageSerializer, **BAD_BODY, **NOT_FOUND, **ERRORS},
    )
    def partial_update(self, request: Request, pk: str | None = None) -> Response:
        image = self.get_object()  # the owner, or view + generate_images (as choose)
        body = ImageUpdateSerializer(data=request.data, context={"request": request})
        body.is_valid(raise_exception=True)
        if "alt_text" in body.validated_data:  # PATCH: what is left out stays
            image.alt_text = body.validated_data["alt_text"]
            image.save(update_fields=["alt_text"])
        return Response(self.get_serializer(image).data)

    @documented(
        summary="Make this the chosen image of its request (and no other)",
        request=None,
        responses={200: ImageSerializer, **NOT_FOUND, **ERRORS},
    )
    @action(detail=True, methods=["post"])
    def choose(self, request: Request, pk: str | None = None) -> Response:
        image = pipeline.choose(self.get_object())
        return Response(self.get_serializer(image).data)


#: The API root's links: its key -> the URL name in the ``modelslab-api`` namespace.
ROOT_LINKS = {
    "generations": "generation-list",
    "images": "image-list",
    "openai_images": "openai-images",
    "schema": "schema",
}


@documented(tags=["root"])
class APIRootView(ModelsLabAPIMixin, APIView):
    """The API's root: links to its endpoints (as DRF's ``DefaultRouter`` root)."""

    permission_classes = (IsAuthenticated,)

    @documented(
        summary="Links to the API's endpoints",
        responses={
            200: inline_serializer(
                "APIRoot", fields={name: serializers.URLField() for name in ROOT_LINKS}
            ),
            **ERRORS,
        },
    )
    def get(self, request: Request) -> Response:
        return Response(
            {
                name: reverse(f"{NAMESPACE}:{url_name}", request=request)
                for name, url_name in ROOT_LINKS.items()
            }
        )
