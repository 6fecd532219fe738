"""Shared fixtures: the bundled ModelsLab emulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from django_modelslab.testing import Emulator

from .browser import browser, page  # noqa: F401  (fixtures)

pytest_plugins = ["tests.sentinel"]

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
    settings.MODELSLAB = {**settings.MODELSLAB, "BASE_URL": emulator_server.base_url}
    return emulator_server
