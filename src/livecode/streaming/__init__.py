"""Following an execution live: the event bus, the worker's output publisher, the API's shared
tails, the follower (replay, resume, final events made from the row) and interactive stdin.

Nothing here knows Flask or Celery: api/stream.py carries these events over SSE and WebSocket,
worker/tasks.py publishes them. See docs/streaming.md.
"""
