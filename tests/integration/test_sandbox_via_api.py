"""The sandbox's protections proven end to end: each attack is sent as a user would send it (a
session, an execute request), runs on a real Celery worker in the real bubblewrap sandbox, and the
test checks that it failed. Every attack runs with small limits so the machine stays healthy.
(tests/sandbox/ attacks the sandbox directly, in more depth.)"""

from __future__ import annotations

import json
import socket
import uuid
from urllib.parse import urlparse

import psutil
import pytest

from tests.conftest import Cluster
from tests.sandbox.test_languages import ARGS, EXPECTED_TAIL, HELLO
from tests.support.client import ApiClient

pytestmark = [pytest.mark.integration, pytest.mark.sandbox]


def processes_with(marker: str) -> list[int]:
    """Host processes whose command line carries `marker` (an argument only that run was given)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if marker in " ".join(p.info["cmdline"] or []):
            found.append(p.pid)
    return found


@pytest.fixture
def api(cluster: Cluster) -> ApiClient:
    return cluster.client()


@pytest.mark.parametrize("lang", sorted(HELLO))
def test_hello_world_with_stdin_and_args_in_every_language(api: ApiClient, lang: str) -> None:
    result = api.run(HELLO[lang], lang, timeout=240, stdin="World\n", args=list(ARGS))
    assert result["status"] == "COMPLETED", result
    assert result["stdout"] == EXPECTED_TAIL.get(lang, "Hello World! one|two words\n")


def test_no_network_to_broker_database_or_api(api: ApiClient, cluster: Cluster) -> None:
    api_port = urlparse(cluster.base).port
    code = (
        "import socket, json\n"
        "out = {}\n"
        f"for port in (6379, 5432, {api_port}):\n"
        "    try:\n"  # the syscall filter refuses the socket itself (EAFNOSUPPORT)
        "        s = socket.socket()\n"
        "        s.settimeout(2)\n"
        "        s.connect(('127.0.0.1', port)); out[port] = 'CONNECTED'\n"
        "    except OSError as e:\n"
        "        out[port] = type(e).__name__\n"
        "print(json.dumps(out))\n"
    )
    result = api.run(code)
    assert result["status"] == "COMPLETED", result
    outcome = json.loads(result["stdout"])
    assert "CONNECTED" not in outcome.values(), outcome
    # The same ports do answer from the host, so the refusal is the sandbox's doing.
    with socket.create_connection(("127.0.0.1", api_port), timeout=2):
        pass


def test_no_secrets_and_no_view_of_the_host(api: ApiClient) -> None:
    code = (
        "import os, json\n"
        "def readable(p):\n"
        "    try:\n"
        "        open(p).read(1); return True\n"
        "    except OSError:\n"
        "        return False\n"
        "print(json.dumps({\n"
        "  'env': sorted(os.environ),\n"
        "  'uid': os.getuid(),\n"
        "  'procs': [p for p in os.listdir('/proc') if p.isdigit()],\n"
        "  'shadow': readable('/etc/shadow'),\n"
        "  'root': os.path.exists('/root') and bool(os.listdir('/root')),\n"
        "  'cwd_files': os.listdir('.'),\n"
        "}))\n"
    )
    result = api.run(code)
    assert result["status"] == "COMPLETED", result
    seen = json.loads(result["stdout"])
    for secret in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY"):
        assert secret not in seen["env"]
    assert seen["uid"] != 0
    assert len(seen["procs"]) <= 3, seen["procs"]  # its own pid namespace
    assert seen["shadow"] is False and seen["root"] is False


def test_no_privilege_and_read_only_system(api: ApiClient) -> None:
    code = (
        "import os\n"
        "status = open('/proc/self/status').read()\n"
        "caps = [l for l in status.splitlines() if l.startswith(('CapEff', 'NoNewPrivs'))]\n"
        "print(*caps, sep='\\n')\n"
        "for path in ('/proc/sys/kernel/hostname', '/usr/bin/planted', '/etc/planted'):\n"
        "    try:\n"
        "        open(path, 'w').write('x'); print('WROTE', path)\n"
        "    except OSError as e:\n"
        "        print('denied', path)\n"
    )
    result = api.run(code)
    assert result["status"] == "COMPLETED", result
    assert "CapEff:\t0000000000000000" in result["stdout"]
    assert "NoNewPrivs:\t1" in result["stdout"]
    assert "WROTE" not in result["stdout"]


def test_fork_bomb_is_contained_and_the_service_stays_responsive(api: ApiClient) -> None:
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    marker = f"forkbomb-{uuid.uuid4().hex}"
    result = api.run(code, max_processes=16, time_limit_ms=3000, timeout=120, args=[marker])
    assert result["status"] in {"TIMEOUT", "FAILED"}, result
    assert api.request("GET", "/health").status_code == 200
    after = api.run("print('still here')")
    assert after["status"] == "COMPLETED" and after["stdout"] == "still here\n"
    assert processes_with(marker) == []


def test_memory_bomb_across_processes_hits_the_memory_limit(api: ApiClient) -> None:
    code = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        block = bytearray(40 * 1024 * 1024)\n"
        "        time.sleep(5)\n"
        "        os._exit(0)\n"
        "block = bytearray(40 * 1024 * 1024)\n"
        "for _ in range(3):\n"
        "    os.wait()\n"
    )
    result = api.run(code, memory_limit_mb=64, time_limit_ms=10_000)
    assert result["status"] == "FAILED" and result["reason"] == "MEMORY_LIMIT", result


def test_output_flood_is_cut_and_marked_truncated(api: ApiClient) -> None:
    result = api.run("while True:\n    print('x' * 1000)", max_output_bytes=64 * 1024, time_limit_ms=10_000)
    assert result["status"] == "FAILED" and result["reason"] == "OUTPUT_LIMIT", result
    assert result["stdout_truncated"] is True
    assert len(result["stdout"].encode()) <= 64 * 1024


def test_daemonized_children_do_not_survive_the_run(api: ApiClient) -> None:
    code = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(120)', sys.argv[1]])\n"
        "    os._exit(0)\n"
        "print('parent exits', flush=True)\n"
    )
    marker = f"daemon-{uuid.uuid4().hex}"
    result = api.run(code, args=[marker])
    assert result["status"] == "COMPLETED", result
    assert result["stdout"] == "parent exits\n"
    assert processes_with(marker) == []
