"""The design's `python main.py`: starts the API.

With DATABASE_URL and REDIS_URL set (environment or .env) this is the distributed API (workers
run separately: `celery -A celery_worker.celery worker --loglevel=info`); without them it is the
embedded server with its in-process worker, like `livecode serve`.
"""

import os
import sys

from livecode.cli import main

if __name__ == "__main__":
    mode = "api" if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL") else "serve"
    main([mode, *sys.argv[1:]])
