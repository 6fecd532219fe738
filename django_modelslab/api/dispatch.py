"""DRF views whose waits are awaited: one ASGI process serves many callers at once.

DRF's views are synchronous: under ASGI each runs in a thread, held for as long as it
waits on ModelsLab. :class:`AsyncDispatchMixin` makes ``dispatch`` a coroutine that does
DRF's usual work (authentication, permissions, throttles, the handler, errors, content
negotiation) in Django's sync thread and awaits a handler that is itself a coroutine, so a
wait costs the process nothing but an idle task. Under WSGI Django runs the view on an
event loop of its own per request: it works there too, without the gain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.db import connection, connections
from django.http import HttpRequest, HttpResponseBase
from rest_framework.views import APIView

from .. import pipeline
from ..models import GenerationRequest

#: Generations whose caller went away: kept here until they end (the loop holds tasks weakly).
_running: set[asyncio.Task[GenerationRequest]] = set()


class AsyncDispatchMixin:
    """Before :class:`~rest_framework.views.APIView` (or a viewset) in the bases.

    Handlers may be ``async def`` (awaited) or plain (run in Django's sync thread, as under
    a sync view). The view must be marked non-atomic: Django refuses ``ATOMIC_REQUESTS``
    for an async view (:meth:`as_view` does it).
    """

    view_is_async = True

    @classmethod
    def as_view(cls, *args: Any, **initkwargs: Any) -> Callable[..., Any]:
        view = super().as_view(*args, **initkwargs)  # type: ignore[misc]
        if not iscoroutinefunction(view):  # a viewset's view: a function returning dispatch()
            returning = view

            async def view(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
                return await returning(request, *args, **kwargs)

            update_wrapper(view, returning)
        # Whatever ATOMIC_REQUESTS says: a run commits as it goes, and an async view may not
        # be wrapped in a transaction.
        view._non_atomic_requests = set(connections)
        return view

    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        """:meth:`APIView.dispatch`, with coroutine handlers awaited."""
        view: APIView = self  # type: ignore[assignment]
        view.args, view.kwargs = args, kwargs
        drf_request = view.initialize_request(request, *args, **kwargs)
        view.request = drf_request
        view.headers = view.default_response_headers
        try:
            await sync_to_async(view.initial)(drf_request, *args, **kwargs)
            method = drf_request.method.lower() if drf_request.method else ""
            handler = (
                getattr(view, method, view.http_method_not_allowed)
                if method in view.http_method_names
                else view.http_method_not_allowed
            )
            if iscoroutinefunction(handler):
                response = await handler(drf_request, *args, **kwargs)
            else:
                response = await sync_to_async(handler)(drf_request, *args, **kwargs)
        except Exception as exc:
            response = await sync_to_async(view.handle_exception)(exc)
        view.response = view.finalize_response(drf_request, response, *args, **kwargs)
        return view.response


async def run_to_the_end(request_id: int) -> GenerationRequest:
    """Run a request this call submitted (:func:`pipeline.arun`, ``inline``), to the end even
    if the caller goes away.

    Django cancels an async view whose client disconnects; a generation cancelled midway
    would stay ``processing``, its job perhaps paid for, until a stale sweep. So it runs as
    a task of its own (with its own thread for the database work, and its connection closed
    at the end), which the view awaits without passing a cancellation on. The view's own
    connection is closed first: while the generation runs, the call holds none.
    """
    await sync_to_async(_close_connection)()
    task = asyncio.create_task(_run(request_id))
    _running.add(task)
    task.add_done_callback(_running.discard)
    return await asyncio.shield(task)


async def _run(request_id: int) -> GenerationRequest:
    async with ThreadSensitiveContext():
        try:
            return await pipeline.arun(request_id, inline=True)
        finally:
            await sync_to_async(_close_connection)()


def _close_connection() -> None:
    if not connection.in_atomic_block:
        connection.close()
