"""The sandbox's /etc and /dev, prepared once on the host and bound whole (view.py): a sandbox
sees exactly the entries it saw when each was bound on its own, can change none of them, and a
change on the host reaches the next sandboxes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecode.sandbox import Outcome, Runner
from livecode.sandbox.bwrap import _ETC_FILES, BwrapRunner
from livecode.sandbox.spawner import spawner_argv
from livecode.sandbox.view import DEV_DIRS, DEV_LINKS, DEV_NODES, HostViews, etc_sources

from .helpers import TEST_SLOTS, TEST_UID_BASE, requires_bwrap, run, seed_cache

pytestmark = [pytest.mark.sandbox, pytest.mark.timeout(120)]

# Lists a tree as {relative path: [kind, permission bits, sha256 / link target / device number]}.
LISTING = """
import hashlib, json, os, stat, sys

def entry(path):
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return ["link", 0, os.readlink(path)]
    if stat.S_ISCHR(st.st_mode):
        return ["chr", stat.S_IMODE(st.st_mode), st.st_rdev]
    if stat.S_ISDIR(st.st_mode):
        return ["dir", stat.S_IMODE(st.st_mode), ""]
    if not stat.S_ISREG(st.st_mode):
        return ["other", stat.S_IMODE(st.st_mode), ""]
    try:
        with open(path, "rb") as f:
            return ["file", stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest()]
    except PermissionError:
        return ["file", stat.S_IMODE(st.st_mode), "unreadable"]

def listing(top, follow_top):
    out = {}
    for name in sorted(os.listdir(top)):
        path = os.path.join(top, name)
        real = os.path.realpath(path) if follow_top else path
        out[name] = entry(real)
        if out[name][0] == "dir":
            for root, dirs, files in os.walk(real):
                for n in dirs + files:
                    p = os.path.join(root, n)
                    out[os.path.join(name, os.path.relpath(p, real))] = entry(p)
    return out
"""
SHOW = LISTING + "print(json.dumps({'etc': listing('/etc', False), 'dev': listing('/dev', False)}))\n"


def host_etc() -> dict[str, list[object]]:
    """What the sandbox's /etc held when each entry was bound on its own: the host's entries
    (each followed, as bubblewrap's bind follows it), and its own passwd and group."""
    scope: dict[str, object] = {}
    exec(LISTING, scope)  # the same listing code as inside the sandbox
    with tempfile.TemporaryDirectory() as tmp:
        for src in etc_sources():
            os.symlink(src, os.path.join(tmp, os.path.basename(src)))
        found = scope["listing"](tmp, True)  # type: ignore[operator]
    for name, data in _ETC_FILES.items():
        found[name] = ["file", 0o644, hashlib.sha256(data).hexdigest()]
    return found  # type: ignore[no-any-return]


def host_dev() -> dict[str, list[object]]:
    """What bubblewrap's --dev made (with the empty tmpfs over /dev/pts)."""
    found: dict[str, list[object]] = {}
    for name in DEV_NODES:
        st = os.stat(f"/dev/{name}")
        found[name] = ["chr", stat.S_IMODE(st.st_mode), st.st_rdev]
    for name, target in DEV_LINKS:
        found[name] = ["link", 0, target]
    for name in DEV_DIRS:
        found[name] = ["dir", 0o755, ""]
    return found


def mount_points(mountinfo: str) -> list[str]:
    return [line.split()[4] for line in mountinfo.splitlines() if line.strip()]


@requires_bwrap
def test_sandbox_sees_the_same_etc_and_dev_each_in_one_mount(runner: Runner) -> None:
    res = run(runner, "python", SHOW + "print(open('/proc/self/mountinfo').read())")
    assert res.outcome is Outcome.OK, res.stderr
    first, _, mountinfo = res.stdout.partition("\n")
    seen = json.loads(first)
    assert seen["etc"] == host_etc()
    assert seen["dev"] == host_dev()
    points = mount_points(mountinfo)
    # One mount each (the prepared view), not one per entry; /dev/shm is the run's own tmpfs.
    assert [p for p in points if p == "/etc" or p.startswith("/etc/")] == ["/etc"], points
    assert [p for p in points if p == "/dev" or p.startswith("/dev/")] == ["/dev", "/dev/shm"], points


ATTEMPTS = """
import os
attempts = {
    "create in /etc": lambda: open("/etc/pwned", "w"),
    "create in /etc/fonts": lambda: open("/etc/fonts/pwned", "w"),
    "write /etc/passwd": lambda: open("/etc/passwd", "a"),
    "write /etc/ld.so.cache": lambda: open("/etc/ld.so.cache", "r+b"),
    "remove /etc/passwd": lambda: os.unlink("/etc/passwd"),
    "rename in /etc/alternatives": lambda: os.rename("/etc/alternatives", "/etc/alt"),
    "chmod /etc/fonts": lambda: os.chmod("/etc/fonts", 0o777),
    "create in /dev": lambda: open("/dev/pwned", "w"),
    "symlink in /dev": lambda: os.symlink("/sandbox/work", "/dev/pwned"),
    "create in /dev/pts": lambda: open("/dev/pts/pwned", "w"),
    "remove /dev/null": lambda: os.unlink("/dev/null"),
    "replace /dev/null": lambda: os.rename("/dev/zero", "/dev/null"),
    "chmod /dev/null": lambda: os.chmod("/dev/null", 0o600),
    "chown /dev/null": lambda: os.chown("/dev/null", 1000, 1000),
    "date /dev/null": lambda: os.utime("/dev/null", (0, 0)),
    # Setting a node's times to now needs only write access: a mark every run shares (view.py).
    "touch /dev/null": lambda: os.utime("/dev/null", None),
    "touch /dev/urandom": lambda: os.utime("/dev/urandom", None),
    "open a pty": lambda: os.open("/dev/ptmx", os.O_RDWR),
}
for what, attempt in attempts.items():
    try:
        attempt()
        print(what, "DONE")
    except OSError as e:
        print(what, "DENIED", type(e).__name__)
with open("/dev/null", "wb") as f:
    f.write(b"x")
with open("/dev/zero", "rb") as f, open("/dev/urandom", "rb") as g:
    print("devices work", f.read(4) == bytes(4) and len(g.read(4)) == 4)
"""


@requires_bwrap
def test_nothing_in_etc_or_dev_can_be_changed(runner: Runner) -> None:
    res = run(runner, "python", ATTEMPTS)
    assert res.outcome is Outcome.OK, res
    lines = res.stdout.splitlines()
    assert lines[-1] == "devices work True", res.stdout
    assert len(lines) == 19 and all(" DENIED " in line for line in lines[:-1]), res.stdout


@pytest.fixture
def views_root() -> Iterator[Path]:
    """A views directory every uid can reach (pytest's own tmp dirs are private)."""
    base = Path(tempfile.mkdtemp(prefix="livecode-test-views-"))
    base.chmod(0o711)
    try:
        yield base / "views"
    finally:
        shutil.rmtree(base, ignore_errors=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """A stand-in for the host's /etc entries: a file and a directory with a file and a link."""
    (tmp_path / "conf").write_text("one\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inner").write_text("inner\n")
    (tmp_path / "dir" / "link").symlink_to("/usr/bin/true")
    return tmp_path


def sources_of(host: Path) -> list[str]:
    return [str(host / "conf"), str(host / "dir")]


def test_a_changed_host_entry_is_copied_for_the_next_sandboxes(views_root: Path, host: Path) -> None:
    clock = Clock()
    views = HostViews(views_root, {"passwd": b"p\n"}, sources=lambda: sources_of(host), check_s=5.0, clock=clock)
    first = views.acquire()
    assert first is not None
    assert Path(first.etc, "conf").read_text() == "one\n" and Path(first.etc, "passwd").read_bytes() == b"p\n"
    assert os.readlink(Path(first.etc, "dir", "link")) == "/usr/bin/true"

    (host / "conf").write_text("two, longer\n")
    assert views.acquire() is first  # checked at most every check_s
    clock.now += 5.0
    second = views.acquire()
    assert second is not None and second is not first
    assert Path(second.etc, "conf").read_text() == "two, longer\n"
    assert first.path.is_dir()  # two sandboxes still use it
    views.release(first)
    assert first.path.is_dir()
    views.release(first)
    assert not first.path.exists()  # the last of them is cleaned up

    # A link re-pointed (replaced, as update-alternatives does) in a directory of the host.
    (host / "dir" / "new").symlink_to("/usr/bin/false")
    os.replace(host / "dir" / "new", host / "dir" / "link")
    clock.now += 5.0
    third = views.acquire()
    assert third is not None and third is not second
    assert os.readlink(Path(third.etc, "dir", "link")) == "/usr/bin/false"
    assert second.path.is_dir()
    views.release(second)
    assert not second.path.exists()

    clock.now += 5.0
    assert views.acquire() is third  # nothing changed: the same view
    views.close()
    assert third.path.is_dir()  # still used
    views.release(third)
    views.release(third)
    assert not third.path.exists()


def test_a_touched_copy_is_rebuilt(views_root: Path, host: Path) -> None:
    """A tmp cleaner that removes (or changes) part of a view: the next check builds a new one."""
    clock = Clock()
    views = HostViews(views_root, {"passwd": b"p\n"}, sources=lambda: sources_of(host), check_s=5.0, clock=clock)
    first = views.acquire()
    assert first is not None
    os.unlink(Path(first.etc, "dir", "inner"))
    clock.now += 5.0
    second = views.acquire()
    assert second is not None and second is not first
    assert Path(second.etc, "dir", "inner").read_text() == "inner\n"
    os.unlink(Path(second.etc, "passwd"))  # one of the sandbox's own files
    clock.now += 5.0
    third = views.acquire()
    assert third is not None and third is not second
    assert Path(third.etc, "passwd").read_bytes() == b"p\n"
    for view in (first, second, third):
        views.release(view)
    views.close()


def test_a_new_host_entry_is_added(views_root: Path, host: Path) -> None:
    """A new JDK's /etc/java-*-openjdk: the set of entries changed."""
    clock = Clock()
    present = sources_of(host)
    views = HostViews(views_root, {}, sources=lambda: present, check_s=5.0, clock=clock)
    first = views.acquire()
    assert first is not None
    (host / "java-99-openjdk").mkdir()
    present = [*present, str(host / "java-99-openjdk")]
    clock.now += 5.0
    second = views.acquire()
    assert second is not None and Path(second.etc, "java-99-openjdk").is_dir()
    views.release(first)
    views.release(second)
    views.close()


def test_views_of_dead_processes_are_removed_live_ones_kept(views_root: Path, host: Path) -> None:
    live = HostViews(views_root, {}, sources=lambda: sources_of(host))
    held = live.acquire()
    assert held is not None
    dead = views_root / "view-dead"
    (dead / "etc").mkdir(parents=True)
    young = views_root / "view-young"  # may be another process's, not yet locked
    young.mkdir()
    for path in (held.path, dead):  # both old enough to be collected, were they not locked
        os.utime(path, (0, 0))
    other = HostViews(views_root, {}, sources=lambda: sources_of(host))
    mine = other.acquire()
    assert mine is not None
    assert not dead.exists() and young.exists() and held.path.is_dir()
    for views, view in ((live, held), (other, mine)):
        views.release(view)
        views.close()


def test_an_unreachable_directory_means_binds_one_by_one(tmp_path: Path) -> None:
    """pytest's tmp dirs are private (0700): the run uids could not open a view there."""
    tmp_path.chmod(0o700)
    views = HostViews(tmp_path / "views", {}, sources=lambda: [])
    assert views.acquire() is None


@requires_bwrap
def test_without_a_view_the_sandbox_sees_the_same(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    seed_cache(tmp_path / "cache")
    r = BwrapRunner(tmp_path / "work", tmp_path / "cache", uid_base=TEST_UID_BASE, slots=TEST_SLOTS, pool_size=0,
                    view_root=tmp_path / "views")  # fmt: skip
    r.check()
    try:
        res = run(r, "python", SHOW)
        assert res.outcome is Outcome.OK, res
        seen = json.loads(res.stdout)
        assert seen["etc"] == host_etc()
        assert seen["dev"] == host_dev()
        res = run(r, "python", ATTEMPTS)
        assert res.stdout.splitlines()[-1] == "devices work True", res.stdout
        # bubblewrap's --dev binds the host's nodes, and its read-only remount would add nodev: a
        # node's times stay settable to now there, as they always were without a view.
        kept = [line for line in res.stdout.splitlines()[:-1] if not line.startswith("touch ")]
        assert len(kept) == 16 and all(" DENIED " in line for line in kept), res.stdout
    finally:
        r.close()


def test_a_failed_build_means_binds_one_by_one(views_root: Path, host: Path) -> None:
    """An entry that vanishes while it is copied: this sandbox binds the host's entries, the next
    check tries again."""
    clock = Clock()
    present = [*sources_of(host), str(host / "gone")]
    looks: list[int] = []

    def sources() -> list[str]:
        looks.append(1)
        return present

    views = HostViews(views_root, {}, sources=sources, check_s=5.0, clock=clock)
    assert views.acquire() is None
    assert not any(views_root.iterdir())  # the partial view is not left behind
    tries = len(looks)
    assert views.acquire() is None and len(looks) == tries  # not tried again before the next check
    present = sources_of(host)
    clock.now += 5.0
    view = views.acquire()
    assert view is not None
    views.release(view)
    views.close()


def _table(mountinfo: str) -> list[tuple[str, str, str]]:
    """Each mount's point, options and file system type (not its ids, nor its superblock's
    options, which name the slot's uid)."""
    rows = []
    for line in mountinfo.splitlines():
        fields, _, after = line.partition(" - ")
        parts = fields.split()
        rows.append((parts[4], parts[5], after.split()[0]))
    return rows


@requires_bwrap
def test_bubblewrap_sets_up_in_a_namespace_of_only_what_it_binds_and_the_sandbox_sees_the_same(
    tmp_path: Path, views_root: Path
) -> None:
    """bubblewrap re-reads the whole mount table after each bind, so it starts in a namespace
    where only the mounts holding what it binds are left (spawner.py); inside, nothing changes."""
    tmp_path.chmod(0o700)
    seed_cache(tmp_path / "cache")
    r = BwrapRunner(tmp_path / "work", tmp_path / "cache", uid_base=TEST_UID_BASE, slots=TEST_SLOTS, pool_size=0,
                    view_root=views_root)  # fmt: skip
    r.check()
    try:
        res = run(r, "python", "print(open('/proc/self/mountinfo').read())")
        assert res.outcome is Outcome.OK, res
        lean = _table(res.stdout.strip())
        view = r._views._current
        assert view is not None and view.mntns is not None
        # What bubblewrap starts in, seen the way it sees it: through the spawner, as the slot uid.
        assert r._spawner is not None
        argv = spawner_argv(r._spawner, TEST_UID_BASE + 1, TEST_UID_BASE + 1, 0, [], [], view.mntns)
        seen = subprocess.run([*argv, "/bin/cat", "/proc/self/mountinfo"], capture_output=True, check=True,
                              pass_fds=[view.mntns], cwd="/", timeout=30).stdout.decode()  # fmt: skip
        points = mount_points(seen)
        with open("/proc/self/mountinfo") as f:
            host = mount_points(f.read())
        assert "/sys" in host and "/sys" not in points, points  # nor the cgroup hierarchies, /dev/shm, ...
        real = os.path.realpath(view.path)
        allowed = ("/", "/usr", "/proc", "/dev", real)
        assert all(p in allowed or p.startswith(("/usr/", "/proc/", f"{real}/")) for p in points), points
        assert len(points) < len(host)
        # The same sandbox when bubblewrap starts in the worker's namespace.
        r._views.close()
        r._views.namespace = None
        res = run(r, "python", "print(open('/proc/self/mountinfo').read())")
        assert res.outcome is Outcome.OK, res
        assert _table(res.stdout.strip()) == lean
    finally:
        r.close()
