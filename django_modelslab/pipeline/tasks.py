"""The Django Tasks entry points of a generation, and how the pipeline enqueues them.

``django.tasks`` on Django 6.x, the ``django-tasks`` backport on Django 5.2. Queues may hold
them under their old path, ``django_modelslab.tasks.<name>``: that module exposes them too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction

from ..conf import get_setting
from .drivers import resume, run

try:
    from django.tasks import Task, TaskContext, task
    from django.tasks.backends.immediate import ImmediateBackend
except ImportError:  # Django < 6.0: the backport, same API (type-checked as django.tasks)
    from django_tasks import TaskContext, task  # type: ignore[assignment, no-redef]
    from django_tasks.backends.immediate import ImmediateBackend  # type: ignore[assignment]
    from django_tasks.base import Task  # type: ignore[assignment]

__all__ = ["enqueue_on_commit", "resume_generation", "run_generation", "runs_inline", "task"]


@task(takes_context=True)
def run_generation(context: TaskContext[Any, Any], request_id: int) -> str:
    """Run one generation request; returns its final status.

    On the immediate backend the task runs inside ``enqueue()``: whoever enqueued it (a web
    request, usually) is waiting, so the run does not sit out a long rate limit.
    """
    inline = isinstance(context.task_result.task.get_backend(), ImmediateBackend)
    return run(request_id, inline=inline).status


@task()
def resume_generation(request_id: int, job_id: str | None = None) -> str:
    """Finish a request a webhook said is done (confirmed through the API first).

    ``job_id``: the job the webhook named, for a request whose generate answer was lost.
    """
    return resume(request_id, job_id=job_id).status


def runs_inline() -> bool:
    """Whether a generation submitted now would run at once, inside ``enqueue()``: the
    immediate task backend, outside a transaction (inside one it runs at the commit). An
    async caller may then submit it with ``enqueue=False`` and :func:`~.drivers.arun` it."""
    backend = run_generation.using(backend=get_setting("TASK_BACKEND")).get_backend()
    return (
        isinstance(backend, ImmediateBackend) and not transaction.get_connection().in_atomic_block
    )


def enqueue_on_commit(
    task: Task[..., Any], *args: Any, first: Callable[[], None] | None = None
) -> None:
    """Enqueue ``task(*args)`` on the ``TASK_BACKEND`` once the current transaction commits,
    so that no worker sees a row before it is committed; ``first`` runs just before."""
    task = task.using(backend=get_setting("TASK_BACKEND"))

    def enqueue() -> None:
        if first is not None:
            first()
        task.enqueue(*args)

    transaction.on_commit(enqueue)
