"""The Wagtail integration's app: ``"django_modelslab.contrib.wagtail"`` in INSTALLED_APPS."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.db import models
from django.utils.translation import gettext_lazy as _


class ModelslabWagtailConfig(AppConfig):
    name = "django_modelslab.contrib.wagtail"
    label = "modelslab_wagtail"
    verbose_name = _("ModelsLab for Wagtail")
    default_auto_field = "django.db.models.BigAutoField"

    #: False when Wagtail's own file clean-up could not be swapped (see ``deletion``).
    deletion_guarded = False

    def ready(self) -> None:
        from . import deletion

        self.deletion_guarded = deletion.install()
        checks.register(check_app_order)

    def modelslab_file_fields(self) -> Iterator[tuple[type[models.Model], str]]:
        """File fields that may name our stored files: ``prune_images`` keeps those files."""
        from wagtail.images import get_image_model

        yield get_image_model(), "file"


def check_app_order(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[Any]:
    config = apps.get_app_config("modelslab_wagtail")
    if isinstance(config, ModelslabWagtailConfig) and not config.deletion_guarded:
        return [
            checks.Error(
                "Wagtail's image file clean-up could not be replaced, so deleting a library "
                "image could delete a generated image's file.",
                hint='List "django_modelslab.contrib.wagtail" after "wagtail.images" in '
                "INSTALLED_APPS.",
                id="modelslab_wagtail.E001",
            )
        ]
    return []
