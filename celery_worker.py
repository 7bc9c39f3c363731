"""The design's `celery -A celery_worker.celery worker --loglevel=info`.

Reads DATABASE_URL and REDIS_URL from the environment (or .env) like `livecode worker`; the
worker refuses to start if the sandbox is unavailable.
"""

import livecode.worker.lifecycle  # noqa: F401 - worker start-up checks, heartbeat, reconciler
from livecode.config import load_settings
from livecode.logging_setup import configure_logging
from livecode.worker.metrics import connect_worker_signals
from livecode.worker.celery_app import celery, configure_celery

_settings = load_settings()
configure_logging(_settings)  # JSON lines with each execution's request id, as `livecode worker`
connect_worker_signals()  # the figures /metrics reports (livecode/worker/metrics.py)
configure_celery(_settings)

__all__ = ["celery"]
