"""The out/ collector (sandbox/outputs.py) on a plain directory: what it keeps and what it refuses.
The same attacks through the real sandbox are in tests/sandbox/test_outputs.py."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecode.sandbox.outputs import MAX_DEPTH, Collected, OutputLimits, collect, has_entries, valid_name
from livecode.services.output_files import content_type_for


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "out").mkdir()
    yield tmp_path


def collected(work: Path, limits: OutputLimits | None = None) -> Collected:
    fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
    try:
        return collect(fd, limits or OutputLimits())
    finally:
        os.close(fd)


def paths(c: Collected) -> dict[str, bytes]:
    return {f.path: f.data for f in c.files}


def test_regular_files_in_order_with_their_bytes(work: Path) -> None:
    (work / "out" / "b.txt").write_bytes(b"b")
    (work / "out" / "sub").mkdir()
    (work / "out" / "sub" / "a.bin").write_bytes(b"\x00\xff")
    (work / "not-out.txt").write_text("x")
    c = collected(work)
    assert [f.path for f in c.files] == ["b.txt", "sub/a.bin"] and not c.truncated
    assert paths(c)["sub/a.bin"] == b"\x00\xff"


def test_links_and_special_files_are_skipped(work: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    secret = tmp_path_factory.mktemp("host") / "secret"
    secret.write_text("host secret")
    out = work / "out"
    (out / "own.txt").write_text("own")
    os.symlink(secret, out / "link")
    os.symlink(secret.parent, out / "dirlink")
    os.link(secret, out / "hard")  # a hard link to a file outside out/
    os.mkfifo(out / "fifo")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(out / "sock"))
    c = collected(work)
    assert paths(c) == {"own.txt": b"own"}


def test_out_itself_a_symlink_gives_nothing(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "x").write_text("x")
    os.symlink(target, tmp_path / "out")
    assert collected(tmp_path).files == []
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not has_entries(fd)
    finally:
        os.close(fd)


def test_limits_skip_whole_files_and_say_so(work: Path) -> None:
    for name, size in (("a", 600), ("b", 600), ("c", 100), ("d", 10), ("e", 10)):
        (work / "out" / name).write_bytes(b"x" * size)
    c = collected(work, OutputLimits(max_files=2, max_bytes=1000))
    assert paths(c) == {"a": b"x" * 600, "c": b"x" * 100}  # b would pass the budget; then 2 files
    assert c.truncated


def test_depth_is_bounded(work: Path) -> None:
    d = work / "out"
    for _ in range(MAX_DEPTH + 2):
        d = d / "d"
        d.mkdir()
        (d / "f").write_text("f")
    c = collected(work)
    assert c.truncated and len(c.files) == MAX_DEPTH - 1
    assert all(f.path.count("/") < MAX_DEPTH for f in c.files)


@pytest.mark.parametrize("name", ["ok.txt", "caf\u00e9.png", "..x", "a b"])
def test_names_kept(name: str) -> None:
    assert valid_name(name)


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "a\\b", "new\nline", "tab\t", "del\x7f", "bad\udcff", "x" * 256]
)
def test_names_refused(name: str) -> None:
    assert not valid_name(name)


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("plot.png", "image/png"),
        ("a/b.JPG", "image/jpeg"),
        ("d.csv", "text/csv; charset=utf-8"),
        ("page.html", "application/octet-stream"),
        ("x.svg", "image/svg+xml"),
        ("noext", "application/octet-stream"),
        (".png", "image/png"),
    ],
)
def test_content_types_come_from_a_fixed_list(path: str, ctype: str) -> None:
    assert content_type_for(path) == ctype
