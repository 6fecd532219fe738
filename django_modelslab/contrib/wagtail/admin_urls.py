"""The integration's admin URLs, under Wagtail's admin (``<admin>/modelslab/``)."""

from __future__ import annotations

from django.urls import path

from . import views

app_name = "modelslab_wagtail"

urlpatterns = [
    path("generate/", views.GenerateView.as_view(), name="generate"),
    path("generate/start/", views.start_view, name="generate_start"),
    path("generations/<int:generation_id>/", views.generation_view, name="generation"),
    path("add/", views.add_view, name="add"),
    path("chooser/pick/", views.ChooserPickView.as_view(), name="chooser_pick"),
    path("images/<int:image_id>/regenerate/", views.RegenerateView.as_view(), name="regenerate"),
]
