"""Building the sandbox's small C programs (the launcher, the spawn helper, the seccomp filter's
generator) with the host's gcc, once, into the root-only cache directory, under a name that
carries a hash of their source. Their sources are package data in `csrc/` (pyproject.toml ships
them), read once at import."""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import subprocess
import tempfile
from pathlib import Path

from .types import SandboxUnavailable

_CC = ("/usr/bin/gcc", "/usr/bin/cc")


def c_source(filename: str) -> str:
    """The text of `csrc/<filename>`, one of the C programs shipped with the package."""
    return importlib.resources.files(__package__).joinpath("csrc", filename).read_text(encoding="utf-8")


def build_c(cache_dir: Path, name: str, source: str, *, mode: int, what: str, libs: tuple[str, ...] = (),
            strip: bool = True, hint: str = "apt-get install gcc libc6-dev") -> Path:
    """`cache_dir/<name>-<hash>`, compiled from `source` if it is not there yet.

    Raises SandboxUnavailable naming `what` and how to fix it (`hint`) when it cannot be built."""
    digest = hashlib.sha256((os.uname().machine + source + " ".join(libs)).encode()).hexdigest()[:16]
    target = cache_dir / f"{name}-{digest}"
    if target.exists():
        return target
    cc = next((c for c in _CC if os.access(c, os.X_OK)), None)
    if cc is None:
        raise SandboxUnavailable(f"{what} is built with gcc: {hint}")
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        src, out = Path(tmp, f"{name}.c"), Path(tmp, name)
        src.write_text(source)
        argv = [cc, "-O2", *(["-s"] if strip else []), "-o", str(out), str(src), *libs]
        proc = subprocess.run(argv, capture_output=True, timeout=60, env={"PATH": "/usr/bin:/bin"}, check=False)
        if proc.returncode != 0:
            detail = proc.stderr.decode("utf-8", "replace").strip()[-2000:]
            raise SandboxUnavailable(f"could not build {what} with {cc} ({detail}): {hint}")
        out.chmod(mode)
        os.replace(out, target)
    return target
