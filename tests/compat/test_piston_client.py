"""An existing Piston client, unchanged, against a live LiveCode on loopback: ultra-piston (PyPI,
pinned in the dev extras), whose pydantic models check every answer's shape, with its API key
sent as Piston clients send one (`Authorization: <key>`). Its base URL is the only change:
`http://HOST:PORT/piston/api/v2/`. The interactive protocol (WS /piston/api/v2/connect), which
ultra-piston does not speak, is driven with websocket-client, message by message.

One API process with sign-in required, on the shared `cluster`'s database, Redis and worker:
every run here goes through the real sandbox."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import websocket
from ultra_piston import File, HTTPXClient, PistonClient
from ultra_piston.errors import BadRequestError, UnexpectedStatusError

from tests.support.accounts import login, register
from tests.support.procs import start_api

pytestmark = pytest.mark.integration

TIMEOUT_S = 120


class PatientHTTPX(HTTPXClient):  # type: ignore[misc]
    """The client's own HTTP client with a longer timeout than httpx's 5 s: a run on a busy
    2-core CI machine (queue, sandbox, compile) can take longer. Nothing else changes."""

    def _get_http_payload(self, endpoint: str = "") -> dict[str, Any]:
        return {**super()._get_http_payload(endpoint), "timeout": TIMEOUT_S}


class Server:
    def __init__(self, base: str, key: str, access: str) -> None:
        self.base, self.key, self.access = base, key, access
        self.client = PistonClient(
            api_key=key, rate_limit=0, base_url=base + "/piston/api/v2/", http_client=PatientHTTPX
        )

    def raw(self, body: Any, **headers: str) -> requests.Response:
        return requests.post(
            self.base + "/piston/api/v2/execute",
            json=body,
            timeout=TIMEOUT_S,
            headers={"Authorization": self.key, **headers},
        )


@pytest.fixture(scope="module")
def piston(cluster: Any) -> Iterator[Server]:
    proc, base = start_api({**cluster.env, "LIVECODE_AUTH_REQUIRED": "true"})
    try:
        username, password = register(base)
        access = login(base, username, password)["access_token"]
        r = requests.post(
            base + "/api/v1/api-keys",
            json={"name": "piston"},
            timeout=30,
            headers={"Authorization": f"Bearer {access}"},
        )
        assert r.status_code == 201, r.text
        yield Server(base, r.json()["key"], access)
    finally:
        proc.stop()


def test_runtimes_and_a_run_with_stdin_and_args(piston: Server) -> None:
    runtimes = {rt.language: rt for rt in piston.client.get_runtimes()}
    assert {"python", "c", "c++", "bash"} <= set(runtimes), runtimes
    py = runtimes["python"]
    assert "py" in py.aliases and py.version.count(".") == 2
    src = "import sys\nprint(sys.stdin.read().strip()[::-1], *sys.argv[1:])"
    out = piston.client.post_execute("py", "*", File(content=src), stdin="olleh", args=["a", "b c"])
    assert (out.language, out.version) == ("python", py.version)
    assert out.run.stdout == "hello a b c\n" and out.run.stderr == "" and out.run.code == 0
    assert out.run.output == out.run.stdout and out.compile is None


def test_output_interleaves_stdout_and_stderr_in_the_order_written(piston: Server) -> None:
    # Each write waits until the sandbox has read it (FIONREAD on the pipe drops to 0) before the
    # next, on the other stream: the order is then known, however busy the machine.
    src = """
import array, fcntl, os, termios, time
def drained(fd):
    n = array.array('i', [0])
    end = time.monotonic() + 10
    while time.monotonic() < end:
        fcntl.ioctl(fd, termios.FIONREAD, n, True)
        if n[0] == 0:
            return
        time.sleep(0.001)
for i in range(4):
    os.write(1, b"out%d\\n" % i); drained(1)
    os.write(2, b"err%d\\n" % i); drained(2)
"""
    out = piston.client.post_execute("python", "3.x", File(name="main.py", content=src))
    assert out.run.stdout == "".join(f"out{i}\n" for i in range(4))
    assert out.run.stderr == "".join(f"err{i}\n" for i in range(4))
    assert out.run.output == "".join(f"out{i}\nerr{i}\n" for i in range(4)), out.run.output


def test_a_compiled_language_and_a_compile_error(piston: Server) -> None:
    ok = piston.client.post_execute(
        "c", "*", File(name="main.c", content='#include <stdio.h>\nint main(void){puts("compiled");return 0;}')
    )
    assert ok.compile is not None and ok.compile.code == 0
    assert ok.run.stdout == "compiled\n" and ok.run.code == 0
    bad = piston.client.post_execute("c++", "*", File(content="int main( { return 0; }"))
    assert bad.compile is not None and bad.compile.code not in (0, None)
    assert "error" in bad.compile.stderr and bad.compile.output == bad.compile.stderr
    assert bad.run.model_dump() == bad.compile.model_dump()  # Piston's answer when the run stage never started


def test_several_files_make_one_program(piston: Server) -> None:
    """Piston writes every file beside the entry (the first utf8 file): a module, a data file
    sent as base64, and for C a second translation unit compiled with the entry."""
    py = piston.raw(
        {
            "language": "python",
            "version": "*",
            "files": [
                {"name": "app.py", "content": "from util.greet import greet\nprint(greet(open('name.txt').read()))"},
                {"name": "util/__init__.py", "content": ""},
                {"name": "util/greet.py", "content": "def greet(n):\n    return 'hello ' + n.strip()"},
                {"name": "name.txt", "content": "YWRh\n", "encoding": "base64"},
            ],
        }
    )
    assert py.status_code == 200, py.text
    assert py.json()["run"]["stdout"] == "hello ada\n", py.json()
    c = piston.raw(
        {
            "language": "c",
            "version": "*",
            "files": [
                {"content": '#include <stdio.h>\nint twice(int);\nint main(void){printf("%d\\n", twice(21));}'},
                {"name": "twice.c", "content": "int twice(int x){return 2*x;}"},
            ],
        }
    )
    assert c.status_code == 200 and c.json()["run"]["stdout"] == "42\n", c.text


def test_runtime_error_signal_and_timeout_as_piston_reports_them(piston: Server) -> None:
    failed = piston.raw({"language": "bash", "version": "*", "files": [{"content": "echo no >&2; exit 3"}]}).json()
    assert failed["run"]["code"] == 3 and failed["run"]["status"] == "RE" and failed["run"]["stderr"] == "no\n"
    killed = piston.raw(
        {
            "language": "python",
            "version": "*",
            "files": [{"content": "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"}],
        }
    ).json()
    assert killed["run"]["signal"] == "SIGSEGV" and killed["run"]["status"] == "SG"
    slow = piston.client.post_execute("python", "*", File(content="while True: pass"), run_timeout=1000)
    assert slow.run.signal == "SIGKILL" and slow.run.code is None
    raw = piston.raw(
        {"language": "python", "version": "*", "files": [{"content": "while True: pass"}], "run_timeout": 1000}
    ).json()
    assert raw["run"]["status"] == "TO" and raw["run"]["wall_time"] >= 1000


def test_bad_requests_and_credentials_get_pistons_answers(piston: Server) -> None:
    with pytest.raises(BadRequestError):
        piston.client.post_execute("cobol", "*", File(content="x"))
    r = piston.raw({"language": "python", "version": "*", "files": [{"name": "../x.py", "content": "1"}]})
    assert r.status_code == 400 and "file path" in r.json()["message"]
    r = requests.post(
        piston.base + "/piston/api/v2/execute",
        data="{}",
        timeout=30,
        headers={"Authorization": piston.key, "Content-Type": "text/plain"},
    )
    assert (r.status_code, r.json()) == (415, {"message": "requests must be of type application/json"})
    anonymous = PistonClient(rate_limit=0, base_url=piston.base + "/piston/api/v2/", http_client=PatientHTTPX)
    with pytest.raises(UnexpectedStatusError):
        anonymous.post_execute("python", "*", File(content="print(1)"))
    assert len(anonymous.get_runtimes()) >= 1  # the runtimes are public, as /api/v1/languages is


# ---- WS /piston/api/v2/connect ------------------------------------------------------------------


def connect(piston: Server, browser: bool = False) -> websocket.WebSocket:
    """A connection with the key in the Authorization header, or (`browser`: a browser cannot set
    headers on a WebSocket) with an access token in the query string."""
    url = piston.base.replace("http://", "ws://") + "/piston/api/v2/connect"
    if browser:
        return websocket.create_connection(f"{url}?access_token={piston.access}", timeout=60)
    return websocket.create_connection(url, timeout=60, header=[f"Authorization: {piston.key}"])


def until_closed(ws: websocket.WebSocket, send_after: dict[str, str] | None = None) -> tuple[list[Any], int]:
    """Every message until the server closes, and its close code. `send_after`: {message type:
    text to send as stdin once a message of that type has arrived}."""
    messages: list[Any] = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return messages, int.from_bytes(data[:2], "big")
        if opcode == websocket.ABNF.OPCODE_TEXT:
            msg = json.loads(data)
            messages.append(msg)
            if send_after and msg.get("type") in send_after:
                ws.send(json.dumps({"type": "data", "stream": "stdin", "data": send_after.pop(msg["type"])}))


def test_the_interactive_protocol_runs_a_program_that_reads_what_is_typed(piston: Server) -> None:
    ws = connect(piston)
    src = "import sys\nname = sys.stdin.readline().strip()\nprint('hi', name)\nprint('bye', file=sys.stderr)"
    ws.send(json.dumps({"type": "init", "language": "python", "version": "*", "files": [{"content": src}]}))
    messages, code = until_closed(ws, send_after={"stage": "ada\n"})
    assert code == 4999, messages
    assert messages[0] == {"type": "runtime", "language": "python", "version": messages[0]["version"]}
    assert {"type": "stage", "stage": "run"} in messages
    data = [(m["stream"], m["data"]) for m in messages if m["type"] == "data"]
    assert "".join(d for s, d in data if s == "stdout") == "hi ada\n"
    assert "".join(d for s, d in data if s == "stderr") == "bye\n"
    assert messages[-1] == {"type": "exit", "stage": "run", "code": 0, "signal": None}


def test_the_interactive_protocol_has_compile_and_run_stages(piston: Server) -> None:
    with pytest.raises(websocket.WebSocketBadStatusException):  # sign-in is required
        websocket.create_connection(piston.base.replace("http://", "ws://") + "/piston/api/v2/connect", timeout=30)
    ws = connect(piston, browser=True)
    ws.send(
        json.dumps(
            {
                "type": "init",
                "language": "c",
                "version": "*",
                "files": [{"content": '#include <stdio.h>\nint main(void){puts("x");return 4;}'}],
            }
        )
    )
    messages, code = until_closed(ws)
    assert code == 4999, messages
    kinds = [(m["type"], m.get("stage")) for m in messages if m["type"] in ("stage", "exit")]
    assert kinds == [("stage", "compile"), ("exit", "compile"), ("stage", "run"), ("exit", "run")], messages
    assert messages[-1]["code"] == 4


def test_the_run_stage_is_announced_when_it_starts_not_at_the_first_output(piston: Server) -> None:
    # The program prints nothing until it has read a line, and the client types only once the run
    # stage is announced: announced at the first output, this would wait until the time limit.
    ws = connect(piston)
    src = ('#include <stdio.h>\n'
           'int main(void){char b[64]; if(!fgets(b,64,stdin)) return 1; printf("got %s",b); return 0;}')
    ws.send(json.dumps({"type": "init", "language": "c", "version": "*", "run_timeout": 20000,
                        "files": [{"content": src}]}))
    messages: list[Any] = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        msg = json.loads(data)
        messages.append(msg)
        if msg == {"type": "stage", "stage": "run"}:
            ws.send(json.dumps({"type": "data", "stream": "stdin", "data": "typed\n"}))
    assert int.from_bytes(data[:2], "big") == 4999, messages
    kinds = [(m["type"], m.get("stage")) for m in messages if m["type"] in ("stage", "exit")]
    assert kinds == [("stage", "compile"), ("exit", "compile"), ("stage", "run"), ("exit", "run")], messages
    assert [m["data"] for m in messages if m["type"] == "data" and m["stream"] == "stdout"] == ["got typed\n"]
    assert messages[-1] == {"type": "exit", "stage": "run", "code": 0, "signal": None}


def signal_when_ready(ws: websocket.WebSocket, signals: list[str]) -> tuple[list[Any], int]:
    """Every message until the close, sending the `signal` messages one by one once the program
    printed "ready" (each after the previous one's answer, if it has one)."""
    messages: list[Any] = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return messages, int.from_bytes(data[:2], "big")
        if opcode != websocket.ABNF.OPCODE_TEXT:
            continue
        msg = json.loads(data)
        messages.append(msg)
        ready = msg.get("type") == "data" and "ready" in msg.get("data", "")
        if signals and (ready or msg.get("type") == "error"):
            ws.send(json.dumps({"type": "signal", "signal": signals.pop(0)}))


LOOP = (
    "import time\n"
    "try:\n"
    "    print('ready', flush=True)\n"
    "    while True:\n"
    "        time.sleep(0.01)\n"
    "except KeyboardInterrupt:\n"
    "    print('interrupted', flush=True)\n"
    "    raise SystemExit(130)\n"
)


@pytest.mark.parametrize(
    ("signals", "exit_", "printed", "error"),
    [
        (["SIGINT"], {"code": 130, "signal": None}, "ready\ninterrupted\n", None),  # KeyboardInterrupt
        (["SIGKILL"], {"code": None, "signal": "SIGKILL"}, "ready\n", None),
        # A Piston signal LiveCode does not send: an error message, the connection stays open.
        (["SIGSTOP", "SIGTERM"], {"code": None, "signal": "SIGTERM"}, "ready\n", "SIGSTOP was not sent"),
    ],
)
def test_a_signal_reaches_the_program_and_its_exit_says_so(
    piston: Server, signals: list[str], exit_: dict[str, Any], printed: str, error: str | None
) -> None:
    ws = connect(piston)
    ws.send(json.dumps({"type": "init", "language": "python", "version": "*", "run_timeout": 30000,
                        "files": [{"content": LOOP}]}))
    messages, code = signal_when_ready(ws, list(signals))
    assert code == 4999, messages
    assert "".join(m["data"] for m in messages if m["type"] == "data") == printed
    assert messages[-1] == {"type": "exit", "stage": "run", **exit_}
    errors = [m["message"] for m in messages if m["type"] == "error"]
    assert (error in errors[0]) if error else not errors, messages


@pytest.mark.parametrize(
    ("first", "then", "close"),
    [
        (None, None, 4001),  # nothing within a second
        ({"type": "data", "stream": "stdin", "data": "x"}, None, 4003),
        ({"type": "init", "language": "cobol", "version": "*", "files": []}, None, 4002),
        ("init", {"type": "init"}, 4000),
        ("init", {"type": "data", "stream": "stdout", "data": "x"}, 4004),
        ("init", {"type": "signal", "signal": "SIGNOPE"}, 4005),
    ],
)
def test_the_interactive_protocols_close_codes(piston: Server, first: Any, then: Any, close: int) -> None:
    ws = connect(piston)
    if first == "init":  # a run that waits for input until it is closed
        first = {
            "type": "init",
            "language": "python",
            "version": "*",
            "run_timeout": 10000,
            "files": [{"content": "import sys\nsys.stdin.read()"}],
        }
    if first is not None:
        ws.send(json.dumps(first))
    if then is not None:
        assert json.loads(ws.recv())["type"] == "runtime"
        ws.send(json.dumps(then))
    messages, code = until_closed(ws)
    assert code == close, messages
    if close == 4002:
        assert messages == [{"type": "error", "message": "cobol-* runtime is unknown"}]
