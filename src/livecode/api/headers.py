"""Security headers on every answer: no framing anywhere, a Content-Security-Policy for the API
docs, and `Cache-Control: no-store` on answers that carry tokens or keys.

The playground sets its own, stricter policy (api/playground.py); this only fills in what an
answer lacks."""

from __future__ import annotations

import base64
import hashlib
import re
from functools import lru_cache

from flask import Flask, Response, request

DOCS_PATH = "/docs"
# Sign-in, refresh and API-key answers carry secrets: no browser or proxy may keep them.
NO_STORE_PREFIXES = ("/api/v1/auth/", "/api/v1/api-keys")
DEFAULT_CSP = "frame-ancestors 'none'"
INLINE_SCRIPT_RE = re.compile(r"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script>", re.DOTALL | re.IGNORECASE)


@lru_cache(maxsize=8)
def docs_csp(page: str) -> str:
    """Swagger UI's page: its scripts and styles come from this origin (/swaggerui/); its one
    inline start-up script is allowed by hash, so no other inline script can run. Swagger UI
    styles elements inline and uses data: images in its CSS."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode("utf-8")).digest()).decode() + "'"
        for body in INLINE_SCRIPT_RE.findall(page)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; object-src 'none'; frame-ancestors 'none'"
    )


def init_security_headers(app: Flask) -> None:
    @app.after_request
    def _security_headers(resp: Response) -> Response:
        resp.headers.setdefault("X-Frame-Options", "DENY")
        if request.path == DOCS_PATH and resp.mimetype == "text/html" and not resp.is_streamed:
            resp.headers["Content-Security-Policy"] = docs_csp(resp.get_data(as_text=True))
        resp.headers.setdefault("Content-Security-Policy", DEFAULT_CSP)
        if request.path.startswith(NO_STORE_PREFIXES):
            resp.headers["Cache-Control"] = "no-store"
            resp.headers["Pragma"] = "no-cache"
        return resp
