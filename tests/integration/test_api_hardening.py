"""Issue 10, in the real server: a guessable SECRET_KEY stops `livecode api` and `livecode worker`
before they serve anything, and gunicorn's own log lines (a request line or header it could not
parse) carry no token or key."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import uuid
from typing import Any

import pytest
import requests

from tests.support.procs import free_port, livecode, wait_for

pytestmark = pytest.mark.integration

MAKE = "secrets.token_urlsafe(48)"


@pytest.mark.parametrize("key", ["change-me", "test-secret-key-not-for-production", "short-but-random-Zq81",
                                 "a" * 64, "0123456789abcdef" * 4])
@pytest.mark.parametrize("command", ["api", "worker"])
def test_guessable_secret_key_refuses_to_start(cluster: Any, command: str, key: str) -> None:
    port = free_port()
    argv = livecode("api", "--host", "127.0.0.1", "--port", str(port)) if command == "api" else \
        livecode("worker", "-n", f"refused-{uuid.uuid4().hex[:6]}@test")
    proc = subprocess.Popen(argv, env={**cluster.env, "SECRET_KEY": key}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"`livecode {command}` kept running with SECRET_KEY={key!r}")
    assert proc.returncode != 0
    assert "SECRET_KEY" in stderr and MAKE in stderr, stderr[-2000:]
    assert key not in stderr
    # Nothing was listening: the refusal came before the server started.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def send_raw(base: str, data: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
        return out


def test_tokens_never_reach_the_log_from_requests_gunicorn_refuses(cluster: Any) -> None:
    canary = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ." + uuid.uuid4().hex  # looks like a token
    key = "lc_" + uuid.uuid4().hex + uuid.uuid4().hex
    path = f"/api/v1/executions/{uuid.uuid4()}/events?access_token={canary}"
    # Each of these request lines is echoed whole in gunicorn's "Invalid request" warning.
    attacks = [
        f"GET {path}\r\nHost: x\r\n\r\n",  # no version
        f"GET  {path} HTTP/1.1\r\nHost: x\r\n\r\n",  # two spaces
        f"GET {path}\x00 HTTP/1.1\r\nHost: x\r\n\r\n",  # a NUL byte
        f"GET *{path} HTTP/1.1\r\nHost: x\r\n\r\n",  # not a path
        f"GET {path}&x=\ty HTTP/1.1\r\nHost: x\r\n\r\n",  # a tab
        f"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {canary}\x01\r\n\r\n",  # a bad header value
        f"GET /health HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\x7f\r\n\r\n",
        f"GET /health HTTP/1.1\r\nHost: x\r\nX-API-Key\x01: {key}\r\n\r\n",  # a bad header name
    ]
    before = cluster.api.output().count("Invalid request from")
    for attack in attacks:
        answer = send_raw(cluster.base, attack.encode("latin-1"))
        assert answer.startswith(b"HTTP/1.1 400"), answer[:200]
        assert b'"error"' in answer  # the JSON error shape, from gunicorn itself
    wait_for(lambda: cluster.api.output().count("Invalid request from") >= before + len(attacks), 10,
             what="gunicorn's warnings")
    log = cluster.api.output()
    assert canary not in log and canary.split(".")[-1] not in log
    assert key not in log and key[3:] not in log
    assert "access_token=[redacted]" in log  # the line is still there, only the secret is not


def test_an_answer_given_before_the_body_is_read_reaches_the_client(cluster: Any) -> None:
    """A 401/404/405 needs no body, so the body was left unread; gunicorn drains 64 KiB of it and
    then closes the connection with the rest unread, which resets it: the client, still sending,
    never saw its answer."""
    body = b'{"pad": "' + b"x" * (1536 * 1024) + b'"}'  # under the 2 MiB request limit
    session = requests.Session()
    for method, path, status in [("DELETE", f"/api/v1/admin/dead-letters/{uuid.uuid4()}", 404),
                                 ("BREW", "/api/v1/languages", 405), ("POST", "/health", 405)] * 3:
        r = session.request(method, cluster.base + path, data=body, headers={"Content-Type": "application/json"},
                            timeout=60)
        assert r.status_code == status, r.text[:200]
        assert r.json()["error"]["code"]


def _answer_head(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n\r\n")[0].decode("latin-1")


def test_a_body_past_the_cap_ends_the_connection_and_says_so(cluster: Any) -> None:
    """A body past the request limit is answered without being read: what is left of it must not
    be taken for the next request on the connection. The answer says "Connection: close" (a client
    then opens a new connection instead of sending into a dead one), and the connection closes."""
    host, port = cluster.base.rsplit("/", 1)[1].split(":")
    for method in ("BREW", "POST"):
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            body = b'{"pad": "' + b"x" * (3 << 20) + b'"}'
            sock.sendall(f"{method} /health HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            head = _answer_head(sock)
            assert head.split()[1] in ("405", "413"), head
            assert "connection: close" in head.lower(), head
    # Under the cap, an unread body is drained: the connection serves the next request.
    session = requests.Session()
    for _ in range(2):
        r = session.request("BREW", cluster.base + "/health", data=b"{}" * 1000, timeout=30)
        assert r.status_code == 405 and r.headers.get("Connection", "").lower() != "close"
    assert session.get(cluster.base + "/health", timeout=30).status_code == 200
