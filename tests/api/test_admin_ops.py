"""Operator routes (stats, dead letters), health, metrics, languages, the playground and docs,
and the error shape of what matches no route."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.orm import Session

from livecode.models import DeadLetter
from tests.support.inprocess import LiveApp, expect_error, finish_like_a_worker, uid
from tests.support.users import sign_up

ADMIN = "/api/v1/admin"


def dead_letter(live: LiveApp, execution_id: str) -> str:
    """What a worker leaves when a task gave up after its retries: the letter, and its execution
    FAILED with reason DEAD_LETTER."""
    dl_id = uuid.uuid4()
    now = datetime.now(UTC)
    with Session(live.rows.engine) as s, s.begin():
        s.add(DeadLetter(id=dl_id, execution_id=uuid.UUID(execution_id), task_name="livecode.execute",
                         error="OperationalError: gone", attempts=3, first_failed_at=now, created_at=now))
    live.rows.execute("UPDATE executions SET status = 'FAILED', reason = 'DEAD_LETTER' WHERE id = :id",
                      id=uid(execution_id))
    return str(dl_id)


def test_stats_count_executions_by_status_and_language(live: LiveApp) -> None:
    a = live.session()["session_id"]
    b = live.session("echo hi", language="bash")["session_id"]
    finish_like_a_worker(live, live.execute(a)["execution_id"])
    live.execute(a)
    live.execute(b)
    r = live.client.get(f"{ADMIN}/stats?window_s=600")
    assert r.status_code == 200
    body = r.get_json()
    assert body["window_s"] == 600
    assert body["executions"]["total"] == 3
    assert body["executions"]["by_status"] == {"COMPLETED": 1, "QUEUED": 2}
    assert body["executions"]["by_language"] == {"python": {"COMPLETED": 1, "QUEUED": 1}, "bash": {"QUEUED": 1}}
    assert body["workers"] == {"count": 0, "nodes": {}}


@pytest.mark.parametrize("query", ["window_s=59", "window_s=2592001", "window_s=x"])
def test_stats_bad_window_is_400(live: LiveApp, query: str) -> None:
    expect_error(live.client.get(f"{ADMIN}/stats?{query}"), 400, "INVALID_QUERY")


def test_admin_routes_need_the_admin_role(secure: LiveApp) -> None:
    user = sign_up(secure)
    admin = sign_up(secure, role="admin")
    for method, path in [("GET", "/stats"), ("GET", "/dead-letters"), ("DELETE", "/dead-letters"),
                         ("GET", f"/dead-letters/{uuid.uuid4()}"), ("DELETE", f"/dead-letters/{uuid.uuid4()}"),
                         ("POST", f"/dead-letters/{uuid.uuid4()}/requeue")]:
        expect_error(secure.client.open(ADMIN + path, method=method), 401)
        expect_error(secure.client.open(ADMIN + path, method=method, headers=user.headers), 403, "ADMIN_REQUIRED")
    assert secure.client.get(f"{ADMIN}/stats", headers=admin.headers).status_code == 200
    assert secure.client.get(f"{ADMIN}/dead-letters", headers=admin.headers).get_json() == {"items": [], "count": 0}


def test_dead_letters_list_get_requeue_and_delete(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    eid = live.execute(sid)["execution_id"]
    dl = dead_letter(live, eid)
    listed = live.client.get(f"{ADMIN}/dead-letters").get_json()
    assert listed["count"] == 1
    item = listed["items"][0]
    assert (item["id"], item["execution_id"], item["execution_status"], item["attempts"]) == (dl, eid, "FAILED", 3)
    assert item["requeued_at"] is None
    assert live.client.get(f"{ADMIN}/dead-letters/{dl}").get_json() == item

    r = live.client.post(f"{ADMIN}/dead-letters/{dl}/requeue")
    assert r.status_code == 202
    assert r.get_json()["execution_status"] == "QUEUED" and r.get_json()["requeued_at"]
    assert live.enqueued.ids[-1] == eid
    row = live.rows.one("executions", "id = :id", id=uid(eid))
    assert (row["status"], row["reason"]) == ("QUEUED", None)
    # Requeued already: nothing more to do.
    expect_error(live.client.post(f"{ADMIN}/dead-letters/{dl}/requeue"), 409, "DEAD_LETTER_NOT_REQUEUEABLE")

    r = live.client.delete(f"{ADMIN}/dead-letters/{dl}")
    assert r.status_code == 204
    expect_error(live.client.get(f"{ADMIN}/dead-letters/{dl}"), 404, "DEAD_LETTER_NOT_FOUND")
    expect_error(live.client.delete(f"{ADMIN}/dead-letters/{dl}"), 404, "DEAD_LETTER_NOT_FOUND")
    # The execution stays as it is.
    assert live.rows.one("executions", "id = :id", id=uid(eid))["status"] == "QUEUED"


def test_requeue_while_the_session_has_another_run_is_409(live: LiveApp) -> None:
    sid = live.session()["session_id"]
    dl = dead_letter(live, live.execute(sid)["execution_id"])
    live.execute(sid)  # the user ran it again meanwhile
    before = live.rows.snapshot()
    expect_error(live.client.post(f"{ADMIN}/dead-letters/{dl}/requeue"), 409, "EXECUTION_IN_PROGRESS")
    assert live.rows.snapshot() == before


def test_purge_deletes_every_dead_letter(live: LiveApp) -> None:
    for _ in range(2):
        dead_letter(live, live.execute(live.session()["session_id"])["execution_id"])
    assert live.client.delete(f"{ADMIN}/dead-letters").get_json() == {"purged": 2}
    assert live.rows.count("dead_letters") == 0 and live.rows.count("executions") == 2


def test_dead_letter_errors(live: LiveApp) -> None:
    for method, path in [("GET", "/dead-letters/x"), ("DELETE", "/dead-letters/x"),
                         ("POST", "/dead-letters/x/requeue")]:
        expect_error(live.client.open(ADMIN + path, method=method), 400, "INVALID_ID")
    expect_error(live.client.post(f"{ADMIN}/dead-letters/{uuid.uuid4()}/requeue"), 404, "DEAD_LETTER_NOT_FOUND")
    for query in ("limit=0", "limit=1001"):
        expect_error(live.client.get(f"{ADMIN}/dead-letters?{query}"), 400, "INVALID_QUERY")


# ---- health, metrics, languages ------------------------------------------------------------


def test_health_reports_the_database_and_the_in_process_broker(live: LiveApp) -> None:
    r = live.client.get("/health")
    assert r.status_code == 200
    body = r.get_json()
    assert body["status"] == "ok" and body["mode"] == "embedded"
    assert body["details"]["database"]["status"] == "ok" and body["details"]["database"]["dialect"] == "sqlite"
    assert live.client.get("/health/redis").get_json()["details"]["redis"]["status"] == "ok"


def test_health_celery_is_503_without_a_worker_and_200_with_one(live: LiveApp) -> None:
    r = live.client.get("/health/celery")
    assert r.status_code == 503
    assert r.get_json()["down"] == ["celery"]
    live.rt.registry.beat("w1@test", {"host": "h", "pid": 1, "active": 0, "concurrency": 2}, 30)
    r = live.client.get("/health/celery")
    assert r.status_code == 200 and r.get_json()["details"]["celery"]["workers"] == 1


def test_health_is_503_naming_the_database_when_it_is_gone(live: LiveApp) -> None:
    live.db.dispose()
    (live.settings.data_dir / "livecode.db").unlink()
    (live.settings.data_dir / "livecode.db").mkdir()  # cannot be opened as a database
    r = live.client.get("/health")
    assert r.status_code == 503 and r.get_json()["down"] == ["database"]
    assert "livecode.db" not in r.get_data(as_text=True)  # no paths or statements in answers


def test_languages_lists_what_can_run(live: LiveApp) -> None:
    r = live.client.get("/api/v1/languages")
    assert r.status_code == 200
    langs = {lang["id"]: lang for lang in r.get_json()}
    assert {"python", "bash", "c"} <= set(langs)
    assert set(langs["python"]) == {"id", "name", "version", "available", "compiled", "libraries"}
    assert langs["python"]["available"] is True and langs["c"]["compiled"] is True
    # Detected on this host (scripts/setup.sh installs Debian's python3-numpy/-pandas/-matplotlib).
    libs = {lib["name"] for lib in langs["python"]["libraries"]}
    installed = {n for n in ("numpy", "pandas", "matplotlib") if os.path.isdir(f"/usr/lib/python3/dist-packages/{n}")}
    assert libs == installed and langs["bash"]["libraries"] == []


def test_metrics_are_open_without_a_token(live: LiveApp) -> None:
    live.client.get("/health")
    r = live.client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert "livecode_http_request_duration_seconds" in r.get_data(as_text=True)


def test_metrics_with_a_token_need_it(make_live: Any) -> None:
    live = make_live(metrics_token="s3cret-token-for-scrapes")
    r = live.client.get("/metrics")
    expect_error(r, 401, "UNAUTHORIZED")
    assert "WWW-Authenticate" in r.headers
    expect_error(live.client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 403, "FORBIDDEN")
    ok = live.client.get("/metrics", headers={"Authorization": "Bearer s3cret-token-for-scrapes"})
    assert ok.status_code == 200 and "livecode_workers_alive" in ok.get_data(as_text=True)


# ---- playground and docs -------------------------------------------------------------------


def test_the_playground_page_and_its_files(live: LiveApp) -> None:
    page = live.client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    shared = live.client.get(f"/s/{uuid.uuid4()}")
    assert shared.status_code == 200 and shared.get_data() == page.get_data()
    expect_error(live.client.get("/s/not-a-session"), 404)
    js = live.client.get("/static/app.js")
    assert js.status_code == 200 and js.headers["Cache-Control"] == "no-cache"
    expect_error(live.client.get("/static/nope.js"), 404)


def test_docs_and_swagger_describe_every_route(live: LiveApp) -> None:
    assert live.client.get("/docs").status_code == 200
    spec = live.client.get("/swagger.json").get_json()
    paths = set(spec["paths"])
    for path in ["/api/v1/code-sessions", "/api/v1/code-sessions/{session_id}",
                 "/api/v1/executions/session/{session_id}/execute", "/api/v1/executions/{execution_id}",
                 "/api/v1/executions/session/{session_id}", "/api/v1/executions/batch",
                 "/api/v1/executions/{execution_id}/events", "/api/v1/languages", "/health", "/health/redis",
                 "/health/celery", "/api/v1/auth/login", "/api/v1/auth/register", "/api/v1/auth/refresh",
                 "/api/v1/auth/logout", "/api/v1/auth/password", "/api/v1/auth/invitations", "/api/v1/auth/me",
                 "/api/v1/api-keys", "/api/v1/api-keys/{key_id}", "/api/v1/admin/stats",
                 "/api/v1/admin/dead-letters", "/api/v1/admin/dead-letters/{dead_letter_id}",
                 "/api/v1/admin/dead-letters/{dead_letter_id}/requeue"]:
        assert path in paths, path


# ---- what matches no route -----------------------------------------------------------------


def test_unknown_paths_and_methods_answer_in_the_error_shape(live: LiveApp) -> None:
    err = expect_error(live.client.get("/api/v1/nothing-here"), 404, "NOT_FOUND")
    assert "/docs" in err["message"]
    r = live.client.put("/api/v1/code-sessions")
    expect_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in r.headers["Allow"]
    expect_error(live.client.open("/api/v1/languages", method="BREW"), 405)


def test_request_ids_are_echoed_or_made(live: LiveApp) -> None:
    assert live.client.get("/health", headers={"X-Request-ID": "abc-1"}).headers["X-Request-ID"] == "abc-1"
    made = live.client.get("/health", headers={"X-Request-ID": "bad id;drop"}).headers["X-Request-ID"]
    assert made and made != "bad id;drop" and len(made) == 32
