"""The browser playground: GET / (and /s/<session_id>, a shareable session URL) serve the single
page, GET /admin the operators' analytics page; /static/<path> serves the bundle built from
frontend/ by scripts/build-frontend.sh.

The built files are committed under src/livecode/static/ so the Python package ships them and
`livecode serve` needs no Node toolchain."""

from __future__ import annotations

import uuid
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, send_from_directory

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Everything the page needs is bundled and served from this origin; CodeMirror injects its
# theme as <style> elements, hence 'unsafe-inline' for styles only (never for scripts). A run's
# images are fetched with the caller's credentials and shown from blob: URLs.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)

bp = Blueprint("playground", __name__)


def _checked(resp: Response) -> Response:
    """A failed If-Match / If-Unmodified-Since on a file is a 412 with the file as its body;
    answer it in the one JSON error shape instead."""
    if resp.status_code == 412:
        resp.close()
        abort(412)
    return resp


def _page(name: str = "index.html") -> Response:
    if not (STATIC_DIR / name).is_file():
        # A source checkout whose frontend was never built; say how to fix it instead of a bare 404.
        abort(404, description="the playground is not built; run scripts/build-frontend.sh")
    resp = _checked(send_from_directory(STATIC_DIR, name, max_age=0))
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["Cache-Control"] = "no-cache"
    return resp


@bp.get("/")
def index() -> Response:
    """The playground page. `/?session=<id>` opens that session."""
    return _page()


@bp.get("/admin")
def admin() -> Response:
    """The analytics page: charts of GET /api/v1/admin/analytics. The page itself is public (a
    browser sends no token when it navigates); the figures need the admin role."""
    return _page("admin.html")


@bp.get("/s/<session_id>")
def shared_session(session_id: str) -> Response:
    """A session's shareable URL: the same page, which reads the id from the path."""
    try:
        uuid.UUID(session_id)
    except ValueError:
        abort(404)
    return _page()


@bp.get("/static/<path:filename>")
def static_file(filename: str) -> Response:
    """The built bundle. Revalidated on every load (ETag/Last-Modified), so a new build shows
    up at once without cache-busting file names."""
    resp = _checked(send_from_directory(STATIC_DIR, filename, max_age=0))
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def register_playground(app: Flask) -> None:
    """Serve the playground. Call after build_api(): Flask-RESTX claims "/" for its own root
    endpoint (a bare 404 when the docs live elsewhere), so that endpoint is pointed at the page."""
    app.register_blueprint(bp)
    if "root" in app.view_functions:
        app.view_functions["root"] = index
