"""What runs going on together on one event loop share (``regenerate_images --concurrency``).

Three things decide how close a bulk run gets to the provider's own latency, and
:class:`Shared` holds them for :func:`~django_modelslab.pipeline.adrive`:

- **slots**: at most ``jobs`` runs have a job at ModelsLab at once. A run takes a slot
  before it is claimed and gives it back as soon as its job is over there (its answer is
  not "processing", or an error), so the next job starts while this one's images are
  copied and recorded;
- **one database step at a time, the most urgent first**: runs share Django's one sync
  thread for the database, so its queue decides who waits. A step sent to that thread
  cannot be overtaken, so steps wait here instead and go one at a time, by
  :class:`Priority`: a run's claim, which its provider call waits for, before recording
  the answers and images of jobs already over, before readying requests that have no slot
  yet;
- **quiet starts**: copies (download, checks, thumbnail, on worker threads) compete for the
  interpreter, so a copy waits to begin while any run holds a slot and has not yet made
  its provider call.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import IntEnum


class Priority(IntEnum):
    """Which database step goes first when several wait (lower first)."""

    START = 0  # a run's step before its provider call: its slot is idle until it is done
    LATER = 1  # recording a finished job's answer and images
    PREPARE = 2  # readying a request that has no slot yet (regenerate_images marking it)


class Shared:
    """Slots, database-step order and quiet starts shared by the runs of one event loop."""

    def __init__(self, jobs: int) -> None:
        if jobs < 1:
            raise ValueError("jobs must be at least 1")
        self.slots = asyncio.Semaphore(jobs)
        self._starts = 0
        self._no_starts = asyncio.Event()
        self._no_starts.set()
        self._stepping = False
        self._waiting: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @asynccontextmanager
    async def step(self, priority: Priority, order: int = 0) -> AsyncIterator[None]:
        """Around one database step: waits until no other step runs and none more urgent
        waits. Equal priorities go by ``order``, then first come, first served."""
        if self._stepping:
            turn = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, order, next(self._arrivals), turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # given the turn as it was cancelled
                    self._pass_turn()
                raise
        self._stepping = True
        try:
            yield
        finally:
            self._pass_turn()

    def _pass_turn(self) -> None:
        while self._waiting:
            turn = heapq.heappop(self._waiting)[-1]
            if not turn.done():  # skips steps cancelled while they waited
                turn.set_result(None)
                return
        self._stepping = False

    def start_pending(self) -> Callable[[], None]:
        """Count a start as pending (a run holds a slot; its provider call is not made yet).

        Returns the function that ends it; calling that again does nothing.
        """
        self._starts += 1
        self._no_starts.clear()
        pending = True

        def end() -> None:
            nonlocal pending
            if pending:
                pending = False
                self._starts -= 1
                if not self._starts:
                    self._no_starts.set()

        return end

    async def quiet(self) -> None:
        """Wait while any start is pending (before a copy)."""
        await self._no_starts.wait()
