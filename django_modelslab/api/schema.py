"""The OpenAPI 3 schema of this API (drf-spectacular), served at ``schema/``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.generators import EndpointEnumerator, SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, extend_schema
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny

from .idempotency import HEADER, MAX_KEY_LENGTH

API_MODULE = __name__.rpartition(".")[0]


IDEMPOTENCY_HEADER = OpenApiParameter(
    HEADER,
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
    OpenApiParameter.HEADER,
    description=(
        "Any unique string (up to 255 characters). Sending the same key and body again "
        "returns the original request instead of starting another generation; another "
        "body with the same key is refused (422). Keys are per user."
    ),
)


def documented(**kwargs: Any) -> Callable[[Any], Any]:
    """``extend_schema`` on drf-spectacular's AutoSchema, whatever the project's
    ``DEFAULT_SCHEMA_CLASS`` (method annotations otherwise build on that setting)."""

    def decorator(target: Any) -> Any:
        if getattr(target, "schema", None) is None:
            target.schema = AutoSchema
        return extend_schema(**kwargs)(target)

    return decorator


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "django_modelslab.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A DRF token (rest_framework.authtoken), as OpenAI clients send keys.",
        }


class ModelsLabEndpoints(EndpointEnumerator):
    """Only this API's endpoints, at the paths the host project mounted them on."""

    def should_include_endpoint(self, path: str, callback: Any) -> bool:
        view = getattr(callback, "cls", None)
        return (
            super().should_include_endpoint(path, callback)
            and view.__module__.startswith(API_MODULE + ".")
            and view is not ModelsLabSchemaView
        )


class ModelsLabSchemaGenerator(SchemaGenerator):
    endpoint_inspector_cls = ModelsLabEndpoints


class ModelsLabSchemaView(SpectacularAPIView):
    """The schema is public; the endpoints it describes are not."""

    generator_class = ModelsLabSchemaGenerator
    permission_classes = (AllowAny,)
    authentication_classes = ()
    custom_settings = {
        "TITLE": "django-modelslab API",
        "DESCRIPTION": (
            "Generation requests and their stored images, and an OpenAI-compatible "
            "image generation endpoint. Authenticate with a session or a DRF token "
            "(Authorization: Bearer <key>, or Token <key>)."
        ),
        "VERSION": "1",
        "COMPONENT_SPLIT_REQUEST": True,
    }
