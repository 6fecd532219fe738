"""The Django Tasks entry points, under the path queues store for them.

They live in the pipeline (:mod:`django_modelslab.pipeline.tasks` and, for the stale sweep,
:mod:`django_modelslab.pipeline.queue`); a task stored as ``django_modelslab.tasks.<name>``
resolves here.
"""

from .pipeline.queue import sweep_stale_generations
from .pipeline.tasks import resume_generation, run_generation

__all__ = ["resume_generation", "run_generation", "sweep_stale_generations"]
