"""The Django Tasks entry point: generation runs wherever settings.TASKS says.

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
