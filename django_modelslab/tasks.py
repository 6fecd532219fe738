"""The Django Tasks entry points: generation runs wherever settings.TASKS says.

``django.tasks`` on Django 6.x, the ``django-tasks`` backport on Django 5.2.
"""

from __future__ import annotations

try:
    from django.tasks import task
except ImportError:  # Django < 6.0
    from django_tasks import task


@task()
def run_generation(request_id: int) -> str:
    """Run one generation request; returns its final status."""
    from .pipeline import run

    return run(request_id).status


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
