"""Output is bytes (issue 9, item 9): whatever a program writes (NUL, invalid UTF-8, the encoded
half of a surrogate pair, \\r, ANSI escapes, a line of megabytes) is stored without loss on
PostgreSQL and SQLite. The JSON view is text with U+FFFD for what does not decode, the exact bytes
come back with ?encoding=base64, the event stream agrees with the text view, and nothing of the
program's output reaches the worker's log."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import Cluster
from tests.support.client import ApiClient
from tests.support.migrations import check_migration_round_trip
from tests.support.procs import Process, create_database, start_api, start_embedded, wait_workers

pytestmark = pytest.mark.integration

# Written in this order, with a pause between the two halves of "é" and between the two halves
# of the payload, so that a multi-byte character reaches the worker split over two reads.
PAYLOAD = (
    b"nul:\x00:nul\n"
    b"invalid utf-8:\xff\xfe\xc3(:\x80\n"
    b"surrogate:\xed\xa0\x80:\xed\xbf\xbf\n"
    b"carriage return:12345\rab\r\n"
    b"ansi:\x1b[31mred\x1b[0m\x1b[2J\x1b]0;title\x07\n"
    b"split:caf\xc3"
)
SECOND = b"\xa9 \xe2\x82\xac\n"
TAIL = b"\xe2\x82"  # an incomplete character at the very end of the output
STDERR = b"err:\x00\xff\xed\xa0\x80\n"

PROGRAM = """
import sys, time
token = {token_reversed!r}[::-1]
out = sys.stdout.buffer
out.write(token.encode() + b"\\n")
out.write(bytes.fromhex({payload!r}))
out.flush()
time.sleep(0.3)
out.write(bytes.fromhex({second!r}))
out.write(b"L" * {line})
out.write(b"\\n" + bytes.fromhex({tail!r}))
out.flush()
sys.stderr.buffer.write(bytes.fromhex({stderr!r}))
"""


def program(token: str, line: int) -> tuple[str, bytes]:
    source = PROGRAM.format(token_reversed=token[::-1], payload=PAYLOAD.hex(), second=SECOND.hex(),
                            line=line, tail=TAIL.hex(), stderr=STDERR.hex())
    return source, token.encode() + b"\n" + PAYLOAD + SECOND + b"L" * line + b"\n" + TAIL


def sse_events(api: ApiClient, eid: str) -> list[dict[str, Any]]:
    """All events of a finished execution (a late connect replays them)."""
    events: list[dict[str, Any]] = []
    with requests.get(f"{api.base}/api/v1/executions/{eid}/events", stream=True, timeout=60) as r:
        assert r.status_code == 200, r.text
        event: dict[str, Any] = {}
        for raw in r.iter_lines(chunk_size=256 * 1024):
            line = raw.decode("utf-8")
            if not line:
                if "event" in event:
                    events.append(event)
                event = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                event[name] = json.loads(value) if name == "data" else value
    assert events and events[-1]["event"] == "end", [e["event"] for e in events][-5:]
    return events


def streamed(events: list[dict[str, Any]], stream: str) -> str:
    return "".join(e["data"]["text"] for e in events if e["event"] == "output" and e["data"]["stream"] == stream)


def check_round_trip(api: ApiClient, logs: list[Process], line: int, max_output: int) -> None:
    token = f"OUTPUT-{uuid.uuid4().hex}"
    source, expected = program(token, line)
    session = api.create_session(source)
    queued = api.execute(session["session_id"], max_output_bytes=max_output)
    assert queued.status_code == 202, queued.text
    eid = queued.json()["execution_id"]
    result = api.wait_execution(eid, timeout=120)

    # Stored and finished as the program ended: not lost, not FAILED/DEAD_LETTER.
    assert result["status"] == "COMPLETED", {k: v for k, v in result.items() if k not in ("stdout",)}
    assert result["reason"] is None and result["exit_code"] == 0
    assert not result["stdout_truncated"] and not result["stderr_truncated"]

    # The JSON view: text, every undecodable sequence replaced by U+FFFD, the rest as written.
    assert result["encoding"] == "text"
    assert result["stdout"] == expected.decode("utf-8", "replace")
    assert result["stderr"] == STDERR.decode("utf-8", "replace")
    assert "\x00" in result["stdout"] and "\r" in result["stdout"] and "\x1b[31m" in result["stdout"]
    assert result["stdout"].count("\ufffd") >= 10 and "café €" in result["stdout"]
    assert result["stdout"].endswith("L\n\ufffd")

    # The exact bytes on request, for one execution and for the session's list.
    raw = api.request("GET", f"/api/v1/executions/{eid}", params={"encoding": "base64"})
    assert raw.status_code == 200, raw.text
    body = raw.json()
    assert body["encoding"] == "base64"
    assert base64.b64decode(body["stdout"], validate=True) == expected
    assert base64.b64decode(body["stderr"], validate=True) == STDERR
    assert base64.b64decode(body["compile_output"], validate=True) == b""
    assert {k: v for k, v in body.items() if k not in ("encoding", "stdout", "stderr", "compile_output")} == {
        k: v for k, v in result.items() if k not in ("encoding", "stdout", "stderr", "compile_output")
    }
    listing = api.request("GET", f"/api/v1/executions/session/{session['session_id']}",
                          params={"encoding": "base64"})
    assert listing.status_code == 200, listing.text
    item = listing.json()["items"][0]
    assert item["encoding"] == "base64" and base64.b64decode(item["stdout"]) == expected

    # The event stream agrees with the stored text view.
    events = sse_events(api, eid)
    assert streamed(events, "stdout") == result["stdout"]
    assert streamed(events, "stderr") == result["stderr"]
    assert [e for e in events if e["event"] == "result"][-1]["data"] == result

    # No dead letter, and the program's output is in no log (it would be with its SQL parameters).
    letters = api.request("GET", "/api/v1/admin/dead-letters")
    assert letters.status_code == 200, letters.text
    assert all(d["execution_id"] != eid for d in letters.json()["items"])
    for proc in logs:
        assert token not in proc.output(), f"the program's output is in the {proc.name} log"


def test_any_bytes_survive_and_come_back_exactly(api: ApiClient, system: Cluster) -> None:
    check_round_trip(api, [system.api, *system.workers], line=200_000, max_output=1024 * 1024)


def test_unknown_encoding_is_a_400(api: ApiClient) -> None:
    result = api.run("print('x')")
    for path in (f"/api/v1/executions/{result['execution_id']}",
                 f"/api/v1/executions/session/{result['session_id']}"):
        r = api.request("GET", path, params={"encoding": "latin-1"})
        assert r.status_code == 400, r.text
        err = r.json()["error"]
        assert err["code"] == "INVALID_ENCODING" and err["details"]["allowed"] == ["text", "base64"]
    text = api.request("GET", f"/api/v1/executions/{result['execution_id']}", params={"encoding": "text"})
    assert text.status_code == 200 and text.json()["stdout"] == "x\n"


def test_swagger_documents_the_encoding(api: ApiClient) -> None:
    spec = api.request("GET", "/swagger.json").json()
    assert spec["definitions"]["Execution"]["properties"]["encoding"]["enum"] == ["text", "base64"]
    for path in ("/api/v1/executions/{execution_id}", "/api/v1/executions/session/{session_id}"):
        params = {p["name"]: p for p in spec["paths"][path]["get"]["parameters"]}
        assert params["encoding"]["enum"] == ["text", "base64"], path


BIG = 12 * 1024 * 1024  # output maximum of the processes below: room for a 10 MB line


@pytest.fixture(scope="module", params=["distributed", "embedded"])
def roomy(request: pytest.FixtureRequest) -> Iterator[tuple[ApiClient, list[Process]]]:
    """An API that accepts max_output_bytes up to BIG (the default maximum is 1 MB). Distributed:
    a second API process on the cluster's database and Redis, whose worker runs the job (the
    limit travels with the execution). Embedded: a server of its own."""
    if request.param == "distributed":
        cluster: Cluster = request.getfixturevalue("cluster")
        proc, base = start_api({**cluster.env, "LIVECODE_MAX_OUTPUT_BYTES": str(BIG)})
        logs = [proc, *cluster.workers]
    else:
        embedded: Cluster = request.getfixturevalue("embedded")
        import tempfile

        env = {**embedded.env, "LIVECODE_DATA_DIR": tempfile.mkdtemp(prefix="lc-bytes-"),
               "LIVECODE_MAX_OUTPUT_BYTES": str(BIG)}
        proc, base = start_embedded(env)
        wait_workers(base, 1)
        logs = [proc]
    yield ApiClient(base), logs
    proc.stop()


def test_a_10_mb_line_with_any_bytes_survives(roomy: tuple[ApiClient, list[Process]]) -> None:
    api, logs = roomy
    check_round_trip(api, logs, line=10 * 1024 * 1024, max_output=BIG)


def test_migration_converts_existing_rows_on_postgresql(pg_admin_url: str) -> None:
    url = create_database(pg_admin_url)
    check_migration_round_trip(url.replace("postgresql://", "postgresql+psycopg://", 1))
