"""Who is calling: authentication on every request, and the /api/v1/auth endpoints.

A caller sends a short-lived JWT access token (`Authorization: Bearer <token>`, from
`POST /api/v1/auth/login`) or an API key (`X-API-Key: lc_...`). The before-request hook sets
`g.user_id` and `g.user_role`; services filter every row by `g.user_id` (api/context.owner_id()),
so another user's session or execution is a 404.

Without `auth_required` (the embedded `livecode serve`), a request without credentials is the single
local user: `g.user_id = None` (no owner filter) and `g.user_role = "admin"`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from functools import lru_cache, wraps
from typing import Any, TypeVar, cast

from flask import Flask, current_app, g, request
from flask_jwt_extended import JWTManager, create_access_token, create_refresh_token, decode_token
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_restx import Namespace, Resource, fields
from jwt import ExpiredSignatureError, PyJWTError

from ..config import Settings
from ..errors import ApiError
from ..ratelimit import login_limit
from ..services import accounts
from . import schemas
from .body import json_body, reject_unknown, require_str
from .context import rt

F = TypeVar("F", bound=Callable[..., Any])

jwt = JWTManager()

# Reachable without credentials even when sign-in is required.
PUBLIC_PREFIXES = ("/health", "/swaggerui/", "/static/", "/s/")
PUBLIC_PATHS = frozenset({
    "/docs", "/swagger.json", "/metrics", "/api/v1/languages", "/api/v1/auth/register",
    "/api/v1/auth/login", "/api/v1/auth/refresh",
})
# Browsers cannot set headers on WebSocket or EventSource requests: there, and only there, the
# access token may come as `?access_token=`.
STREAM_SUFFIXES = ("/events", "/stream", "/ws")

SIGN_IN_HINT = ("send 'Authorization: Bearer <access token>' (POST /api/v1/auth/login) "
                "or 'X-API-Key: <key>' (POST /api/v1/api-keys)")


class Unauthorized(ApiError):
    status = 401
    code = "UNAUTHORIZED"

    def __init__(self, message: str, **kw: Any) -> None:
        kw.setdefault("headers", {"WWW-Authenticate": 'Bearer realm="livecode"'})
        super().__init__(message, **kw)


class Forbidden(ApiError):
    status = 403
    code = "FORBIDDEN"


def is_public(path: str, method: str) -> bool:
    if method == "OPTIONS":  # CORS preflights carry no credentials
        return True
    if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
        return True
    return path == "/" and method in {"GET", "HEAD"}


@lru_cache(maxsize=4096)
def _verified_claims(token: str, _secret: str) -> dict[str, Any]:
    """Signature check and decoding cost about as much as the rest of an autosave request, and a
    client sends the same token for its whole lifetime: verify each token once per process.
    (Keyed by the secret too, so one process serving two apps never mixes them up.)"""
    return decode_token(token)  # type: ignore[no-any-return]


def _decode_access(token: str) -> dict[str, Any]:
    if len(token) > 4096:
        raise ValueError("token too long")
    claims = _verified_claims(token, current_app.config["JWT_SECRET_KEY"])
    # A cached token still expires on time.
    if float(claims.get("exp", 0)) <= time.time():
        raise ExpiredSignatureError("Signature has expired")
    return claims


def _principal_from_token(token: str) -> accounts.Principal:
    try:
        claims = _decode_access(token)
    except ExpiredSignatureError as exc:
        raise Unauthorized("the access token has expired; get a new one from POST /api/v1/auth/refresh",
                           code="TOKEN_EXPIRED") from exc
    except (JWTExtendedException, PyJWTError, ValueError) as exc:
        raise Unauthorized("the access token is not valid; " + SIGN_IN_HINT, code="INVALID_TOKEN") from exc
    if claims.get("type") != "access":
        raise Unauthorized("a refresh token was sent where an access token is needed; "
                           "exchange it at POST /api/v1/auth/refresh", code="INVALID_TOKEN")
    try:
        user_id = uuid.UUID(str(claims["sub"]))
    except (KeyError, ValueError) as exc:
        raise Unauthorized("the access token is not valid", code="INVALID_TOKEN") from exc
    return accounts.Principal(user_id, str(claims.get("role", "user")), str(claims.get("username", "")))


def credentials() -> accounts.Principal | None:
    """The caller named by the request's credentials, None if it sent none; 401 if they are bad."""
    key = request.headers.get("X-API-Key")
    if key:
        principal = accounts.principal_for_key(rt().db, key.strip())
        if principal is None:
            raise Unauthorized("the API key is not valid or has been revoked", code="INVALID_API_KEY")
        return principal
    header = request.headers.get("Authorization")
    if header:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <access token>'", code="INVALID_TOKEN")
        return _principal_from_token(token.strip())
    query_token = request.args.get("access_token")
    if query_token and request.method == "GET" and request.path.endswith(STREAM_SUFFIXES):
        return _principal_from_token(query_token)
    return None


def authenticate() -> None:
    """Before every request: set g.user_id / g.user_role, or answer 401."""
    g.user_id = None
    g.user_role = None
    if is_public(request.path, request.method):
        if not rt().settings.auth_required:
            g.user_role = "admin"
        return
    principal = credentials()
    if principal is not None:
        g.user_id, g.user_role, g.username = principal.user_id, principal.role, principal.username
    elif rt().settings.auth_required:
        raise Unauthorized("sign-in required: " + SIGN_IN_HINT)
    else:
        g.user_role = "admin"  # the single local user of a service that runs without accounts


def current_user_id() -> uuid.UUID | None:
    """The signed-in user, or None for the single local user of a service without accounts."""
    return cast("uuid.UUID | None", g.get("user_id"))


def admin_required(fn: F) -> F:
    """For operator endpoints: the admin role (or the single local user when sign-in is off)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("user_role") != "admin":
            if g.get("user_id") is None:
                raise Unauthorized("sign-in required: " + SIGN_IN_HINT)
            raise Forbidden("this endpoint needs the admin role", code="ADMIN_REQUIRED")
        return fn(*args, **kwargs)

    return cast(F, wrapper)


def login_required(fn: F) -> F:
    """For endpoints that need a real account even when sign-in is optional (e.g. API keys)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("user_id") is None:
            raise Unauthorized("this endpoint needs an account: " + SIGN_IN_HINT)
        return fn(*args, **kwargs)

    return cast(F, wrapper)


def init_auth(app: Flask, settings: Settings) -> None:
    """Configure JWT and install the authentication hook (after the request-id hook)."""
    app.config.update(
        JWT_SECRET_KEY=settings.secret_key,
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.access_token_minutes),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings.refresh_token_days),
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ALGORITHM="HS256",
    )
    jwt.init_app(app)
    app.before_request(authenticate)


def issue_tokens(principal: accounts.Principal, *, with_refresh: bool = True) -> dict[str, Any]:
    claims = {"role": principal.role, "username": principal.username}
    out: dict[str, Any] = {
        "access_token": create_access_token(identity=str(principal.user_id), additional_claims=claims),
        "token_type": "Bearer",
        "expires_in": rt().settings.access_token_minutes * 60,
    }
    if with_refresh:
        out["refresh_token"] = create_refresh_token(identity=str(principal.user_id))
    return out


# ---- /api/v1/auth ---------------------------------------------------------------------------

ns = Namespace("auth", description="Accounts: register, sign in, refresh the access token")
schemas.attach(ns)

credentials_model = ns.model("Credentials", {
    "username": fields.String(required=True, example="ada"),
    "password": fields.String(required=True, example="correct horse battery staple"),
})
user_model = ns.model("User", {
    "user_id": fields.String(required=True), "username": fields.String(required=True),
    "role": fields.String(required=True, enum=list(accounts.ROLES)), "created_at": fields.String(),
})
tokens_model = ns.model("Tokens", {
    "access_token": fields.String(required=True),
    "refresh_token": fields.String(description="absent from /refresh answers"),
    "token_type": fields.String(required=True, example="Bearer"),
    "expires_in": fields.Integer(required=True, description="seconds the access token is valid"),
})
refresh_model = ns.model("Refresh", {
    "refresh_token": fields.String(description="or send it as 'Authorization: Bearer <refresh token>'"),
})


def _credentials_body() -> tuple[str, str]:
    body = json_body()
    reject_unknown(body, {"username", "password"})
    return require_str(body, "username", max_len=64), require_str(body, "password", max_len=accounts.MAX_PASSWORD)


@ns.route("/register")
class Register(Resource):
    decorators = [login_limit]

    @ns.doc("register", security=[])
    @ns.expect(credentials_model, validate=False)
    @ns.response(201, "Created", user_model)
    @ns.response(400, "Invalid username or password", schemas.error)
    @ns.response(409, "Username taken", schemas.error)
    @ns.response(429, "Too many attempts from this address", schemas.error)
    def post(self) -> Any:
        """Create an account (role `user`). Sign in with POST /api/v1/auth/login."""
        username, password = _credentials_body()
        return accounts.create_user(rt().db, username, password), 201


@ns.route("/login")
class Login(Resource):
    decorators = [login_limit]

    @ns.doc("login", security=[])
    @ns.expect(credentials_model, validate=False)
    @ns.response(200, "Signed in", tokens_model)
    @ns.response(401, "Wrong username or password", schemas.error)
    @ns.response(429, "Too many attempts from this address", schemas.error)
    def post(self) -> Any:
        """Sign in: a short-lived access token (send it as `Authorization: Bearer ...`) and a
        refresh token."""
        username, password = _credentials_body()
        principal = accounts.authenticate(rt().db, username, password)
        if principal is None:
            raise Unauthorized("wrong username or password", code="INVALID_CREDENTIALS")
        return issue_tokens(principal)


@ns.route("/refresh")
class Refresh(Resource):
    @ns.doc("refresh", security=[])
    @ns.expect(refresh_model, validate=False)
    @ns.response(200, "A new access token", tokens_model)
    @ns.response(401, "Missing, expired or invalid refresh token", schemas.error)
    def post(self) -> Any:
        """Exchange a refresh token for a new access token."""
        body = json_body(allow_empty=True)
        reject_unknown(body, {"refresh_token"})
        token = body.get("refresh_token")
        if token is None:
            scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
            if scheme.lower() != "bearer":
                token = ""
        if not isinstance(token, str) or not token.strip():
            raise Unauthorized("send the refresh token as body 'refresh_token' or 'Authorization: Bearer <token>'",
                               code="INVALID_TOKEN")
        try:
            claims = decode_token(token.strip())
        except ExpiredSignatureError as exc:
            raise Unauthorized("the refresh token has expired; sign in again", code="TOKEN_EXPIRED") from exc
        except (JWTExtendedException, PyJWTError, ValueError) as exc:
            raise Unauthorized("the refresh token is not valid", code="INVALID_TOKEN") from exc
        if claims.get("type") != "refresh":
            raise Unauthorized("that is not a refresh token", code="INVALID_TOKEN")
        try:
            principal = accounts.get_principal(rt().db, uuid.UUID(str(claims["sub"])))
        except (KeyError, ValueError):
            principal = None
        if principal is None:
            raise Unauthorized("the account no longer exists", code="INVALID_TOKEN")
        return issue_tokens(principal, with_refresh=False)


@ns.route("/me")
class Me(Resource):
    @ns.doc("whoami")
    @ns.response(200, "The signed-in user", user_model)
    @ns.response(401, "Not signed in", schemas.error)
    @login_required
    def get(self) -> Any:
        """The signed-in user."""
        principal = accounts.get_principal(rt().db, cast(uuid.UUID, current_user_id()))
        if principal is None:
            raise Unauthorized("the account no longer exists", code="INVALID_TOKEN")
        return {"user_id": str(principal.user_id), "username": principal.username, "role": principal.role}
