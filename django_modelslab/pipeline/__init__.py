"""The one place that owns a generation's state machine.

``pending | failed | refused → queued → processing → succeeded | failed | refused``. Faces
(admin, API, commands, the webhook view) call :func:`submit`, :func:`regenerate`, :func:`choose`,
:func:`resume_on_commit`, :func:`requeue` and :func:`sweep_stale`; tasks call :func:`run` and
:func:`resume`. ``run`` claims a request with a compare-and-set on its status, so calling it
twice (or from two workers) never starts a second provider job for one attempt; every
attempt's end is recorded under a row lock, so of two runs racing to finish it, one result
counts.

Inside, each module has one job, each importing only those listed before it:

- :mod:`.record`: what is written on the rows (answers, images, the end of an attempt);
- :mod:`.steps`: the state machine, sans-IO: generators yielding the calls they need;
- :mod:`.slots`: places among the jobs at ModelsLab (``MAX_CONCURRENT_JOBS``, site-wide);
- :mod:`.drivers`: perform the steps, blocking (:func:`run`) or awaited (:func:`arun`);
- :mod:`.tasks`: the Django Tasks entry points, and :func:`~.tasks.enqueue_on_commit`;
- :mod:`.queue`: putting requests on the queue (submit, regenerate, the stale sweep).
"""

from ..exceptions import GenerationInProgress
from .drivers import (
    INLINE_MAX_RETRY_AFTER,
    adrive,
    aresume,
    arun,
    build_async_client,
    build_client,
    drive,
    release_connection,
    resume,
    run,
)
from .queue import (
    SUBMITTABLE,
    new_seed,
    pick_up,
    regenerate,
    requeue,
    resume_on_commit,
    stale_requests,
    submit,
    sweep_stale,
)
from .record import choose
from .steps import Fetch, Generate, OpGenerator, Sleep, resume_steps, run_steps, webhook_url
from .tasks import runs_inline

__all__ = [
    "INLINE_MAX_RETRY_AFTER",
    "SUBMITTABLE",
    "Fetch",
    "Generate",
    "GenerationInProgress",
    "OpGenerator",
    "Sleep",
    "adrive",
    "aresume",
    "arun",
    "build_async_client",
    "build_client",
    "choose",
    "drive",
    "new_seed",
    "pick_up",
    "regenerate",
    "release_connection",
    "requeue",
    "resume",
    "resume_on_commit",
    "resume_steps",
    "run",
    "run_steps",
    "runs_inline",
    "stale_requests",
    "submit",
    "sweep_stale",
    "webhook_url",
]
