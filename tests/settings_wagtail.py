"""The test settings plus Wagtail and the integration (tests/wagtail/, run on their own)."""

from .settings import *  # noqa: F403
from .settings import INSTALLED_APPS

INSTALLED_APPS = [
    *INSTALLED_APPS,
    "wagtail.sites",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "django_filters",
    # After wagtail.images: it replaces Wagtail's image file clean-up (E001 otherwise).
    "django_modelslab.contrib.wagtail",
    # A custom image model (tests/settings_wagtail_custom.py makes it the image model).
    "tests.wagtail_images",
    # A page with an image field (the chooser's Chromium test).
    "tests.wagtail_pages",
]
ROOT_URLCONF = "tests.urls_wagtail"
WAGTAIL_SITE_NAME = "django-modelslab tests"
WAGTAILADMIN_BASE_URL = "http://testserver"
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}
