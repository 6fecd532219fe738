from django.apps import AppConfig


class WagtailImagesTestConfig(AppConfig):
    name = "tests.wagtail_images"
    label = "wagtail_images"
    default_auto_field = "django.db.models.BigAutoField"
