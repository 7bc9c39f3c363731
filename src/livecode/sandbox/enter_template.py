import sys

_AT_START = frozenset(sys.modules)  # what a cold start of `python3 -E -s main.py` has imported
_FINDERS_AT_START = dict(sys.path_importer_cache)  # and the finders its start-up's imports made
_SCRIPT = __file__  # (its entry there, as the interpreter looked for an importer of the script)

# The template of entered warm starts (enter.py). Not a module of livecode: the worker starts it
# (bubblewrap as root, the host read-only with the sandbox's /etc and site hooks, this file as
# /tmp/main.py) as `/usr/bin/python3 -E -s main.py` with the environment of the runs it serves,
# so that each copy of it (os.fork) is an interpreter whose start-up is a cold start's: the same
# argv, environment, flags and modules. It holds nothing of any run: a request is a sandbox to
# enter and descriptors, never code or input (the program reads its source from its sandbox's
# FIFO). Requests come on the one descriptor above 2 it is started with (a unix socket to the
# worker): first the seccomp filter (the BPF program, one message; it answers with its pid), then
# one message per spare sandbox:
#   "<launcher pid> <uid> <nice> <entry> <work> <number of cgroup fds> <rlimits: res,soft,hard;...>"
# with SCM_RIGHTS: the run's cgroup.procs files, then stdin, stdout, stderr and the result pipe.
# The answer is "<seq> <pid in the sandbox>" with a pidfd of the program, or "<seq> !<error>".
#
# Per request it points its children's pid namespace at the sandbox's and forks the program, which
# (before anything of a user's exists in it) starts a session of its own, joins the run's cgroups,
# drops root's groups, enters the sandbox's cgroup, IPC, UTS, network and mount namespaces (root
# and cwd become the sandbox's), then its user namespace, takes the sandbox's uid and gid, drops
# every capability (effective, permitted, inheritable, ambient, the bounding set), asks to die
# with the template, sets no_new_privs, the stage's rlimits and priority, loads the seccomp filter
# bubblewrap gave the sandbox, keeps only its stdio, makes its entry FIFO and blocks reading it,
# as a started interpreter reads its script. The template waits for its programs (a pidfd each)
# and writes each one's exit status to its result pipe ("exit N" / "signal N", as the launcher
# would); once the worker has closed the socket and they have all ended, it exits.

import _signal  # noqa: E402  (built in, imported at every start)
import _socket  # noqa: E402  (built in)
import _weakref  # noqa: E402  (built in, imported at every start)
import atexit as _at_exit  # noqa: E402  (built in; _end's, never one of the program's: see _as_main)
import builtins as _builtins  # noqa: E402  (imported at every start)
import ctypes  # noqa: E402
import gc as _gc  # noqa: E402  (built in)
import os  # noqa: E402  (imported by site at every start: nothing new)
import resource  # noqa: E402  (a shared library: loaded once here, not by every copy)
import select as _select  # noqa: E402  (a shared library: loaded once here)

_libc = ctypes.CDLL(None, use_errno=True)
_c_exit = ctypes.PyDLL(None).exit  # (the GIL held: no thread of the program runs while it exits)
_CLONE_NEWPID = 0x20000000
_NAMESPACES = ("cgroup", "ipc", "uts", "net", "mnt")  # then "user", last: root on the host until then
_PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _PR_CAP_AMBIENT = 24, 38, 22, 47
_PR_SET_DUMPABLE, _SECCOMP_MODE_FILTER, _PR_CAP_AMBIENT_CLEAR_ALL, _PR_SET_PDEATHSIG = 4, 2, 4, 1
# The capabilities the template keeps (enter.py's TEMPLATE_CAPS): SETGID 6, SYS_CHROOT 18,
# SYS_PTRACE 19, SYS_ADMIN 21.
_KEEP = (6, 18, 19, 21)


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


class _Filter(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _check(rc: int, what: str) -> None:
    if rc != 0:
        raise OSError(ctypes.get_errno(), f"{what}: {os.strerror(ctypes.get_errno())}")


def _recv(sock: _socket.socket, size: int, nfds: int = 0) -> tuple[bytes, list[int]]:
    data, ancillary, _, _ = sock.recvmsg(size, _socket.CMSG_SPACE(nfds * 4) if nfds else 0)
    fds: list[int] = []
    for level, kind, raw in ancillary:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            fds += [int.from_bytes(raw[i : i + 4], sys.byteorder) for i in range(0, len(raw) - len(raw) % 4, 4)]
    return data, fds


def _become(ns: dict[str, int], uid: int, nice: int, entry: str, work: str, procs: list[int], stdio: list[int],
            rlimits: list[tuple[int, int, int]], bpf: _Filter, ready: int, template: int) -> str:
    """In the program's process (the sandbox's pid namespace, still root on the host), holding
    only what it needs (_keep_only): the sandbox's program from here on. Returns the path of its
    entry file, the FIFO it reads."""
    # A session of its own, as bubblewrap's --new-session gives a cold start: no controlling
    # terminal (no TIOCSTI into the worker's), no signals to the worker's process group.
    os.setsid()
    for fd in procs:
        os.write(fd, b"0")
    os.setgroups([])  # root's groups, gone before anything of the sandbox is reachable
    for name in _NAMESPACES:
        _check(_libc.setns(ns[name], 0), f"setns {name}")
    _check(_libc.setns(ns["user"], 0), "setns user")
    os.setresgid(uid, uid, uid)  # the sandbox's ids, mapped to the slot's on the host
    os.setresuid(uid, uid, uid)  # keeps the capabilities: the sandbox's user namespace has no uid 0
    for cap in range(64):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break  # past the last capability
    _libc.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    _check(_libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), (_CapData * 2)()), "capset")
    # Ends with the template, which reports its exit status (set after the uid change, which
    # clears it); a template already gone by then is seen on its pidfd.
    _check(_libc.prctl(_PR_SET_PDEATHSIG, 9, 0, 0, 0), "pdeathsig")
    if _ended(template):
        os._exit(122)
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    for res, soft, hard in rlimits:
        resource.setrlimit(res, (soft, hard))
    _check(_libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(bpf), 0, 0), "seccomp")
    for i, fd in enumerate(stdio):
        os.dup2(fd, i)
    os.chdir(work)
    os.mkfifo(entry, 0o600)
    os.setpriority(os.PRIO_PROCESS, 0, nice)  # the spare's, once its set-up is done
    os.write(ready, b"ready")
    os.closerange(3, 1 << 20)
    # As after an exec: its /proc/self is its own (it holds nothing but its stdio by now).
    _check(_libc.prctl(_PR_SET_DUMPABLE, 1, 0, 0, 0), "dumpable")
    return f"{work}/{entry}"


def _ended(pidfd: int) -> bool:
    """Whether the process of this pidfd has exited."""
    poller = _select.poll()
    poller.register(pidfd, _select.POLLIN)
    return bool(poller.poll(0))


def _keep_only(keep: set[int]) -> None:
    """Close every descriptor but `keep` (a new copy holds the template's: other runs' pipes),
    a range at a time (close_range, Linux 5.9, which the launcher needs too; descriptors go up to
    fs.nr_open, 2^20 by default): listing /proc/self/fd cost a copy ~0.3 ms, and its exit more
    (the listing's /proc entries are dropped when it ends)."""
    low = 3
    for fd in sorted(fd for fd in keep if fd >= low):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 20)


class _Programs:
    """The programs out there (their parent is the template): by pidfd, their pid and result pipe."""

    def __init__(self) -> None:
        self.by_pidfd: dict[int, tuple[int, int]] = {}

    def add(self, pid: int, pidfd: int, result: int) -> None:
        self.by_pidfd[pidfd] = (pid, result)

    def ended(self, pidfd: int) -> None:
        """Report the program's exit status as the launcher would ("exit N" / "signal N")."""
        pid, result = self.by_pidfd.pop(pidfd)
        try:
            _, status = os.waitpid(pid, 0)
            line = f"exit {os.WEXITSTATUS(status)}\n" if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}\n"
            os.write(result, line.encode())
        except OSError:
            pass  # the run is over on the worker's side (its pipe closed): nothing to tell
        finally:
            _close([pidfd, result])


class _Pending:
    """A request whose program is entering its sandbox: answered once it says it is ready."""

    def __init__(self, seq: str, answer_r: int, pidfd: int) -> None:
        self.seq, self.answer_r, self.pidfd = seq, answer_r, pidfd
        self.answer = b""


def _request(sock: _socket.socket, bpf: _Filter, programs: _Programs, own_pid_ns: int,
             self_pidfd: int) -> str | _Pending | None:
    """Start one request: the entry path in the program's process; in the template, what to
    answer once the program is ready (or None: answered already, with an error)."""
    data, fds = _recv(sock, 65536, 16)
    if not data:
        raise EOFError
    ns: dict[str, int] = {}
    answer_r = answer_w = -1
    seq = "?"
    try:
        seq, launcher_s, uid_s, nice_s, entry, work, ncg_s, limits = data.decode().split(" ")
        launcher, ncg = int(launcher_s), int(ncg_s)
        procs, stdio = fds[:ncg], fds[ncg : ncg + 4]
        if len(stdio) != 4 or len(fds) != ncg + 4:
            raise ValueError("descriptors missing")
        rlimits = [(int(a), int(b), int(c)) for a, b, c in (item.split(",") for item in limits.split(";") if item)]
        for name in (*_NAMESPACES, "user", "pid"):
            ns[name] = os.open(f"/proc/{launcher}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        answer_r, answer_w = os.pipe()
        # Our next child is made in the sandbox's pid namespace (we stay in ours).
        _check(_libc.setns(ns["pid"], _CLONE_NEWPID), "setns pid")
        program = os.fork()
    except Exception as e:  # noqa: BLE001  (the worker builds its spare the usual way)
        _close(fds, ns.values(), (answer_r, answer_w))
        _answer(sock, f"{seq} !{type(e).__name__}: {e}".encode())
        return None
    if program == 0:  # the program: only it returns
        try:
            _keep_only({*ns.values(), *procs, *stdio[:3], answer_w, self_pidfd})
            return _become(ns, int(uid_s), int(nice_s), entry, work, procs, stdio[:3], rlimits, bpf, answer_w,
                           self_pidfd)
        except BaseException:
            os._exit(121)
    try:
        pidfd = os.pidfd_open(program)
    except OSError:  # out of descriptors: this request refused, no more taken
        os.kill(program, 9)
        os.waitpid(program, 0)
        _close(fds, ns.values(), (answer_r, answer_w))
        raise
    programs.add(program, pidfd, stdio[3])  # the result pipe (fds[ncg + 3]) is kept for its status
    _close(fds[: ncg + 3], ns.values(), (answer_w,))
    try:
        _check(_libc.setns(own_pid_ns, _CLONE_NEWPID), "setns back")
    except OSError:
        # Our children would be made in that sandbox from now on: no more requests, this one
        # refused (its program killed, its status still reported).
        os.kill(program, 9)
        os.close(answer_r)
        raise
    # The answer's own pidfd: the one kept for the exit status is closed when the program ends,
    # which may come first, and its number be taken again meanwhile.
    return _Pending(seq, answer_r, os.dup(pidfd))


def _answer(sock: _socket.socket, message: bytes, pidfd: int | None = None) -> None:
    """Send an answer (with a pidfd of the program); a worker gone (its end closed) is not an
    error here: the loop sees EOF."""
    rights = [] if pidfd is None else [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pidfd.to_bytes(4, sys.byteorder))]
    try:
        sock.sendmsg([message], rights)
    except OSError:
        pass


def _ready(sock: _socket.socket, pending: _Pending) -> None:
    """The program's answer pipe: once it has closed, answer the worker (with a pidfd of it)."""
    try:
        chunk = os.read(pending.answer_r, 64)
    except OSError:
        chunk = b""
    if chunk:
        pending.answer += chunk
        return
    os.close(pending.answer_r)
    pending.answer_r = -1
    try:
        if pending.answer != b"ready":
            raise OSError(f"the program could not enter its sandbox ({pending.answer!r})")
        # Its pid in the sandbox from its pidfd (never from the number: it may have ended, been
        # reaped and its number taken again).
        # (read raw: a text file object's machinery cost ~0.2 ms a request here, in pages the
        # template shares with its copies)
        info_fd = os.open(f"/proc/self/fdinfo/{pending.pidfd}", os.O_RDONLY | os.O_CLOEXEC)
        try:
            info = os.read(info_fd, 4096)
        finally:
            os.close(info_fd)
        found = next((line.split()[-1] for line in info.split(b"\n") if line.startswith(b"NSpid:")), None)
        if found is None:
            raise OSError("no NSpid in the pidfd's fdinfo (pid namespaces are needed)")
        nspid = int(found)
        if nspid <= 0:
            raise OSError("the program has ended")
        _answer(sock, f"{pending.seq} {nspid}".encode(), pending.pidfd)
    except Exception as e:  # noqa: BLE001
        _answer(sock, f"{pending.seq} !{type(e).__name__}: {e}".encode())
    finally:
        os.close(pending.pidfd)


def _close(*groups: object) -> None:
    for group in groups:
        for fd in group:  # type: ignore[attr-defined]
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


def _serve() -> str:
    """Requests until the worker closes the socket, then until the programs out there have
    ended (each reported); in a program's process, its entry path. One loop: a program being
    set up (its answer pending) never holds up another's exit status."""
    own = [int(fd) for fd in os.listdir("/proc/self/fd")]
    sock_fd = next(fd for fd in own if fd > 2 if os.path.exists(f"/proc/self/fd/{fd}")
                   if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"))
    sock = _socket.socket(fileno=sock_fd)
    blob = sock.recv(1 << 20)  # the seccomp filter: one message
    sock.sendall(f"{os.getpid()}".encode())  # the worker watches us by this pid
    buf = ctypes.create_string_buffer(blob, len(blob))
    bpf = _Filter(len(blob) // 8, ctypes.cast(buf, ctypes.c_void_p))
    own_pid_ns = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    self_pidfd = os.pidfd_open(os.getpid())  # a copy's way to see that we are gone
    # Only the capabilities entering needs, in every set, the bounding set too (bubblewrap gave
    # us SETPCAP for this cut): nothing we could exec would get more.
    for cap in range(64):
        if cap not in _KEEP and _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            break
    keep = sum(1 << cap for cap in _KEEP)
    data = (_CapData * 2)(_CapData(keep, keep, 0), _CapData(0, 0, 0))
    _check(_libc.capset(ctypes.byref(_CapHeader(0x20080522, 0)), data), "capset")
    programs = _Programs()
    pending: dict[int, _Pending] = {}
    # The builtin compile() makes the interpreter's AST types the first time it is called (to
    # check whether it was given an AST): ~1.3 ms, paid by every copy compiling its program (a
    # cold start compiles its script without that check). Made once, here.
    compile(b"", "<template>", "exec")
    # Dropped once here, what each copy would otherwise drop before its program at a cost (~0.3 ms
    # a copy: the finders' directory listings freed in copied pages): the import system's finders
    # of the directories the template's own imports looked in (those of its start-up kept, as a
    # cold start has them), and the modules a cold start has not imported (the template's names
    # hold what it uses of them). _as_main does it again in the copy: cheap now, and right
    # whatever the template imported since.
    _imports_as_at_start(_SCRIPT)
    # Every object so far out of the collector's reach: a copy's collections and exit then write
    # none of their headers, so fewer of the pages it shares with us are copied (~2 ms a copy).
    _gc.freeze()
    serving = True
    poller = _select.poll()
    while serving or programs.by_pidfd or pending:
        watched = {**({sock.fileno(): "sock"} if serving else {}), **dict.fromkeys(programs.by_pidfd, "exit"),
                   **dict.fromkeys(pending, "ready")}
        poller = _select.poll()
        for fd in watched:
            poller.register(fd, _select.POLLIN)
        for fd, _ in poller.poll():
            kind = watched.get(fd)
            if kind == "exit":
                programs.ended(fd)
            elif kind == "ready":
                p = pending.pop(fd)
                _ready(sock, p)
                if p.answer_r >= 0:
                    pending[p.answer_r] = p
            elif kind == "sock" and serving:
                try:
                    started = _request(sock, bpf, programs, own_pid_ns, self_pidfd)
                except (EOFError, OSError):  # the worker closed its end, or we cannot serve
                    serving = False
                    try:
                        sock.shutdown(_socket.SHUT_RDWR)  # the worker sees it and starts another
                    except OSError:
                        pass
                    continue
                if isinstance(started, str):
                    return started
                if started is not None:
                    pending[started.answer_r] = started
    os._exit(0)


def _as_main(path: str) -> dict[str, object]:
    """A fresh __main__ for the script at `path`, as `python3 main.py` makes it; the template's
    own imports forgotten."""
    import _frozen_importlib_external as external

    main = type(sys)("__main__")
    main.__file__ = path
    main.__cached__ = None  # type: ignore[attr-defined]
    main.__loader__ = external.SourceFileLoader("__main__", path)
    main.__builtins__ = __builtins__  # type: ignore[attr-defined]
    main.__spec__ = None
    main.__annotations__ = {}
    sys.modules["__main__"] = main
    sys.path[0] = os.path.dirname(path)
    _imports_as_at_start(path)
    return main.__dict__


def _imports_as_at_start(script: str) -> None:
    """The import system as the template's start-up (a cold start's) left it: only the modules
    imported then (the template's names hold what it uses of the others), and the finders made
    then, in their order, the script's own entry (None: no importer takes a file) under `script`.
    A directory of sys.path that did not exist then (None) and does now is left to the import
    system to look at again, as a cold start would (a finder's own listing follows its
    directory's mtime)."""
    finders = {script if key == _SCRIPT else key: value for key, value in _FINDERS_AT_START.items()
               if value is not None or key == _SCRIPT or not os.path.exists(key)}
    sys.path_importer_cache.clear()
    sys.path_importer_cache.update(finders)
    for name in [name for name in sys.modules if name not in _AT_START]:
        del sys.modules[name]


def _flush_io() -> None:
    """As the interpreter does once a script's code has returned or raised (pythonrun.c's
    flush_io): stderr, then stdout, errors dropped."""
    for stream in (getattr(sys, "stderr", None), getattr(sys, "stdout", None)):
        if stream is not None:
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001, S110  (the interpreter drops them too)
                pass


def _report(e: BaseException, tb: object) -> None:
    """An exception nothing caught, reported as the interpreter reports it (_PyErr_PrintEx):
    sys.last_*, then sys.excepthook with its traceback from the program's own frame (the
    template's below it left out); a hook that fails reported with the original, a hook's
    SystemExit the interpreter's to handle."""
    e.__traceback__ = tb  # type: ignore[assignment]  # what the interpreter's display reads
    sys.last_type, sys.last_value, sys.last_traceback = type(e), e, tb  # type: ignore[assignment]
    hook = sys.__dict__.get("excepthook", _report)  # (_report: missing)
    try:
        sys.audit("sys.excepthook", None if hook is _report else hook, type(e), e, tb)
    except RuntimeError:
        return  # an audit hook's way to say: no report
    except BaseException:  # noqa: BLE001, S110  (the interpreter reports it as unraisable and goes on)
        pass
    if hook is _report:
        _write_stderr("sys.excepthook is missing\n")
        sys.__excepthook__(type(e), e, tb)  # type: ignore[arg-type]
        return
    try:
        hook(type(e), e, tb)  # type: ignore[operator]
    except SystemExit:
        raise
    except BaseException as failed:  # noqa: BLE001
        failed_tb = failed.__traceback__.tb_next if failed.__traceback__ else None  # (this frame out)
        failed.__traceback__ = failed_tb
        if failed.__context__ is e:
            failed.__context__ = None  # (the interpreter's call of the hook handles no exception)
        _libc.fflush(None)
        _write_stderr("Error in sys.excepthook:\n")
        sys.__excepthook__(type(failed), failed, failed_tb)
        _write_stderr("\nOriginal exception was:\n")
        sys.__excepthook__(type(e), e, tb)  # type: ignore[arg-type]


def _write_stderr(text: str) -> None:
    """As PySys_WriteStderr: to sys.stderr, or to descriptor 2 without one."""
    try:
        sys.stderr.write(text)
    except Exception:  # noqa: BLE001
        os.write(2, text.encode())


def _silent(*args: object) -> None:
    pass


class _Mark:
    """Put in a module's names by _finalize: alive as long as they are (each holds the other)."""

    __slots__ = ("names", "__weakref__")

    def __init__(self, names: dict[str, object]) -> None:
        self.names: dict[str, object] | None = names


def _clear(names: dict[str, object]) -> None:
    """A module's names set to None as the interpreter's finalization does (_PyModule_ClearDict:
    those with one leading underscore first, then the rest but __builtins__)."""
    for name in list(names):
        if isinstance(name, str) and name[:1] == "_" and name[1:2] != "_":
            names[name] = None
    for name in list(names):
        if name != "__builtins__":
            names[name] = None


def _flushed() -> bool:
    """sys.stdout and sys.stderr flushed as the interpreter's finalization flushes them first;
    False if one could not be (the interpreter reports that and exits 120: _end leaves it to it)."""
    for stream in (getattr(sys, "stdout", None), getattr(sys, "stderr", None)):
        if stream is None or getattr(stream, "closed", False):
            continue
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001
            return False
    return True


def _end(status: int, interrupted: bool) -> None:
    """End the program as the interpreter ends a script, without finalizing what the copy shares
    with its template. The interpreter's finalization writes to nearly every object the template
    made before the fork, so each of those pages would be copied (~2.4 ms a run, measured:
    docs/performance.md). What the interpreter does at exit that a program can see is done here,
    in Py_FinalizeEx's order (_exit_ready, then _finalize), for the program's modules (its own,
    and those a cold start had not imported) and what it set on sys and builtins; then the C
    library's exit (its stdio flushed, its atexit handlers). Objects that only the modules a cold
    start has imported before the program hold (`os.x = ...`) are not finalized, as Python allows
    ("It is not guaranteed that __del__() methods are called for objects that still exist when
    the interpreter exits"). Anything unusual before the finalization proper (another thread
    running, a threading exit hook, a stream that cannot be flushed, anything raised) and the
    interpreter's own finalization does it all (the copy's exit then costs what it did before)."""
    try:
        ready = _exit_ready()
    except BaseException:  # noqa: BLE001  (whatever the program left behind: the usual way)
        ready = False
    if ready:
        try:
            _finalize()
        except BaseException:  # noqa: BLE001, S110  (too late to hand over: the rest goes with the process)
            pass
        for stream in dict.fromkeys((sys.__dict__.get("stdout"), sys.__dict__.get("stderr"), _SYS.get("stdout"),
                                     _SYS.get("stderr"))):  # once more, as the interpreter (the originals too)
            try:
                stream.flush()  # type: ignore[union-attr]
            except BaseException:  # noqa: BLE001, S110  (it finds them gone by then: nothing said)
                pass
        if interrupted:  # as the interpreter ends on a KeyboardInterrupt nothing caught (exit_sigint)
            _signal.signal(_signal.SIGINT, _signal.SIG_DFL)
            os.kill(os.getpid(), _signal.SIGINT)
            status = 130  # (SIGINT blocked)
        _c_exit(status)
    if interrupted:
        sys.excepthook = _silent  # reported already: the interpreter's own exit by SIGINT
        raise KeyboardInterrupt
    raise SystemExit(status)  # (not sys.exit: the program may have replaced it)


def _exit_ready() -> bool:
    """The exit's steps before the finalization proper (threads joined, atexit handlers, the
    streams flushed); False when the interpreter's own finalization is to do the rest."""
    threading = sys.modules.get("threading")
    if len(sys._current_frames()) > 1 or getattr(threading, "_threading_atexits", None):
        return False
    if threading is not None:
        threading._shutdown()  # type: ignore[attr-defined]
    _at_exit._run_exitfuncs()
    return len(sys._current_frames()) == 1 and _flushed()


def _finalize() -> None:
    """The interpreter's finalization (Py_FinalizeEx, finalize_modules) for what the program
    made. (atexit, gc, _signal and builtins are the template's module objects, none of them among
    those cleared.)"""
    # _PySignal_Fini: the program's signal handlers gone.
    for signum in _signal.valid_signals():
        try:
            if callable(_signal.getsignal(signum)):
                _signal.signal(signum, _signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    if _gc.isenabled():
        _gc.collect()  # with every module still there
    _gc.callbacks.clear()  # (the finalization's own collection calls none)
    # finalize_modules_delete_special
    _builtins._ = None  # type: ignore[attr-defined]
    for name in ("path", "argv", "ps1", "ps2", "last_type", "last_value", "last_traceback", "path_hooks",
                 "path_importer_cache", "meta_path", "__interactivehook__"):
        sys.__dict__[name] = None
    for name in ("stdin", "stdout", "stderr"):
        sys.__dict__[name] = sys.__dict__.get(f"__{name}__")
    # finalize_remove_modules, for the program's (in sys.modules' order: __main__ first). Each
    # module's names get a mark that only they hold (and that holds them): the collection below
    # finalizes the names nothing else holds with all of them still bound, as the interpreter's
    # does; those still held after it are cleared then, the last imported first.
    marks = []
    for name in [name for name in sys.modules if name not in _AT_START or name == "__main__"]:
        module = sys.modules[name]
        # (its dict as the interpreter reads it: a module class's own lookup, a lazy module's
        # load, never runs)
        names = _module_dict(module) if isinstance(module, type(sys)) else None
        if type(names) is dict:
            names["__livecode_end__"] = _Mark(names)
            marks.append(_weakref.ref(names["__livecode_end__"]))
        sys.modules[name] = None  # type: ignore[assignment]
    module = names = None  # type: ignore[assignment]
    # finalize_restore_builtins: builtins as they were before site and the program.
    for name in [name for name in _builtins.__dict__ if name not in _BUILTINS]:
        del _builtins.__dict__[name]
    for name, value in _BUILTINS.items():
        if _builtins.__dict__.get(name, _BUILTINS) is not value:
            _builtins.__dict__[name] = value
    _gc.collect()
    for ref in reversed(marks):  # finalize_modules_clear_weaklist
        mark = ref()
        if mark is not None and mark.names is not None:
            held, mark.names = mark.names, None
            held.pop("__livecode_end__", None)
            _clear(held)
            del held
        del mark
    # finalize_clear_sys_builtins_dict, for what the program set on sys
    for name, value in list(sys.__dict__.items()):
        if _SYS.get(name, _SYS) is not value:
            sys.__dict__[name] = None
    _gc.collect()


# builtins as the interpreter keeps them to restore at exit (before site added its names and the
# import system its own), and sys's names before any program.
_BUILTINS = {**{name: value for name, value in _builtins.__dict__.items()
                if name not in ("exit", "quit", "help", "copyright", "credits", "license")},
             "__spec__": None, "__loader__": None, "__package__": None}
_SYS = dict(sys.__dict__)
_module_dict = type(sys).__dict__["__dict__"].__get__  # type: ignore[index]
_entry = _serve()
_globals = _as_main(_entry)
_gc.collect()  # the fresh __main__ among the oldest objects, as at a cold start (finalizers' order)
with open(_entry, "rb") as _f:
    _source = _f.read()
del _f
_status = 0
_interrupted = False
try:
    _code = compile(_source, _entry, "exec")
except BaseException as _e:  # as the interpreter reports a script it cannot compile
    _flush_io()
    _interrupted = type(_e) is KeyboardInterrupt
    _report(_e, None)
    _status = 1
else:
    try:
        exec(_code, _globals)
    except SystemExit as _e:
        _flush_io()
        _libc.fflush(None)  # (the interpreter's handling of SystemExit flushes C's stdout)
        # The interpreter prints any other code (a message) and exits 1: its own way, then.
        if not (_e.code is None or (type(_e.code) is int and -(1 << 31) <= _e.code < 1 << 31)):
            raise
        _status = _e.code or 0
    except BaseException as _e:
        _flush_io()
        _interrupted = type(_e) is KeyboardInterrupt  # (not a subclass: the interpreter's test)
        _report(_e, _e.__traceback__.tb_next if _e.__traceback__ else None)
        _status = 1
        _globals.pop("__file__", None)  # as the interpreter does once a script has run
        _globals.pop("__cached__", None)
    else:
        _flush_io()
        _globals.pop("__file__", None)
        _globals.pop("__cached__", None)
    del _code
del _globals
_end(_status, _interrupted)
