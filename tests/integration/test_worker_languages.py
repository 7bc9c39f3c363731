"""Distributed mode: the API host needs no toolchain. Each worker advertises the languages it can
run (with their toolchain versions) in its heartbeat; `GET /api/v1/languages` and the language
check of every submission use the union over live workers.

The API runs in a private mount namespace where every toolchain binary languages.toml names is
/dev/null (so it can neither find nor run one) and with a PATH holding only the python
interpreter the API itself runs on. One worker has every toolchain but rustc (hidden the same
way), so that a language no live worker has is refused.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest
import requests

from livecode.sandbox.languages import all_languages, list_languages
from tests.conftest import base_env
from tests.support.client import ApiClient
from tests.support.procs import (
    Process,
    RedisServer,
    create_migrated_database,
    free_port,
    livecode,
    wait_api,
    wait_for,
    wait_workers,
)

pytestmark = pytest.mark.integration

WORKER_LACKS = "rust"


def _tools(lang_ids: set[str] | None = None) -> list[str]:
    """The toolchain binaries of `lang_ids` (all languages when None), except the interpreter the
    test's own processes run on (hiding it would stop them, not a toolchain)."""
    ours = os.path.realpath(sys.executable)
    tools = {t for lang in all_languages() if lang_ids is None or lang.id in lang_ids for t in lang.tools()}
    return sorted(t for t in tools if os.path.exists(t) and os.path.realpath(t) != ours)


def hidden(argv: list[str], tools: list[str]) -> list[str]:
    """`argv` in a private mount namespace where each of `tools` is /dev/null (not executable)."""
    # Absolute paths: the API's PATH holds nothing but python.
    mount = shutil.which("mount") or "/usr/bin/mount"
    mounts = " && ".join(f"{mount} --bind /dev/null '{t}'" for t in tools) or "true"
    unshare = shutil.which("unshare") or "/usr/bin/unshare"
    return [unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", f'{mounts} && exec "$@"', "sh", *argv]


@pytest.fixture
def bare_path() -> Iterator[str]:
    """A PATH with only the python interpreter on it."""
    d = tempfile.mkdtemp(prefix="lc-bare-path-")
    for name in ("python", "python3"):
        os.symlink(sys.executable, os.path.join(d, name))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def own_redis() -> Iterator[str]:
    """A Redis of this test's own: no other test's worker may count as live here."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server not installed")
    server = RedisServer().start()
    yield server.url
    server.destroy()


def test_the_api_lists_and_accepts_what_live_workers_advertise(
        pg_admin_url: str, own_redis: str, bare_path: str) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root (a private mount namespace hides the toolchains)")
    installed = {str(lg["id"]) for lg in list_languages() if lg["available"]}
    if not {"c", "go", WORKER_LACKS} <= installed:
        pytest.skip("the worker host needs gcc, go and rustc (scripts/install-system-deps.sh)")
    env = base_env(REDIS_URL=own_redis)
    env["DATABASE_URL"] = create_migrated_database(pg_admin_url, env)
    api_env = {**env, "PATH": bare_path}

    # The API's world has no toolchain: in it, the sandbox's own probe finds none of them.
    probe = subprocess.run(hidden([sys.executable, "-c", "from livecode.sandbox.languages import list_languages\n"
                                   "print(sorted(lg['id'] for lg in list_languages() if lg['available']))"],
                                  _tools()), env=api_env, capture_output=True, text=True, timeout=120, check=True)
    kept = {lang.id for lang in all_languages() if not set(lang.tools()) & set(_tools())}
    assert probe.stdout.strip() == str(sorted(kept & {str(lg["id"]) for lg in list_languages() if lg["available"]}))

    port = free_port()
    api = Process(hidden(livecode("api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"), _tools()),
                  api_env, "api-no-toolchains")
    base = f"http://127.0.0.1:{port}"
    worker = None
    try:
        wait_api(api, base)
        client = ApiClient(base)

        # No live worker yet: every declared language is listed, none available; a run of a
        # declared language is accepted and waits in the queue; an undeclared one is refused.
        listed = requests.get(base + "/api/v1/languages", timeout=10).json()
        assert {lang["id"] for lang in listed} == {lang.id for lang in all_languages()}
        assert not any(lang["available"] for lang in listed)
        early = client.create_session("#include <stdio.h>\nint main(void) { puts(\"queued\"); return 0; }",
                                      language="c")
        r = client.execute(early["session_id"])
        assert r.status_code == 202, r.text
        early_id = r.json()["execution_id"]
        r = client.request("POST", "/api/v1/code-sessions", json={"language": "cobol", "source_code": "x"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "UNSUPPORTED_LANGUAGE"
        lacking = client.create_session("fn main() {}", language=WORKER_LACKS)  # nobody has said yet

        # A worker comes up with every toolchain but one.
        worker = Process(hidden(livecode("worker", "-n", "langs@test", "-c", "2"), _tools({WORKER_LACKS})),
                         env, "worker-langs")
        wait_workers(base, 1)
        assert client.wait_execution(early_id)["stdout"] == "queued\n"

        local = {str(lg["id"]): lg for lg in list_languages()}
        expected = {i for i, lg in local.items() if lg["available"]} - {WORKER_LACKS}

        def advertised() -> dict[str, dict[str, object]] | None:
            langs = {lang["id"]: lang for lang in requests.get(base + "/api/v1/languages", timeout=10).json()}
            return langs if {i for i, lg in langs.items() if lg["available"]} == expected else None

        # The API re-reads the workers' heartbeats at most once a second.
        langs = wait_for(advertised, 30, 0.2, what="the worker's languages on the API")
        assert langs[WORKER_LACKS]["available"] is False
        for lang_id in expected:  # the worker's toolchain versions, not the API host's
            assert langs[lang_id]["version"] == local[lang_id]["version"] != ""

        # A run of a language a live worker has; one that no live worker has is refused.
        session = client.create_session("package main\nimport \"fmt\"\nfunc main() { fmt.Println(\"go ok\") }",
                                        language="go")
        done = client.wait_execution(client.execute(session["session_id"]).json()["execution_id"])
        assert (done["status"], done["stdout"]) == ("COMPLETED", "go ok\n")
        r = client.request("POST", "/api/v1/code-sessions",
                           json={"language": WORKER_LACKS, "source_code": "fn main() {}"})
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["code"] == "LANGUAGE_UNAVAILABLE" and "live worker" in error["message"]
        assert sorted(error["details"]["supported"]) == sorted(expected)
        # A batch is checked the same way: all or nothing.
        both = [{"session_id": session["session_id"]}, {"session_id": lacking["session_id"]}]
        batch = client.request("POST", "/api/v1/executions/batch", json={"executions": both})
        assert batch.status_code == 400 and batch.json()["error"]["code"] == "LANGUAGE_UNAVAILABLE", batch.text
        batch = client.request("POST", "/api/v1/executions/batch", json={"executions": both[:1]})
        assert batch.status_code == 202 and batch.json()["count"] == 1, batch.text
    except BaseException:
        print(api.output()[-4000:], worker.output()[-4000:] if worker else "")
        raise
    finally:
        for proc in (worker, api):
            if proc is not None:
                proc.stop()
