"""Hello world with stdin and args in every language; compile errors; the compile cache."""

from __future__ import annotations

import json
import os
import subprocess
import threading

import pytest

from livecode.sandbox import Outcome, Runner, RunRequest, SandboxLimits, get_language
from livecode.sandbox import bwrap as bwrap_module
from livecode.sandbox.bwrap import BwrapRunner, _job
from livecode.sandbox.pysite import SiteHooks, find_hooks
from livecode.sandbox.runner import Stage

from .helpers import requires_bwrap, run

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(120)]

HELLO = {
    "python": "import sys\nname = input()\nprint(f'Hello {name}!', sys.argv[1:])",
    "javascript": (
        "const name = require('fs').readFileSync(0, 'utf8').trim();\n"
        "console.log(`Hello ${name}!`, JSON.stringify(process.argv.slice(2)));"
    ),
    "c": (
        "#include <stdio.h>\nint main(int argc, char **argv) {\n  char name[64];\n"
        '  if (scanf("%63s", name) != 1) return 1;\n  printf("Hello %s! %s|%s\\n", name, argv[1], argv[2]);\n'
        "  return 0;\n}\n"
    ),
    "cpp": (
        "#include <iostream>\n#include <string>\nint main(int argc, char **argv) {\n"
        '  std::string name; std::cin >> name;\n  std::cout << "Hello " << name << "! " << argv[1] << "|" << argv[2]'
        " << std::endl;\n}\n"
    ),
    "java": (
        "import java.util.Scanner;\npublic class Main {\n  public static void main(String[] args) {\n"
        "    String name = new Scanner(System.in).next();\n"
        '    System.out.println("Hello " + name + "! " + args[0] + "|" + args[1]);\n  }\n}\n'
    ),
    "go": (
        'package main\n\nimport (\n\t"fmt"\n\t"os"\n)\n\nfunc main() {\n\tvar name string\n\tfmt.Scan(&name)\n'
        '\tfmt.Printf("Hello %s! %s|%s\\n", name, os.Args[1], os.Args[2])\n}\n'
    ),
    "rust": (
        "use std::io::Read;\nfn main() {\n    let mut s = String::new();\n"
        "    std::io::stdin().read_to_string(&mut s).unwrap();\n    let a: Vec<String> = std::env::args().collect();\n"
        '    println!("Hello {}! {}|{}", s.trim(), a[1], a[2]);\n}\n'
    ),
    "bash": 'read -r name\necho "Hello $name! $1|$2"',
}
ARGS = ("one", "two words")
EXPECTED_TAIL = {
    "python": "Hello World! ['one', 'two words']\n",
    "javascript": 'Hello World! ["one","two words"]\n',
}


@pytest.mark.parametrize("lang", sorted(HELLO))
def test_hello_world_with_stdin_and_args(runner: Runner, lang: str) -> None:
    language = get_language(lang)
    assert language is not None
    if not language.available:
        pytest.fail(f"{lang} toolchain missing on this host: run scripts/install-system-deps.sh")
    res = run(runner, lang, HELLO[lang], stdin="World\n", args=ARGS, compile_time_limit_ms=120_000)
    assert res.outcome is Outcome.OK, res
    assert res.stdout == EXPECTED_TAIL.get(lang, "Hello World! one|two words\n"), res
    assert res.exit_code == 0


def test_compile_error_reports_compiler_output(runner: Runner) -> None:
    res = run(runner, "c", "int main() { return undefined_thing; }")
    assert res.outcome is Outcome.COMPILE_ERROR, res
    assert "undefined_thing" in res.compile_output
    again = run(runner, "c", "int main() { return undefined_thing; }")
    assert again.outcome is Outcome.COMPILE_ERROR and not again.cached


def test_compile_cache_hit_on_second_run(runner: Runner) -> None:
    src = '#include <stdio.h>\nint main(void) { puts("cache %d"); return 0; }\n'.replace("%d", str(os.getpid()))
    first = run(runner, "c", src)
    second = run(runner, "c", src)
    assert first.outcome is Outcome.OK and second.outcome is Outcome.OK
    assert first.cached is False and second.cached is True
    assert first.stdout == second.stdout == f"cache {os.getpid()}\n"
    changed = run(runner, "c", src.replace("cache", "changed"))
    assert changed.cached is False and changed.stdout.startswith("changed")


def test_compiler_cannot_read_host_files(runner: Runner) -> None:
    res = run(runner, "c", '#include "/etc/shadow"\nint main(void) { return 0; }')
    assert res.outcome is Outcome.COMPILE_ERROR
    assert "root:" not in res.compile_output


def test_compile_time_limit(runner: Runner) -> None:
    # Constant evaluation that would keep the compiler busy for minutes.
    src = (
        "constexpr long f() { long s = 0; for (long i = 0; i < 200000; i++)"
        " for (long j = 0; j < 200000; j++) s += i ^ j; return s; }\n"
        "static_assert(f() != 1);\nint main() { return 0; }\n"
    )
    res = run(runner, "cpp", src, compile_time_limit_ms=1000)
    assert res.outcome is Outcome.COMPILE_ERROR, res
    assert "time limit" in res.message and res.cached is False


NSPKG_HOOKS = find_hooks()


@pytest.mark.skipif(not NSPKG_HOOKS, reason="no setuptools namespace hook (*-nspkg.pth) under /usr to rewrite "
                    "(python3-matplotlib ships one: scripts/setup.sh)")
def test_python_starts_without_the_namespace_hooks_imports_and_keeps_their_packages(runner: Runner) -> None:
    # Each host hook imports importlib.util at every start (~4 ms of a hello world's CPU): the
    # sandbox sees it rewritten (sandbox/pysite.py), and the packages it sets up are the host's.
    probe = (
        "import json, sys\n"
        "start = 'importlib.util' in sys.modules\n"
        "mods = {n: [list(m.__path__), m.__file__] for n, m in sorted(sys.modules.items())"
        " if getattr(m, '__path__', None) is not None and n.split('.')[0] in NAMES}\n"
        "print(json.dumps([start, mods]))\n"
    )
    names = sorted({rewritten.split(b"setdefault('")[1].split(b"'")[0].decode().split(".")[0]
                    for _, rewritten in NSPKG_HOOKS})
    src = f"NAMES = {names!r}\n{probe}"
    res = runner.run(RunRequest("python", src))
    assert res.outcome == Outcome.OK, res.stderr
    started_with_util, in_sandbox = json.loads(res.stdout)
    host = subprocess.run(["/usr/bin/python3", "-E", "-s", "-c", src], capture_output=True, text=True, check=True)
    host_util, on_host = json.loads(host.stdout)
    assert host_util is True  # the host's hooks import it
    assert started_with_util is False
    assert in_sandbox == on_host and in_sandbox  # the same namespace packages, same paths and files
    path, data = NSPKG_HOOKS[0]
    seen = runner.run(RunRequest("python", f"import sys; sys.stdout.write(open({path!r}).read())"))
    assert seen.stdout.encode() == data


@pytest.mark.skipif(not os.path.isdir("/usr/lib/python3/dist-packages/mpl_toolkits/mplot3d"),
                    reason="python3-matplotlib is not installed (scripts/setup.sh)")
def test_mpl_toolkits_imports_as_on_the_host_without_running_pkg_resources(runner: Runner) -> None:
    src = ("import sys\nfrom mpl_toolkits.mplot3d import Axes3D\n"
           "print(Axes3D.__module__, 'pkg_resources' in sys.modules)\n")
    res = runner.run(RunRequest("python", src))
    assert res.outcome == Outcome.OK, res.stderr
    assert res.stdout.split() == ["mpl_toolkits.mplot3d.axes3d", "False"]


class _GoneOnce(SiteHooks):
    """A hook whose host file is gone by the time bubblewrap binds over it, the first time the
    test's own thread sets a sandbox up (the pools' threads build spares meanwhile)."""

    GONE = "/usr/lib/python3/dist-packages/livecode-test-gone-nspkg.pth"

    def __init__(self, thread: int) -> None:
        super().__init__()
        self.thread = thread
        self.calls = 0

    def files(self) -> list[tuple[str, bytes]]:
        if threading.get_ident() != self.thread:
            return super().files()
        self.calls += 1
        if self.calls == 1:
            return [(self.GONE, b"\n")]
        return super().files()


def test_a_hook_removed_under_bubblewrap_costs_a_rebuild_not_the_run(runner: Runner) -> None:
    assert isinstance(runner, BwrapRunner)
    assert not os.path.exists(_GoneOnce.GONE)
    gone = _GoneOnce(threading.get_ident())
    hooks, pool, runner._site_hooks, runner._pool = runner._site_hooks, runner._pool, gone, None
    try:
        res = runner.run(RunRequest("python", "print('ran once')"))
        assert res.outcome == Outcome.OK, res.message
        assert res.stdout == "ran once\n" and gone.calls == 2
    finally:
        runner._site_hooks, runner._pool = hooks, pool


def test_a_spare_for_announced_runs_whose_hook_was_removed_is_given_up_not_the_run(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spare built at normal priority for runs announced to follow is not checked to be up before
    # its job is sent: its failed set-up shows as the run's result, which must not be the user's.
    # The job's sending is made to succeed: whether it fails on the socket bubblewrap closed (a
    # path that gave the spare up already) depends on who is first.
    assert isinstance(runner, BwrapRunner)
    monkeypatch.setattr(bwrap_module, "send_job", lambda *args, **kwargs: None)
    hooks, runner._site_hooks = runner._site_hooks, _GoneOnce(threading.get_ident())
    limits = SandboxLimits()
    try:
        sp = runner._prespawn((limits.memory_mb, limits.max_disk_kb), soon=True)
    finally:
        runner._site_hooks = hooks
    assert sp.nice == 0
    stage = Stage("run", ["/bin/true"], {"PATH": "/usr/bin:/bin"}, [], 10_000, 10_000, limits.memory_mb,
                  limits.max_processes, limits.max_file_size_kb, limits.max_disk_kb, limits.max_open_files, 4096, 4096)
    assert runner._run_job(sp, stage, _job(stage), None, prebuilt=True) is None  # the caller builds one
