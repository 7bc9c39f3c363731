"""The HTTP API: one Flask-RESTX namespace per resource, errors in one JSON shape."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from flask import Flask
from flask_restx import Api
from werkzeug.exceptions import HTTPException

from .errors import to_response


class LiveCodeApi(Api):
    def handle_error(self, e: Exception) -> Any:
        body, status, headers = to_response(e)
        return self.make_response(body, status, headers)

    def _should_use_fr_error_handler(self) -> bool:
        # Flask-RESTX matches the URL again to pick a handler; for a made-up method with
        # WebSocket headers werkzeug raises there (WebsocketMismatch), which became a bare 500.
        # Either handler answers in the one error shape.
        try:
            return bool(super()._should_use_fr_error_handler())
        except HTTPException:
            return True

    @cached_property
    def __schema__(self) -> dict[str, Any]:
        from .auth import is_public
        from .schemas import add_common_responses

        return add_common_responses(super().__schema__, is_public)


def build_api(app: Flask) -> LiveCodeApi:
    from . import (
        admin,
        analytics,  # noqa: F401 - adds /api/v1/admin/analytics to admin.ns
        auth,
        batch,  # noqa: F401 - adds POST /api/v1/executions/batch to executions.ns
        dead_letters,  # noqa: F401 - adds /api/v1/admin/dead-letters to admin.ns
        execution_files,  # noqa: F401 - adds /api/v1/executions/{id}/files to executions.ns
        executions,
        health,
        history,  # noqa: F401 - adds /api/v1/code-sessions/{id}/versions ... to sessions.ns
        keys,
        languages,
        members,  # noqa: F401 - adds .../members, .../share-links and /join to sessions.ns
        programs,  # noqa: F401 - adds GET /api/v1/executions/{id}/program to executions.ns
        sessions,
        stream,
        webhooks,
    )
    from .collab import register_collab
    from .judge0 import info as judge0_info  # noqa: F401 - adds /judge0/languages ... to judge0's namespace
    from .judge0 import routes as judge0_routes  # noqa: F401 - adds /judge0/submissions ...
    from .judge0.docs import ns as judge0_ns
    from .piston import register_piston

    api = LiveCodeApi(
        app,
        version="1.0",
        title="LiveCode Execution API",
        description="Code sessions with autosave, and sandboxed asynchronous executions.",
        doc="/docs",
        catch_all_404s=True,
        authorizations={
            "Bearer": {"type": "apiKey", "in": "header", "name": "Authorization",
                       "description": "Bearer <access token from /api/v1/auth/login>"},
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
        },
        security=[{"Bearer": []}, {"ApiKey": []}],
    )
    api.add_namespace(sessions.ns, path="/api/v1/code-sessions")
    api.add_namespace(executions.ns, path="/api/v1/executions")
    api.add_namespace(stream.ns, path="/api/v1/executions")  # .../{id}/events (SSE)
    api.add_namespace(languages.ns, path="/api/v1/languages")
    api.add_namespace(health.ns, path="/health")
    api.add_namespace(auth.ns, path="/api/v1/auth")
    api.add_namespace(keys.ns, path="/api/v1/api-keys")
    api.add_namespace(admin.ns, path="/api/v1/admin")
    api.add_namespace(webhooks.ns, path="/api/v1/webhooks")
    api.add_namespace(judge0_ns, path="/judge0")
    stream.register_websocket(app)  # .../{id}/ws: not a Flask-RESTX resource
    register_piston(app)  # /piston: Piston's v2 API, in Piston's shapes (not Flask-RESTX)
    register_collab(app)  # /api/v1/code-sessions/{id}/ws: co-editing (Yjs), not a Flask-RESTX resource
    return api
