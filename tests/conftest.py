"""Shared fixtures: the bundled ModelsLab emulator over real HTTP on 127.0.0.1, users, media.

Plain helpers (requests, clients, images, waiting) are in ``tests/helpers.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import User

from django_modelslab.testing import Emulator

from .browser import browser, page  # noqa: F401  (fixtures)
from .helpers import CAFS, EDIT_PERMS, OLD_WEBHOOK_SECRET, WEBHOOK_SECRET, configure, staff

pytest_plugins = ["tests.sentinel"]

# tests/wagtail/ needs Wagtail's apps: `make test` runs it on its own with
# --ds=tests.settings_wagtail (and tests.settings_wagtail_custom).
collect_ignore = (
    [] if "django_modelslab.contrib.wagtail" in django_settings.INSTALLED_APPS else ["wagtail"]
)

#: The key the test settings use; tests grep logs and errors for it.
TEST_API_KEY = "test-key-5e1f0c9a-never-a-real-one"


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    """One emulator process-wide; ``emulator`` resets it for each test."""
    with Emulator() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: Emulator, settings) -> Emulator:
    """A fresh emulator (no jobs, no faults, default knobs) that settings point at."""
    emulator_server.reset()
    configure(settings, BASE_URL=emulator_server.base_url)
    return emulator_server


@pytest.fixture
def webhooks_on(settings, live_server, emulator):
    """The emulator answers "processing" and calls the live server's webhook when done."""
    configure(
        settings,
        PUBLIC_BASE_URL=live_server.url,
        WEBHOOK_SECRETS=[WEBHOOK_SECRET, OLD_WEBHOOK_SECRET],
    )
    emulator.mode = "processing"
    emulator.eta = 0.1
    return live_server


@pytest.fixture
def media(settings, tmp_path: Path) -> Path:
    """MEDIA_ROOT in a fresh directory, with the ``modelslab`` alias content-addressed."""
    settings.MEDIA_ROOT = str(tmp_path)
    settings.STORAGES = {**settings.STORAGES, "modelslab": {"BACKEND": CAFS}}
    return tmp_path


@pytest.fixture
def owner(db) -> User:
    """A user without permissions: owns what they request."""
    return User.objects.create_user("owner")


@pytest.fixture
def editor(client) -> User:
    """A staff user who may view, add, change and generate, logged in to ``client``."""
    user = staff("editor", [*EDIT_PERMS, "generate_images"])
    client.force_login(user)
    return user


@pytest.fixture
def sleeps() -> list[float]:
    """Where clients built with ``sleep=sleeps.append`` record their waits."""
    return []
