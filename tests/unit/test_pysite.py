"""setuptools' namespace hooks rewritten for a sandbox (sandbox/pysite.py): the same modules as the
host's file gives, without importing importlib.util at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from livecode.sandbox.pysite import SiteHooks, find_hooks, rewrite, rewrite_line


def template(pkg: str) -> str:
    """The line setuptools writes (setuptools/namespaces.py: _nspkg_tmpl, _nspkg_tmpl_multi)."""
    parts = pkg.split(".")
    line = (
        "import sys, types, os;has_mfs = sys.version_info > (3, 5);"
        f"p = os.path.join(sys._getframe(1).f_locals['sitedir'], *{tuple(parts)!r});"
        "importlib = has_mfs and __import__('importlib.util');"
        "has_mfs and __import__('importlib.machinery');"
        f"m = has_mfs and sys.modules.setdefault({pkg!r}, importlib.util.module_from_spec("
        f"importlib.machinery.PathFinder.find_spec({pkg!r}, [os.path.dirname(p)])));"
        f"m = m or sys.modules.setdefault({pkg!r}, types.ModuleType({pkg!r}));"
        "mp = (m or []) and m.__dict__.setdefault('__path__',[]);(p not in mp) and mp.append(p)"
    )
    if len(parts) > 1:
        line += f";m and setattr(sys.modules[{'.'.join(parts[:-1])!r}], {parts[-1]!r}, m)"
    return line


# What a program sees of the hooks' packages, printed by a Python started with site off, whose
# sitedir is then added as site would add it.
PROBE = """
import json, site, sys
site.addsitedir(sys.argv[1])
mods = {}
for name in ("nsa", "nsa.sub", "nsb"):
    m = sys.modules.get(name)
    mods[name] = None if m is None else {
        "path": list(getattr(m, "__path__", [])), "file": getattr(m, "__file__", None),
        "spec": None if m.__spec__ is None else [m.__spec__.name, m.__spec__.origin],
    }
mods["sub_attr"] = getattr(sys.modules.get("nsa"), "sub", None) is sys.modules.get("nsa.sub")
mods["importlib.util"] = "importlib.util" in sys.modules
import nsb.mod, nsa.sub.leaf
mods["imported"] = [nsb.mod.X, nsa.sub.leaf.Y]
mods["init_ran"] = "nsb_init_ran" in sys.modules
print(json.dumps(mods))
"""


def site_dir(tmp_path: Path, rewritten: bool) -> Path:
    d = tmp_path / ("new" if rewritten else "old")
    (d / "nsa" / "sub").mkdir(parents=True)
    (d / "nsa" / "sub" / "leaf.py").write_text("Y = 2\n")
    (d / "nsb").mkdir()
    # A package with its own __init__.py, as Debian's mpl_toolkits: the hook keeps it from running.
    (d / "nsb" / "__init__.py").write_text("import sys; sys.modules['nsb_init_ran'] = sys\n")
    (d / "nsb" / "mod.py").write_text("X = 1\n")
    text = template("nsa") + "\n" + template("nsa.sub") + "\n"
    b = template("nsb") + "\n"
    if rewritten:
        text, b = rewrite(text), rewrite(b)
        assert text is not None and b is not None
    (d / "nsa-1.0-nspkg.pth").write_text(text)
    (d / "nsb-1.0-nspkg.pth").write_text(b)
    return d


def probe(d: Path) -> dict:
    out = subprocess.run([sys.executable, "-S", "-c", PROBE, str(d)], capture_output=True, text=True, check=True)
    assert out.stderr == ""
    return json.loads(out.stdout)


def test_a_rewritten_hook_makes_the_same_modules_without_importing_importlib_util(tmp_path: Path) -> None:
    old, new = probe(site_dir(tmp_path, False)), probe(site_dir(tmp_path, True))
    assert old.pop("importlib.util") is True
    assert new.pop("importlib.util") is False  # what the rewrite is for
    for got in (old, new):  # same shapes; paths differ only by the directory
        base = str(tmp_path / ("old" if got is old else "new"))
        assert got["nsa"]["path"] == [f"{base}/nsa"]
        assert got["nsa.sub"]["path"] == [f"{base}/nsa/sub"]
        assert got["nsb"]["file"] == f"{base}/nsb/__init__.py"
        assert got["nsb"]["spec"] == ["nsb", f"{base}/nsb/__init__.py"]
        assert got["sub_attr"] is True
        assert got["imported"] == [1, 2]
        assert got["init_ran"] is False
    assert json.dumps(old).replace("/old", "/new") == json.dumps(new)


@pytest.mark.parametrize(
    "line",
    [
        "import os; os.system('x')",
        template("nsa").replace("'importlib.util'", "'importlib.util'); os.system('x'"),
        template("nsa").replace("'nsa'", "'nsa\\'); os.system(\\'x'"),
        template("nsa") + ";import os",
        template("nsa").replace("*('nsa',)", "*('nsa', __import__('os').sep)"),
    ],
)
def test_anything_but_the_template_is_left_alone(line: str) -> None:
    assert rewrite_line(line) is None
    assert rewrite(template("nsa") + "\n" + line + "\n") is None


def test_only_readable_template_files_are_found_and_a_removed_one_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "a-nspkg.pth").write_text(template("a") + "\n")
    (tmp_path / "b-nspkg.pth").write_text("import os\n")  # not the template: the host's stays
    (tmp_path / "c-nspkg.pth").write_bytes(b"\xff\xfe")
    now = [0.0]
    hooks = SiteHooks((f"{tmp_path}/*-nspkg.pth",), check_s=10, clock=lambda: now[0])
    assert [p for p, _ in hooks.files()] == [f"{tmp_path}/a-nspkg.pth"]
    assert find_hooks((f"{tmp_path}/*-nspkg.pth",)) == hooks.files()
    (tmp_path / "d-nspkg.pth").write_text(template("d") + "\n")
    os.unlink(tmp_path / "a-nspkg.pth")
    assert hooks.files() == []  # gone: never put over nothing; d not read again yet
    now[0] = 10.0
    assert [p for p, _ in hooks.files()] == [f"{tmp_path}/d-nspkg.pth"]


def test_a_hook_gone_under_bubblewrap_is_named_and_read_again(tmp_path: Path) -> None:
    (tmp_path / "a-nspkg.pth").write_text(template("a") + "\n")
    hooks = SiteHooks((f"{tmp_path}/*-nspkg.pth",), check_s=3600, clock=lambda: 0.0)
    assert len(hooks.files()) == 1
    gone = (
        "the sandbox ended without the program's exit status: "
        f"bwrap: Can't create file at {tmp_path}/a-nspkg.pth: Read-only file system"
    )
    assert not hooks.caused(None)
    assert not hooks.caused("the sandbox ended without the program's exit status: bwrap: Can't create file at /x: y")
    assert not hooks.caused(f"bwrap: Can't mount proc on {tmp_path}/a-nspkg.pth: y")
    os.unlink(tmp_path / "a-nspkg.pth")
    (tmp_path / "b-nspkg.pth").write_text(template("b") + "\n")
    assert hooks.caused(gone)
    assert [p for p, _ in hooks.files()] == [f"{tmp_path}/b-nspkg.pth"]  # read again at once, not in an hour


def test_a_host_file_that_cannot_be_rewritten_never_fails_a_sandbox(tmp_path: Path) -> None:
    nul = template("a").replace("'a'", "'a\x00b'")
    (tmp_path / "a-nspkg.pth").write_text(nul + "\n")  # literal_eval would raise on it
    os.mkfifo(tmp_path / "f-nspkg.pth")  # opened, it would block every spawn
    (tmp_path / "c-nspkg.pth").write_text(template("c") + "\x0c" + template("c") + "\n")  # one line to site
    (tmp_path / "d-nspkg.pth").write_text(template("d") + "\r\n\r\n")
    found = dict(SiteHooks((f"{tmp_path}/*-nspkg.pth",)).files())
    assert list(found) == [f"{tmp_path}/d-nspkg.pth"]
    assert found[f"{tmp_path}/d-nspkg.pth"].count(b"\n") == 2


def test_an_unreadable_host_file_is_reported_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "a-nspkg.pth").write_bytes(b"\xff\xfe")  # not UTF-8: left as the host has it
    globs = (f"{tmp_path}/*-nspkg.pth",)
    with caplog.at_level("WARNING", logger="livecode.sandbox.pysite"):
        assert find_hooks(globs) == [] and find_hooks(globs) == []  # read twice (every CHECK_S)
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"left {tmp_path}/a-nspkg.pth as the host has it"
    ]
