"""Webhooks: the caller's signing secret (/api/v1/webhooks/secret), the deliveries of an
execution (/api/v1/executions/{id}/deliveries), and the callback_url of execute and batch
requests (services/webhooks)."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource, fields

from ..services.webhooks import signing
from ..services.webhooks.store import list_deliveries
from . import schemas
from .body import parse_uuid
from .context import owner_id, rt
from .executions import ns as executions_ns

ns = Namespace("webhooks", description="Signed callbacks when an execution ends (callback_url)")
schemas.attach(ns)

secret_model = ns.model(
    "WebhookSecret",
    {
        "secret": fields.String(required=True, description="shown only in this answer; signs every delivery"),
        "created_at": fields.String(required=True),
    },
)
secret_info = ns.model(
    "WebhookSecretInfo",
    {
        "exists": fields.Boolean(required=True),
        "created_at": schemas.nullable(fields.String()),
    },
)
try_model = ns.model(
    "WebhookTry",
    {
        "attempt": fields.Integer(),
        "at": fields.String(),
        "status_code": schemas.nullable(fields.Integer()),
        "error": schemas.nullable(fields.String()),
        "duration_ms": fields.Integer(),
    },
)
delivery_model = ns.model(
    "WebhookDelivery",
    {
        "delivery_id": fields.String(required=True),
        "url": fields.String(required=True),
        "kind": fields.String(enum=["livecode", "judge0"]),
        "state": fields.String(required=True, enum=["pending", "delivered", "failed"]),
        "attempts": fields.Integer(required=True),
        "max_attempts": fields.Integer(),
        "next_attempt_at": schemas.nullable(fields.String()),
        "created_at": fields.String(),
        "finished_at": schemas.nullable(fields.String()),
        "tries": fields.List(fields.Nested(try_model)),
    },
)
deliveries_model = executions_ns.model(
    "WebhookDeliveries",
    {
        "execution_id": fields.String(required=True),
        "deliveries": fields.List(fields.Nested(delivery_model), required=True),
    },
)


@ns.route("/secret")
class Secret(Resource):
    @ns.doc("rotate_webhook_secret")
    @ns.response(201, "A new secret; the previous one stops signing now", secret_model)
    def post(self) -> Any:
        """Create or rotate your webhook secret. It is shown only in this answer: keep it to check
        `X-LiveCode-Signature` (HMAC-SHA256 of `<X-LiveCode-Timestamp>.<body>`)."""
        return signing.rotate_secret(rt().db, signing.owner_key(owner_id())), 201

    @ns.doc("webhook_secret_info")
    @ns.response(200, "Whether you have a secret, and since when (never the secret)", secret_info)
    def get(self) -> Any:
        """Whether you have a webhook secret (it is never shown again)."""
        return signing.secret_info(rt().db, signing.owner_key(owner_id()))


@executions_ns.route("/<string:execution_id>/deliveries")
@executions_ns.param("execution_id", "the execution's UUID")
class Deliveries(Resource):
    @executions_ns.doc("list_webhook_deliveries")
    @executions_ns.response(200, "Every callback of the execution and the outcome of each try", deliveries_model)
    @executions_ns.response(404, "No such execution", schemas.error)
    def get(self, execution_id: str) -> Any:
        """The webhook deliveries of an execution: state (pending, delivered, failed) and each try."""
        eid = parse_uuid(execution_id, "execution_id")
        return list_deliveries(rt().db, eid, owner_id())
