"""/api/v1/api-keys: keys for server-to-server clients, sent as `X-API-Key`."""

from __future__ import annotations

import uuid
from typing import Any, cast

from flask_restx import Namespace, Resource, fields

from ..services import accounts
from ..services.webhooks.urls import check_callback
from . import schemas
from .auth import current_user_id, login_required, token_login_required
from .body import json_body, optional_int, optional_str, parse_uuid, reject_unknown
from .context import rt

ns = Namespace("api-keys", description="API keys for server-to-server clients (header X-API-Key)")
schemas.attach(ns)

key_create = ns.model("ApiKeyCreate", {
    "name": fields.String(example="ci-bot", description="a label for you"),
    "expires_in_days": fields.Integer(example=90, description="the key stops working after this many days "
                                                              "(1 to 3650); without it, when revoked"),
    "callback_url": fields.String(description="the default webhook of the runs submitted with this key "
                                              "(a request's own callback_url wins)"),
})
key_model = ns.model("ApiKey", {
    "id": fields.String(required=True),
    "name": fields.String(required=True),
    "prefix": fields.String(required=True, description="the key's first characters, to recognise it"),
    "created_at": fields.String(required=True),
    "revoked_at": fields.String(),
    "expires_at": fields.String(),
    "callback_url": schemas.nullable(fields.String()),
})
key_created = ns.inherit("ApiKeyCreated", key_model, {
    "key": fields.String(required=True, description="the secret; shown only in this answer"),
})
key_list = ns.model("ApiKeyList", {"items": fields.List(fields.Nested(key_model), required=True)})


def _me() -> uuid.UUID:
    return cast(uuid.UUID, current_user_id())


@ns.route("")
class KeyList(Resource):
    @ns.doc("create_api_key")
    @ns.expect(key_create, validate=False)
    @ns.response(201, "Created; the key is shown only now", key_created)
    @ns.response(401, "Not signed in", schemas.error)
    @ns.response(403, "Signed in with an API key: creating keys needs a sign-in token", schemas.error)
    @token_login_required
    def post(self) -> Any:
        """Create an API key. Store the returned `key`: only its hash is kept. Needs a sign-in
        token (an API key cannot make more keys)."""
        body = json_body(allow_empty=True)
        reject_unknown(body, {"name", "expires_in_days", "callback_url"})
        name = optional_str(body, "name", "", max_len=100) or ""
        days = optional_int(body, "expires_in_days", minimum=1, maximum=3650)
        callback = body.get("callback_url")
        if callback is not None:
            callback = check_callback(callback, rt().settings.webhook_allow)
        return accounts.create_api_key(rt().db, _me(), name, days, callback), 201

    @ns.doc("list_api_keys")
    @ns.response(200, "Your keys, newest first (without secrets)", key_list)
    @ns.response(401, "Not signed in", schemas.error)
    @login_required
    def get(self) -> Any:
        """List your API keys."""
        return {"items": accounts.list_api_keys(rt().db, _me())}


@ns.route("/<string:key_id>")
@ns.param("key_id", "the key's id")
class KeyItem(Resource):
    @ns.doc("revoke_api_key")
    @ns.response(204, "Revoked")
    @ns.response(404, "No such key", schemas.error)
    @login_required
    def delete(self, key_id: str) -> Any:
        """Revoke a key; requests using it are refused from now on."""
        accounts.revoke_api_key(rt().db, _me(), parse_uuid(key_id, "key_id"))
        return "", 204
