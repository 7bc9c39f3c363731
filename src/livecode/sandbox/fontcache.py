"""matplotlib's font list, built once on the host and placed in every Python run's /tmp.

Every run starts with an empty /tmp, where matplotlib keeps its cache (MPLCONFIGDIR, languages.toml),
so each `import matplotlib.pyplot` would scan the system's fonts again: about half of a 1.4 s
import. The list only depends on the fonts under /usr, which the sandbox sees read-only exactly
as the host does, so the host builds it once per worker process with the same interpreter and
hands every run a copy (the file is the run's own: it may change or delete it). It is built in
the background on first use; until then, or if building it fails, runs go without it and
matplotlib builds its own, as before.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import tempfile
import threading
from pathlib import Path

from .files import FileSpec
from .languages import Language

log = logging.getLogger(__name__)

MAX_SIZE = 4 * 1024 * 1024
_BUILD_TIMEOUT_S = 120.0
_lock = threading.Lock()
_builds: dict[str, _Build] = {}  # by interpreter


class _Build:
    """One build in a background thread: no run waits for it (until it is done, runs build
    their own list, as without it)."""

    def __init__(self, python: str) -> None:
        self.done = threading.Event()
        self.result: tuple[str, bytes] | None = None  # (file name, bytes)
        threading.Thread(target=self._run, args=(python,), name="livecode-fontcache", daemon=True).start()

    def _run(self, python: str) -> None:
        try:
            self.result = _build(python)
        finally:
            self.done.set()


def font_cache_files(lang: Language) -> list[FileSpec]:
    """The font list for a run of `lang`, as a file in its MPLCONFIGDIR; [] when the language has
    no matplotlib (declared and installed), or the list is not built (yet: the first call starts
    building it)."""
    config_dir = lang.env.get("MPLCONFIGDIR")
    marker = lang.libraries.get("matplotlib")
    if not config_dir or not marker or not config_dir.startswith("/") or not _installed(marker):
        return []
    built = font_list(lang.run[0])
    if built is None:
        return []
    name, data = built
    return [FileSpec(f"{config_dir.rstrip('/')}/{name}", 0o644, data=data)]


@functools.cache
def _installed(marker: str) -> bool:
    """Whether the library's marker directory exists, looked at once per worker process (not a
    stat per run: the installed libraries do not change under a running worker)."""
    return Path(marker).is_dir()


def font_list(python: str, wait_s: float = 0.0) -> tuple[str, bytes] | None:
    """The font list built with `python`, waiting at most wait_s for a build in progress."""
    with _lock:
        build = _builds.get(python)
        if build is None:
            build = _builds[python] = _Build(python)
    build.done.wait(wait_s)
    return build.result if build.done.is_set() else None


def _build(python: str) -> tuple[str, bytes] | None:
    with tempfile.TemporaryDirectory(prefix="livecode-mpl-") as tmp:
        # Nothing of root's own (fonts in ~/.fonts, a matplotlibrc) may end up in the list.
        env = {
            "PATH": "/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "HOME": tmp,
            "MPLCONFIGDIR": tmp,
            "MPLBACKEND": "Agg",
            "XDG_CONFIG_HOME": tmp,
            "XDG_CACHE_HOME": tmp,
            "XDG_DATA_HOME": tmp,
        }
        try:
            subprocess.run(
                [python, "-I", "-c", "import matplotlib.font_manager"],
                env=env,
                cwd=tmp,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_BUILD_TIMEOUT_S,
                check=True,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            log.warning("could not build matplotlib's font list; every run builds its own: %s", exc)
            return None
        found = sorted(Path(tmp).glob("fontlist-v*.json"))
        if len(found) != 1 or found[0].stat().st_size > MAX_SIZE:
            log.warning("matplotlib left no single font list of a sane size; every run builds its own")
            return None
        return found[0].name, found[0].read_bytes()
