"""A bundled ModelsLab emulator for tests, demos and benchmarks (no Django needed).

    from django_modelslab.testing import Emulator, Fault

    with Emulator(mode="processing") as emu:
        emu.add_fault("fetch", Fault.rate_limit(retry_after=1))
        ...  # point MODELSLAB["BASE_URL"] at emu.base_url

Run one in the foreground with ``python -m django_modelslab.testing --port 8777``.
"""

from __future__ import annotations

from .drawing import draw_image
from .emulator import Emulator
from .faults import Fault
from .jobs import Job
from .routes import ROUTES, Route
from .validation import ValidationError

__all__ = ["ROUTES", "Emulator", "Fault", "Job", "Route", "ValidationError", "draw_image"]
