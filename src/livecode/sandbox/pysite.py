"""setuptools' legacy namespace hooks (`*-nspkg.pth`), rewritten to cost nothing at a sandboxed
Python's start.

Python's site module executes the import lines of every `.pth` file in its site directories at
each start. setuptools wrote one `<dist>-nspkg.pth` per legacy namespace package (Debian's
python3-matplotlib ships `matplotlib-*-nspkg.pth`, for mpl_toolkits), and each of its lines imports
importlib.util and importlib.machinery for two functions, which brings in contextlib, collections,
functools and more: ~5 ms of the ~20 ms a sandboxed interpreter spent starting on the 2-core
development machine, paid by every Python run (docs/performance.md, "a sandboxed Python's start-up
without setuptools' namespace hooks").

Those two functions are the import system's own, loaded before site runs: `module_from_spec` of
`_frozen_importlib` (importlib._bootstrap) and `PathFinder` of `_frozen_importlib_external`
(importlib._bootstrap_external), which importlib.util and importlib.machinery re-export. A sandbox
sees each such file with its lines calling them there: the same module put in sys.modules with the
same spec, file and `__path__`, without the imports. Only a line that is exactly setuptools'
template is rewritten; a file with any other line is left as the host has it.

Not masked outright: the hook also keeps the package's `__init__.py` from running (Debian's
mpl_toolkits' calls pkg_resources, ~100 ms more, and matplotlib imports mpl_toolkits.mplot3d with
pyplot).

What a program could tell apart: importlib.util (and what it imports) is no longer imported before
the program runs, so `import importlib` alone does not give `importlib.util`, as on any Python
without such a hook.
"""

from __future__ import annotations

import ast
import fnmatch
import glob
import logging
import os
import re
import stat
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

# Where a sandbox's interpreters look for .pth files: a sandbox sees the host's /usr only.
SITE_GLOBS = tuple(
    f"{prefix}/python3*/{kind}-packages/*-nspkg.pth"
    for prefix in ("/usr/lib", "/usr/lib64", "/usr/local/lib")
    for kind in ("dist", "site")
)
_warned: set[str] = set()  # host files already reported unreadable
_LINES = re.compile(r"\r\n|\r|\n")
CHECK_S = 10.0  # how long the rewritten files are kept before the host's are read again
_MAX_BYTES = 64 * 1024
_BWRAP_NO_FILE = re.compile(r"Can't create file at (/.+?): ")  # bubblewrap's, when a file to bind over is gone

_LITERAL = r"'[^'\\\x00-\x1f\x7f]*'"  # a quoted name: no quote, backslash or control character
# setuptools' `_nspkg_tmpl` (setuptools/namespaces.py), its lines joined by ';', and for a nested
# package its `_nspkg_tmpl_multi`.
_TEMPLATE = re.compile(
    r"import sys, types, os;has_mfs = sys\.version_info > \(3, 5\);"
    r"p = os\.path\.join\(sys\._getframe\(1\)\.f_locals\['sitedir'\], "
    r"\*(?P<pth>\(" + _LITERAL + r"(?:, " + _LITERAL + r")*,?\))\);"
    r"importlib = has_mfs and __import__\('importlib\.util'\);"
    r"has_mfs and __import__\('importlib\.machinery'\);"
    r"m = has_mfs and sys\.modules\.setdefault\((?P<pkg>" + _LITERAL + r"), "
    r"importlib\.util\.module_from_spec\(importlib\.machinery\.PathFinder\.find_spec\((?P=pkg), "
    r"\[os\.path\.dirname\(p\)\]\)\)\);"
    r"m = m or sys\.modules\.setdefault\((?P=pkg), types\.ModuleType\((?P=pkg)\)\);"
    r"mp = \(m or \[\]\) and m\.__dict__\.setdefault\('__path__',\[\]\);"
    r"\(p not in mp\) and mp\.append\(p\)"
    r"(?:;m and setattr\(sys\.modules\[(?P<parent>" + _LITERAL + r")\], (?P<child>" + _LITERAL + r"), m\))?"
)


def rewrite_line(line: str) -> str | None:
    """The same hook without importing importlib.util, or None if `line` is not the template.

    Where the template's `find_spec` finds nothing, `module_from_spec(None)` fails as it did, and
    site reports the line as before."""
    m = _TEMPLATE.fullmatch(line)
    if m is None:
        return None
    pth, pkg = ast.literal_eval(m["pth"]), ast.literal_eval(m["pkg"])
    if not isinstance(pth, tuple) or not all(part.isidentifier() for part in (*pth, *pkg.split("."))):
        return None
    out = (
        f"import sys, os;p = os.path.join(sys._getframe(1).f_locals['sitedir'], *{pth!r});"
        f"m = sys.modules.setdefault({pkg!r}, sys.modules['_frozen_importlib'].module_from_spec("
        f"sys.modules['_frozen_importlib_external'].PathFinder.find_spec({pkg!r}, [os.path.dirname(p)])));"
        "mp = m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p)"
    )
    if m["parent"] is not None:
        parent, child = ast.literal_eval(m["parent"]), ast.literal_eval(m["child"])
        if not (child.isidentifier() and all(part.isidentifier() for part in parent.split("."))):
            return None
        out += f";m and setattr(sys.modules[{parent!r}], {child!r}, m)"
    return out


def rewrite(text: str) -> str | None:
    """A whole `-nspkg.pth` file rewritten, or None (leave it) unless every line with content is
    the template."""
    lines = _LINES.split(text)  # as site reads a .pth: universal newlines only, not splitlines()'s others
    if lines and lines[-1] == "":
        lines.pop()
    if not any(line.strip() for line in lines):
        return None
    out = []
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        new = rewrite_line(line)
        if new is None:
            return None
        out.append(new)
    return "\n".join(out) + "\n"


def find_hooks(globs: tuple[str, ...] = SITE_GLOBS) -> list[tuple[str, bytes]]:
    """(host path, what a sandbox sees there) for each hook that can be rewritten."""
    found = []
    for path in sorted({p for pattern in globs for p in glob.glob(pattern)}):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)  # a FIFO never blocks
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                data = os.read(fd, _MAX_BYTES + 1)
            finally:
                os.close(fd)
            if len(data) > _MAX_BYTES:
                continue
            new = rewrite(data.decode("utf-8"))
        except Exception as exc:  # noqa: BLE001 - whatever is wrong with one host file, it stays as it is
            if path not in _warned:  # once per process, not at every read (every CHECK_S)
                _warned.add(path)
                log.warning("left %s as the host has it: it could not be read or rewritten (%r)", path, exc)
            continue
        if new is not None:
            found.append((path, new.encode()))
    return found


class SiteHooks:
    """The rewritten hooks for this process's sandboxes, read from the host at most every
    `check_s` seconds (a package installed or removed meanwhile)."""

    def __init__(
        self,
        globs: tuple[str, ...] = SITE_GLOBS,
        *,
        check_s: float = CHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.globs = globs
        self.check_s = check_s
        self.clock = clock
        self._lock = threading.Lock()
        self._hooks: list[tuple[str, bytes]] = []
        self._read_at: float | None = None

    def files(self) -> list[tuple[str, bytes]]:
        """(host path, content) to put over the host's file in a new sandbox. A file gone from the
        host since it was read is left out: bubblewrap cannot put a file over nothing in /usr."""
        with self._lock:
            now = self.clock()
            if self._read_at is None or now - self._read_at >= self.check_s:
                self._read_at = now
                try:
                    self._hooks = find_hooks(self.globs)
                except Exception:  # noqa: BLE001 - a sandbox is set up without the rewrite rather than not at all
                    log.exception("could not look for Python's namespace hooks; sandboxes see the host's")
                    self._hooks = []
            hooks = self._hooks
        return [(path, data) for path, data in hooks if os.path.isfile(path)]

    def caused(self, message: str | None) -> bool:
        """Whether bubblewrap failed to set a sandbox up because a hook's host file went away
        after files() looked (a package removed or upgraded meanwhile: bubblewrap cannot put a
        file over nothing in the read-only /usr). Then the hooks are read again at the next
        files(), and a sandbox built anew does not fail for it. `message` is the sandbox's
        internal error, from bubblewrap's own stderr: the launcher, and so the program, never ran."""
        # Matched against the globs, not the list now held: another sandbox's set-up may have
        # read the hooks again since this one's was built.
        m = _BWRAP_NO_FILE.search(message or "")
        if m is None or not any(fnmatch.fnmatchcase(m[1], pattern) for pattern in self.globs):
            return False
        with self._lock:
            self._read_at = None
        return True
