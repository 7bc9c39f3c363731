"""Hostile input beyond test_bad_input.py: huge and streamed bodies, deep nesting inside valid
documents, NUL bytes and invalid UTF-8 in every field, odd content types, numbers out of range,
long and odd unicode in paths and headers. Each gets a clear 4xx and changes nothing: the row
counts and the target session are checked straight in PostgreSQL afterwards. (The sweep of every
route is test_hostile_input_sweep.py.)"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from tests.support.accounts import login, register
from tests.support.client import ApiClient

pytestmark = pytest.mark.integration

SESSIONS = "/api/v1/code-sessions"
JSON = {"Content-Type": "application/json"}


class Target:
    def __init__(self, cluster: Any) -> None:
        self.base = cluster.base
        self.db_url = cluster.env["DATABASE_URL"]
        self.client = ApiClient(cluster.base)
        self.sid = self.client.create_session("print('untouched')")["session_id"]
        self.execute_path = f"/api/v1/executions/session/{self.sid}/execute"
        self.patch_path = f"{SESSIONS}/{self.sid}"

    def snapshot(self) -> tuple[Any, ...]:
        with psycopg.connect(self.db_url, connect_timeout=3, autocommit=True) as conn:
            counts = conn.execute("SELECT (SELECT count(*) FROM code_sessions), (SELECT count(*) FROM executions),"
                                  " (SELECT count(*) FROM idempotency_keys)").fetchone()
            session = conn.execute("SELECT version, source_code FROM code_sessions WHERE id = %s",
                                   (self.sid,)).fetchone()
        return (counts, session)

    def send(self, method: str, path: str, **kw: Any) -> requests.Response:
        kw.setdefault("timeout", 60)
        return requests.request(method, self.base + path, **kw)


@pytest.fixture
def target(cluster: Any) -> Iterator[Target]:
    t = Target(cluster)
    before = t.snapshot()
    yield t
    assert t.snapshot() == before, "a refused request changed something"
    # The service is still fine afterwards.
    assert t.client.request("GET", f"{SESSIONS}/{t.sid}").json()["source_code"] == "print('untouched')"


def assert_4xx(resp: requests.Response, status: int | tuple[int, ...] | None = None, code: str | None = None) -> None:
    expected = (status,) if isinstance(status, int) else status
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.text[:300])
    if expected:
        assert resp.status_code in expected, (resp.status_code, resp.text[:300])
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    err = resp.json()["error"]
    assert err["code"] and err["message"]
    if code:
        assert err["code"] == code, err


# ---- size ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["create", "patch", "execute"])
def test_bodies_of_many_megabytes(target: Target, which: str) -> None:
    path, method = {"create": (SESSIONS, "POST"), "patch": (target.patch_path, "PATCH"),
                    "execute": (target.execute_path, "POST")}[which]
    field = "stdin" if which == "execute" else "source_code"
    body = b'{"language": "python", "' + field.encode() + b'": "' + b"A" * (24 * 1024 * 1024) + b'"}'
    assert_4xx(target.send(method, path, data=body, headers=JSON), 413)


def test_streamed_body_without_content_length(target: Target) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"language": "python", "source_code": "'
        for _ in range(40):
            yield b"B" * (256 * 1024)
        yield b'"}'

    r = target.send("POST", SESSIONS, data=chunks(), headers=JSON)  # chunked transfer encoding
    assert_4xx(r, 413)


def test_many_small_fields(target: Target) -> None:
    body = {"language": "python", "source_code": "x", **{f"k{i}": i for i in range(100_000)}}
    assert_4xx(target.send("POST", SESSIONS, json=body), 400, "UNKNOWN_FIELD")


# ---- structure ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1_000, 5_000, 50_000])
def test_deep_nesting_inside_a_valid_document(target: Target, depth: int) -> None:
    nested = '{"a":' * depth + "1" + "}" * depth
    body = '{"stdin": "x", "args": ' + nested + "}"
    r = target.send("POST", target.execute_path, data=body.encode(), headers=JSON)
    assert_4xx(r, 400)
    arrays = '{"language": "python", "source_code": ' + "[" * depth + "]" * depth + "}"
    assert_4xx(target.send("POST", SESSIONS, data=arrays.encode(), headers=JSON), 400)


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b'"text"', b"123", b"{", b'{"a":1}{"b":2}', b"\xef\xbb\xbf{}",
                                 b'{"language": "python", "language": "python", "source_code": 1}'])
def test_documents_that_are_not_a_session(target: Target, raw: bytes) -> None:
    assert_4xx(target.send("POST", SESSIONS, data=raw, headers=JSON), 400)


# ---- bytes and characters -----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["language", "source_code"])
def test_nul_bytes_when_creating(target: Target, field: str) -> None:
    body = {"language": "python", "source_code": "ok", field: "py\x00thon"}
    assert_4xx(target.send("POST", SESSIONS, json=body), 400)


@pytest.mark.parametrize("body", [{"stdin": "a\x00b"}, {"args": ["a\x00b"]}, {"stdin": "\ud800"}])
def test_nul_bytes_and_surrogates_when_executing(target: Target, body: dict[str, Any]) -> None:
    assert_4xx(target.send("POST", target.execute_path, json=body), 400)


@pytest.mark.parametrize("raw", [b'{"source_code": "\xc3\x28"}', b'{"source_code": "\xed\xa0\x80"}',
                                 b'{"source_code": "\xf8\x88\x80\x80\x80"}', b'{"source_\xff": "x"}'])
def test_invalid_utf8_in_an_autosave(target: Target, raw: bytes) -> None:
    assert_4xx(target.send("PATCH", target.patch_path, data=raw, headers=JSON), 400)


def test_utf16_body_is_refused(target: Target) -> None:
    raw = '{"language": "python", "source_code": "x"}'.encode("utf-16")
    assert_4xx(target.send("POST", SESSIONS, data=raw, headers=JSON), 400)


# ---- content types ------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    None, "", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml",
    "application/jsonp", "text/json", "*/*", "application/json\u00e9",
])
def test_wrong_or_missing_content_type(target: Target, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type.encode("utf-8").decode("latin-1")}
    body = b'{"language": "python", "source_code": "x"}'
    r = target.send("POST", SESSIONS, data=body, headers=headers)
    assert_4xx(r, 415, "UNSUPPORTED_MEDIA_TYPE")
    r = target.send("PATCH", target.patch_path, data=b'{"source_code": "changed"}', headers=headers)
    assert_4xx(r, 415)


# ---- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["0", "-1", "2147483648", "9223372036854775808", "1e309", "-1e309", "NaN",
                                   "Infinity", "1.0", "1.5", "true", '"1"', "1" * 5000, "[1]"])
def test_versions_out_of_range(target: Target, value: str) -> None:
    raw = '{"source_code": "changed", "version": ' + value + "}"
    assert_4xx(target.send("PATCH", target.patch_path, data=raw.encode(), headers=JSON), 400)


@pytest.mark.parametrize("limit", ["time_limit_ms", "memory_limit_mb", "max_processes", "max_output_bytes",
                                   "cpu_time_ms"])
@pytest.mark.parametrize("value", ["-1", "0", "1e100", "18446744073709551616", "0.5", "NaN"])
def test_limits_out_of_range(target: Target, limit: str, value: str) -> None:
    raw = '{"' + limit + '": ' + value + "}"
    assert_4xx(target.send("POST", target.execute_path, data=raw.encode(), headers=JSON), 400)


@pytest.mark.parametrize("query", ["page=-1", "page=99999999999999999999999", "per_page=0", "per_page=101",
                                   "per_page=1e3", "page=%00", "page=%ff", "per_page=" + "9" * 5000])
def test_paging_out_of_range(target: Target, query: str) -> None:
    r = target.send("GET", f"/api/v1/executions/session/{target.sid}?{query}")
    assert_4xx(r, (400, 414))  # 414: a request line over the server's limit


# ---- paths and headers --------------------------------------------------------------------------


UNKNOWN_ID = "5f0c4bde-1d4e-4c7b-9a3e-2b8f6d1e9a70"


@pytest.mark.parametrize("segment", [
    "\u202eevil", "a\u200db", "\U0001f4a9" * 100, "e\u0301" * 200, "%00", "%ff%fe", "..%2f..%2fetc%2fpasswd",
    # Fixed (unknown) ids: parallel workers must collect the same test ids.
    UNKNOWN_ID + "%00", UNKNOWN_ID.upper().replace("-", ""), "\ufeff" + UNKNOWN_ID,
    "x" * 3000,
])
def test_odd_unicode_and_long_ids_in_paths(target: Target, segment: str) -> None:
    for method, path in [("GET", f"{SESSIONS}/{segment}"), ("DELETE", f"{SESSIONS}/{segment}"),
                         ("GET", f"/api/v1/executions/{segment}"),
                         ("POST", f"/api/v1/executions/session/{segment}/execute")]:
        r = target.send(method, path, json={} if method == "POST" else None)
        # An id in another spelling of a UUID may parse; then it names nothing: 404.
        assert_4xx(r, (400, 404))


def test_very_long_path_is_refused(target: Target) -> None:
    r = target.send("GET", f"{SESSIONS}/" + "\u00e9" * 20_000)
    # Refused by the HTTP server before the application sees it (request line limit), in JSON.
    assert_4xx(r, 414, "URI_TOO_LONG")


@pytest.mark.parametrize("header,value", [
    ("X-Request-ID", "x" * 8000), ("X-Request-ID", "\u202e\u200d\U0001f4a9"), ("X-Request-ID", "a\tb"),
    ("Accept", "\u00e9" * 1000), ("Accept-Language", "\U0001f4a9"), ("User-Agent", "\x01\x02"),
])
def test_odd_harmless_headers_are_ignored(target: Target, header: str, value: str) -> None:
    r = target.send("GET", f"{SESSIONS}/{target.sid}",
                    headers={header: value.encode("utf-8").decode("latin-1")})
    if r.status_code == 200:
        rid = r.headers["X-Request-ID"]
        assert rid != value and len(rid) <= 64  # a hostile request id is replaced, never echoed
    else:
        assert 400 <= r.status_code < 500, r.status_code


@pytest.mark.parametrize("header,value,status", [
    ("If-Match", "\u202e\"x\"", 400), ("If-Match", '"' + "9" * 5000 + '"', 400),
    ("Authorization", "Bearer " + "\U0001f4a9" * 50, 401), ("Authorization", "Basic Zm9vOmJhcg==", 401),
    ("X-API-Key", "lc_" + "\u00e9" * 500, 401), ("X-Bad-Bytes", "k\x01y\x7f", 400),
])
def test_odd_meaningful_headers_on_an_autosave_are_4xx(target: Target, header: str, value: str, status: int) -> None:
    headers = {header: value.encode("utf-8").decode("latin-1"), **JSON}
    r = target.send("PATCH", target.patch_path, data=b'{"source_code": "changed"}', headers=headers)
    assert_4xx(r, status)


@pytest.mark.parametrize("key", ["\u00e9" * 300, "\u202e\u200d", "k\x01y", "x" * 5000])
def test_odd_idempotency_keys_are_4xx(target: Target, key: str) -> None:
    for path in (SESSIONS, target.execute_path):
        headers = {"Idempotency-Key": key.encode("utf-8").decode("latin-1"), **JSON}
        r = target.send("POST", path, data=b'{"language": "python", "source_code": "x"}'
                        if path == SESSIONS else b"{}", headers=headers)
        assert_4xx(r, 400)


def test_header_flood_is_refused(target: Target) -> None:
    headers = {f"X-Flood-{i}": "v" * 100 for i in range(200)}
    r = target.send("PATCH", target.patch_path, data=b'{"source_code": "changed"}', headers={**headers, **JSON})
    assert_4xx(r, 431)  # over the server's limit on header fields, answered in JSON


# ---- the Piston API (/piston/api/v2): Piston's {"message"} shape, never a 5xx ---------------------

PISTON = "/piston/api/v2/execute"
PY_FILE = '{"content": "print(1)"}'


def assert_piston_4xx(resp: requests.Response, status: int | tuple[int, ...]) -> None:
    expected = (status,) if isinstance(status, int) else status
    assert resp.status_code in expected, (resp.status_code, resp.text[:300])
    assert resp.headers.get("Content-Type", "").startswith("application/json"), resp.headers
    body = resp.json()
    assert set(body) == {"message"} and isinstance(body["message"], str) and body["message"], body


@pytest.mark.parametrize(("raw", "status"), [
    (b'{"language": "python", "version": "*", "files": [{"content": "' + b"A" * (24 * 1024 * 1024) + b'"}]}', 413),
    (b'{"language": "python", "version": "*", "files": [' + b"[" * 50_000 + b"]" * 50_000 + b"]}", 400),
    (b'{"language": "python", "version": "*", "files": [' + b'{"a":' * 5_000 + b"1" + b"}" * 5_000 + b"]}", 400),
    (b'{"language": "python", "version": "*", "files": [' + b",".join([PY_FILE.encode()] * 20_000) + b"]}", 400),
    (rb'{"language": "py\u0000thon", "version": "*", "files": [' + PY_FILE.encode() + b"]}", 400),
    (rb'{"language": "python", "version": "*", "files": [{"content": "print(\u0000)"}]}', 400),
    (rb'{"language": "python", "version": "*", "files": [{"content": "\ud800"}]}', 400),
    (b'{"language": "python", "version": "*", "files": [{"content": "\xc3\x28"}]}', 400),
    (rb'{"language": "python", "version": "*", "stdin": "a\u0000b", "files": [' + PY_FILE.encode() + b"]}", 400),
    (rb'{"language": "python", "version": "*", "args": ["\ud800"], "files": [' + PY_FILE.encode() + b"]}", 400),
    (b'{"language": "python", "version": "' + b"9" * 5000 + b'", "files": [' + PY_FILE.encode() + b"]}", 400),
    (b'{"language": "python", "version": "*", "run_timeout": NaN, "files": [' + PY_FILE.encode() + b"]}", 400),
    (b'{"language": "python", "version": "*", "run_timeout": ' + b"1" * 5000 + b', "files": []}', 400),
    (b'{"language": "python", "version": "*", "files": [{"content": "x", "name": ["a"], "encoding": {}}]}', 400),
    (b'{"language": "python", "version": "*", "files": [{"content": "x", "name": "../../etc/passwd"}]}', 400),
    (b'{"language": "python", "version": "*", "files": [{"content": "x", "name": "-rf"}]}', 400),
    (b'{"language": "python", "version": "*", "files": [{"content": "x", "name": "a\\u0000b"}]}', 400),
    (b'{"language": "python", "version": "*", "files": [{"content": "x", "name": "' + b"d/" * 40 + b'x"}]}', 400),
    (b'{"language": "python", "version": "*", "files": [{"content": "x"}, {"content": "AA==", "encoding": "base64"}]}',
     400),
    (b"\xef\xbb\xbf{}", 400), (b"", 400), (b"null", 400), (b'{"a":1}{"b":2}', 400),
])
def test_hostile_bodies_for_the_piston_api(target: Target, raw: bytes, status: int) -> None:
    assert_piston_4xx(target.send("POST", PISTON, data=raw, headers=JSON), status)


@pytest.mark.parametrize("content_type", [None, "", "text/plain", "application/xml", "multipart/form-data; b=x"])
def test_the_piston_api_wants_json(target: Target, content_type: str | None) -> None:
    headers = {} if content_type is None else {"Content-Type": content_type}
    r = target.send("POST", PISTON, data=b'{"language": "python", "version": "*", "files": []}', headers=headers)
    assert_piston_4xx(r, 415)


@pytest.mark.parametrize(("header", "value"), [
    ("Authorization", "lc_" + "\u00e9" * 500), ("Authorization", "x" * 5000), ("Authorization", "Bearer nope"),
    ("X-API-Key", "\U0001f4a9" * 20),
])
def test_hostile_credentials_for_the_piston_api(target: Target, header: str, value: str) -> None:
    headers = {header: value.encode("utf-8").decode("latin-1"), **JSON}
    r = target.send("POST", PISTON, data=b'{"language": "python", "version": "*", "files": []}', headers=headers)
    assert_piston_4xx(r, 401)


def test_hostile_piston_websocket_messages(target: Target) -> None:
    import websocket

    url = target.base.replace("http://", "ws://") + "/piston/api/v2/connect"
    for message in ("{", "[]", "null", '"init"', '{"type": "init", "files": ' + "[" * 50_000 + "]" * 50_000 + "}",
                    '{"type": "init", "language": "python", "version": "*", "files": [{"content": "\u0000"}]}'):
        ws = websocket.create_connection(url, timeout=30)
        ws.send(message)
        opcode, data = ws.recv_data(control_frame=True)
        while opcode != websocket.ABNF.OPCODE_CLOSE:
            assert json.loads(data)["type"] == "error"
            opcode, data = ws.recv_data(control_frame=True)
        assert int.from_bytes(data[:2], "big") == 4002, message[:80]
        ws.close()


# ---- issue 10: malformed input that answered 500 -------------------------------------------------


def raw_request(base: str, head: str, body: bytes = b"", timeout: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Send bytes as they are (a malformed chunked body, a broken request line) and read the first
    answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1") + body)
        sock.shutdown(socket.SHUT_WR)  # all sent: a body cut short ends here, not at a timeout
        resp = http.client.HTTPResponse(sock)
        resp.begin()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def assert_raw_4xx(answer: tuple[int, dict[str, str], bytes], status: int | tuple[int, ...] = (400,)) -> None:
    code, headers, data = answer
    expected = (status,) if isinstance(status, int) else status
    assert code in expected, (code, data[:300])
    assert headers.get("content-type", "").startswith("application/json"), headers
    err = json.loads(data)["error"]
    assert err["code"] and err["message"]


def unhandled_errors(cluster: Any) -> int:
    return cluster.api.output().count('"unhandled error"') + cluster.api.output().count("Traceback")


BAD_CHUNKS = [
    b"zz\r\n{}\r\n0\r\n\r\n",  # not a hexadecimal size
    b"2\r\n{}XX0\r\n\r\n",  # no CRLF after the chunk
    b"ffffffffffffffffffff\r\n{}\r\n0\r\n\r\n",  # an absurd size
    b"5\r\n{}",  # cut short
]


@pytest.mark.parametrize("chunked", BAD_CHUNKS, ids=["size", "terminator", "huge", "short"])
@pytest.mark.parametrize("route", ["/api/v1/auth/refresh", "/api/v1/auth/login", "/api/v1/auth/register", SESSIONS,
                                   "execute", "/api/v1/executions/batch", "patch", "/api/v1/api-keys"])
def test_bad_chunked_body_is_a_4xx(target: Target, cluster: Any, route: str, chunked: bytes) -> None:
    path = {"execute": target.execute_path, "patch": target.patch_path}.get(route, route)
    method = "PATCH" if route == "patch" else "POST"
    auth = ""
    if route == "/api/v1/api-keys":  # needs an account, so that the body is read at all
        auth = f"Authorization: Bearer {login(target.base, *register(target.base))['access_token']}\r\n"
    errors = unhandled_errors(cluster)
    head = (f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{auth}"
            "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    answer = raw_request(target.base, head, chunked)
    assert_raw_4xx(answer)
    assert unhandled_errors(cluster) == errors, cluster.api.output()[-3000:]


def db_count(cluster: Any, table: str) -> int:
    with psycopg.connect(cluster.env["DATABASE_URL"], connect_timeout=3, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608 - fixed names
        return int(row[0]) if row else 0


HOSTILE_TEXT = ['"ad\\u0000min-user"', '"\\ud800admin-user"', '"admin-user\\udfff"', '"\\u0000"',
                '"\\ud83d\\ude00\\ud800"']


@pytest.mark.parametrize("value", HOSTILE_TEXT)
@pytest.mark.parametrize("field", ["username", "password"])
@pytest.mark.parametrize("route", ["login", "register"])
def test_nul_and_lone_surrogates_when_signing_in(target: Target, cluster: Any, route: str, field: str,
                                                  value: str) -> None:
    errors, users = unhandled_errors(cluster), db_count(cluster, "users")
    fields = {"username": '"sweep-user-1"', "password": '"correct-horse-42"', field: value}
    raw = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    r = target.send("POST", f"/api/v1/auth/{route}", data=raw.encode(), headers=JSON)
    assert_4xx(r, 400)
    assert db_count(cluster, "users") == users
    assert unhandled_errors(cluster) == errors


@pytest.mark.parametrize("value", HOSTILE_TEXT)
def test_nul_and_lone_surrogates_in_an_api_key_name(target: Target, cluster: Any, value: str) -> None:
    username, password = register(target.base)
    token = login(target.base, username, password)["access_token"]
    errors, keys = unhandled_errors(cluster), db_count(cluster, "api_keys")
    r = target.send("POST", "/api/v1/api-keys", data=('{"name": ' + value + "}").encode(),
                    headers={**JSON, "Authorization": f"Bearer {token}"})
    assert_4xx(r, 400)
    assert db_count(cluster, "api_keys") == keys
    assert unhandled_errors(cluster) == errors


@pytest.mark.parametrize("depth", [1_000, 5_000, 100_000])
@pytest.mark.parametrize("shape", ["arrays", "objects", "inside-an-item"])
def test_deeply_nested_batch(target: Target, cluster: Any, depth: int, shape: str) -> None:
    errors = unhandled_errors(cluster)
    if shape == "arrays":
        body = "[" * depth + "]" * depth
    elif shape == "objects":
        body = '{"executions": ' + '{"a":' * depth + "1" + "}" * depth + "}"
    else:
        body = ('{"executions": [{"session_id": "' + target.sid + '", "args": ' + "[" * depth + "]" * depth + "}]}")
    for content_type in ("application/json", "text/x+json"):
        r = target.send("POST", "/api/v1/executions/batch", data=body.encode(), headers={"Content-Type": content_type})
        assert_4xx(r, 400)
    assert unhandled_errors(cluster) == errors


def test_valid_batch_sent_chunked_is_queued(cluster: Any) -> None:
    client = ApiClient(cluster.base)
    sid = client.create_session("print('chunked')")["session_id"]
    body = json.dumps({"executions": [{"session_id": sid, "stdin": "a"}, {"session_id": sid}]}).encode()
    r = client.request("POST", "/api/v1/executions/batch", data=iter([body[:10], body[10:]]), headers=JSON)
    assert r.status_code == 202, r.text
    assert r.json()["count"] == 2
    assert "Content-Length" not in r.request.headers and r.request.headers["Transfer-Encoding"] == "chunked"
    for item in r.json()["executions"]:
        assert client.wait_execution(item["execution_id"])["status"] == "COMPLETED"


def judge0_error_shape(body: Any) -> bool:
    """Judge0's errors: {"error": "..."}, or a refused submission's {"field": ["message", ...]}."""
    if not isinstance(body, dict) or not body:
        return False
    if set(body) == {"error"}:
        return isinstance(body["error"], str) and bool(body["error"])
    return all(isinstance(v, list) and v and all(isinstance(m, str) for m in v) for v in body.values())


# ---- the Judge0-compatible API (/judge0) --------------------------------------------------------

J0 = "/judge0/submissions"
JUDGE0_BODIES: list[Any] = [
    {"source_code": "print(1)", "language_id": 71, "stdin": "a\x00b"},
    {"source_code": "\ud800", "language_id": 71},
    {"source_code": "print(1)", "language_id": "71; DROP TABLE executions"},
    {"source_code": "print(1)", "language_id": 2**70},
    {"source_code": "print(1)", "language_id": [71]},
    {"source_code": ["print(1)"], "language_id": 71},
    {"source_code": "print(1)", "language_id": 71, "cpu_time_limit": "1e400"},
    {"source_code": "print(1)", "language_id": 71, "memory_limit": -(2**70)},
    {"source_code": "print(1)", "language_id": 71, "wall_time_limit": {"a": 1}},
    {"source_code": "print(1)", "language_id": 71, "command_line_arguments": "\"unbalanced"},
    {"source_code": "print(1)", "language_id": 71, "command_line_arguments": "x" * 513},
    {"source_code": "print(1)", "language_id": 71, "callback_url": "http://169.254.169.254/latest/meta-data"},
    {"source_code": "print(1)", "language_id": 71, "callback_url": "file:///etc/passwd"},
    {"source_code": "print(1)", "language_id": 71, "callback_url": ["http://x"]},
    {"source_code": "print(1)", "language_id": 71, "enable_network": "true"},
    {"source_code": "print(1)", "language_id": 71, "redirect_stderr_to_stdout": {"a": 1}},
    {"source_code": "print(1)", "language_id": 71, "additional_files": "UEsDBA=="},
    {"source_code": "print(1)", "language_id": 71, "additional_files": {"zip": True}},
    {"source_code": "print(1)", "language_id": 71, "number_of_runs": 2**31},
    {"source_code": "x" * 300_000, "language_id": 71},
]


def _zip(name: str, data: bytes) -> str:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(name, data)
    return base64.b64encode(buf.getvalue()).decode()


JUDGE0_BODIES += [
    # zip slip, and a zip bomb (16 MB of zeros in about 16 KB): refused before anything is extracted
    {"source_code": "print(1)", "language_id": 71, "additional_files": _zip("../../etc/cron.d/x", b"x")},
    {"source_code": "print(1)", "language_id": 71, "additional_files": _zip("zeros.txt", b"0" * (16 << 20))},
]


@pytest.mark.parametrize("body", JUDGE0_BODIES, ids=lambda b: json.dumps(b)[:60])
def test_judge0_hostile_submissions(target: Target, body: Any) -> None:
    for path in (J0, J0 + "?wait=true", J0 + "/batch"):
        doc = {"submissions": [body]} if path.endswith("/batch") else body
        r = target.send("POST", path, json=doc)
        assert 400 <= r.status_code < 500, (path, r.status_code, r.text[:300])
        assert judge0_error_shape(r.json() if not path.endswith("/batch") else r.json()[0]), r.text[:300]


@pytest.mark.parametrize("raw", [b"", b"null", b"[]", b"{", b"\xff\xfe", b'{"submissions": 5}',
                                 b'{"submissions": [[]]}', b'{"submissions": "x"}', b"[" * 50_000 + b"]" * 50_000])
@pytest.mark.parametrize("path", [J0, J0 + "/batch", J0 + "?base64_encoded=true"])
def test_judge0_bodies_that_are_not_submissions(target: Target, raw: bytes, path: str) -> None:
    r = target.send("POST", path, data=raw, headers=JSON)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    body = r.json()
    assert judge0_error_shape(body if isinstance(body, dict) else body[0]), body


@pytest.mark.parametrize("query", ["fields=" + "x," * 1500, "fields=%00", "base64_encoded=%ff", "page=-1",
                                   "per_page=-5", "page=99999999999999999999", "tokens=" + ",".join(["a"] * 21),
                                   "tokens=" + "%00," * 10])
def test_judge0_hostile_queries(target: Target, query: str) -> None:
    for path in (J0, J0 + "/batch", J0 + "/" + str(uuid.uuid4())):
        r = target.send("GET", f"{path}?{query}")
        assert r.status_code < 500, (path, query, r.status_code, r.text[:300])
        if r.status_code >= 400:
            assert judge0_error_shape(r.json()), r.text[:300]


def test_judge0_base64_that_is_not_base64(target: Target) -> None:
    r = target.send("POST", J0 + "?base64_encoded=true", json={"source_code": "%%%not base64%%%", "language_id": 71,
                                                               "stdin": "\u00e9"})
    assert r.status_code == 422 and "source_code" in r.json() and "stdin" in r.json(), r.text
    r = target.send("POST", J0 + "?base64_encoded=true",
                    json={"source_code": base64.b64encode(b"\xff\xfe\x00").decode(), "language_id": 71})
    assert r.status_code == 422 and "UTF-8" in r.json()["source_code"][0], r.text
