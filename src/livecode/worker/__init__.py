"""Celery worker: the app, the execution task, the reconciler and the worker's life cycle."""
