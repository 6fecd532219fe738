from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class ModelsLabConfig(AppConfig):
    name = "django_modelslab"
    verbose_name = _("ModelsLab images")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the system checks)
