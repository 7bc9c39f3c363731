"""Start and stop real service processes for tests: PostgreSQL, Redis, the API, workers."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from tests.support.forkserver import ForkedProcess, ForkServer

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# The variables that configure a LiveCode process: a test gives each process its own, never the
# test process's.
SERVICE_ENV_PREFIXES = ("LIVECODE_", "DATABASE_", "REDIS_")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_for(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_exc})")


def _find(binary: str) -> str | None:
    found = shutil.which(binary)
    if found:
        return found
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / binary).exists():
            return str(base / binary)
    return None


class PostgresServer:
    """A throwaway PostgreSQL cluster in a temp dir on a free port (owned by an unprivileged
    user when run as root, as initdb requires)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lc-pg-"))
        self.user = "postgres" if os.geteuid() == 0 else None

    def _run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        if self.user:
            argv = ["runuser", "-u", self.user, "--", *argv]
        return subprocess.run(argv, check=True, capture_output=True, **kw)

    def start(self) -> PostgresServer:
        initdb, pg_ctl = _find("initdb"), _find("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("PostgreSQL binaries not found: apt-get install postgresql")
        if self.user:
            shutil.chown(self.dir, self.user)
        self._run(["cp", "-a", str(self._initdb_once(initdb)), str(self.dir / "data")])
        self.pg_ctl = pg_ctl
        self.resume()
        return self

    _initialized: Path | None = None  # this test process's one initdb, which every server copies

    def _initdb_once(self, initdb: str) -> Path:
        """`initdb` once per test process (a second of CPU, several on a busy machine): each
        server starts from a copy of its data directory."""
        cls = type(self)
        if cls._initialized is None or not cls._initialized.exists():
            folder = Path(tempfile.mkdtemp(prefix="lc-pg-initdb-"))
            if self.user:
                shutil.chown(folder, self.user)
            self._run([initdb, "-D", str(folder / "data"), "-A", "trust", "-U", "postgres", "--no-sync"])
            atexit.register(shutil.rmtree, folder, True)
            cls._initialized = folder / "data"
        return cls._initialized

    def resume(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.dir / "data"), "-l", str(self.dir / "log"), "-w", "-o",
                   f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([self.pg_ctl, "-D", str(self.dir / "data"), "-m", mode, "-w", "stop"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:  # noqa: BLE001
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class RedisServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="lc-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if not binary:
            raise RuntimeError("redis-server not found: apt-get install redis-server")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), 10, what="redis")
        return self

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def destroy(self) -> None:
        if self.proc:
            self.proc.kill()
            self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


def create_database(admin_url: str) -> str:
    """A fresh database on the server at `admin_url`; returns its URL."""
    import psycopg

    name = f"livecode_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


_migrated_templates: dict[str, str] = {}  # admin URL -> name of this process's migrated template


def create_migrated_database(admin_url: str, env: dict[str, str]) -> str:
    """A fresh database with every migration applied; returns its URL. `livecode db upgrade` (a
    second or more of CPU, several on a busy machine) runs once per test process, into a template,
    and each database is a copy of it (CREATE DATABASE ... TEMPLATE copies files: ~0.1 s)."""
    import psycopg

    template = _migrated_templates.get(admin_url)
    if template is None:
        url = create_database(admin_url)
        run_livecode("db", "upgrade", env={**env, "DATABASE_URL": url}, check=True)
        template = _migrated_templates[admin_url] = url.rsplit("/", 1)[1]
    name = f"livecode_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


_fork_server: ForkServer | None = None
_fork_server_lock = threading.Lock()


def _forked(argv: list[str], env: dict[str, str], log: Path, err: Path | None = None) -> ForkedProcess | None:
    """The `livecode` console script's process, forked from this test process's fork server (its
    libraries already imported: tests/support/forkserver.py); None for any other program, or with
    LIVECODE_TEST_FORKSERVER=0."""
    global _fork_server
    if argv[0] != str(BIN / "livecode") or os.environ.get("LIVECODE_TEST_FORKSERVER", "1") == "0":
        return None
    # What the interpreter reads at its start (PYTHONPATH, PYTHONHASHSEED, ...) is the server's:
    # a process asking for other values gets an interpreter of its own.
    server_env = {k: v for k, v in os.environ.items() if not k.startswith(SERVICE_ENV_PREFIXES)}
    server_env["PYTHONUNBUFFERED"] = "1"

    def interpreter(e: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in e.items() if k.startswith("PYTHON") and k != "PYTHONUNBUFFERED"}

    if interpreter(env) != interpreter(server_env):
        return None
    with _fork_server_lock:
        if _fork_server is None:
            _fork_server = ForkServer(sys.executable, server_env)
            atexit.register(_fork_server.close)
    return _fork_server.spawn(argv, env, str(ROOT), str(log), str(err) if err else None)


def run_livecode(*args: str, env: dict[str, str], timeout: float = 120,
                 check: bool = False) -> subprocess.CompletedProcess[str]:
    """`subprocess.run(livecode(*args), capture_output=True, text=True)`, forked from the fork
    server (a command such as `livecode db upgrade` or `user create`)."""
    argv = livecode(*args)
    with tempfile.TemporaryDirectory(prefix="lc-cli-") as tmp:
        out, err = Path(tmp, "out"), Path(tmp, "err")
        proc = _forked(argv, env, out, err)
        if proc is None:
            done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        else:
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
                raise
            done = subprocess.CompletedProcess(argv, code, out.read_text(errors="replace"),
                                               err.read_text(errors="replace"))
    if check:
        done.check_returncode()
    return done


class Process:
    """A livecode process (api, worker, serve) with its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], name: str) -> None:
        self.log_path = Path(tempfile.mkstemp(prefix=f"lc-{name}-", suffix=".log")[1])
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc: subprocess.Popen[bytes] | ForkedProcess = _forked(argv, env, self.log_path) or subprocess.Popen(
            argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        self.name = name

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            if sig == signal.SIGKILL:
                self._kill_group()
            else:
                self.proc.send_signal(sig)

    def stop(self, timeout: float = 30) -> None:
        self.terminate()
        self.wait_stopped(timeout)

    def terminate(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)

    def wait_stopped(self, timeout: float = 30) -> None:
        """Wait for a process sent SIGTERM to end; SIGKILL its group after `timeout`."""
        if self.alive():
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.proc.wait(10)
        self.log.close()

    def _kill_group(self) -> None:
        """SIGKILL the whole process group (an API's gunicorn workers too). Its members orphaned by
        the kill are reparented to this process when the sandbox runner made it a subreaper: reap
        them, or they stay as zombies that the sandbox tests' zombie checks would count."""
        pgid = self.proc.pid
        members = [pid for pid in _pids() if _pgid(pid) == pgid and pid != pgid]
        with contextlib.suppress(ProcessLookupError):  # the group's last member ended meanwhile
            os.killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while members and time.monotonic() < deadline:
            for pid in list(members):
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:  # not (yet) ours, or gone
                    done = 0 if os.path.exists(f"/proc/{pid}") else pid
                if done:
                    members.remove(pid)
            time.sleep(0.02)


def stop_all(procs: list[Process], timeout: float = 30) -> None:
    """Stop processes together: SIGTERM to all at once, then wait for each, so that stopping a
    stack takes its slowest graceful shutdown rather than the sum of them all."""
    for proc in procs:
        proc.terminate()
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.wait_stopped(max(0.1, deadline - time.monotonic()))


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def livecode(*args: str) -> list[str]:
    return [str(BIN / "livecode"), *args]


def start_api(env: dict[str, str], port: int | None = None, workers: int = 1, threads: int = 32) -> tuple[Process, str]:
    port = port or free_port()
    proc = Process(livecode("api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
                            "--threads", str(threads)), env, "api")
    base = f"http://127.0.0.1:{port}"
    wait_api(proc, base)
    return proc, base


def start_worker(env: dict[str, str], name: str, queues: str | None = None, concurrency: int = 2) -> Process:
    argv = livecode("worker", "-n", name, "-c", str(concurrency), "--loglevel", "INFO")
    if queues:
        argv += ["-Q", queues]
    return Process(argv, env, "worker")


def start_embedded(env: dict[str, str], port: int | None = None) -> tuple[Process, str]:
    port = port or free_port()
    proc = Process(livecode("serve", "--host", "127.0.0.1", "--port", str(port)), env, "serve")
    base = f"http://127.0.0.1:{port}"
    wait_api(proc, base)
    return proc, base


def wait_api(proc: Process, base: str, timeout: float = 60) -> None:
    def up() -> bool:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.output()[-3000:]}")
        return requests.get(base + "/api/v1/languages", timeout=2).status_code == 200

    try:
        wait_for(up, timeout, 0.1, what=f"{proc.name} at {base}")
    except TimeoutError:
        raise RuntimeError(f"{proc.name} did not come up:\n{proc.output()[-3000:]}") from None


def wait_workers(base: str, count: int = 1, timeout: float = 60) -> None:
    def ready() -> bool:
        r = requests.get(base + "/health/celery", timeout=3)
        return r.status_code == 200 and r.json()["details"]["celery"]["workers"] >= count

    wait_for(ready, timeout, 0.2, what=f"{count} worker(s)")


def _children(names: tuple[str, ...]) -> list[tuple[int, str]]:
    """(pid, state) of this process's children whose name starts with one of `names`."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == os.getpid() and name.startswith(names):
            found.append((int(pid), state))
    return found


def reap_adopted(names: tuple[str, ...], timeout: float = 10.0) -> None:
    """Wait for, and reap, the processes named `names` that this process adopted. A sandbox runner
    makes the test process a child subreaper, so in a worker that ran sandbox tests first whatever
    a browser leaves behind (crash handlers) is re-parented to it and, once it exits, stays its
    zombie (which test_no_zombies_accumulate would count). Killed if still there at `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline + 5:
        adopted = _children(names)
        for pid, state in adopted:
            if state == "Z":
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        alive = [pid for pid, state in adopted if state != "Z"]
        if not adopted:
            return
        if alive and time.monotonic() > deadline:
            for pid in alive:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        time.sleep(0.1)
