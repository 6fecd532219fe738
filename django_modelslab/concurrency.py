"""What runs going on together on one event loop share (``regenerate_images --concurrency``).

Two things decide how close a bulk run gets to the provider's own latency, and
:class:`Shared` holds them for :func:`~django_modelslab.pipeline.adrive`:

- **slots**: at most ``jobs`` runs have a job at ModelsLab at once. A run takes a slot
  before it is claimed and gives it back as soon as its job is over there (its answer is
  not "processing", or an error), so the next job starts while this one's images are
  copied and recorded;
- **first steps first**: runs share Django's one sync thread for the database. A run's
  first step (the claim, which its provider call waits for) goes before the other runs'
  later steps (recording answers and images) and copies, which wait while any first step
  is pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Shared:
    """Slots and step order shared by the runs of one event loop."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.slots = asyncio.Semaphore(jobs)
        self._first_steps = 0
        self._no_first_steps = asyncio.Event()
        self._no_first_steps.set()

    @asynccontextmanager
    async def first_step(self) -> AsyncIterator[None]:
        """Around a run's first database step: later steps of other runs wait for it."""
        self._first_steps += 1
        self._no_first_steps.clear()
        try:
            yield
        finally:
            self._first_steps -= 1
            if not self._first_steps:
                self._no_first_steps.set()

    async def later_step(self) -> None:
        """Before any other step: wait while a first step is pending."""
        await self._no_first_steps.wait()
