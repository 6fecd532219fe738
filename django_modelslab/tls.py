"""One TLS context per process, shared by every HTTP client we make.

httpx loads the CA bundle for each new client (tens of milliseconds); the pipeline makes
clients per request, so they share this context instead. SSLContext is thread-safe.
"""

from __future__ import annotations

import functools
import ssl

import certifi


@functools.cache
def shared_context() -> ssl.SSLContext:
    """The default verifying context with certifi's CA bundle, as httpx builds it."""
    return ssl.create_default_context(cafile=certifi.where())
