"""Settings for the test suite: SQLite, local content-addressed storage, inline tasks."""

import os
import tempfile
from pathlib import Path

SECRET_KEY = "tests-only-not-secret"
DEBUG = False
# Servers a test starts in their own process (uvicorn in tests/test_asgi.py) answer here.
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ROOT_URLCONF = "tests.urls"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

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
    "django_tasks_db",
    "django_modelslab",
    # The example's content app: a model using GeneratedImageField (tests/test_field*.py).
    "example_project.articles",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
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

_TMP = Path(tempfile.mkdtemp(prefix="modelslab-tests-"))

# A file, not :memory:: worker threads (the live server, regenerate_images --concurrency)
# each open their own connection. IMMEDIATE transactions + a busy timeout let SQLite
# serialise their writes instead of failing with "database is locked".
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # A command run by a test in its own process (tests/test_regenerate_images.py) is
        # given the test's database here.
        "NAME": os.environ.get("MODELSLAB_TEST_DB_NAME") or _TMP / "db.sqlite3",
        "TEST": {"NAME": str(_TMP / "test.sqlite3")},
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
    }
}

MEDIA_ROOT = Path(os.environ.get("TEST_MEDIA_ROOT") or _TMP / "media")
MEDIA_URL = "/media/"
STATIC_URL = "/static/"

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    "modelslab": {"BACKEND": "django_modelslab.storage.ContentAddressedFileSystemStorage"},
}

TASKS = {"default": {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}}
try:
    import django.tasks  # noqa: F401  (Django >= 6.0)
except ImportError:
    INSTALLED_APPS.append("django_tasks")
    TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}

# The suite points BASE_URL at the bundled emulator per test (see conftest.py); this
# default makes any test that forgets fail fast instead of reaching the internet.
MODELSLAB = {
    "API_KEY": "test-key-5e1f0c9a-never-a-real-one",
    "BASE_URL": "http://127.0.0.1:9/api",
    "ALLOWED_DOWNLOAD_HOSTS": ["127.0.0.1"],
    "RETRY_BACKOFF": 0.01,
    "RETRY_BACKOFF_MAX": 0.2,
    "POLL_INTERVAL": 0.05,
    "POLL_INTERVAL_MAX": 0.2,
    "MAX_WAIT": 10.0,
    "TIMEOUT": 5.0,
    "CONNECT_TIMEOUT": 2.0,
}

# The REST API: sessions and DRF tokens ("Token <key>"; the API adds "Bearer <key>"), no
# throttling unless a test sets DEFAULT_THROTTLE_RATES.
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_RATES": {},
    "TEST_REQUEST_DEFAULT_FORMAT": "json",  # the API also takes forms and multipart
}
SPECTACULAR_SETTINGS = {"TITLE": "django-modelslab tests", "VERSION": "1"}

# ``python -m tests.pgcluster -- pytest ...`` runs the suite on a throwaway PostgreSQL.
if os.environ.get("MODELSLAB_TEST_POSTGRES"):
    _host, _port = os.environ["MODELSLAB_TEST_POSTGRES"].rsplit(":", 1)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "HOST": _host,
            "PORT": _port,
            "USER": "postgres",
            "NAME": os.environ.get("MODELSLAB_TEST_DB_NAME", "modelslab"),
        }
    }

# A worker process started by a test (tests/test_workers.py) shares the test's database,
# emulator and media directory through these.
if os.environ.get("MODELSLAB_TEST_BASE_URL"):
    MODELSLAB["BASE_URL"] = os.environ["MODELSLAB_TEST_BASE_URL"]
if os.environ.get("MODELSLAB_TEST_MAX_CONCURRENT_JOBS"):
    MODELSLAB["MAX_CONCURRENT_JOBS"] = int(os.environ["MODELSLAB_TEST_MAX_CONCURRENT_JOBS"])
if os.environ.get("MODELSLAB_TEST_OPENAI_WAIT"):  # "POLL_INTERVAL,OPENAI_WAIT_TIMEOUT"
    _poll, _wait = os.environ["MODELSLAB_TEST_OPENAI_WAIT"].split(",")
    MODELSLAB.update(POLL_INTERVAL=float(_poll), OPENAI_WAIT_TIMEOUT=float(_wait))
if os.environ.get("MODELSLAB_TEST_TASKS") == "db":
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
