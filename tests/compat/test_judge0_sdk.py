"""The official Judge0 Python SDK (`judge0` from PyPI, pinned in the dev extras), unchanged, against
a real LiveCode stack (the shared `cluster`: PostgreSQL, Redis, an API process, a Celery worker and
the sandbox) through /judge0, found with JUDGE0_CE_ENDPOINT and JUDGE0_CE_AUTH_HEADERS as any SDK
user would point it. Its token is a LiveCode API key sent as X-Auth-Token."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import Cluster
from tests.support.accounts import login, register
from tests.support.limit_programs import DEEP_RECURSION_C, SPIN_1_2_S_PY, WRITE_2_MIB_C

# The SDK and its HTTP client come with the dev extras (scripts/setup.sh installs them); a venv
# made before they were added skips this file, saying so, rather than breaking the collection.
judge0 = pytest.importorskip("judge0", reason="the judge0 SDK is a dev dependency: pip install -e '.[dev]'")
httpx = pytest.importorskip("httpx")
from judge0 import LanguageAlias, Status, Submission  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PYTHON = LanguageAlias.PYTHON  # 71 in the SDK's table for Judge0 1.13.1 (its default is an extra-CE language)
PROGRAMS = {  # Judge0 CE 1.13.1 language id -> a program printing "hello <id>"
    71: 'print("hello 71")',
    63: 'console.log("hello 63")',
    50: '#include <stdio.h>\nint main(void) { puts("hello 50"); return 0; }',
    54: '#include <iostream>\nint main() { std::cout << "hello 54" << std::endl; }',
    62: 'public class Main { public static void main(String[] a) { System.out.println("hello 62"); } }',
    60: 'package main\nimport "fmt"\nfunc main() { fmt.Println("hello 60") }',
    73: 'fn main() { println!("hello 73"); }',
    46: 'echo "hello 46"',
}


@pytest.fixture(scope="module")
def judge0_api(cluster: Cluster) -> Iterator[dict[str, str]]:
    """A user's API key, and the SDK's environment pointing at the service. The SDK falls back to
    Judge0's cloud clients for what its client does not serve: every call below names the client
    and the language, and the SDK's implicit clients are all this one, so nothing leaves loopback."""
    name, password = register(cluster.base)
    access = login(cluster.base, name, password)["access_token"]
    r = requests.post(
        cluster.base + "/api/v1/api-keys",
        json={"name": "judge0-sdk"},
        headers={"Authorization": f"Bearer {access}"},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    headers = {"X-Auth-Token": r.json()["key"]}
    saved = {k: os.environ.get(k) for k in ("JUDGE0_CE_ENDPOINT", "JUDGE0_CE_AUTH_HEADERS")}
    os.environ["JUDGE0_CE_ENDPOINT"] = cluster.base + "/judge0"
    os.environ["JUDGE0_CE_AUTH_HEADERS"] = json.dumps(headers)
    judge0.JUDGE0_IMPLICIT_CE_CLIENT = None  # resolved again from the environment above
    client = judge0.get_client(judge0.Flavor.CE)
    assert client.endpoint.startswith("http://127.0.0.1:"), client.endpoint
    judge0.JUDGE0_IMPLICIT_EXTRA_CE_CLIENT = client
    yield headers
    judge0.JUDGE0_IMPLICIT_CE_CLIENT = judge0.JUDGE0_IMPLICIT_EXTRA_CE_CLIENT = None
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def client(judge0_api: dict[str, str]) -> Any:
    return judge0.get_client(judge0.Flavor.CE)


def raw(cluster: Cluster, headers: dict[str, str], method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, cluster.base + "/judge0" + path, headers=headers, timeout=60, **kw)


def test_the_sdk_finds_the_service_and_its_languages(client: Any) -> None:
    assert isinstance(client, judge0.Client) and client.version == "1.13.1"
    assert {lang.id for lang in client.languages} >= set(PROGRAMS)
    assert client.config.max_submission_batch_size == 20 and client.config.enable_compiler_options is False


def test_one_submission_in_each_of_the_eight_languages(client: Any) -> None:
    # Created one by one (POST /submissions, wait off), then waited for (GET /submissions/batch).
    subs = [judge0.async_run(client=client, source_code=src, language=lang) for lang, src in PROGRAMS.items()]
    assert all(s.token is not None and s.status is None for s in subs)
    judge0.wait(client=client, submissions=subs)
    for lang, sub in zip(PROGRAMS, subs, strict=True):
        assert sub.status == Status.ACCEPTED, (lang, sub.status, sub.compile_output, sub.stderr)
        assert sub.stdout == f"hello {lang}\n", (lang, sub.stdout)
        assert sub.time is not None and sub.memory is not None


def test_stdin_and_test_cases_give_accepted_and_wrong_answer(client: Any) -> None:
    echoed = judge0.run(client=client, source_code="print(input()[::-1])", stdin="olleh", language=PYTHON)
    assert echoed.status == Status.ACCEPTED and echoed.stdout == "hello\n"
    results = judge0.run(
        client=client, source_code="print(int(input()) * 2)", language=PYTHON, test_cases=[("2", "4"), ("3", "7")]
    )
    assert [r.status for r in results] == [Status.ACCEPTED, Status.WRONG_ANSWER]
    assert results[1].stdout == "6\n"


def test_a_batch_of_42(client: Any) -> None:
    subs = [Submission(source_code=f"print({i} * {i})", language=PYTHON) for i in range(42)]
    subs = judge0.async_run(client=client, submissions=subs)  # three POST /submissions/batch of at most 20
    assert len({s.token for s in subs}) == 42
    judge0.wait(client=client, submissions=subs)
    assert [s.stdout for s in subs] == [f"{i * i}\n" for i in range(42)]
    assert {s.status for s in subs} == {Status.ACCEPTED}


def test_compile_error_timeout_and_runtime_errors(client: Any) -> None:
    compile_error = judge0.async_run(client=client, source_code="int main( { return 0 }", language=50)
    timeout = judge0.async_run(
        client=client, source_code="while True: pass", language=PYTHON, cpu_time_limit=1, wall_time_limit=2
    )
    nzec = judge0.async_run(client=client, source_code="import sys; print('before'); sys.exit(3)", language=PYTHON)
    segv = judge0.async_run(
        client=client, source_code="int main(void) { volatile int *p = 0; return *p; }", language=50
    )
    judge0.wait(client=client, submissions=[compile_error, timeout, nzec, segv])
    assert compile_error.status == Status.COMPILATION_ERROR and "error" in (compile_error.compile_output or "")
    assert timeout.status == Status.TIME_LIMIT_EXCEEDED
    assert nzec.status == Status.RUNTIME_ERROR_NZEC and nzec.exit_code == 3 and nzec.stdout == "before\n"
    assert segv.status == Status.RUNTIME_ERROR_SIGSEGV and segv.exit_signal == 11


def test_the_limits_a_client_sets_are_enforced(client: Any) -> None:
    """stack_limit, max_file_size and cpu_extra_time, in Judge0's units, as isolate enforces them."""
    wall = {"wall_time_limit": 20}  # CPU time decides here, never a busy machine's wall clock
    small_stack = judge0.async_run(client=client, source_code=DEEP_RECURSION_C, language=50, stack_limit=1024)
    large_stack = judge0.async_run(client=client, source_code=DEEP_RECURSION_C, language=50, stack_limit=16384)
    big_file = judge0.async_run(client=client, source_code=WRITE_2_MIB_C, language=50, max_file_size=256)
    small_file = judge0.async_run(client=client, source_code=WRITE_2_MIB_C, language=50, max_file_size=4096)
    extra = judge0.async_run(
        client=client, source_code=SPIN_1_2_S_PY, language=PYTHON, cpu_time_limit=1, cpu_extra_time=1, **wall
    )
    no_extra = judge0.async_run(client=client, source_code=SPIN_1_2_S_PY, language=PYTHON, cpu_time_limit=1, **wall)
    judge0.wait(client=client, submissions=[small_stack, large_stack, big_file, small_file, extra, no_extra])
    assert small_stack.status == Status.RUNTIME_ERROR_SIGSEGV and small_stack.exit_signal == 11
    assert large_stack.status == Status.ACCEPTED and large_stack.stdout == "1\n"
    assert big_file.status == Status.RUNTIME_ERROR_SIGXFSZ and big_file.exit_signal == 25 and not big_file.stdout
    assert small_file.status == Status.ACCEPTED and small_file.stdout == "wrote 2 MiB\n"
    # Over cpu_time_limit, ended within the extra time: Time Limit Exceeded, but not killed.
    assert extra.status == Status.TIME_LIMIT_EXCEEDED and extra.stdout == "done\n", (extra.status, extra.stderr)
    assert extra.time is not None and 1.0 < float(extra.time) < 2.0
    assert no_extra.status == Status.TIME_LIMIT_EXCEEDED and not no_extra.stdout  # killed at 1 s


def test_wait_true_and_base64_off(cluster: Cluster, judge0_api: dict[str, str]) -> None:
    # wait=true without base64: one request, the finished submission in plain text.
    r = raw(
        cluster,
        judge0_api,
        "POST",
        "/submissions?wait=true&base64_encoded=false",
        json={"source_code": "print('é')", "language_id": 71, "expected_output": "é"},
    )
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["stdout"] == "é\n" and body["status"] == {"id": 3, "description": "Accepted"}
    # base64 on: the exact bytes, also those that are not UTF-8, for which base64 off is refused.
    r = raw(
        cluster,
        judge0_api,
        "POST",
        "/submissions?wait=true&base64_encoded=true",
        json={
            "source_code": base64.b64encode(b"import sys; sys.stdout.buffer.write(b'\\xff\\x00ok')").decode(),
            "language_id": 71,
        },
    )
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert base64.b64decode(r.json()["stdout"]) == b"\xff\x00ok"
    plain = raw(cluster, judge0_api, "GET", f"/submissions/{token}?base64_encoded=false")
    assert plain.status_code == 400 and "base64_encoded=true" in plain.json()["error"]
    # A key that is not one is refused.
    assert raw(cluster, {"X-Auth-Token": "lc_not-a-key"}, "GET", f"/submissions/{token}").status_code == 401


def test_additional_files_are_the_programs_other_files(client: Any) -> None:
    files = judge0.Filesystem(
        content=[
            judge0.File(name="helper.py", content="ANSWER = 42\n"),
            judge0.File(name="data/in.txt", content="from a file\n"),
        ]
    )
    sub = judge0.run(
        client=client,
        language=PYTHON,
        additional_files=files,
        source_code="import helper\nprint(helper.ANSWER, open('data/in.txt').read().strip())",
    )
    assert sub.status == Status.ACCEPTED, (sub.status, sub.stderr)
    assert sub.stdout == "42 from a file\n"


def test_redirect_stderr_to_stdout_merges_the_two_streams(cluster: Cluster, judge0_api: dict[str, str],
                                                          client: Any) -> None:
    alternate = (
        "import sys\nfor i in range(3):\n"
        "    print(f'out{i}', flush=True)\n    print(f'err{i}', file=sys.stderr, flush=True)\n"
    )
    merged = judge0.async_run(client=client, source_code=alternate, language=PYTHON, redirect_stderr_to_stdout=True)
    apart = judge0.async_run(client=client, source_code=alternate, language=PYTHON)
    judge0.wait(client=client, submissions=[merged, apart])
    assert merged.status == apart.status == Status.ACCEPTED, (merged.status, apart.status)
    # One stream in the order written, as isolate's --stderr-to-stdout gives it.
    assert merged.stdout == "out0\nerr0\nout1\nerr1\nout2\nerr2\n" and not merged.stderr
    assert apart.stdout == "out0\nout1\nout2\n" and apart.stderr == "err0\nerr1\nerr2\n"
    shown = raw(cluster, judge0_api, "GET", f"/submissions/{merged.token}?fields=redirect_stderr_to_stdout")
    assert shown.json() == {"redirect_stderr_to_stdout": True}
    # The default a submission without it gets, as Judge0's /config_info says it.
    assert client.config.redirect_stderr_to_stdout is False
    # Not a boolean: Judge0's 422 for the field.
    bad = raw(cluster, judge0_api, "POST", "/submissions",
              json={"source_code": "print(1)", "language_id": 71, "redirect_stderr_to_stdout": "sometimes"})
    assert bad.status_code == 422 and bad.json() == {"redirect_stderr_to_stdout": ["is not a boolean"]}
