"""The example project as a small Wagtail site (``make demo-wagtail``; needs the ``wagtail``
extra). Everything else is as in ``example_project.settings``."""

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
    "django_modelslab.contrib.wagtail",  # after wagtail.images
    "example_project.wagtail_home",
]
ROOT_URLCONF = "example_project.wagtail_urls"
WAGTAIL_SITE_NAME = "django-modelslab example"
WAGTAILADMIN_BASE_URL = "http://127.0.0.1:8000"
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}
