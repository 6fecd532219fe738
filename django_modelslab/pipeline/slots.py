"""Places among the jobs at ModelsLab: one process's (a semaphore) or the whole site's.

ModelsLab limits how many jobs an account may have queued (5, 10 or 15 by plan; past it a
generate call answers 429). :class:`SiteSlots` keeps every process and machine sharing the
database under ``MODELSLAB["MAX_CONCURRENT_JOBS"]``: one :class:`~..models.ProviderSlot` row
per process holding a place or waiting for one. The drivers take a place before a generate
call and give it back when the job is over at ModelsLab, through the same two methods a
``threading.Semaphore`` has (:class:`JobSlots`), so ``regenerate_images --concurrency``'s
semaphore and the site's limit are used alike.

- **Order**: waiters are served oldest first: a waiter takes a free place only when no
  older live waiter is left without one.
- **Where a worker waits**: it blocks, polling every :data:`POLL` seconds, up to
  ``SLOT_WAIT_TIMEOUT`` (then :class:`~..exceptions.SlotWaitTimedOut`: nothing was sent).
  Re-enqueueing the task with a delay would lose its place in line, and not every Tasks
  backend can defer a task.
- **Crashes**: a held place is a lease, renewed by a thread every third of ``SLOT_LEASE``
  while the job runs; a dead process's lease runs out and the next process looking deletes
  it. A waiter renews its row at every poll, so a dead waiter is out of line after
  :data:`WAITER_EXPIRY` seconds.
- **Locking**: each look is one short transaction, serialised by a PostgreSQL advisory
  transaction lock; on SQLite by its database write lock (the first statement writes).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import Protocol

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from ..conf import get_setting
from ..exceptions import SlotWaitTimedOut
from ..models import ProviderSlot

logger = logging.getLogger(__name__)

#: Seconds between two looks of a process waiting for a place.
POLL = 0.02
#: Seconds after which a waiter that stopped looking (its process died) loses its place.
WAITER_EXPIRY = 5.0
#: The PostgreSQL advisory lock that serialises the looks ("mlsl").
LOCK_KEY = 0x6D6C736C


class JobSlots(Protocol):
    """What the drivers need of a place among the jobs: ``threading.Semaphore`` has it."""

    def acquire(self) -> bool: ...

    def release(self) -> None: ...


class SiteSlots:
    """One process's place among the site's ``limit`` jobs at ModelsLab (one at a time)."""

    def __init__(
        self,
        limit: int,
        *,
        lease: float | None = None,
        timeout: float | None = None,
        poll: float = POLL,
    ) -> None:
        self.limit = limit
        self.lease = float(lease if lease is not None else get_setting("SLOT_LEASE"))
        self.timeout = float(timeout if timeout is not None else get_setting("SLOT_WAIT_TIMEOUT"))
        self.poll = poll
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"[:100]
        self.slot_id: int | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<SiteSlots limit={self.limit} slot={self.slot_id} holder={self.holder}>"

    def acquire(self) -> bool:
        """Wait in line for a place and take it; SlotWaitTimedOut past the timeout."""
        deadline = time.monotonic() + self.timeout
        try:
            while not self._look():
                if time.monotonic() >= deadline:
                    raise SlotWaitTimedOut(
                        f"No place among the account's {self.limit} jobs at ModelsLab came "
                        f"free within {self.timeout:g} s (SLOT_WAIT_TIMEOUT); nothing was sent."
                    )
                time.sleep(self.poll)
        except BaseException:
            self._forget()
            raise
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="modelslab-slot", daemon=True)
        self._renewer.start()
        return True

    def release(self) -> None:
        """Give the place back (the job is over at ModelsLab)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
        self._forget()

    def _look(self) -> bool:
        """One look, in one transaction: join the line or stay in it; True once a place is ours."""
        now = timezone.now()
        with transaction.atomic():
            if connection.vendor == "postgresql":
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
            waiting = ProviderSlot.objects.filter(held=False)
            if self.slot_id is None or not waiting.filter(pk=self.slot_id).update(
                expires_at=now + timedelta(seconds=WAITER_EXPIRY)
            ):  # new in line, or out of it after a pause longer than WAITER_EXPIRY: (re)join
                self.slot_id = ProviderSlot.objects.create(
                    holder=self.holder, expires_at=now + timedelta(seconds=WAITER_EXPIRY)
                ).pk
            gone = ProviderSlot.objects.filter(expires_at__lt=now)
            for holder in gone.filter(held=True).values_list("holder", flat=True):
                logger.warning("A job slot of %s expired: its process stopped renewing it.", holder)
            gone.delete()
            free = self.limit - ProviderSlot.objects.filter(held=True).count()
            if free <= 0:
                return False
            first = ProviderSlot.objects.filter(held=False).order_by("pk")[:free]
            if self.slot_id not in set(first.values_list("pk", flat=True)):
                return False
            ProviderSlot.objects.filter(pk=self.slot_id).update(
                held=True, expires_at=now + timedelta(seconds=self.lease)
            )
            return True

    def _renew(self) -> None:
        """Extend the lease every third of it until released (a thread of its own)."""
        held = ProviderSlot.objects.filter(held=True)
        slot_id = self.slot_id
        assert slot_id is not None
        try:
            while not self._stop.wait(self.lease / 3):
                try:
                    held.filter(pk=slot_id).update(
                        expires_at=timezone.now() + timedelta(seconds=self.lease)
                    )
                except DatabaseError:
                    logger.warning("Could not renew the slot of %s.", self.holder, exc_info=True)
        finally:
            connection.close()

    def _forget(self) -> None:
        if self.slot_id is not None:
            ProviderSlot.objects.filter(pk=self.slot_id).delete()
            self.slot_id = None


def site_slots() -> SiteSlots | None:
    """A place among the site's jobs when ``MAX_CONCURRENT_JOBS`` is set, else None."""
    limit = get_setting("MAX_CONCURRENT_JOBS")
    return None if limit is None else SiteSlots(limit)
