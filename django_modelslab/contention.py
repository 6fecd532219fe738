"""SQLite's "database is locked", for the faces: wait and try again instead of failing.

On SQLite in its default (deferred) transaction mode, a transaction that has read and then
writes fails at once with ``OperationalError: database is locked`` when another connection
wrote meanwhile: SQLite's busy timeout does not apply to that upgrade. A new site made with
``startproject`` runs that way, so two admin posts at once (a double click) would answer 500.
:func:`retry_when_locked` runs such a unit of work again, from the start, for a few seconds.
``"OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 20}`` avoids the error altogether
(docs/commands.md, SQLite). Other databases never raise it: there the work runs once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from django.db import OperationalError, connections

from .exceptions import StillLocked

logger = logging.getLogger("django_modelslab")

T = TypeVar("T")

#: How long to keep trying a unit of work while SQLite stays locked (seconds).
LOCKED_RETRY_FOR = 10.0
#: The first pause between tries (seconds); it doubles, with jitter, up to a second.
FIRST_PAUSE = 0.05


def is_locked(exc: BaseException, using: str = "default") -> bool:
    """Whether ``exc`` is SQLite's "database is locked" (or "busy") on ``using``."""
    if not isinstance(exc, OperationalError) or connections[using].vendor != "sqlite":
        return False
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def retry_when_locked(
    work: Callable[[], T],
    *,
    using: str = "default",
    before_retry: Callable[[], None] | None = None,
    retry_for: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``work()``, tried again while it fails with SQLite's "database is locked".

    ``work`` must be a unit that rolls back as a whole when it fails (one ``atomic`` block,
    or a view that runs in one); ``before_retry`` undoes what it did outside the database.
    Raises :class:`StillLocked` (from the last error) after ``retry_for`` seconds
    (default :data:`LOCKED_RETRY_FOR`).
    """
    retry_for = LOCKED_RETRY_FOR if retry_for is None else retry_for
    deadline = time.monotonic() + retry_for
    pause = FIRST_PAUSE
    while True:
        try:
            return work()
        except OperationalError as exc:
            if not is_locked(exc, using) or connections[using].in_atomic_block:
                raise  # an outer transaction must roll back first: let it
            if time.monotonic() + pause > deadline:
                raise StillLocked(
                    f"The database stayed locked for {retry_for:g} s; nothing was changed."
                ) from exc
            logger.info("SQLite is locked; trying again in %.2f s", pause)
        sleep(pause * random.uniform(0.5, 1.5))  # jitter
        pause = min(pause * 2, 1.0)
        if before_retry is not None:
            before_retry()
