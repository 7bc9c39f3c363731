"""The exec helper that starts bubblewrap as the slot uid (spawner.py): it fails closed, and the
sandbox spawn no longer needs a preexec_fn (so CPython can vfork instead of fork the worker)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from livecode.sandbox.launcher import build_launcher
from livecode.sandbox.spawner import (
    CHILD_EHASH_ENTRIES,
    build_spawner,
    lean_mount_namespace,
    nursery_net_namespace,
    spawner_argv,
)

from .helpers import TEST_UID_BASE

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
UID = TEST_UID_BASE + 1


@pytest.fixture(scope="module")
def spawner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("spawner-cache")
    cache.chmod(0o700)
    return build_spawner(cache)


def test_drops_to_the_slot_uid_with_no_groups_and_sets_limits(spawner: Path) -> None:
    argv = spawner_argv(spawner, UID, UID, 5, [], [(7, 77, 77)])  # RLIMIT_NOFILE
    ids = 'echo "$(id -u) $(id -g) $(id -G) $(ulimit -n) $(nice)"; grep -E "^(Uid|Gid|Groups):" /proc/self/status'
    proc = subprocess.run([*argv, "/bin/sh", "-c", ids], capture_output=True, cwd="/", timeout=30, check=False)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split() == [str(UID), str(UID), str(UID), "77", "5"]
    status = {line.split(":")[0]: line.split()[1:] for line in lines[1:]}
    assert status["Uid"] == [str(UID)] * 4 and status["Gid"] == [str(UID)] * 4  # real, effective, saved, fs
    assert status["Groups"] == []


def test_joins_the_given_cgroup_procs_fd_before_exec(spawner: Path) -> None:
    # A pipe stands in for cgroup.procs: the helper must write "0" to it and close it.
    r, w = os.pipe()
    argv = spawner_argv(spawner, UID, UID, 0, [w], [])
    proc = subprocess.run([*argv, "/bin/true"], pass_fds=[w], capture_output=True, timeout=30, check=False)
    os.close(w)
    assert proc.returncode == 0, proc.stderr
    assert os.read(r, 10) == b"0"
    os.close(r)


@pytest.mark.parametrize(
    "case",
    ["bad_fd", "readonly_fd", "bad_rlimit", "root_uid", "garbage", "no_program"],
)
def test_fails_closed_and_never_execs(spawner: Path, case: str) -> None:
    program = ["/bin/echo", "ran"]
    pass_fds: list[int] = []
    if case == "bad_fd":
        argv = spawner_argv(spawner, UID, UID, 0, [99], [])
    elif case == "readonly_fd":  # a cgroup that cannot be joined must stop the spawn
        fd = os.open("/dev/null", os.O_RDONLY)
        pass_fds = [fd]
        argv = spawner_argv(spawner, UID, UID, 0, [fd], [])
    elif case == "bad_rlimit":  # soft above hard
        argv = spawner_argv(spawner, UID, UID, 0, [], [(7, 100, 10)])
    elif case == "root_uid":
        argv = spawner_argv(spawner, 0, 0, 0, [], [])
    elif case == "garbage":
        argv = [str(spawner), f"{UID}x", str(UID), "0", "0", "0", "--"]
    else:
        argv = spawner_argv(spawner, UID, UID, 0, [], [])
        program = []
    proc = subprocess.run([*argv, *program], pass_fds=pass_fds, capture_output=True, timeout=30, check=False)
    for fd in pass_fds:
        os.close(fd)
    assert proc.returncode != 0
    assert b"livecode-spawner" in proc.stderr
    assert b"ran" not in proc.stdout


def test_sandbox_spawn_passes_no_preexec_fn(runner, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # A preexec_fn (or user=/group=/extra_groups=) forces CPython to fork() the whole worker.
    seen: list[dict[str, object]] = []
    real = subprocess.Popen

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(subprocess, "Popen", spy)
    from .helpers import run

    res = run(runner, "python", "print(6 * 7)", memory_mb=97)  # no spare sandbox fits: a fresh spawn
    assert res.stdout.strip() == "42"
    assert seen, "no sandbox was spawned"
    for kwargs in seen:
        for forbidden in ("preexec_fn", "user", "group", "extra_groups"):
            assert kwargs.get(forbidden) is None


def _has_interpreter(path: Path) -> bool:
    """Whether the ELF file asks for a dynamic loader (a PT_INTERP program header)."""
    data = path.read_bytes()
    phoff, phentsize, phnum = int.from_bytes(data[32:40], "little"), data[54] | data[55] << 8, data[56] | data[57] << 8
    return any(int.from_bytes(data[phoff + i * phentsize : phoff + i * phentsize + 4], "little") == 3
               for i in range(phnum))  # fmt: skip


@pytest.mark.skipif(not os.access("/usr/bin/musl-gcc", os.X_OK), reason="musl-tools not installed")
def test_the_helpers_exec_d_per_sandbox_are_static_musl_builds(spawner: Path, tmp_path: Path) -> None:
    # glibc's start-up costs each exec ~0.5 ms of cpuid traps on a VM (cbuild.py); musl's does not.
    launcher = build_launcher(tmp_path)
    for exe in (spawner, launcher):
        assert not _has_interpreter(exe), exe
        assert b"GLIBC" not in exe.read_bytes(), exe


def test_the_lean_mount_namespace_detaches_nothing_of_the_host(spawner: Path, tmp_path: Path) -> None:
    """Its mounts are made slaves before it detaches what bubblewrap does not need: a mount on a
    mount the host shares with peers (as systemd shares /) stays mounted on the host."""
    shared = tmp_path / "shared"
    shared.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "lean-test", str(shared)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(shared)], check=True)
        (shared / "inner").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "lean-test-inner", str(shared / "inner")], check=True)
        fd = lean_mount_namespace(spawner, ["/usr", "/proc", "/dev/null"])
        assert fd is not None
        try:
            argv = spawner_argv(spawner, UID, UID, 0, [], [], fd)
            inside = subprocess.run([*argv, "/bin/cat", "/proc/self/mountinfo"], capture_output=True, check=True,
                                    pass_fds=[fd], cwd="/", timeout=30).stdout.decode()  # fmt: skip
        finally:
            os.close(fd)
        assert str(shared) not in inside
        with open("/proc/self/mountinfo") as f:
            assert str(shared / "inner") in f.read()  # still mounted here
    finally:
        subprocess.run(["umount", "-l", str(shared)], check=False)


def test_a_namespace_helper_that_never_answers_is_given_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The namespace is made under the views' lock, which every sandbox start takes: a helper
    that hangs must not hang them all. It is killed at the deadline, and bubblewrap sets up in
    the worker's namespace."""
    import livecode.sandbox.spawner as spawner_module

    hung = tmp_path / "hung-helper"
    hung.write_text("#!/bin/sh\necho $$ > \"$0.pid\"\nexec sleep 60\n")
    hung.chmod(0o755)
    monkeypatch.setattr(spawner_module, "LEAN_NAMESPACE_TIMEOUT_S", 0.5)
    start = time.monotonic()
    assert lean_mount_namespace(hung, ["/usr"]) is None
    assert time.monotonic() - start < 30  # not the helper's 60 s
    pid = int((tmp_path / "hung-helper.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"


def test_the_nursery_network_namespace_gives_each_sandbox_namespace_its_own_tcp_table(spawner: Path) -> None:
    """A network namespace made from the nursery has a TCP hash table of its own (its teardown
    walks it, not the host's whole table): /proc shows its size, not the host's negated. The
    nursery itself is not the host's namespace, and only its loopback exists there, down."""
    fd = nursery_net_namespace(spawner)
    assert fd is not None
    try:
        host_ns = os.readlink("/proc/self/ns/net")
        argv = spawner_argv(spawner, UID, UID, 0, [], [], None, fd)
        script = (
            "readlink /proc/self/ns/net; cat /proc/sys/net/ipv4/tcp_child_ehash_entries; "
            "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '; "
            "unshare -Urn cat /proc/sys/net/ipv4/tcp_ehash_entries"
        )
        proc = subprocess.run([*argv, "/bin/sh", "-c", script], pass_fds=[fd], capture_output=True, cwd="/",
                              timeout=30, check=False)  # fmt: skip
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    ns, child_entries, devices, sandbox_entries = proc.stdout.decode().split("\n", 3)
    assert ns.startswith("net:[") and ns != host_ns
    assert int(child_entries) == CHILD_EHASH_ENTRIES
    assert devices.split() == ["lo"]
    assert int(sandbox_entries) == CHILD_EHASH_ENTRIES  # the host's table shows as -(its size)
