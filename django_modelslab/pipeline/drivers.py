"""The drivers: perform what the state machine (:mod:`.steps`) asks, blocking or on a loop.

The sync driver (:func:`run`, :func:`resume`) makes each provider call with a
ModelsLabClient; the async one (:func:`arun`, :func:`aresume`) awaits them on an
AsyncModelsLabClient, each step of the state machine (the database work) running in Django's
sync thread and each copy on a worker thread of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from asgiref.sync import sync_to_async
from django.db import connection

from ..client import AsyncModelsLabClient, ModelsLabClient, ProviderResponse
from ..conf import get_settings
from ..copying import CopyOutputs, copy_outputs
from ..models import GenerationRequest
from .record import is_recorded
from .slots import JobSlots, site_slots
from .steps import Fetch, Generate, OpGenerator, Sleep, T, resume_steps, run_steps

#: Longest Retry-After an inline run waits for (someone's web request is waiting on it);
#: a longer one fails the attempt at once, its error saying when to try again.
INLINE_MAX_RETRY_AFTER = 5.0


def build_client(*, inline: bool = False) -> ModelsLabClient:
    """A client configured from the MODELSLAB settings (``inline``: see :func:`run`)."""
    limit = INLINE_MAX_RETRY_AFTER if inline else None
    return ModelsLabClient.from_settings(get_settings(), max_retry_after=limit)


def build_async_client(*, inline: bool = False) -> AsyncModelsLabClient:
    """An :class:`~django_modelslab.client.AsyncModelsLabClient` configured the same way."""
    limit = INLINE_MAX_RETRY_AFTER if inline else None
    return AsyncModelsLabClient.from_settings(get_settings(), max_retry_after=limit)


def perform(client: ModelsLabClient, op: Generate | Fetch) -> ProviderResponse:
    """Make the provider call ``op`` names, blocking."""
    if isinstance(op, Generate):
        return client.generate(op.kind, op.params, api_version=op.api_version)
    return client.fetch(op.provider_id, kind=op.kind, api_version=op.api_version)


def drive(
    steps: OpGenerator[T],
    *,
    sleep: Callable[[float], None] = time.sleep,
    inline: bool = False,
    jobs: JobSlots | None = None,
) -> T:
    """Run ``steps`` to the end, blocking: calls on a client from :func:`build_client`.

    An exception of a call (or of ``sleep``) is thrown into ``steps`` where it asked for it.
    ``jobs``: a place among the jobs at ModelsLab, held by the caller; given back as soon as
    the job is over there (an answer that is not "processing", or an error), so the images
    are copied without it, and taken again for a later job (a fallback model's). With
    ``MAX_CONCURRENT_JOBS`` set, a place among the whole site's jobs (:mod:`.slots`) is taken
    before a generate call (after ``jobs``) and given back at the same point.
    """
    client: ModelsLabClient | None = None
    held = jobs is not None
    site = site_slots()
    site_held = False
    try:
        op = next(steps)
        while True:
            try:
                result: Any = None
                if isinstance(op, Sleep):
                    sleep(op.seconds)
                elif isinstance(op, CopyOutputs):
                    result = copy_outputs(op, known=is_recorded)
                else:
                    client = client or build_client(inline=inline)
                    if jobs is not None and not held:
                        held = jobs.acquire()
                    if site is not None and not site_held and isinstance(op, Generate):
                        site_held = site.acquire()
                    try:
                        result = perform(client, op)
                    finally:
                        if not (result is not None and result.processing):
                            if site_held:
                                site.release()  # type: ignore[union-attr]
                                site_held = False
                            if held:
                                jobs.release()  # type: ignore[union-attr]
                                held = False
            except BaseException as exc:  # thrown in: the steps decide, as inline code did
                op = steps.throw(exc)
            else:
                op = steps.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    finally:
        if site_held:
            site.release()  # type: ignore[union-attr]
        if held:
            jobs.release()  # type: ignore[union-attr]
        if client is not None:
            client.close()


async def aperform(client: AsyncModelsLabClient, op: Generate | Fetch) -> ProviderResponse:
    """Make the provider call ``op`` names, awaiting it."""
    if isinstance(op, Generate):
        return await client.generate(op.kind, op.params, api_version=op.api_version)
    return await client.fetch(op.provider_id, kind=op.kind, api_version=op.api_version)


async def adrive(
    steps: OpGenerator[T], *, client: AsyncModelsLabClient | None = None, inline: bool = False
) -> T:
    """Run ``steps`` to the end on the event loop: calls and pauses are awaited.

    Each step between two calls runs in Django's sync thread (``sync_to_async``,
    thread-sensitive), so the database is used as from a sync view, and gives its
    connection back before a wait (see :func:`_advance`); copies into storage
    (download, checks, thumbnail: no database) run on a worker thread, in parallel. Without
    ``client``, one from :func:`build_async_client` (``inline``: see :func:`run`) is used and
    closed afterwards.
    """
    advance = sync_to_async(_advance, thread_sensitive=True)
    own = client is None
    site = await sync_to_async(site_slots, thread_sensitive=True)()
    site_held = False
    try:
        done, value = await advance(steps, None, None)
        while not done:
            op = value
            try:
                result: Any = None
                if isinstance(op, Sleep):
                    await asyncio.sleep(op.seconds)
                elif isinstance(op, CopyOutputs):  # off the sync thread: no database in a copy
                    result = await asyncio.to_thread(copy_outputs, op)
                else:
                    client = client or build_async_client(inline=inline)
                    if site is not None and not site_held and isinstance(op, Generate):
                        site_held = await asyncio.to_thread(_closing, site.acquire)
                    try:
                        result = await aperform(client, op)
                    finally:
                        if site_held and not (result is not None and result.processing):
                            await asyncio.to_thread(_closing, site.release)  # type: ignore[union-attr]
                            site_held = False
            except Exception as exc:
                done, value = await advance(steps, None, exc)
            except BaseException:  # cancelled: the request is left as a killed worker leaves it
                steps.close()
                raise
            else:
                done, value = await advance(steps, result, None)
        return value  # type: ignore[no-any-return]
    finally:
        if site_held:
            await asyncio.to_thread(_closing, site.release)  # type: ignore[union-attr]
        if own and client is not None:
            await client.aclose()


def _closing(call: Callable[[], Any]) -> Any:
    """``call()`` on a thread of its own (a site slot's look), closing its connection after."""
    try:
        return call()
    finally:
        connection.close()


def _advance(steps: OpGenerator[Any], value: Any, error: BaseException | None) -> tuple[bool, Any]:
    """One step: (False, the next op) or (True, the result).

    Before a provider call or a pause the thread's database connection is closed (given back
    to the pool, with Django's ``"pool"`` option), unless a transaction is open: the caller
    waits for seconds, and an ASGI process serving many such callers would otherwise hold a
    connection for each.
    """
    try:
        op = steps.throw(error) if error is not None else steps.send(value)
    except StopIteration as stop:
        return True, stop.value
    if isinstance(op, Generate | Fetch | Sleep):
        release_connection()
    return False, op


def release_connection() -> None:
    """Close this thread's database connection (back to the pool, with Django's ``"pool"``
    option) unless a transaction is open: code about to wait holds none."""
    if not connection.in_atomic_block:
        connection.close()


def run(
    request_id: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
    inline: bool = False,
    jobs: JobSlots | None = None,
) -> GenerationRequest:
    """Drive one request to ``succeeded``, ``failed`` or ``refused``. Safe to call twice.

    With webhooks on, a job ModelsLab queues leaves the request ``processing`` and frees the
    worker: the webhook (or, if it never comes, the stale sweep) continues it. When a
    model fails in a way that lets the next one try, the fallback models are tried in turn
    (:mod:`django_modelslab.fallbacks`). ``inline``: the caller (a web request) waits on this
    run, so a rate limit longer than :data:`INLINE_MAX_RETRY_AFTER` fails it at once, saying
    when to try again, instead of blocking. ``jobs``: see :func:`drive`.
    """
    return drive(run_steps(request_id), sleep=sleep, inline=inline, jobs=jobs)


async def arun(
    request_id: int, *, client: AsyncModelsLabClient | None = None, inline: bool = False
) -> GenerationRequest:
    """:func:`run` for async code (ASGI views, say); same guarantees.

    Provider calls and polling pauses are awaited on ``client`` (default: one from
    :func:`build_async_client`, closed afterwards); the rest runs in Django's sync thread.
    ``inline``: as for :func:`run`.
    """
    return await adrive(run_steps(request_id), client=client, inline=inline)


def resume(request_id: int, *, job_id: str | None = None) -> GenerationRequest:
    """Finish a request whose job may be done (a webhook said so).

    Works on ``processing`` requests, and on ``failed`` ones whose job is known (say, failed by
    MAX_WAIT just before the webhook came): images that arrive late still count.

    The news is confirmed through the fetch endpoint before anything is stored; a job still
    processing is left alone. Never submits a job, so duplicate or concurrent calls are harmless:
    the first to finish records the images, the others find the attempt finished.

    ``job_id``: the job a webhook named for a request whose generate answer was lost (track id
    saved, no provider id). It becomes the request's job only if the fetched job echoes the
    request's track id (or, echoing none, its prompt, model and seed); otherwise it is logged,
    noted on the webhook delivery, and the request is left as it was.
    """
    return drive(resume_steps(request_id, job_id=job_id))


async def aresume(
    request_id: int, *, client: AsyncModelsLabClient | None = None, job_id: str | None = None
) -> GenerationRequest:
    """:func:`resume` for async code (an async webhook view, say)."""
    return await adrive(resume_steps(request_id, job_id=job_id), client=client)
