"""Accounts, idempotency, validation, waiting and statistics services against the database layer."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest

from livecode.errors import ApiError
from livecode.models import utcnow
from livecode.services import accounts, idempotency, validation
from livecode.services.waiting import wait_for_end
from tests.support.inprocess import Rows

PW = "correct horse battery"


# ---- accounts ------------------------------------------------------------------------------


def test_usernames_fold_to_one_spelling(db: Any) -> None:
    assert accounts.normalize_username("ＡＬＩＣＥ") == "alice"
    created = accounts.create_user(db, "Alice", PW)
    assert created["username"] == "alice" and created["role"] == "user"
    with pytest.raises(ApiError) as e:
        accounts.create_user(db, "ALICE", PW)
    assert (e.value.status, e.value.code) == (409, "USERNAME_TAKEN")


@pytest.mark.parametrize(
    ("username", "password", "code"),
    [("ab", PW, "INVALID_USERNAME"), ("ok_name", "short", "INVALID_PASSWORD"),
     ("ok_name", "password123", "COMMON_PASSWORD"), ("ok_name", "x" * 1025, "INVALID_PASSWORD")],
)
def test_bad_credentials_are_refused(db: Any, username: str, password: str, code: str) -> None:
    with pytest.raises(ApiError) as e:
        accounts.create_user(db, username, password)
    assert (e.value.status, e.value.code) == (400, code)
    with pytest.raises(ApiError) as e:
        accounts.create_user(db, "fine_name", PW, role="root")
    assert e.value.code == "INVALID_ROLE"


def test_authenticate_roles_and_deletion(db: Any) -> None:
    uid = uuid.UUID(accounts.create_user(db, "carol", PW)["user_id"])
    principal = accounts.authenticate(db, "CAROL", PW)
    assert principal is not None and (principal.user_id, principal.role) == (uid, "user")
    assert accounts.authenticate(db, "carol", "wrong password") is None
    assert accounts.authenticate(db, "nobody", PW) is None
    assert accounts.set_role(db, "carol", "admin")
    assert accounts.authenticate(db, "carol", PW).role == "admin"  # type: ignore[union-attr]
    assert not accounts.set_role(db, "nobody", "admin")
    assert accounts.delete_user(db, "carol") and not accounts.delete_user(db, "carol")
    assert accounts.authenticate(db, "carol", PW) is None


def test_the_hash_cost_is_a_setting_and_a_sign_in_moves_a_password_to_it(db: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(db, "settings", dataclasses.replace(
        db.settings, password_hash_memory_kib=64, password_hash_time_cost=1))
    accounts.create_user(db, "carol", PW)

    def stored() -> str:
        return str(Rows(db.settings.database_url).one("users", "username = 'carol'")["password_hash"])

    assert "$m=64,t=1," in stored()
    monkeypatch.setattr(db, "settings", dataclasses.replace(db.settings, password_hash_memory_kib=128))
    assert accounts.authenticate(db, "carol", "wrong password") is None
    assert "$m=64,t=1," in stored()  # a failed sign-in changes nothing
    assert accounts.authenticate(db, "carol", PW) is not None
    assert "$m=128,t=1," in stored()  # rehashed at the new cost
    assert accounts.authenticate(db, "carol", PW) is not None


def test_refresh_rotation_reuse_and_revocation(db: Any) -> None:
    uid = uuid.UUID(accounts.create_user(db, "dave", PW)["user_id"])
    family = uuid.uuid4()
    later = utcnow() + timedelta(days=1)
    accounts.record_refresh(db, "jti-1", uid, family, later)
    assert accounts.family_of(db, "jti-1") == (uid, family)
    assert accounts.family_of(db, "nope") is None
    principal, fam = accounts.use_refresh(db, "jti-1", uid, 0)
    assert fam == family and principal.user_id == uid
    assert accounts.principal_for_token(db, uid, 0, family) is not None
    with pytest.raises(ApiError) as e:  # used twice: a stolen copy
        accounts.use_refresh(db, "jti-1", uid, 0)
    assert e.value.code == "TOKEN_REUSED"
    assert accounts.principal_for_token(db, uid, 0, family) is None
    other = uuid.uuid4()
    accounts.record_refresh(db, "jti-2", uid, other, later)
    accounts.revoke_family(db, uid, other)
    with pytest.raises(ApiError) as e:
        accounts.use_refresh(db, "jti-2", uid, 0)
    assert e.value.code == "TOKEN_REVOKED"
    accounts.record_refresh(db, "jti-3", uid, uuid.uuid4(), utcnow() - timedelta(seconds=1))
    with pytest.raises(ApiError):  # expired
        accounts.use_refresh(db, "jti-3", uid, 0)


def test_password_change_bumps_the_token_version(db: Any) -> None:
    uid = uuid.UUID(accounts.create_user(db, "erin", PW)["user_id"])
    assert accounts.principal_for_token(db, uid, 0, None) is not None
    with pytest.raises(ApiError) as e:
        accounts.change_password(db, uid, "wrong one!", "a brand new passphrase")
    assert (e.value.status, e.value.code) == (403, "INVALID_CREDENTIALS")
    principal = accounts.change_password(db, uid, PW, "a brand new passphrase")
    assert principal.token_version == 1
    assert accounts.principal_for_token(db, uid, 0, None) is None
    assert accounts.principal_for_token(db, uid, 1, None) is not None
    assert accounts.authenticate(db, "erin", "a brand new passphrase") is not None
    with pytest.raises(ApiError) as e:
        accounts.change_password(db, uuid.uuid4(), PW, "whatever it is")
    assert e.value.code == "ACCOUNT_GONE"


def test_api_keys(db: Any, settings: Any) -> None:
    uid = uuid.UUID(accounts.create_user(db, "frank", PW)["user_id"])
    created = accounts.create_api_key(db, uid, "ci", 1)
    key = created["key"]
    assert accounts.principal_for_key(db, key).user_id == uid  # type: ignore[union-attr]
    assert accounts.principal_for_key(db, "lc_unknown") is None
    assert accounts.principal_for_key(db, "not-a-key") is None
    assert [k["id"] for k in accounts.list_api_keys(db, uid)] == [created["id"]]
    assert key not in str(Rows(settings.database_url).snapshot())  # only the hash is stored
    accounts.revoke_api_key(db, uid, uuid.UUID(created["id"]))
    assert accounts.principal_for_key(db, key) is None
    accounts.revoke_api_key(db, uid, uuid.UUID(created["id"]))  # revoking twice is fine
    with pytest.raises(ApiError) as e:
        accounts.revoke_api_key(db, uuid.uuid4(), uuid.UUID(created["id"]))
    assert e.value.code == "API_KEY_NOT_FOUND"
    with pytest.raises(ApiError):
        accounts.create_api_key(db, uid, "n" * 101)


def test_too_many_keys(db: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "MAX_KEYS_PER_USER", 2)
    uid = uuid.UUID(accounts.create_user(db, "gina", PW)["user_id"])
    accounts.create_api_key(db, uid, "a")
    accounts.create_api_key(db, uid, "b")
    with pytest.raises(ApiError) as e:
        accounts.create_api_key(db, uid, "c")
    assert (e.value.status, e.value.code) == (409, "TOO_MANY_KEYS")


def test_invitations_are_single_use(db: Any) -> None:
    code = accounts.create_invitation(db, None, days=1)["code"]
    accounts.create_user(db, "hank", PW, invitation=code)
    with pytest.raises(ApiError) as e:
        accounts.create_user(db, "hope", PW, invitation=code)
    assert e.value.code == "INVALID_INVITATION"
    assert accounts.authenticate(db, "hope", PW) is None  # the refused registration left no account


# ---- idempotency ---------------------------------------------------------------------------


def test_run_once_replays_and_refuses_another_body(db: Any) -> None:
    calls: list[int] = []

    def work() -> tuple[dict[str, Any], int]:
        calls.append(1)
        return {"n": len(calls)}, 201

    assert idempotency.run_once(db, "s", "k", {"a": 1}, work) == ({"n": 1}, 201)
    assert idempotency.run_once(db, "s", "k", {"a": 1}, work) == ({"n": 1}, 201)
    assert idempotency.run_once(db, "other-scope", "k", {"a": 1}, work) == ({"n": 2}, 201)
    with pytest.raises(ApiError) as e:
        idempotency.run_once(db, "s", "k", {"a": 2}, work)
    assert (e.value.status, e.value.code) == (422, "IDEMPOTENCY_KEY_REUSED")


def test_a_failed_work_frees_its_key(db: Any) -> None:
    def fail() -> tuple[dict[str, Any], int]:
        raise ApiError("nope", status=404)

    with pytest.raises(ApiError):
        idempotency.run_once(db, "s", "k", {}, fail)
    assert idempotency.run_once(db, "s", "k", {}, lambda: ({"ok": True}, 200)) == ({"ok": True}, 200)


def test_a_twin_waits_for_the_first_answer(db: Any) -> None:
    started, release = threading.Event(), threading.Event()
    results: list[Any] = []

    def slow() -> tuple[dict[str, Any], int]:
        started.set()
        release.wait(5)
        return {"first": True}, 202

    t = threading.Thread(target=lambda: results.append(idempotency.run_once(db, "s", "k", {}, slow)))
    t.start()
    assert started.wait(5)
    twin = threading.Thread(target=lambda: results.append(
        idempotency.run_once(db, "s", "k", {}, lambda: ({"second": True}, 202))))
    twin.start()
    release.set()
    t.join(10)
    twin.join(10)
    assert results == [({"first": True}, 202)] * 2


def test_keys_and_expiry(db: Any, settings: Any) -> None:
    for bad in ("", "x" * 256, "a\nb"):
        with pytest.raises(ApiError):
            idempotency.check_key(bad)
    idempotency.check_key("ok-key")
    assert idempotency.request_fingerprint({"a": 1, "b": 2}) == idempotency.request_fingerprint({"b": 2, "a": 1})
    idempotency.run_once(db, "s", "old", {}, lambda: ({}, 200))
    idempotency.run_once(db, "s", "new", {}, lambda: ({}, 200))
    rows = Rows(settings.database_url)
    rows.execute("UPDATE idempotency_keys SET created_at = :t WHERE key = 'old'",
                 t=(utcnow() - timedelta(hours=25)).replace(tzinfo=None))
    assert idempotency.purge_expired(db) == 1
    assert rows.count("idempotency_keys") == 1


# ---- validation ----------------------------------------------------------------------------


def test_language_and_text_checks() -> None:
    from livecode.infra.languages import LocalLanguages

    assert "python" in (LocalLanguages().runnable() or set())  # this host's toolchains (embedded)
    validation.check_language("python")
    with pytest.raises(ApiError) as e:
        validation.check_language("brainfuck")
    assert e.value.code == "UNSUPPORTED_LANGUAGE" and "python" in e.value.details["supported"]
    validation.check_text("é" * 5, "stdin", 10)
    with pytest.raises(ApiError) as e:
        validation.check_text("é" * 6, "stdin", 10)
    assert (e.value.status, e.value.code) == (413, "INPUT_TOO_LARGE")
    with pytest.raises(ApiError) as e:
        validation.check_source("\x00", 10)
    assert e.value.code == "INVALID_SOURCE"


# ---- waiting and statistics (through the app's runtime) ------------------------------------


def test_wait_for_end_returns_the_finished_run_or_none(live: Any) -> None:
    from tests.support.inprocess import finish_like_a_worker

    sid = live.session()["session_id"]
    eid = uuid.UUID(live.execute(sid)["execution_id"])
    start = time.monotonic()
    assert wait_for_end(live.db, live.rt.events, eid, None, 0.05) is None
    assert time.monotonic() - start >= 0.05
    finish_like_a_worker(live, eid, stdout=b"x")
    assert wait_for_end(live.db, live.rt.events, eid, None, 5)["stdout"] == "x"  # type: ignore[index]
    assert wait_for_end(live.db, live.rt.events, eid, None, 5, encoding="base64")["stdout"] == "eA=="  # type: ignore[index]


def test_stats(live: Any) -> None:
    from livecode.services import stats

    sid = live.session()["session_id"]
    live.execute(sid)
    counted = stats.execution_stats(live.rt, 3600)
    assert counted == {"total": 1, "by_status": {"QUEUED": 1}, "by_language": {"python": {"QUEUED": 1}}}
    # Embedded: the broker is in memory, so the queue lengths are the QUEUED rows per priority.
    live.client.post("/api/v1/executions/batch", json={"executions": [{"session_id": sid}] * 2})
    assert stats.broker_queue_lengths(live.rt) == {live.settings.queue_high: 1, live.settings.queue_low: 2}
    assert stats.admin_stats(live.rt, 60)["executions"]["total"] == 3


def test_a_waiter_answers_from_the_row_its_notification_carried(live: Any) -> None:
    from livecode.models import Execution
    from tests.support.inprocess import finish_like_a_worker

    sid = live.session()["session_id"]
    eid = uuid.UUID(live.execute(sid)["execution_id"])
    watch = live.rt.events.watch_finished(str(eid))
    finish_like_a_worker(live, eid, stdout=b"carried")
    with live.db.write() as s:  # gone from the database: only the notification can answer
        s.query(Execution).filter(Execution.id == eid).delete()
    row = wait_for_end(live.db, live.rt.events, eid, None, 5, watch=watch)
    assert row is not None and row["status"] == "COMPLETED" and row["stdout"] == "carried"
