"""The runner works: output, stdin, args, exit codes, streaming, the development runner."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from livecode.sandbox import (
    Outcome,
    Runner,
    RunRequest,
    SandboxLimits,
    SandboxUnavailable,
    get_runner,
    list_languages,
)

from .helpers import requires_bwrap

pytestmark = [pytest.mark.timeout(60)]

ECHO = "import sys\nprint(input().upper(), sys.argv[1:])\n"


@requires_bwrap
def test_python_hello_stdin_args(runner: Runner) -> None:
    res = runner.run(RunRequest("python", ECHO, stdin="hello\n", args=("a", "b c")))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == "HELLO ['a', 'b c']\n"
    assert res.exit_code == 0
    assert res.memory_kb and res.memory_kb > 0
    assert res.cpu_time_ms is not None


@requires_bwrap
def test_exit_code_and_stderr(runner: Runner) -> None:
    res = runner.run(RunRequest("python", "import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)"))
    assert res.outcome is Outcome.RUNTIME_ERROR
    assert res.exit_code == 3
    assert res.stderr == "oops\n"


@requires_bwrap
def test_killed_by_own_signal(runner: Runner) -> None:
    res = runner.run(RunRequest("python", "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)"))
    assert res.outcome is Outcome.RUNTIME_ERROR
    assert res.signal == 11


@requires_bwrap
def test_output_is_streamed_and_utf8_safe(runner: Runner) -> None:
    chunks: list[tuple[str, str]] = []
    src = "import sys\nsys.stdout.buffer.write(b'caf\\xc3\\xa9 \\xff\\n')\nprint('x', file=sys.stderr)"
    res = runner.run(RunRequest("python", src), on_output=lambda s, t: chunks.append((s, t)))
    assert res.stdout == "café \ufffd\n"
    assert "".join(t for s, t in chunks if s == "stdout") == res.stdout
    assert "".join(t for s, t in chunks if s == "stderr") == "x\n"


# Writes to stdout and stderr in turn, flushing each: with 2>&1 they interleave exactly.
ALTERNATE = (
    "import sys\n"
    "for i in range(5):\n"
    "    print(f'out{i}', flush=True)\n"
    "    print(f'err{i}', file=sys.stderr, flush=True)\n"
)
INTERLEAVED = "".join(f"out{i}\nerr{i}\n" for i in range(5))


@requires_bwrap
def test_merged_stderr_is_one_stdout_in_the_order_written(runner: Runner) -> None:
    chunks: list[tuple[str, str]] = []
    res = runner.run(RunRequest("python", ALTERNATE, merge_stderr=True), on_output=lambda s, t: chunks.append((s, t)))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == INTERLEAVED and res.stderr == ""
    assert {s for s, _ in chunks} == {"stdout"} and "".join(t for _, t in chunks) == INTERLEAVED  # streamed as stdout
    apart = runner.run(RunRequest("python", ALTERNATE))
    assert apart.stdout == "".join(f"out{i}\n" for i in range(5))
    assert apart.stderr == "".join(f"err{i}\n" for i in range(5))


@requires_bwrap
def test_merged_stderr_is_capped_as_stdout(runner: Runner) -> None:
    flood = "import sys\nprint('start', flush=True)\nwhile True: sys.stderr.write('e' * 100)"
    limits = SandboxLimits(max_output_bytes=4096, time_limit_ms=10_000)
    res = runner.run(RunRequest("python", flood, limits=limits, merge_stderr=True))
    assert res.outcome is Outcome.OUTPUT_LIMIT, res
    assert res.stdout_truncated and len(res.stdout_bytes) == 4096 and res.stdout.startswith("start\n")
    assert res.stderr_bytes == b"" and not res.stderr_truncated


@requires_bwrap
def test_merged_stderr_leaves_the_compilers_output_apart(runner: Runner) -> None:
    src = (
        '#include <stdio.h>\n#warning "from the compiler"\n'
        'int main(void) { puts("out"); fflush(stdout); fputs("err\\n", stderr); return 0; }\n'
    )
    res = runner.run(RunRequest("c", src, merge_stderr=True))
    assert res.outcome is Outcome.OK, res
    assert "from the compiler" in res.compile_output and "from the compiler" not in res.stdout
    assert res.stdout == "out\nerr\n" and res.stderr == ""


@requires_bwrap
def test_interactive_stdin_source(runner: Runner) -> None:
    feed = [None, b"first\n", None, b"second\n", b""]

    def source() -> bytes | None:
        return feed.pop(0) if feed else b""

    src = "print(input() + '|' + input())"
    res = runner.run(RunRequest("python", src), stdin_source=source)
    assert res.stdout == "first|second\n", res


@requires_bwrap
def test_unknown_language_is_internal_error_listing_available(runner: Runner) -> None:
    res = runner.run(RunRequest("cobol", "x"))
    assert res.outcome is Outcome.INTERNAL_ERROR
    assert "python" in res.message


def test_list_languages_has_eight_and_is_cached() -> None:
    langs = {lg["id"]: lg for lg in list_languages()}
    for lang_id in ("python", "javascript", "c", "cpp", "java", "go", "rust", "bash"):
        assert lang_id in langs
    assert langs["python"]["compiled"] is False and langs["c"]["compiled"] is True
    assert list_languages() == list(langs.values())


def test_dev_runner_runs_and_warns(dev_runner: Runner, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        res = dev_runner.run(RunRequest("python", ECHO, stdin="hi\n", args=("x",)))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == "HI ['x']\n"
    assert any("WITHOUT a sandbox" in r.message for r in caplog.records)


def test_dev_runner_merges_stderr(dev_runner: Runner) -> None:
    res = dev_runner.run(RunRequest("python", ALTERNATE, merge_stderr=True))
    assert res.outcome is Outcome.OK, res
    assert res.stdout == INTERLEAVED and res.stderr == ""
    assert dev_runner.run(RunRequest("python", ALTERNATE)).stderr == "".join(f"err{i}\n" for i in range(5))


def test_dev_runner_caps_output_and_time(dev_runner: Runner) -> None:
    limits = SandboxLimits(max_output_bytes=1000, time_limit_ms=5000)
    res = dev_runner.run(RunRequest("python", "while True: print('x' * 100)", limits=limits))
    assert res.outcome is Outcome.OUTPUT_LIMIT and res.stdout_truncated
    assert len(res.stdout) == 1000
    res = dev_runner.run(RunRequest("python", "import time; time.sleep(30)", limits=SandboxLimits(time_limit_ms=500)))
    assert res.outcome is Outcome.TIME_LIMIT


def test_dev_runner_compiles(dev_runner: Runner) -> None:
    src = '#include <stdio.h>\nint main(void) { puts("compiled"); return 0; }\n'
    res = dev_runner.run(RunRequest("c", src))
    assert res.outcome is Outcome.OK and res.stdout == "compiled\n", res
    assert dev_runner.run(RunRequest("c", src)).cached is True
    bad = dev_runner.run(RunRequest("c", "int main( {"))
    assert bad.outcome is Outcome.COMPILE_ERROR and "error" in bad.compile_output


def test_check_says_what_is_missing(tmp_path: Path) -> None:
    from livecode.sandbox.bwrap import BwrapRunner

    r = BwrapRunner(tmp_path / "work", tmp_path / "cache")
    r.bwrap = str(tmp_path / "no-bwrap-here")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        r.check()
    res = r.run(RunRequest("python", "print(1)"))
    assert res.outcome is Outcome.INTERNAL_ERROR and "bubblewrap" in res.message


def test_unknown_mode_rejected() -> None:
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        get_runner("docker")
