"""Every route of /swagger.json (and the few outside it), every documented method and a made-up
one, with hostile path ids, bodies, headers and query parameters, on an API of its own: no answer
is a 5xx, and every 4xx is in its API's error shape. (Apart from test_hostile_input.py, whose tests
share the `cluster`: xdist runs the two files side by side.)"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tests.integration.test_hostile_input import judge0_error_shape
from tests.support.accounts import login
from tests.support.client import ApiClient
from tests.support.procs import create_migrated_database, run_livecode, start_api

pytestmark = pytest.mark.integration


@dataclass
class SweepApi:
    base: str
    proc: Any
    token: str
    logout_token: str  # another sign-in's: a sign-out revokes the token it is sent with
    sid: str


@pytest.fixture(scope="module")
def sweep_api(cluster: Any, pg_admin_url: str) -> Iterator[SweepApi]:
    """An API of its own (its own database, sign-in required) whose admin sweeps every route: the
    handlers run, not only the 401 in front of them, and admin endpoints purge nothing of others."""
    env = {**cluster.env, "LIVECODE_AUTH_REQUIRED": "true"}
    env["DATABASE_URL"] = create_migrated_database(pg_admin_url, env)
    password = "sweep-" + uuid.uuid4().hex
    run_livecode("user", "create", "sweeper", "--admin", env={**env, "LIVECODE_PASSWORD": password}, check=True)
    proc, base = start_api(env)
    token = login(base, "sweeper", password)["access_token"]
    sid = ApiClient(base, headers={"Authorization": f"Bearer {token}"}).create_session("print(1)")["session_id"]
    yield SweepApi(base, proc, token, login(base, "sweeper", password)["access_token"], sid)
    proc.stop()


def latin1(value: str) -> str:
    """Header values go out as their UTF-8 bytes (requests sends str headers as latin-1)."""
    return value.encode("utf-8").decode("latin-1")


HOSTILE_IDS = [
    "not-a-uuid",
    str(uuid.uuid4()),
    "%00",
    "%ff%fe",
    "\u202eevil",
    "x" * 2000,
    "..%2f..%2fetc",
    "00000000-0000-0000-0000-000000000000",
    "real",
]
HOSTILE_VALUES = [
    '"\\u0000"',
    '"\\ud800"',
    "1e400",
    "-1",
    str(2**70),
    "[]",
    "{}",
    "null",
    "true",
    '"' + "x" * 20_000 + '"',
    "[" * 2000 + "]" * 2000,
    '"\\u202e\\u200d"',
    "-0.0",
    '"NaN"',
]
HOSTILE_BODIES: list[tuple[str, bytes | Any, str | None]] = [
    ("empty", b"", "application/json"),
    ("truncated", b"{", "application/json"),
    ("deep-arrays", b"[" * 50_000 + b"]" * 50_000, "application/json"),
    ("deep-objects", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, "application/json"),
    ("bad-utf8", b'{"\xff": "\xfe"}', "application/json"),
    ("not-an-object", b"[1, 2, 3]", "application/json"),
    ("x+json", b"{}", "text/x+json"),
    ("form", b"a=1&b=2", "application/x-www-form-urlencoded"),
    (
        "multipart",
        b"--x\r\nContent-Disposition: form-data; name=a\r\n\r\n1\r\n--x--\r\n",
        "multipart/form-data; boundary=x",
    ),
    ("no-content-type", b"{}", None),
    ("chunked", "chunked", "application/json"),
]
HOSTILE_HEADERS: list[dict[str, str]] = [
    {"Authorization": "Bearer " + "\U0001f4a9" * 20},
    {"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."},
    {"Authorization": "Basic Zm9vOmJhcg=="},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer " + "a" * 5000},
    {"X-API-Key": "lc_" + "\u00e9" * 300},
    {"X-API-Key": "x" * 5000},
    {"Idempotency-Key": "\u202e" * 50},
    {"Idempotency-Key": "k" * 5000},
    {"If-Match": '"\u202e"'},
    {"If-Match": "*"},
    {"If-Match": 'W/"1", "2"'},
    {"If-None-Match": "x" * 3000},
    {"Last-Event-ID": "\u00e9" * 500},
    {"Last-Event-ID": "1-1-1-1"},
    {"Last-Event-ID": "99999999999999999999-0"},
    {"X-Request-ID": "\U0001f4a9" * 30},
    {"X-Forwarded-For": ", ,::::zz, 999.1.1.1"},
    {"X-Forwarded-Proto": "gopher"},
    {"Forwarded": 'for="[::1";proto=x'},
    {"Accept": "application/xml;q=\u00e9"},
    {"Accept-Encoding": "br;q=2, *;q=-1"},
    {"Range": "bytes=9-1,-5"},
    {"Content-Encoding": "gzip"},
    {"Content-Type": "application/json; charset=utf-16"},
    {"Content-Type": "application/json; charset=\u00e9\u00e9"},
    {"Origin": "null"},
    {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "!!"},
]
HOSTILE_QUERY = ["-1", "9" * 5000, "%00", "%ff", "1e9", "", "[]", "\u202e", "0x10", "1&page=2&page=x"]
EXTRA_QUERY = ["access_token=" + "a" * 300, "access_token=eyJ.e30.x", "last_event_id=zz", "limit=-5"]
NOT_IN_SWAGGER = [
    ("/api/v1/executions/{execution_id}/ws", ["get"], []),
    ("/s/{session_id}", ["get"], []),
    ("/static/{path}", ["get"], []),
    ("/docs", ["get"], []),
    ("/swagger.json", ["get"], []),
    ("/metrics", ["get"], []),
    ("/", ["get"], []),
]
# The Piston API (its own document, /piston/openapi.json; its errors are Piston's {"message"}).
PISTON_ROUTES = [
    ("/piston/api/v2/runtimes", ["get"], []),
    ("/piston/api/v2/execute", ["post"], []),
    ("/piston/api/v2/packages", ["get", "post", "delete"], []),
    ("/piston/api/v2/connect", ["get"], []),
    ("/piston/openapi.json", ["get"], []),
]
PISTON_FIELDS = [
    "language",
    "version",
    "files",
    "stdin",
    "args",
    "run_timeout",
    "run_cpu_time",
    "run_memory_limit",
    "compile_timeout",
    "compile_cpu_time",
    "compile_memory_limit",
]


LOGOUT = "/api/v1/auth/logout"


def routes(base: str) -> list[tuple[str, list[str], list[dict[str, Any]]]]:
    spec = requests.get(base + "/swagger.json", timeout=30).json()
    out = []
    for path, ops in spec["paths"].items():
        methods = [m for m in ops if m != "parameters"]
        params = [p for m in methods for p in ops[m].get("parameters", [])]
        out.append((path, methods, params))
    assert len(out) >= 15, "the sweep found too few routes in /swagger.json"
    return out + NOT_IN_SWAGGER + PISTON_ROUTES


def body_fields(base: str) -> set[str]:
    spec = requests.get(base + "/swagger.json", timeout=30).json()
    return {name for model in spec["definitions"].values() for name in model.get("properties", {})}


def check_answer(r: requests.Response, what: str, failures: list[str]) -> None:
    if r.status_code >= 500:
        failures.append(f"{what}: {r.status_code} {r.text[:200]}")
    elif r.status_code >= 400 and r.status_code != 414 and urlsplit(r.url).path.startswith("/piston/"):
        body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else None
        if not (isinstance(body, dict) and set(body) == {"message"} and isinstance(body["message"], str)):
            failures.append(f"{what}: {r.status_code} not in Piston's error shape: {r.text[:200]!r}")
    elif r.status_code >= 400 and r.status_code != 414 and urlsplit(r.url).path.startswith("/judge0/"):
        # The Judge0-compatible API answers in Judge0's error shapes (docs/compat.md); a request
        # line over the server's limit (414) is refused by the HTTP server before any route.
        try:
            assert r.headers.get("Content-Type", "").startswith("application/json")
            assert judge0_error_shape(r.json())
        except Exception:  # noqa: BLE001 - collected and reported together
            failures.append(f"{what}: {r.status_code} not in Judge0's error shape: {r.text[:200]!r}")
    elif r.status_code >= 400:
        try:
            err = r.json()["error"]
            assert r.headers.get("Content-Type", "").startswith("application/json")
            assert isinstance(err["code"], str) and err["code"] and isinstance(err["message"], str)
        except Exception:  # noqa: BLE001 - collected and reported together
            failures.append(f"{what}: {r.status_code} not in the error shape: {r.text[:200]!r}")


# About 7,900 requests: a minute or two on an idle 2-core machine, over five minutes at load 14.
@pytest.mark.timeout(900)
def test_every_route_with_hostile_input(sweep_api: SweepApi) -> None:
    """Every route of /swagger.json (and the few outside it), every documented method and one made
    up: hostile path ids, bodies, headers and query parameters. No answer is a 5xx, and every
    4xx is in the one error shape."""
    http = requests.Session()
    fields = sorted(body_fields(sweep_api.base))
    failures: list[str] = []
    sent = 0

    def send(
        method: str,
        path: str,
        what: str,
        headers: dict[str, str] | None = None,
        body: Any = None,
        content_type: str | None = "application/json",
        query: str = "",
        refused_unread: bool = False,
    ) -> None:
        nonlocal sent
        # POST /auth/logout, sent the sweeper's token, would end its sign-in: every route after it
        # would be swept behind a 401.
        token = sweep_api.logout_token if path.startswith(LOGOUT) else sweep_api.token
        hdrs = {
            "Authorization": f"Bearer {token}",
            **({"Content-Type": content_type} if content_type and body is not None else {}),
        }
        hdrs.update({k: latin1(v) for k, v in (headers or {}).items()})
        if body == "chunked":
            body = iter([b"{", b"}"])
        url = sweep_api.base + path + (("?" + query) if query else "")
        try:
            r = http.request(method, url, data=body, headers=hdrs, timeout=60, stream=True)
        except requests.RequestException as exc:
            failures.append(f"{what}: no answer ({exc.__class__.__name__}: {str(exc)[:120]})")
            return
        with r:
            sent += 1
            if r.headers.get("Content-Type", "").startswith("text/event-stream"):
                return  # a live stream answered 200: nothing to read to the end
            check_answer(r, what, failures)
            if refused_unread and r.status_code not in (404, 405):
                failures.append(f"{what}: {r.status_code}, not refused by the router (404/405)")

    for template, methods, params in routes(sweep_api.base):
        streaming = template.endswith(("/events", "/ws"))

        def fill(value: str, template: str = template, streaming: bool = streaming) -> str:
            if value == "real":
                value = str(uuid.uuid4()) if streaming else sweep_api.sid
            return re.sub(r"\{[^}]+\}", lambda _m: value, template)

        path = fill("real")
        for method in [m.upper() for m in methods] + ["BREW"]:
            has_body = method in ("POST", "PUT", "PATCH", "DELETE", "BREW")
            for value in HOSTILE_IDS if "{" in template else []:
                send(method, fill(value), f"{method} {template} id={value[:20]!r}", body=b"{}" if has_body else None)
            for name, raw, ctype in HOSTILE_BODIES if has_body else []:
                send(
                    method,
                    path,
                    f"{method} {template} body={name}",
                    body=raw,
                    content_type=ctype,
                    refused_unread=method == "BREW",
                )
            # Field documents only to the route's own methods: a made-up one is refused by the
            # router (405, checked above with the hostile bodies) before any handler reads a field,
            # and its body is drained unread, which those bodies already exercise. (It was half
            # the sweep's requests and three quarters of its 350 MB.)
            for value in HOSTILE_VALUES if has_body and method != "BREW" else []:
                # Every documented field at once, in documents under the request size limit (a
                # long value over ~140 fields would be a 413, which test_bodies_of_many_megabytes
                # covers, and not reach the handlers).
                names = PISTON_FIELDS if template.startswith("/piston/") else fields
                per_doc = max(1, 1_000_000 // (len(value) + 40))
                for start in range(0, len(names), per_doc):
                    doc = "{" + ", ".join(f'"{f}": {value}' for f in names[start : start + per_doc]) + "}"
                    send(method, path, f"{method} {template} fields={value[:20]}", body=doc.encode())
                send(
                    method,
                    path,
                    f"{method} {template} field={value[:20]}",
                    body=('{"executions": [{"session_id": ' + value + '}], "name": ' + value + "}").encode(),
                )
            for headers in HOSTILE_HEADERS:
                send(
                    method,
                    path,
                    f"{method} {template} headers={list(headers)}",
                    headers=headers,
                    body=b"{}" if has_body else None,
                )
            query_names = [p["name"] for p in params if p.get("in") == "query"]
            for value in HOSTILE_QUERY:
                for name in query_names:
                    send(method, path, f"{method} {template} ?{name}={value[:20]}", query=f"{name}={value}")
            for query in EXTRA_QUERY:
                send(method, path, f"{method} {template} ?{query[:30]}", query=query)
    assert sent > 2000, sent
    me = http.get(sweep_api.base + "/api/v1/auth/me", headers={"Authorization": f"Bearer {sweep_api.token}"})
    http.close()  # an open keep-alive connection holds the API's graceful stop to its 30 s timeout
    assert me.status_code == 200, "the sweeper was signed out during the sweep: " + me.text[:200]
    assert not failures, f"{len(failures)} of {sent} answers were wrong:\n" + "\n".join(failures[:40])
    log = sweep_api.proc.output()
    assert '"unhandled error"' not in log and "Traceback" not in log, log[-4000:]
