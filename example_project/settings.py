"""The example project: SQLite and local files by default, the bundled emulator offline.

Environment:
- ``MODELSLAB_API_KEY``: call the real ModelsLab API. Without it, point
  ``MODELSLAB_BASE_URL`` at the bundled emulator (``make demo`` does this for you).
- ``DEMO_DATA_DIR``: where the SQLite database and media files live (default ``.demo/``).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("DEMO_DATA_DIR") or BASE_DIR / ".demo")

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-insecure-key")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_modelslab",
    "example_project",
    "example_project.articles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"
WSGI_APPLICATION = "example_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # Concurrent writers (the dev server's threads, regenerate_images --concurrency)
        # wait for each other instead of failing with "database is locked".
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
STATIC_URL = "static/"
MEDIA_URL = "media/"
MEDIA_ROOT = DATA_DIR / "media"

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    # Generated images: named by their sha256 under MEDIA_ROOT/modelslab/.
    "modelslab": {"BACKEND": "django_modelslab.storage.ContentAddressedFileSystemStorage"},
}
# ...or in a bucket when the environment names one (docs/storage.md). Credentials come from
# the standard AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY variables (or an instance role).
if os.environ.get("MODELSLAB_S3_BUCKET"):
    STORAGES["modelslab"] = {
        "BACKEND": "django_modelslab.storage.ContentAddressedS3Storage",
        "OPTIONS": {
            "bucket_name": os.environ["MODELSLAB_S3_BUCKET"],
            "endpoint_url": os.environ.get("MODELSLAB_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("MODELSLAB_S3_REGION") or None,
            "custom_domain": os.environ.get("MODELSLAB_S3_CUSTOM_DOMAIN") or None,
            # A public custom domain (a CDN) needs no signature; a private bucket does.
            "querystring_auth": not os.environ.get("MODELSLAB_S3_CUSTOM_DOMAIN"),
        },
    }

# Generation runs inline (ImmediateBackend); see docs/tasks.md for a worker backend.
try:
    import django.tasks  # noqa: F401  (Django >= 6.0)

    TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
except ImportError:
    INSTALLED_APPS.append("django_tasks")
    TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}

_emulator_host = os.environ.get("MODELSLAB_EMULATOR_HOST", "")

MODELSLAB = {
    "API_KEY": os.environ.get("MODELSLAB_API_KEY", ""),
    "BASE_URL": os.environ.get("MODELSLAB_BASE_URL", "https://modelslab.com/api"),
    "DEFAULT_MODEL": os.environ.get("MODELSLAB_DEFAULT_MODEL", "flux"),
    "ALLOWED_DOWNLOAD_HOSTS": [
        ".r2.dev",
        "modelslab-bom.s3.amazonaws.com",
        ".stablediffusionapi.com",
        ".modelslab.com",
        "d9jy2smsrdjcq.cloudfront.net",
        # The emulator serves its images on loopback: allowed only when it runs.
        *([_emulator_host] if _emulator_host else []),
    ],
    # The emulator answers in a fraction of a second; the real API takes seconds.
    "POLL_INTERVAL": 0.25 if _emulator_host else 2.0,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"django_modelslab": {"handlers": ["console"], "level": "WARNING"}},
}

# The REST API (django_modelslab.api, under /api/modelslab/; the page at /studio/ uses it):
# sessions for the browser, DRF tokens for services ("Token <key>" or, as OpenAI clients send
# it, "Bearer <key>"). Create a token: python manage.py drf_create_token <username>.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Per user: every API call, and the calls that start a (paid) generation.
    "DEFAULT_THROTTLE_RATES": {"modelslab": "120/min", "modelslab_generate": "20/hour"},
}
SPECTACULAR_SETTINGS = {"TITLE": "django-modelslab example project", "VERSION": "1"}
