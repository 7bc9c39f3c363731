"""The design's `celery -A celery_worker.celery worker --loglevel=info`.

Reads DATABASE_URL and REDIS_URL from the environment (or .env) like `livecode worker`; the
worker refuses to start if the sandbox is unavailable.
"""

import livecode.worker.lifecycle  # noqa: F401 - worker start-up checks, heartbeat, reconciler
from livecode.config import load_settings
from livecode.worker.celery_app import celery, configure_celery

configure_celery(load_settings())

__all__ = ["celery"]
