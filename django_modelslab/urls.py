"""The ModelsLab webhook receiver; the host project includes it, e.g. under ``modelslab/``.

``path("modelslab/", include("django_modelslab.urls"))`` keeps the ``modelslab`` namespace
the pipeline reverses when it builds the webhook URL.
"""

from django.urls import path

from . import views

app_name = "modelslab"
urlpatterns = [
    path("webhook/<str:secret>/", views.webhook, name="webhook"),
]
