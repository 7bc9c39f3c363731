"""Attacks on isolation: network, environment, host files, privileges. Each must fail."""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, Runner, RunRequest
from livecode.sandbox.spawner import CHILD_EHASH_ENTRIES

from .helpers import REPO, TEST_SLOTS, TEST_UID_BASE, host_uids_of_cmdline, requires_bwrap, run

pytestmark = [requires_bwrap, pytest.mark.sandbox, pytest.mark.timeout(60)]

PROBE_CONNECT = """
import json, socket, sys
out = {}
for port in map(int, sys.argv[1:]):
    try:  # the seccomp filter refuses AF_INET sockets already; the netns has no route either
        with socket.socket() as s:
            s.settimeout(2)
            s.connect(("127.0.0.1", port))
            out[port] = "connected"
    except OSError as e:
        out[port] = type(e).__name__
print(json.dumps(out))
"""


def test_no_network_to_loopback_services(runner: Runner) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        res = run(runner, "python", PROBE_CONNECT, args=("6379", "5432", str(port)))
        assert res.outcome is Outcome.OK, res
        result = json.loads(res.stdout)
        assert set(result) == {"6379", "5432", str(port)}
        assert all(v != "connected" for v in result.values()), result
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached the host's loopback listener
    finally:
        listener.close()


def test_only_loopback_interface(runner: Runner) -> None:
    # /proc/net/dev, not if_nameindex(): the seccomp filter refuses the netlink socket it needs.
    res = run(runner, "python", "print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev') if ':' in l))")
    assert res.stdout.strip() == "['lo']", res


def test_a_runs_network_namespace_has_its_own_tcp_table(runner: Runner) -> None:
    """Made from the worker's nursery namespace (spawner.py): the run's namespace has a TCP hash
    table of its own (shown as its size; one shared with the host shows as minus the host's), and
    it is never the host's."""
    probe = "import os; print(os.readlink('/proc/self/ns/net'), open('/proc/sys/net/ipv4/tcp_ehash_entries').read())"
    first, second = (run(runner, "python", probe) for _ in range(2))
    assert first.outcome is Outcome.OK and second.outcome is Outcome.OK, (first, second)
    (ns1, entries1), (ns2, entries2) = first.stdout.split(), second.stdout.split()
    assert int(entries1) == int(entries2) == CHILD_EHASH_ENTRIES
    assert os.readlink("/proc/self/ns/net") not in (ns1, ns2)


def test_environment_is_empty(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "s3cret-test-value")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw@127.0.0.1/db")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    res = run(runner, "python", "import os, json; print(json.dumps(dict(os.environ)))")
    env = json.loads(res.stdout)
    assert not {"SECRET_KEY", "DATABASE_URL", "REDIS_URL"} & set(env)
    assert "s3cret-test-value" not in res.stdout
    allowed = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PWD", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED"}
    # matplotlib's backend and config dir, one BLAS/OpenMP thread (languages.toml)
    allowed |= {
        "MPLBACKEND",
        "MPLCONFIGDIR",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "NUMEXPR_MAX_THREADS",
    }
    assert set(env) <= allowed, env
    # And not through /proc either: pid 1 is the launcher, started with an even smaller env.
    res = run(runner, "bash", "cat /proc/1/environ /proc/self/environ | tr '\\0' '\\n'")
    assert "SECRET_KEY" not in res.stdout and "DATABASE_URL" not in res.stdout


def test_proc_shows_only_own_processes(runner: Runner) -> None:
    src = """
import os
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
cmds = [open(f'/proc/{p}/cmdline','rb').read().replace(b'\\0', b' ').decode() for p in pids]
print(pids); print(cmds)
"""
    res = run(runner, "python", src)
    pids = eval(res.stdout.splitlines()[0])
    assert max(pids) < 10, res.stdout  # a fresh pid namespace: the launcher, us
    assert "pytest" not in res.stdout and "celery" not in res.stdout


@pytest.mark.parametrize(
    "path",
    ["/etc/shadow", "/root", "/home", "/work", str(REPO), str(REPO / "pyproject.toml"), "/var/lib", "/etc/ssh"],
)
def test_host_paths_unreadable(runner: Runner, path: str) -> None:
    src = """
import os, sys
p = sys.argv[1]
try:
    if os.path.isdir(p):
        print("LISTED", os.listdir(p))
    else:
        print("READ", open(p, 'rb').read(64))
except OSError as e:
    print("DENIED", type(e).__name__)
"""
    res = run(runner, "python", src, args=(path,))
    assert res.stdout.startswith("DENIED"), res


def test_work_root_and_cache_unreadable(runner: Runner, sandbox_dirs: tuple[Path, Path]) -> None:
    # Make sure the cache has something in it first.
    assert run(runner, "c", "int main(){return 0;}").outcome is Outcome.OK
    for path in sandbox_dirs:
        assert path.exists()
        res = run(runner, "bash", 'ls -la "$1" 2>&1 || echo DENIED', args=(str(path),))
        assert "DENIED" in res.stdout, res


def test_root_fs_read_only_except_work_and_tmp(runner: Runner) -> None:
    src = """
import os
for d in ['/', '/usr', '/usr/bin', '/etc', '/bin', '/dev', '/proc', '/proc/sys/kernel', '.', '/tmp',
          '/dev/shm']:
    try:
        with open(os.path.join(d, 'pwned'), 'w') as f:
            f.write('x')
        print(d, 'WROTE')
    except OSError as e:
        print(d, 'DENIED', type(e).__name__)
"""
    res = run(runner, "python", src)
    lines = dict(line.split(" ", 1) for line in res.stdout.splitlines())
    for writable in (".", "/tmp", "/dev/shm"):
        assert lines.pop(writable) == "WROTE", res.stdout
    assert all(v.startswith("DENIED") for v in lines.values()), res.stdout
    assert not os.path.exists("/pwned") and not os.path.exists("/usr/pwned")


def test_proc_sys_not_writable(runner: Runner) -> None:
    src = """
for p in ['/proc/sys/kernel/hostname', '/proc/sys/vm/drop_caches', '/proc/sysrq-trigger',
          '/proc/sys/kernel/core_pattern']:
    try:
        open(p, 'w').write('1\\n'); print(p, 'WROTE')
    except OSError as e:
        print(p, 'DENIED')
"""
    before = Path("/proc/sys/kernel/core_pattern").read_text()
    res = run(runner, "python", src)
    assert res.stdout.count("DENIED") == 4, res.stdout
    assert Path("/proc/sys/kernel/core_pattern").read_text() == before


def test_files_of_previous_run_not_visible(runner: Runner) -> None:
    write = "echo secret > left.txt; echo secret > /tmp/left.txt; ls"
    assert "left.txt" in run(runner, "bash", write).stdout
    res = run(runner, "bash", "ls -a . /tmp")
    assert "left.txt" not in res.stdout, res.stdout
    res = run(runner, "bash", "cat left.txt /tmp/left.txt /sandbox/*/left.txt")
    assert "secret" not in res.stdout and res.exit_code != 0


def test_unprivileged_inside_and_on_host(runner: Runner) -> None:
    token = f"tok-{uuid.uuid4()}"
    seen: set[int] = set()

    looked = threading.Event()

    def on_output(stream: str, text: str) -> None:
        if "ready" in text:  # the program is running (and waits for us): look from the host
            seen.update(host_uids_of_cmdline(token))
            looked.set()

    def stdin_source() -> bytes | None:
        return b"go\n" if looked.is_set() else None

    src = """
import os, time
st = open('/proc/self/status').read()
print(os.getuid(), os.geteuid(), os.getgid(), os.getgroups())
print([l for l in st.splitlines() if l.startswith(('CapEff', 'CapPrm', 'CapBnd', 'NoNewPrivs', 'CapAmb'))])
print('ready', flush=True)
input()
"""
    res = runner.run(RunRequest("python", src, args=(token,)), on_output=on_output, stdin_source=stdin_source)
    lines = res.stdout.splitlines()
    uid, euid, gid = (int(x) for x in lines[0].split()[:3])
    assert uid != 0 and euid != 0 and gid != 0
    status = eval(lines[1])
    assert "CapEff:\t0000000000000000" in status and "CapPrm:\t0000000000000000" in status
    assert "CapBnd:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    assert len(seen) == 1, "found no sandboxed process on the host while the program ran"
    host_uid = seen.pop()
    assert host_uid != 0 and TEST_UID_BASE <= host_uid < TEST_UID_BASE + TEST_SLOTS


def test_cannot_signal_or_see_host_processes(runner: Runner) -> None:
    res = run(
        runner,
        "python",
        f"import os\ntry:\n    os.kill({os.getpid()}, 0); print('reached')\nexcept OSError: print('no')",
    )
    assert res.stdout.strip() == "no"


def test_no_nested_user_namespaces_or_mounts(runner: Runner) -> None:
    src = "unshare -Ur cat /etc/shadow 2>&1; echo rc=$?; mount -t tmpfs x /usr 2>&1; echo rc=$?"
    res = run(runner, "bash", src)
    assert "root:" not in res.stdout
    assert "rc=0" not in res.stdout, res.stdout
