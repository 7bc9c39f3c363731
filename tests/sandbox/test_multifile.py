"""Multi-file programs: every language builds a two-file program the natural way, and no path
can put a file outside the run's work directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from livecode.sandbox import (
    Outcome,
    RunInput,
    Runner,
    RunRequest,
    RunResult,
    SandboxLimits,
    SourceFile,
    get_language,
    run_many,
)
from livecode.sandbox.bwrap import WORK
from livecode.sandbox.files import FileSpec
from livecode.sandbox.program import MAX_DEPTH, InvalidProgram, check_program, expand, parent_dirs
from livecode.sandbox.runner import Stage

from .helpers import requires_bwrap

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(180)]

# language -> (files, expected stdout for stdin "World"). Each uses the language's own way of
# splitting a program, with at least one file in a sub-directory where the language allows it.
PROGRAMS: dict[str, tuple[dict[str, str], str]] = {
    "python": (
        {
            "main.py": "from greet.words import hello\nprint(hello(input()))\n",
            "greet/__init__.py": "",
            "greet/words.py": "def hello(name):\n    return f'Hello {name} from a package'\n",
        },
        "Hello World from a package\n",
    ),
    "javascript": (
        {
            "main.js": "const { hello } = require('./lib/greet');\n"
            "console.log(hello(require('fs').readFileSync(0, 'utf8').trim()));\n",
            "lib/greet.js": "exports.hello = (name) => `Hello ${name} from a module`;\n",
        },
        "Hello World from a module\n",
    ),
    "c": (
        {
            "main.c": '#include <stdio.h>\n#include "lib/twice.h"\n'
            'int main(void) { char s[32]; scanf("%31s", s); printf("Hello %s %d\\n", s, twice(21)); }\n',
            "lib/twice.h": "int twice(int x);\n",
            "lib/twice.c": '#include "twice.h"\nint twice(int x) { return 2 * x; }\n',
        },
        "Hello World 42\n",
    ),
    "cpp": (
        {
            "main.cpp": '#include <iostream>\n#include "shapes/area.hpp"\n'
            'int main() { std::string s; std::cin >> s; std::cout << "Hello " << s << " " << area(6, 7)'
            " << std::endl; }\n",
            "shapes/area.hpp": "int area(int w, int h);\n",
            "shapes/area.cpp": '#include "area.hpp"\nint area(int w, int h) { return w * h; }\n',
        },
        "Hello World 42\n",
    ),
    "java": (
        {
            "Main.java": "public class Main {\n  public static void main(String[] a) {\n"
            "    System.out.println(Helper.hello(new java.util.Scanner(System.in).next()));\n  }\n}\n",
            "util/Helper.java": "class Helper {\n"
            '  static String hello(String n) { return "Hello " + n + " from Helper"; }\n}\n',
        },
        "Hello World from Helper\n",
    ),
    "go": (
        {
            "main.go": 'package main\n\nimport "fmt"\n\nfunc main() {\n\tvar s string\n\tfmt.Scan(&s)\n'
            "\tfmt.Println(hello(s))\n}\n",
            "hello.go": 'package main\n\nfunc hello(s string) string { return "Hello " + s + " from hello.go" }\n',
        },
        "Hello World from hello.go\n",
    ),
    "rust": (
        {
            "main.rs": "mod greet;\nfn main() {\n    let mut s = String::new();\n    std::io::stdin().read_line(&mut s)"
            '.unwrap();\n    println!("{}", greet::hello(s.trim()));\n}\n',
            "greet.rs": 'pub fn hello(n: &str) -> String { format!("Hello {} from a mod", n) }\n',
        },
        "Hello World from a mod\n",
    ),
    "bash": (
        {
            "main.sh": 'source lib.sh\nread -r name\nhello "$name"\n',
            "lib.sh": 'hello() { echo "Hello $1 from lib.sh"; }\n',
        },
        "Hello World from lib.sh\n",
    ),
}


def run_files(
    runner: Runner, lang: str, files: dict[str, str], entry: str | None = None, stdin: str = "World\n", **limits: int
) -> RunResult:
    req = RunRequest(
        lang,
        stdin=stdin,
        files=tuple(SourceFile.text(p, c) for p, c in files.items()),
        entry=entry,
        limits=SandboxLimits(compile_time_limit_ms=120_000, **limits),
    )
    return runner.run(req)


@pytest.mark.parametrize("lang", sorted(PROGRAMS))
def test_two_file_program(runner: Runner, lang: str) -> None:
    language = get_language(lang)
    assert language is not None and language.available, f"{lang} toolchain missing on this host"
    files, expected = PROGRAMS[lang]
    res = run_files(runner, lang, files)
    assert res.outcome is Outcome.OK, (res.message, res.compile_output, res.stderr)
    assert res.stdout == expected


def test_changing_a_header_recompiles(runner: Runner) -> None:
    """The compile cache keys on every file: a program whose header changed is not served the
    program built from the old one."""
    files = {
        "main.c": '#include <stdio.h>\n#include "n.h"\nint main(void) { printf("%d\\n", N); }\n',
        "n.h": "#define N 1\n",
    }
    first = run_files(runner, "c", files)
    assert first.outcome is Outcome.OK and first.stdout == "1\n"
    second = run_files(runner, "c", {**files, "n.h": "#define N 2\n"})
    assert second.outcome is Outcome.OK and second.stdout == "2\n"
    assert second.cached is False


def test_entry_other_than_the_default(runner: Runner) -> None:
    py = run_files(
        runner,
        "python",
        {"app/run.py": "import helper\nprint(helper.X)\n", "app/helper.py": "X = 7\n", "main.py": "print('not me')\n"},
        entry="app/run.py",
    )
    assert py.outcome is Outcome.OK and py.stdout == "7\n", py.stderr
    java = run_files(
        runner,
        "java",
        {"App.java": 'public class App { public static void main(String[] a) { System.out.println("app"); } }\n'},
        entry="App.java",
    )
    assert java.outcome is Outcome.OK and java.stdout == "app\n", (java.compile_output, java.stderr)


def test_data_files_beside_the_program(runner: Runner) -> None:
    res = run_files(
        runner,
        "python",
        {"main.py": "print(open('data/in.txt').read().upper(), end='')\n", "data/in.txt": "some data\n"},
    )
    assert res.outcome is Outcome.OK and res.stdout == "SOME DATA\n"


def test_a_compiled_file_replaces_a_source_file_of_its_name(runner: Runner) -> None:
    res = run_files(runner, "c", {"main.c": "int main(void) { return 0; }\n", "main": "#!/bin/sh\necho planted\n"})
    assert res.outcome is Outcome.OK and "planted" not in res.stdout


# ---- paths that try to leave the work directory --------------------------------------------

ESCAPES = [
    "../escape.txt",
    "a/../../escape.txt",
    "/tmp/escape.txt",
    "a\\..\\escape.txt",
    "a/./b.txt",
    "a//b.txt",
    "nul\0.txt",
    "-o",
    "a/",
    "/".join(["d"] * (MAX_DEPTH + 1)) + "/x.txt",
    "x" * 256,
]


@pytest.mark.parametrize("path", ESCAPES, ids=range(len(ESCAPES)))
def test_paths_that_escape_are_refused(runner: Runner, tmp_path: Path, path: str) -> None:
    files = {"main.py": "print('ran')\n", path: "escaped\n"}
    res = run_files(runner, "python", files)
    assert res.outcome is Outcome.INTERNAL_ERROR and "invalid program files" in res.message
    assert res.stdout == ""
    with pytest.raises(InvalidProgram) as refused:
        check_program([SourceFile.text(p, c) for p, c in files.items()], "main.py")
    assert repr(path) in str(refused.value)  # the message names the path


def test_a_file_and_a_directory_of_one_name_are_refused(runner: Runner) -> None:
    res = run_files(runner, "python", {"main.py": "print(1)\n", "lib": "x", "lib/a.py": "y"})
    assert res.outcome is Outcome.INTERNAL_ERROR and "is a file" in res.message


def test_the_deepest_allowed_path_works(runner: Runner) -> None:
    deep = "/".join(f"d{i}" for i in range(MAX_DEPTH)) + "/deep.txt"
    res = run_files(runner, "python", {"main.py": f"print(open({deep!r}).read(), end='')\n", deep: "bottom\n"})
    assert res.outcome is Outcome.OK and res.stdout == "bottom\n", res.stderr


def test_the_launcher_refuses_dot_dot_even_if_the_host_check_is_bypassed(runner: Runner) -> None:
    """Second line of defence: a stage handed a `..` path directly (as if program.py let it
    through) is refused by the launcher inside the sandbox; nothing runs."""
    for name in ("../escape.txt", "sub/../../escape.txt"):
        stage = Stage(
            "run",
            ["/bin/sh", "-c", "echo ran"],
            {"PATH": "/usr/bin:/bin"},
            [FileSpec(name, 0o644, data=b"x")],
            10_000,
            10_000,
            64,
            16,
            1024,
            1024,
            64,
            4096,
            4096,
        )
        sr = runner._execute(stage, None)  # noqa: SLF001 - the layer under the host's own check
        assert b"ran" not in sr.stdout
        assert sr.internal_error or sr.exit_code != 0


def test_a_symlink_left_by_a_run_does_not_redirect_the_next_runs_files(runner: Runner) -> None:
    """A run that replaces its work directory's sub-directory by a symlink to elsewhere leaves
    nothing behind: the next run's files go into a fresh work directory."""
    plant = "import os, shutil\nshutil.rmtree('pkg')\nos.symlink('/tmp', 'pkg')\nprint(os.readlink('pkg'))\n"
    first = run_files(runner, "python", {"main.py": plant, "pkg/a.txt": "one\n"})
    assert first.outcome is Outcome.OK and first.stdout == "/tmp\n", first.stderr
    check = (
        f"import os\nprint(os.path.islink('pkg'), open('pkg/a.txt').read(), end='')\nprint(os.getcwd() == {WORK!r})\n"
    )
    second = run_files(runner, "python", {"main.py": check, "pkg/a.txt": "two\n"})
    assert second.outcome is Outcome.OK and second.stdout == "False two\nTrue\n", second.stderr


def test_files_total_count_beyond_the_fd_batch(runner: Runner) -> None:
    files = {f"f{i:03}.txt": str(i) for i in range(150)}
    files["main.py"] = "import glob\nprint(len(glob.glob('*.txt')), open('f149.txt').read())\n"
    res = run_files(runner, "python", files)
    assert res.outcome is Outcome.OK and res.stdout == "150 149\n"


def test_dev_runner_writes_files_in_sub_directories(dev_runner: Runner) -> None:
    files, expected = PROGRAMS["python"]
    res = run_files(dev_runner, "python", files)
    assert res.outcome is Outcome.OK and res.stdout == expected
    assert not os.path.exists("greet/words.py")  # not in the test's own directory


def test_expand_and_parent_dirs() -> None:
    paths = ["main.c", "lib/a.c", "lib/a.h", "x/y/z.c", "notes.txt"]
    argv = expand(("gcc", "-o", "main", "{sources}", "{entry}", "{entry_stem}"), "main.c", paths, ("**/*.c",))
    assert argv == ["gcc", "-o", "main", "lib/a.c", "main.c", "x/y/z.c", "main.c", "main"]
    assert expand(("go", "{sources}"), "main.go", ["main.go", "sub/x.go", "b.go"], ("*.go",)) == [
        "go",
        "b.go",
        "main.go",
    ]
    assert parent_dirs(paths) == ["lib", "x", "x/y"]


def test_a_multi_file_program_compiles_once_and_runs_many(runner: Runner) -> None:
    """Test cases (run_many) take the same file set: one compile of every file, then a run per input."""
    files, _ = PROGRAMS["c"]
    req = RunRequest(
        "c",
        files=tuple(SourceFile.text(p, c) for p, c in files.items()),
        limits=SandboxLimits(compile_time_limit_ms=120_000),
    )
    many = run_many(runner, req, [RunInput("Ada\n"), RunInput("Grace\n")])
    assert many.prepared is None and not many.internal_error
    assert [r.stdout for r in many.runs] == ["Hello Ada 42\n", "Hello Grace 42\n"]
