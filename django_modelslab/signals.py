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

A receiver that raises never breaks the pipeline: signals are sent with ``send_robust``, which
logs the error (with its traceback) on Django's ``django.dispatch`` logger.
"""

from __future__ import annotations

from django.dispatch import Signal

request_submitted = Signal()
request_succeeded = Signal()
request_failed = Signal()
request_refused = Signal()
image_stored = Signal()
