"""Signals for observability, sent by :mod:`django_modelslab.pipeline` after each commit.

===================== ======================== ================================================
signal                sender                   keyword arguments
===================== ======================== ================================================
request_submitted     ``GenerationRequest``    ``request``
request_succeeded     ``GenerationRequest``    ``request``, ``images`` (list), ``duration``
                                               (seconds or None), ``cost`` (this attempt's,
                                               a Decimal; 0 from the cache; None: unknown)
request_failed        ``GenerationRequest``    ``request``, ``error`` (the exception),
                                               ``duration``
request_refused       ``GenerationRequest``    ``request``, ``error`` (the refusal),
                                               ``duration`` (None if refused at submit)
image_stored          ``GeneratedImage``       ``image``, ``uploaded`` (False: the bytes were
                                               already stored), ``bytes``
===================== ======================== ================================================

A receiver that raises never breaks the pipeline: signals are sent with ``send_robust`` and
the error is logged on ``django_modelslab.signals``.
"""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import Signal

logger = logging.getLogger("django_modelslab.signals")

request_submitted = Signal()
request_succeeded = Signal()
request_failed = Signal()
request_refused = Signal()
image_stored = Signal()


def send(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send ``signal``; a receiver's exception is logged, never raised."""
    for receiver, result in signal.send_robust(sender, **kwargs):
        if isinstance(result, Exception):
            name = getattr(receiver, "__qualname__", repr(receiver))
            logger.error(
                "Receiver %s of %s raised %s: %s",
                name,
                _name(signal),
                type(result).__name__,
                result,
                exc_info=(type(result), result, result.__traceback__),
            )


def _name(signal: Signal) -> str:
    names = ("request_submitted", "request_succeeded", "request_failed", "request_refused")
    for name in (*names, "image_stored"):
        if globals()[name] is signal:
            return name
    return repr(signal)
