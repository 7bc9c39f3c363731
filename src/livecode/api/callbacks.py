"""The callback_url of an execute or batch request (or the API key's default): checked at submit
time (400 INVALID_CALLBACK_URL) and scheduled in the submission's transaction
(services/webhooks/store.py)."""

from __future__ import annotations

import uuid
from typing import Any

from flask import g

from ..models import utcnow
from ..services.webhooks import signing
from ..services.webhooks.store import Callback, schedule
from ..services.webhooks.urls import check_callback
from .context import owner_id, rt


def callback_for(body: dict[str, Any]) -> Callback | None:
    """The request's callback_url (checked: 400 INVALID_CALLBACK_URL), else the API key's default."""
    url = body.get("callback_url")
    if url is None:
        url = g.get("key_callback_url")
        if not url:
            return None
    return Callback(check_callback(url, rt().settings.webhook_allow), "livecode", rt().settings.webhook_max_attempts)


def schedule_hook(callback: Callback | None) -> Any:
    """An after_insert hook for services.executions.submit_execution (one execution)."""
    if callback is None:
        return None

    # Signed with the secret of who asked for the callback (an editor of someone else's session
    # gets their own signature), as a batch's are.
    caller = signing.owner_key(owner_id())

    def hook(conn: Any, execution_id: uuid.UUID, _owner: uuid.UUID | None) -> None:
        schedule(conn, [execution_id], caller, callback, utcnow())

    return hook


def schedule_batch_hook(callback: Callback | None) -> Any:
    """An after_insert hook for services.batch.submit_batch (every run of the batch)."""
    if callback is None:
        return None
    owner = signing.owner_key(owner_id())

    def hook(session: Any, ids: list[uuid.UUID]) -> None:
        schedule(session, ids, owner, callback, utcnow())

    return hook
