"""The Django Tasks entry points: generation runs wherever settings.TASKS says.

``django.tasks`` on Django 6.x, the ``django-tasks`` backport on Django 5.2.
"""

from __future__ import annotations

try:
    from django.tasks import TaskContext, task
    from django.tasks.backends.immediate import ImmediateBackend
except ImportError:  # Django < 6.0
    from django_tasks import TaskContext, task
    from django_tasks.backends.immediate import ImmediateBackend


@task(takes_context=True)
def run_generation(context: TaskContext, request_id: int) -> str:
    """Run one generation request; returns its final status.

    On the immediate backend the task runs inside ``enqueue()``: whoever enqueued it (a web
    request, usually) is waiting, so the run does not sit out a long rate limit.
    """
    from .pipeline import run

    inline = isinstance(context.task_result.task.get_backend(), ImmediateBackend)
    return run(request_id, inline=inline).status


@task()
def resume_generation(request_id: int, job_id: str | None = None) -> str:
    """Finish a request a webhook said is done (confirmed through the API first).

    ``job_id``: the job the webhook named, for a request whose generate answer was lost.
    """
    from .pipeline import resume

    return resume(request_id, job_id=job_id).status


@task()
def sweep_stale_generations() -> list[int]:
    """Re-queue requests stuck in queued/processing; schedule it every few minutes."""
    from .pipeline import sweep_stale

    return sweep_stale()
