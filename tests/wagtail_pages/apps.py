from django.apps import AppConfig


class WagtailPagesTestConfig(AppConfig):
    name = "tests.wagtail_pages"
    label = "wagtail_pages"
    default_auto_field = "django.db.models.BigAutoField"
