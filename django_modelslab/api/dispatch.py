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
from collections.abc import Callable, Coroutine
from functools import update_wrapper
from typing import Any, TypeVar

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.db import connections
from django.http import HttpRequest, HttpResponseBase
from rest_framework.views import APIView

from .. import pipeline

T = TypeVar("T")

#: Calls running under ASGI, kept until they end (the loop holds its tasks weakly).
_running: set[asyncio.Task[Any]] = set()


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
        """:meth:`APIView.dispatch`, with coroutine handlers awaited; under ASGI, to the end
        even if the caller goes away.

        Django cancels an async view whose client disconnects. A generation stopped midway
        would stay ``processing`` (its job perhaps paid for) until a stale sweep, so under
        ASGI the call runs as a task of its own, with its own database thread, that a
        cancellation does not reach. (Under WSGI nothing is cancelled, and the database
        work stays in the request's thread, inside the test case's transaction in tests.)
        """
        work = self._dispatch(request, *args, **kwargs)
        if not isinstance(request, ASGIRequest):
            return await work
        task = asyncio.create_task(_in_own_thread(work))
        _running.add(task)
        task.add_done_callback(_running.discard)
        return await asyncio.shield(task)

    async def _dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
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


async def _in_own_thread(work: Coroutine[Any, Any, T]) -> T:
    """``work`` with a database thread of its own, whose connection is closed at the end."""
    async with ThreadSensitiveContext():
        try:
            return await work
        finally:
            await sync_to_async(pipeline.release_connection)()
