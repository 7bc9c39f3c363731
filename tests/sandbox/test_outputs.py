"""Issue 13, part 3: files a run leaves in out/ come back, and nothing else does.

Every attack runs with small limits and checks that what came back is only the program's own
regular files: no host file (through a symlink, a hard link or a directory link), no special file,
nothing over a limit, nothing partially read.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, Runner, RunRequest, RunResult, SandboxLimits
from livecode.sandbox.bwrap import BwrapRunner
from livecode.sandbox.outputs import OutputLimits

from .helpers import no_leftovers, requires_bwrap

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(180)]

SMALL = OutputLimits(max_files=3, max_bytes=4096)
HAS_MATPLOTLIB = Path("/usr/lib/python3/dist-packages/matplotlib").is_dir()


def run_out(runner: Runner, lang: str, source: str, outputs: OutputLimits = SMALL, **limits: int) -> RunResult:
    return runner.run(RunRequest(lang, source, limits=SandboxLimits(**limits), outputs=outputs))


def files(res: RunResult) -> dict[str, bytes]:
    return {f.path: f.data for f in res.files}


@contextlib.contextmanager
def without_pool(runner: Runner) -> Iterator[Runner]:
    assert isinstance(runner, BwrapRunner)
    pool, runner._pool = runner._pool, None
    try:
        yield runner
    finally:
        runner._pool = pool


@pytest.fixture(params=["pooled", "cold"])
def any_path(request: pytest.FixtureRequest, runner: Runner) -> Iterator[Runner]:
    """Through a pre-built sandbox, and through one built for the run."""
    if request.param == "pooled":
        yield runner
    else:
        with without_pool(runner) as r:
            yield r


def test_files_in_out_come_back_with_their_bytes(any_path: Runner) -> None:
    src = (
        "printf 'a,b\\n1,2\\n' > out/data.csv\nmkdir -p out/sub\nhead -c 300 /dev/urandom > out/sub/r.bin\n"
        "cp out/sub/r.bin r.copy\necho done"
    )
    res = run_out(any_path, "bash", src)
    assert res.outcome == Outcome.OK, res.stderr
    got = files(res)
    assert sorted(got) == ["data.csv", "sub/r.bin"]
    assert got["data.csv"] == b"a,b\n1,2\n"
    assert len(got["sub/r.bin"]) == 300
    assert not res.files_truncated


def test_nothing_is_collected_unless_asked(runner: Runner) -> None:
    res = runner.run(RunRequest("bash", "echo x > out/a"))
    assert res.outcome == Outcome.OK and res.files == [] and not res.files_truncated


def test_links_and_special_files_are_never_followed(any_path: Runner) -> None:
    src = "\n".join(
        [
            "echo mine > out/own.txt",
            "echo other > other.txt",
            "ln -s /etc/shadow out/shadow",
            "ln -s /etc/passwd out/passwd",
            "ln -s ../other.txt out/rel",
            "ln -s /etc out/etcdir",
            "ln other.txt out/hard",
            "mkfifo out/fifo",
            "python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('out/sock')\"",
            "mknod out/null c 1 3 2>/dev/null || true",
            "echo ok",
        ]
    )
    res = run_out(any_path, "bash", src, outputs=OutputLimits())
    assert res.outcome == Outcome.OK, res.stderr
    assert files(res) == {"own.txt": b"mine\n"}
    with open("/etc/passwd", "rb") as f:
        host_passwd = f.read()
    assert all(host_passwd[:32] not in data for data in files(res).values())


def test_out_replaced_by_a_link_to_a_host_directory_gives_nothing(runner: Runner) -> None:
    res = run_out(runner, "bash", "rmdir out && ln -s /etc out && echo ok", outputs=OutputLimits())
    assert res.stdout == "ok\n" and res.files == []


def test_a_hard_link_to_a_file_of_the_program_is_skipped(runner: Runner) -> None:
    res = run_out(runner, "bash", "echo x > out/a; ln out/a out/b; echo y > out/c")
    assert files(res) == {"c": b"y\n"}


def test_too_many_files_keeps_the_first_ones_and_says_so(runner: Runner) -> None:
    res = run_out(runner, "bash", "for i in 1 2 3 4 5 6 7 8; do echo $i > out/f$i; done")
    assert sorted(files(res)) == ["f1", "f2", "f3"]
    assert res.files_truncated


def test_a_file_over_the_budget_is_skipped_whole(runner: Runner) -> None:
    src = "head -c 3000 /dev/zero > out/a.bin; head -c 3000 /dev/zero > out/b.bin; echo small > out/c.txt"
    res = run_out(runner, "bash", src)
    got = files(res)
    # a.bin fits (3000 <= 4096); b.bin would take the total over 4096: skipped, never cut.
    assert got == {"a.bin": b"\0" * 3000, "c.txt": b"small\n"}
    assert res.files_truncated


def test_a_file_still_being_written_is_read_after_its_writer_died(any_path: Runner) -> None:
    src = "\n".join(
        [
            "python3 - <<'EOF' &",
            "import os, time",
            "fd = os.open('out/grow.txt', os.O_WRONLY | os.O_CREAT | os.O_APPEND)",
            "while True:",
            "    os.write(fd, b'0123456789' * 10)",
            "    time.sleep(0.0005)",
            "EOF",
            "(setsid sh -c 'while :; do echo flood >> out/flood.txt; done' &)",
            "sleep 0.3",
            "echo main-done",
        ]
    )
    res = run_out(any_path, "bash", src, outputs=OutputLimits(max_files=8, max_bytes=32 * 1024 * 1024))
    assert res.stdout == "main-done\n", res.stderr
    got = files(res)
    # Whatever was written before the writers were killed, whole and consistent.
    for name, data in got.items():
        unit = b"0123456789" * 10 if name == "grow.txt" else b"flood\n"
        assert data == unit * (len(data) // len(unit)), (name, len(data))
    assert no_leftovers()


def test_a_background_flood_over_the_limit_is_skipped_not_cut(runner: Runner) -> None:
    src = "(setsid sh -c 'yes > out/big.txt' &)\nsleep 0.3\necho ok > out/ok.txt"
    res = run_out(runner, "bash", src)
    assert files(res) == {"ok.txt": b"ok\n"}
    assert res.files_truncated
    assert no_leftovers()


def test_path_tricks_in_names_are_skipped(runner: Runner) -> None:
    src = "\n".join(
        [
            "import os",
            "for name in [b'new\\nline', b'back\\\\slash', b'bad\\xff', b'tab\\there', b'ok.txt', b'..x']:",
            "    with open(b'out/' + name, 'wb') as f:",
            "        f.write(name)",
            "d = 'out'",
            "for i in range(12):",
            "    d += '/d'",
            "    os.mkdir(d)",
            "open(d + '/deep.txt', 'w').write('deep')",
            "open('out/d/d/shallow.txt', 'w').write('shallow')",
        ]
    )
    res = run_out(runner, "python", src, outputs=OutputLimits())
    assert res.outcome == Outcome.OK, res.stderr
    got = files(res)
    assert got == {"ok.txt": b"ok.txt", "..x": b"..x", "d/d/shallow.txt": b"shallow"}
    assert res.files_truncated  # the directories past the depth limit


def test_many_entries_are_bounded(runner: Runner) -> None:
    src = "import os\nfor i in range(6000):\n    os.mkfifo(f'out/p{i}')\nopen('out/zz.txt', 'w').write('z')"
    res = run_out(runner, "python", src, outputs=OutputLimits(), time_limit_ms=20_000)
    assert res.outcome == Outcome.OK, res.stderr
    assert res.files_truncated
    assert all(not f.path.startswith("p") for f in res.files)


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="python3-matplotlib is not installed (scripts/setup.sh)")
def test_matplotlib_savefig_works_with_the_default_limits(runner: Runner) -> None:
    src = "\n".join(
        [
            "import matplotlib.pyplot as plt, numpy as np, pandas as pd",
            "df = pd.DataFrame({'x': np.arange(20), 'y': np.arange(20) ** 2})",
            "plt.plot(df.x, df.y)",
            "plt.savefig('out/plot.png')",
            "df.to_csv('out/data.csv', index=False)",
            "print(plt.get_backend())",
        ]
    )
    res = runner.run(RunRequest("python", src, outputs=OutputLimits()))
    assert res.outcome == Outcome.OK, res.stderr
    assert res.stdout.strip().lower() == "agg"
    got = files(res)
    assert got["plot.png"].startswith(b"\x89PNG\r\n\x1a\n")
    assert got["data.csv"].startswith(b"x,y\n0,0\n")
    assert hashlib.sha256(got["plot.png"]).hexdigest()


def test_dev_runner_collects_too(dev_runner: Runner, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    os.chmod(tmp_path, 0o755)
    src = f"echo hi > out/a.txt; ln -s {secret} out/s"
    res = run_out(dev_runner, "bash", src)
    assert files(res) == {"a.txt": b"hi\n"}


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="python3-matplotlib is not installed (scripts/setup.sh)")
def test_the_data_libraries_need_no_thread_per_core(runner: Runner) -> None:
    # Threads count against the process limit: BLAS and OpenMP are held to one thread each, so
    # on any number of cores the program is still a single task after importing them all.
    src = (
        "import os, numpy as np, pandas as pd, matplotlib.pyplot as plt\n"
        "print((np.ones((300, 300)) @ np.ones((300, 300)))[0, 0], len(os.listdir('/proc/self/task')))"
    )
    res = runner.run(RunRequest("python", src, limits=SandboxLimits(max_processes=2)))
    assert res.outcome == Outcome.OK, res.stderr
    assert res.stdout.split() == ["300.0", "1"]


@pytest.mark.skipif(not HAS_MATPLOTLIB, reason="python3-matplotlib is not installed (scripts/setup.sh)")
def test_matplotlib_uses_the_font_list_built_on_the_host(runner: Runner) -> None:
    from livecode.sandbox.fontcache import font_list

    built = font_list("/usr/bin/python3", wait_s=120)
    assert built is not None and built[0].startswith("fontlist-v")
    src = "\n".join(
        [
            "import glob, logging",
            "before = {p: open(p, 'rb').read() for p in glob.glob('/tmp/fontlist-*.json')}",
            "logging.basicConfig(level=logging.INFO)",
            "import matplotlib.pyplot as plt",
            "plt.plot([1, 2]); plt.savefig('out/p.png')",
            "after = {p: open(p, 'rb').read() for p in glob.glob('/tmp/fontlist-*.json')}",
            "print(len(before), before == after)",
        ]
    )
    res = runner.run(RunRequest("python", src, outputs=OutputLimits()))
    assert res.outcome == Outcome.OK, res.stderr
    assert res.stdout.split() == ["1", "True"]  # there at the start, and not rebuilt
    assert "generated new fontManager" not in res.stderr
    assert files(res)["p.png"].startswith(b"\x89PNG")


def test_a_program_file_under_out_is_created_there_and_kept(any_path: Runner) -> None:
    # A multi-file program may ship a file in out/ (bubblewrap made the directory already).
    from livecode.sandbox.program import SourceFile

    program = (
        SourceFile.text("main.sh", "cat out/seed.txt; echo grown >> out/seed.txt"),
        SourceFile.text("out/seed.txt", "seed\n"),
    )
    req = RunRequest("bash", "", files=program, entry="main.sh", outputs=OutputLimits())
    res = any_path.run(req)
    assert res.outcome == Outcome.OK, (res.message, res.stderr)
    assert res.stdout == "seed\n" and files(res) == {"seed.txt": b"seed\ngrown\n"}


def test_a_fork_bomb_left_behind_does_not_stop_the_collection(runner: Runner) -> None:
    src = "echo keep > out/k.txt\n(f(){ f | f & }; f) 2>/dev/null &\nsleep 0.5\necho main"
    res = run_out(runner, "bash", src, max_processes=16)
    assert res.stdout == "main\n" and files(res) == {"k.txt": b"keep\n"}
    res = run_out(runner, "bash", src + "\nsleep 30", max_processes=16, time_limit_ms=1500)
    assert res.outcome == Outcome.TIME_LIMIT and files(res) == {"k.txt": b"keep\n"}
    assert no_leftovers()
