"""The HTTP front: gunicorn and the worker class that reads each request before a thread takes it."""
