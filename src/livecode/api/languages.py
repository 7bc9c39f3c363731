"""/api/v1/languages: what can run here, with toolchain versions."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource

from . import schemas
from .context import rt

ns = Namespace("languages", description="Supported languages")
schemas.attach(ns)


@ns.route("")
class Languages(Resource):
    @ns.doc("list_languages")
    @ns.response(200, "Languages", [schemas.language])
    def get(self) -> Any:
        """List every language with its toolchain version and whether it can run: in the distributed
        mode, whether a live worker advertises it (none yet: every language is listed unavailable,
        and a run of one is queued until a worker comes up). `libraries` lists the libraries a
        program can import (Python: numpy, pandas, matplotlib), as found on the workers."""
        return [
            {k: lang.get(k) for k in ("id", "name", "version", "available", "compiled", "libraries")}
            for lang in rt().languages.listing()
        ]
