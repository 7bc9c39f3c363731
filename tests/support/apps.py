"""Lets the apps a test built with `create_app` be freed when it ends."""

from __future__ import annotations

import sys


def release_apps() -> None:
    """Flask-RESTX's namespaces are module globals (`ns = Namespace(...)` in livecode.api) and keep a
    list of every Api they were added to, and so every app, runtime and database engine the
    in-process tests built: hundreds by the end of the floor, which made each garbage collection
    slower (a fifth of the floor's CPU) and the process's exit too. No app outlives its test."""
    restx = sys.modules.get("flask_restx")
    if restx is None:
        return
    for name, module in list(sys.modules.items()):
        if name.startswith("livecode.api") and module is not None:
            for value in list(vars(module).values()):
                if isinstance(value, restx.Namespace) and value.apis:
                    value.apis.clear()
