"""The Piston API as an OpenAPI 3 document (GET /piston/openapi.json): what LiveCode accepts and
answers under /piston, for clients and for the schema-driven fuzz tests."""

from __future__ import annotations

from typing import Any

_NULLABLE_INT = {"type": "integer", "nullable": True}
_NULLABLE_NUMBER = {"type": "number", "nullable": True}
_NULLABLE_STRING = {"type": "string", "nullable": True}

STAGE: dict[str, Any] = {
    "type": "object",
    "required": [
        "stdout",
        "stderr",
        "output",
        "code",
        "signal",
        "message",
        "status",
        "cpu_time",
        "wall_time",
        "memory",
    ],
    "properties": {
        "stdout": {"type": "string"},
        "stderr": {"type": "string"},
        "output": {"type": "string", "description": "stdout and stderr interleaved in the order written"},
        "code": _NULLABLE_INT,
        "signal": {**_NULLABLE_STRING, "description": "e.g. SIGKILL"},
        "message": _NULLABLE_STRING,
        "status": {**_NULLABLE_STRING, "enum": ["RE", "SG", "TO", "OL", "EL", "XX", None]},
        "cpu_time": {**_NULLABLE_NUMBER, "description": "milliseconds"},
        "wall_time": {**_NULLABLE_NUMBER, "description": "milliseconds"},
        "memory": {**_NULLABLE_INT, "description": "bytes"},
    },
}

MESSAGE: dict[str, Any] = {
    "type": "object",
    "required": ["message"],
    "properties": {"message": {"type": "string"}},
}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": MESSAGE}}}


_LIMIT = {"type": "number"}
EXECUTE_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["language", "version", "files"],
    "properties": {
        "language": {"type": "string", "description": "a language or one of its aliases (see runtimes)"},
        "version": {"type": "string", "description": 'a SemVer range: "*", "3.x", "3.11.2"'},
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["content"],
                "properties": {
                    "name": {"type": "string"},
                    "content": {"type": "string"},
                    "encoding": {"type": "string", "enum": ["utf8", "base64", "hex"]},
                },
            },
        },
        "stdin": {"type": "string"},
        "args": {"type": "array", "items": {"type": "string"}},
        "run_timeout": {**_LIMIT, "description": "ms of wall time (clamped to the server's maximum)"},
        "run_cpu_time": {**_LIMIT, "description": "ms of CPU time (clamped to the server's maximum)"},
        "run_memory_limit": {**_LIMIT, "description": "bytes (-1: the default; clamped to the maximum)"},
        "compile_timeout": {**_LIMIT, "description": "checked; the server's own compile limits apply"},
        "compile_cpu_time": {**_LIMIT, "description": "checked; the server's own compile limits apply"},
        "compile_memory_limit": {**_LIMIT, "description": "checked; the server's own compile limits apply"},
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "LiveCode: the Piston v2 API",
        "version": "2.0.0",
        "description": "Piston's v2 API over LiveCode's sandbox. Authenticate with "
        "`Authorization: <LiveCode API key>` (or `X-API-Key`, or `Authorization: Bearer "
        "<access token>`) when the server requires sign-in.",
    },
    "servers": [{"url": "/piston"}],
    "components": {"securitySchemes": {"PistonKey": {"type": "apiKey", "in": "header", "name": "Authorization"}}},
    "security": [{"PistonKey": []}, {}],
    "paths": {
        "/api/v2/runtimes": {
            "get": {
                "operationId": "piston_runtimes",
                "summary": "The runtimes that can run now",
                "responses": {
                    "200": {
                        "description": "Runtimes",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["language", "version", "aliases"],
                                        "properties": {
                                            "language": {"type": "string"},
                                            "version": {"type": "string"},
                                            "aliases": {"type": "array", "items": {"type": "string"}},
                                            "runtime": {"type": "string"},
                                        },
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        "/api/v2/packages": {
            "get": {
                "operationId": "piston_packages",
                "summary": "The installed packages: every runtime (none can be installed or removed)",
                "responses": {
                    "200": {
                        "description": "Packages",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["language", "language_version", "installed"],
                                        "properties": {
                                            "language": {"type": "string"},
                                            "language_version": {"type": "string"},
                                            "installed": {"type": "boolean"},
                                        },
                                    },
                                }
                            }
                        },
                    }
                },
            }
        },
        "/api/v2/execute": {
            "post": {
                "operationId": "piston_execute",
                "summary": "Run a program and answer with its result",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": EXECUTE_REQUEST,
                            "example": {
                                "language": "python",
                                "version": "*",
                                "files": [{"content": "print(input())"}],
                                "stdin": "hello",
                                "run_timeout": 3000,
                            },
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "The run's result",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["language", "version", "run"],
                                    "properties": {
                                        "language": {"type": "string"},
                                        "version": {"type": "string"},
                                        "run": STAGE,
                                        "compile": STAGE,
                                    },
                                }
                            }
                        },
                    },
                    "400": _error("Bad input, an unknown runtime, more than one file"),
                    "401": _error("Sign-in required, or a bad key"),
                    "413": _error("The body, the source or stdin is too large"),
                    "415": _error("Not application/json"),
                    "429": _error("Rate limit or storage quota"),
                    "503": _error("Busy (too many waiting runs), no worker in time, or a dependency is down"),
                },
            }
        },
    },
}
