"""Settings of bench/asgi_images.py's servers: the test settings (PostgreSQL, the emulator,
the immediate task backend), with Django's PostgreSQL connection pool."""

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES

# Django's PostgreSQL connection pool: a call gives its connection back while it waits on
# ModelsLab, so a few connections serve every caller.
DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 4, "max_size": 16, "timeout": 60}}
