"""Files a program writes (issue 13, part 3), end to end with a real worker and the real sandbox,
on PostgreSQL (distributed) and SQLite (embedded): a matplotlib plot and a CSV come back through
/files, a link to a host file does not, the limit is reported, and the files go with their session."""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.conftest import Cluster
from tests.support.client import ApiClient

pytestmark = pytest.mark.integration

HAS_LIBS = all(os.path.isdir(f"/usr/lib/python3/dist-packages/{n}") for n in ("numpy", "pandas", "matplotlib"))

PLOT = """
import os
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

df = pd.DataFrame({"x": np.arange(10), "y": np.arange(10) ** 2})
df.plot(x="x", y="y")
plt.savefig("out/plot.png")
df.to_csv("out/data.csv", index=False)
os.symlink("/etc/shadow", "out/shadow")
os.symlink("/etc/passwd", "out/passwd.txt")
os.makedirs("out/z")
for i in range(40):
    with open(f"out/z/f{i:02}.txt", "w") as f:
        f.write(str(i))
print("saved")
"""


@pytest.mark.skipif(not HAS_LIBS, reason="numpy/pandas/matplotlib not installed (scripts/setup.sh)")
def test_a_plot_and_a_csv_come_back_and_links_do_not(api: ApiClient, system: Cluster) -> None:
    result = api.run(PLOT, timeout=120)
    assert result["status"] == "COMPLETED", (result["stderr"], system.logs()[-3000:])
    assert result["stdout"] == "saved\n"
    assert result["files_truncated"] is True  # 42 regular files, 32 kept
    eid = result["execution_id"]

    r = api.request("GET", f"/api/v1/executions/{eid}/files")
    assert r.status_code == 200, r.text
    listed = r.json()
    paths = [f["path"] for f in listed]
    assert len(paths) == 32 and paths[:3] == ["data.csv", "plot.png", "z/f00.txt"]
    assert not any(p in ("shadow", "passwd.txt") for p in paths)

    by_path = {f["path"]: f for f in listed}
    png = api.request("GET", f"/api/v1/executions/{eid}/files/plot.png")
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert hashlib.sha256(png.content).hexdigest() == by_path["plot.png"]["sha256"]
    assert len(png.content) == by_path["plot.png"]["size"]
    assert png.headers["X-Content-Type-Options"] == "nosniff"

    csv = api.request("GET", f"/api/v1/executions/{eid}/files/data.csv")
    assert csv.status_code == 200 and csv.content.startswith(b"x,y\n0,0\n1,1\n")
    assert csv.headers["Content-Disposition"].startswith("attachment;")
    missing = api.request("GET", f"/api/v1/executions/{eid}/files/shadow")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "FILE_NOT_FOUND"


def test_the_files_go_with_their_session(api: ApiClient) -> None:
    result = api.run("printf 'kept' > out/a.txt", language="bash")
    assert result["status"] == "COMPLETED" and result["files_truncated"] is False
    eid = result["execution_id"]
    files = api.request("GET", f"/api/v1/executions/{eid}/files").json()
    assert [(f["path"], f["size"]) for f in files] == [("a.txt", 4)]
    assert api.request("DELETE", f"/api/v1/code-sessions/{result['session_id']}").status_code == 204
    gone = api.request("GET", f"/api/v1/executions/{eid}/files")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "EXECUTION_NOT_FOUND"


def test_languages_list_the_libraries_the_workers_have(api: ApiClient) -> None:
    # Distributed: from the worker's heartbeat (the API process probes nothing itself).
    langs = {lang["id"]: lang for lang in api.request("GET", "/api/v1/languages").json()}
    names = {lib["name"] for lib in langs["python"]["libraries"]}
    expected = {n for n in ("numpy", "pandas", "matplotlib") if os.path.isdir(f"/usr/lib/python3/dist-packages/{n}")}
    assert names == expected
    assert langs["bash"]["libraries"] == []


def test_store_expire_and_cascade_on_postgresql(pg_admin_url: str) -> None:
    """The worker's write (result and files in one transaction), the expiry and the cascade, on
    PostgreSQL; and the migration goes down and up again."""
    import uuid
    from datetime import timedelta

    from sqlalchemy import text

    from livecode import migrations as migrate
    from livecode.config import load_settings
    from livecode.db import Database
    from livecode.models import ExecutionStatus, utcnow
    from livecode.sandbox.outputs import OutputFile
    from livecode.services.executions import finish_execution_returning
    from livecode.services.output_files import expire_files, get_file, list_files
    from livecode.services.storage import source_hash, store_sources
    from tests.support.procs import create_database

    url = create_database(pg_admin_url).replace("postgresql://", "postgresql+psycopg://")
    db = Database(load_settings("embedded", database_url=url, output_file_retention_days=1))
    migrate.upgrade(db.engine)
    migrate.downgrade(db.engine, "-1")  # this migration only, while it is the newest
    migrate.upgrade(db.engine)
    code = "print('files')"
    sid, eids = uuid.uuid4(), [uuid.uuid4(), uuid.uuid4()]
    with db.write() as s:
        s.execute(
            text("INSERT INTO code_sessions VALUES (:s, NULL, 'python', :c, 'ACTIVE', 1, now(), now())"),
            {"s": sid, "c": code},
        )
        store_sources(s, {source_hash(code): code}, utcnow())
        for eid in eids:
            s.execute(
                text(
                    "INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, "
                    "priority, interactive, status, stdout_truncated, stderr_truncated, attempts, "
                    "queued_at) VALUES (:e, :s, 'python', :h, '', '[]', '{}', 'batch', false, 'RUNNING', "
                    "false, false, 1, now())"
                ),
                {"e": eid, "s": sid, "h": source_hash(code)},
            )
    files = [OutputFile("b.csv", b"1,2\n"), OutputFile("a/plot.png", b"\x89PNG\r\n\x1a\n\x00\xff")]
    final = finish_execution_returning(db, eids[0], 1, ExecutionStatus.COMPLETED, files, files_truncated=True)
    assert final is not None and final["files_truncated"] is True
    # Not this attempt's to finish: neither the result nor the files are written.
    assert finish_execution_returning(db, eids[1], 2, ExecutionStatus.COMPLETED, files) is None
    assert list_files(db, eids[1], None) == []
    assert [f["path"] for f in list_files(db, eids[0], None)] == ["a/plot.png", "b.csv"]
    assert get_file(db, eids[0], None, "a/plot.png")[1] == b"\x89PNG\r\n\x1a\n\x00\xff"

    assert expire_files(db, db.settings, now=utcnow() + timedelta(hours=12)) == 0
    assert expire_files(db, db.settings, now=utcnow() + timedelta(days=2)) == 2
    assert list_files(db, eids[0], None) == []
    assert finish_execution_returning(db, eids[1], 1, ExecutionStatus.COMPLETED, files) is not None
    with db.write() as s:  # deleting the session deletes its executions, and their files
        s.execute(text("DELETE FROM code_sessions WHERE id = :s"), {"s": sid})
    with db.write() as s:
        assert s.execute(text("SELECT count(*) FROM execution_outputs")).scalar_one() == 0
    db.dispose()


def test_files_the_database_refuses_leave_the_result_saved_without_them(pg_admin_url: str) -> None:
    """The worker's fallback: when storing the files fails for good, the result is saved without
    them (files_truncated), not replaced by an internal error."""
    import uuid
    from types import SimpleNamespace

    from sqlalchemy import text

    from livecode import migrations as migrate
    from livecode.config import load_settings
    from livecode.db import Database
    from livecode.models import ExecutionStatus, utcnow
    from livecode.sandbox.outputs import OutputFile
    from livecode.services.executions import ClaimedRun
    from livecode.services.output_files import list_files
    from livecode.services.storage import source_hash, store_sources
    from livecode.worker.tasks import _save
    from tests.support.procs import create_database

    url = create_database(pg_admin_url).replace("postgresql://", "postgresql+psycopg://")
    db = Database(load_settings("embedded", database_url=url, task_max_retries=0))
    migrate.upgrade(db.engine)
    code = "print('refused')"
    sid, eid = uuid.uuid4(), uuid.uuid4()
    with db.write() as s:
        s.execute(
            text("INSERT INTO code_sessions VALUES (:s, NULL, 'python', :c, 'ACTIVE', 1, now(), now())"),
            {"s": sid, "c": code},
        )
        store_sources(s, {source_hash(code): code}, utcnow())
        s.execute(
            text(
                "INSERT INTO executions (id, session_id, language, source_hash, stdin, args, limits, "
                "priority, interactive, status, stdout_truncated, stderr_truncated, attempts, queued_at) "
                "VALUES (:e, :s, 'python', :h, '', '[]', '{}', 'batch', false, 'RUNNING', false, false, 1, "
                "now())"
            ),
            {"e": eid, "s": sid, "h": source_hash(code)},
        )
        s.execute(
            text(
                "CREATE FUNCTION lc_refuse_files() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'files refused'; END; $$ LANGUAGE plpgsql"
            )
        )
        s.execute(
            text(
                "CREATE TRIGGER lc_refuse_files BEFORE INSERT ON execution_outputs "
                "FOR EACH ROW EXECUTE FUNCTION lc_refuse_files()"
            )
        )
    claimed = ClaimedRun(eid, 1, "python", code, "", [], {}, None)
    final, status = _save(
        SimpleNamespace(db=db, settings=db.settings),
        claimed,  # type: ignore[arg-type]
        ExecutionStatus.COMPLETED,
        {"stdout": b"kept\n", "exit_code": 0},
        {},
        [OutputFile("a.txt", b"a")],
    )
    assert status == ExecutionStatus.COMPLETED and final is not None
    assert (final["status"], final["stdout"], final["files_truncated"]) == ("COMPLETED", "kept\n", True)
    assert list_files(db, eid, None) == []
    db.dispose()
