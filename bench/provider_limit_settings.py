"""Settings of bench/provider_limit.py's processes: the test settings (PostgreSQL, the
emulator, db_worker from the environment) with the package's own retry and polling
defaults, as a site has them."""

from tests.settings import *  # noqa: F403
from tests.settings import MODELSLAB

for _name in ("MAX_RETRIES", "RETRY_BACKOFF", "RETRY_BACKOFF_MAX", "POLL_INTERVAL"):
    MODELSLAB.pop(_name, None)
for _name in ("POLL_INTERVAL_MAX", "MAX_WAIT", "TIMEOUT", "CONNECT_TIMEOUT"):
    MODELSLAB.pop(_name, None)
