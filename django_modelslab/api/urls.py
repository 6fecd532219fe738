"""REST API routes; the host project includes them, e.g. under ``api/modelslab/``."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from .openai import ImagesGenerationsView
from .schema import ModelsLabSchemaView
from .views import APIRootView, GenerationViewSet, ImageViewSet

app_name = "modelslab-api"

router = SimpleRouter()
router.register("generations", GenerationViewSet, basename="generation")
router.register("images", ImageViewSet, basename="image")

urlpatterns = [
    path("", APIRootView.as_view(), name="api-root"),
    *router.urls,
    path("v1/images/generations", ImagesGenerationsView.as_view(), name="openai-images"),
    path("schema/", ModelsLabSchemaView.as_view(), name="schema"),
]
