"""One hierarchy: whatever django-modelslab raises is a ModelsLabError (and, where one fits,
the matching built-in), importable from django_modelslab.exceptions."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.db import OperationalError, connection

from django_modelslab import contention, exceptions, kinds, webhooks
from django_modelslab.exceptions import ModelsLabError, StillLocked


def test_every_error_is_a_modelslab_error_with_its_built_in():
    errors = [
        value
        for value in vars(exceptions).values()
        if isinstance(value, type) and value.__module__ == exceptions.__name__
    ]
    assert all(issubclass(error, ModelsLabError) for error in errors)
    assert issubclass(exceptions.ModelsLabConfigurationError, ImproperlyConfigured)
    assert issubclass(exceptions.ReservedParameters, ValueError)
    assert issubclass(exceptions.WebhookRejected, SuspiciousOperation)


def test_errors_that_moved_here_keep_their_old_import_paths():
    assert kinds.InputMissing is exceptions.InputMissing
    assert webhooks.WebhookRejected is exceptions.WebhookRejected
    assert contention.StillLocked is exceptions.StillLocked


@pytest.mark.skipif(connection.vendor != "sqlite", reason="only SQLite says it is locked")
def test_a_database_that_stays_locked_raises_still_locked():
    def locked() -> None:
        raise OperationalError("database is locked")

    with pytest.raises(StillLocked, match="nothing was changed") as caught:
        contention.retry_when_locked(locked, retry_for=0, sleep=lambda seconds: None)
    assert isinstance(caught.value, ModelsLabError)
    assert isinstance(caught.value.__cause__, OperationalError)
