from django.apps import AppConfig


class WagtailHomeConfig(AppConfig):
    name = "example_project.wagtail_home"
    label = "wagtail_home"
    default_auto_field = "django.db.models.BigAutoField"
