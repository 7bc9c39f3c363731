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
from ..services import accounts
from . import schemas
from .body import json_body, optional_int, reject_unknown, require_str
from .context import rt
from .ratelimit import login_limit

F = TypeVar("F", bound=Callable[..., Any])

jwt = JWTManager()

# Reachable without credentials even when sign-in is required.
PUBLIC_PREFIXES = ("/health", "/swaggerui/", "/static/", "/s/", "/judge0/languages/")
PUBLIC_PATHS = frozenset({
    "/docs", "/swagger.json", "/metrics", "/api/v1/languages", "/api/v1/auth/register",
    "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout", "/admin",
    # What a Judge0 client reads before it submits (as /api/v1/languages is public).
    "/judge0/languages", "/judge0/statuses", "/judge0/about", "/judge0/config_info", "/judge0/version",
    "/piston/api/v2/runtimes", "/piston/api/v2/packages", "/piston/openapi.json",  # and for a Piston client
})
# Browsers cannot set headers on WebSocket or EventSource requests: there, and only there, the
# access token may come as `?access_token=`.
STREAM_SUFFIXES = ("/events", "/stream", "/ws")
STREAM_PATHS = frozenset({"/piston/api/v2/connect"})  # Piston's interactive WebSocket
# Piston clients (piston_rs, ultra-piston, the public Piston forks) send their key bare, as
# `Authorization: <key>`: under /piston such a header is read as an API key.
BARE_KEY_PREFIX = "/piston/"

SIGN_IN_HINT = ("send 'Authorization: Bearer <access token>' (POST /api/v1/auth/login) "
                "or 'X-API-Key: <key>' (POST /api/v1/api-keys; Judge0 clients: 'X-Auth-Token: <key>')")


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
        family = uuid.UUID(str(claims["fam"])) if claims.get("fam") else None
        version = int(claims.get("tv", 0))
    except (KeyError, ValueError, TypeError) as exc:
        raise Unauthorized("the access token is not valid", code="INVALID_TOKEN") from exc
    # The token's signature proves who it was issued to; whether that still grants access (the
    # account exists, its role now, no password change or sign-out since) is checked here.
    principal = accounts.principal_for_token(rt().db, user_id, version, family)
    if principal is None:
        raise Unauthorized("this token no longer grants access: the account was deleted, its password "
                           "changed or it signed out since; sign in again", code="TOKEN_REVOKED")
    return principal


def credentials() -> accounts.Principal | None:
    """The caller named by the request's credentials, None if it sent none; 401 if they are bad."""
    # Judge0 clients send their token as X-Auth-Token: it is a LiveCode API key (docs/compat.md).
    # The headers read from the WSGI environ, as request.headers.get reads them (one dict lookup
    # each instead of a header object's ~8 calls, on every request).
    environ = request.environ
    key = environ.get("HTTP_X_API_KEY") or environ.get("HTTP_X_AUTH_TOKEN")
    header = environ.get("HTTP_AUTHORIZATION")
    if not key and header and request.path.startswith(BARE_KEY_PREFIX) and \
            header.strip().partition(" ")[0].lower() != "bearer":
        key = header
    if key:
        principal = accounts.principal_for_key(rt().db, key.strip())
        if principal is None:
            raise Unauthorized("the API key is not valid, has expired or has been revoked", code="INVALID_API_KEY")
        g.auth_method = "api_key"
        return principal
    if header:
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <access token>'", code="INVALID_TOKEN")
        g.auth_method = "token"
        return _principal_from_token(token.strip())
    if request.method == "GET" and (request.path.endswith(STREAM_SUFFIXES) or request.path in STREAM_PATHS):
        query_token = request.args.get("access_token")  # the query parsed only where it may say who
        if query_token:
            g.auth_method = "token"
            return _principal_from_token(query_token)
    return None


def authenticate() -> None:
    """Before every request: set g.user_id / g.user_role, or answer 401."""
    g.user_id = None
    g.user_role = None
    g.auth_method = None
    if is_public(request.path, request.method):
        if not rt().settings.auth_required:
            g.user_role = "admin"
        return
    principal = credentials()
    if principal is not None:
        g.user_id, g.user_role, g.username = principal.user_id, principal.role, principal.username
        g.key_callback_url = principal.callback_url
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


def token_login_required(fn: F) -> F:
    """For what only the account holder signed in with a password may do (create API keys, change
    the password): an API key, which may sit in a server's configuration, is not enough."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if g.get("user_id") is None:
            raise Unauthorized("this endpoint needs an account: " + SIGN_IN_HINT)
        if g.get("auth_method") != "token":
            raise Forbidden("this needs a sign-in token ('Authorization: Bearer <access token>' from "
                            "POST /api/v1/auth/login), not an API key", code="SIGN_IN_TOKEN_REQUIRED")
        return fn(*args, **kwargs)

    return cast(F, wrapper)


def issue_tokens(principal: accounts.Principal, family: uuid.UUID | None = None) -> dict[str, Any]:
    """An access token and a refresh token of one sign-in (`family`; a new one if None). The
    refresh token is recorded so it can be used exactly once."""
    family = family or uuid.uuid4()
    claims = {"role": principal.role, "username": principal.username, "tv": principal.token_version,
              "fam": str(family)}
    jti = str(uuid.uuid4())
    settings = rt().settings
    refresh = create_refresh_token(identity=str(principal.user_id),
                                   additional_claims={"jti": jti, "tv": principal.token_version})
    accounts.record_refresh(rt().db, jti, principal.user_id, family,
                            accounts.utcnow() + timedelta(days=settings.refresh_token_days))
    return {
        "access_token": create_access_token(identity=str(principal.user_id), additional_claims=claims),
        "refresh_token": refresh,
        "token_type": "Bearer",
        "expires_in": settings.access_token_minutes * 60,
    }


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
    "refresh_token": fields.String(required=True, description="use once: /refresh answers with the next one"),
    "token_type": fields.String(required=True, example="Bearer"),
    "expires_in": fields.Integer(required=True, description="seconds the access token is valid"),
})
refresh_model = ns.model("Refresh", {
    "refresh_token": fields.String(description="or send it as 'Authorization: Bearer <refresh token>'"),
})
register_model = ns.inherit("Registration", credentials_model, {
    "invitation": fields.String(description="the invitation code, when registration is by invitation"),
})
password_model = ns.model("PasswordChange", {
    "current_password": fields.String(required=True), "new_password": fields.String(required=True),
})
invitation_create = ns.model("InvitationCreate", {
    "days": fields.Integer(description="days the code stays valid (1 to 90, default 7)"),
})
invitation_model = ns.model("Invitation", {
    "code": fields.String(required=True, description="give it to the person who registers; shown only now"),
    "expires_at": fields.String(required=True),
})


def _credentials_body(extra: frozenset[str] = frozenset()) -> tuple[str, str, dict[str, Any]]:
    body = json_body()
    reject_unknown(body, {"username", "password", *extra})
    username = require_str(body, "username", max_len=64)
    return username, require_str(body, "password", max_len=accounts.MAX_PASSWORD), body


def _refresh_token_from_request(body: dict[str, Any]) -> str:
    token = body.get("refresh_token")
    if token is None:
        scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer":
            token = ""
    if not isinstance(token, str) or not token.strip():
        raise Unauthorized("send the refresh token as body 'refresh_token' or 'Authorization: Bearer <token>'",
                           code="INVALID_TOKEN")
    return token.strip()


@ns.route("/register")
class Register(Resource):
    decorators = [login_limit]

    @ns.doc("register", security=[])
    @ns.expect(register_model, validate=False)
    @ns.response(201, "Created", user_model)
    @ns.response(400, "Invalid username, password or invitation", schemas.error)
    @ns.response(403, "Registration is closed", schemas.error)
    @ns.response(409, "Username taken", schemas.error)
    @ns.response(429, "Too many attempts from this address", schemas.error)
    def post(self) -> Any:
        """Create an account (role `user`). Sign in with POST /api/v1/auth/login. Usernames are
        case-insensitive (NFKC, case-folded); common passwords are refused. When the operator
        requires invitations, send the code as `invitation`."""
        settings = rt().settings
        if settings.registration == "closed":
            raise Forbidden("registration is closed on this service: ask an operator for an account",
                            code="REGISTRATION_CLOSED")
        username, password, body = _credentials_body(frozenset({"invitation"}))
        invitation = None
        if settings.registration == "invite":
            invitation = body.get("invitation")
            if not isinstance(invitation, str) or not invitation.strip() or len(invitation) > 200:
                raise Forbidden("registration needs an invitation code: send it as 'invitation'",
                                code="INVITATION_REQUIRED")
        elif "invitation" in body:
            reject_unknown(body, {"username", "password"})
        return accounts.create_user(rt().db, username, password, min_password=settings.password_min_length,
                                    invitation=invitation), 201


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
        username, password, _ = _credentials_body()
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
        """Exchange a refresh token for a new access token and the next refresh token. Each refresh
        token works once: presenting a used one again revokes every token of that sign-in."""
        body = json_body(allow_empty=True)
        reject_unknown(body, {"refresh_token"})
        claims = _refresh_claims(_refresh_token_from_request(body))
        try:
            user_id = uuid.UUID(str(claims["sub"]))
            version = int(claims.get("tv", 0))
            jti = str(claims["jti"])
        except (KeyError, ValueError, TypeError) as exc:
            raise Unauthorized("the refresh token is not valid", code="INVALID_TOKEN") from exc
        principal, family = accounts.use_refresh(rt().db, jti, user_id, version)
        return issue_tokens(principal, family)


def _refresh_claims(token: str, *, allow_expired: bool = False) -> dict[str, Any]:
    if len(token) > 4096:
        raise Unauthorized("the refresh token is not valid", code="INVALID_TOKEN")
    try:
        claims = decode_token(token, allow_expired=allow_expired)
    except ExpiredSignatureError as exc:
        raise Unauthorized("the refresh token has expired; sign in again", code="TOKEN_EXPIRED") from exc
    except (JWTExtendedException, PyJWTError, ValueError) as exc:
        raise Unauthorized("the refresh token is not valid", code="INVALID_TOKEN") from exc
    if claims.get("type") != "refresh":
        raise Unauthorized("that is not a refresh token", code="INVALID_TOKEN")
    return claims  # type: ignore[no-any-return]


@ns.route("/logout")
class Logout(Resource):
    @ns.doc("logout", security=[])
    @ns.expect(refresh_model, validate=False)
    @ns.response(204, "Signed out: the refresh token and the access tokens of this sign-in no longer work")
    @ns.response(401, "No valid token was sent", schemas.error)
    def post(self) -> Any:
        """End this sign-in: revokes its refresh token (and the next ones) and, within seconds on
        every API process, its access tokens. Send the refresh token, or the access token as
        `Authorization: Bearer ...`."""
        body = json_body(allow_empty=True)
        reject_unknown(body, {"refresh_token"})
        token = _refresh_token_from_request(body)
        try:
            claims = decode_token(token, allow_expired=True) if len(token) <= 4096 else {}
        except (JWTExtendedException, PyJWTError, ValueError):
            claims = {}
        try:
            user_id = uuid.UUID(str(claims["sub"]))
            if claims.get("type") == "refresh":
                found = accounts.family_of(rt().db, str(claims["jti"]))
                family = found[1] if found and found[0] == user_id else None
            else:
                family = uuid.UUID(str(claims["fam"]))
        except (KeyError, ValueError, TypeError):
            family = None
        if family is None:
            raise Unauthorized("send this sign-in's refresh token or access token", code="INVALID_TOKEN")
        accounts.revoke_family(rt().db, user_id, family)
        return "", 204


@ns.route("/password")
class Password(Resource):
    @ns.doc("change_password")
    @ns.expect(password_model, validate=False)
    @ns.response(200, "Changed; every earlier token is revoked; here are new ones", tokens_model)
    @ns.response(400, "The new password is not acceptable", schemas.error)
    @ns.response(403, "Wrong current password, or not signed in with a token", schemas.error)
    @token_login_required
    def post(self) -> Any:
        """Change your password. Every access and refresh token issued before (on any device) stops
        working; the answer carries tokens for this sign-in. API keys are not affected."""
        body = json_body()
        reject_unknown(body, {"current_password", "new_password"})
        current = require_str(body, "current_password", max_len=accounts.MAX_PASSWORD)
        new = require_str(body, "new_password", max_len=accounts.MAX_PASSWORD)
        principal = accounts.change_password(rt().db, cast(uuid.UUID, current_user_id()), current, new,
                                             rt().settings.password_min_length)
        return issue_tokens(principal)


@ns.route("/invitations")
class Invitations(Resource):
    @ns.doc("create_invitation")
    @ns.expect(invitation_create, validate=False)
    @ns.response(201, "A one-time registration code", invitation_model)
    @ns.response(403, "Needs the admin role", schemas.error)
    @admin_required
    def post(self) -> Any:
        """Operators: a one-time code for someone to register with (LIVECODE_REGISTRATION=invite)."""
        body = json_body(allow_empty=True)
        reject_unknown(body, {"days"})
        days = optional_int(body, "days", minimum=1, maximum=90) or 7
        return accounts.create_invitation(rt().db, current_user_id(), days), 201


@ns.route("/me")
class Me(Resource):
    @ns.doc("whoami")
    @ns.response(200, "The signed-in user", user_model)
    @ns.response(401, "Not signed in", schemas.error)
    @login_required
    def get(self) -> Any:
        """The signed-in user."""
        return {"user_id": str(g.user_id), "username": g.get("username", ""), "role": g.user_role}
