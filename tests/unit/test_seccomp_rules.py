"""The conditional rules of the seccomp filter say what seccomp.py's comments say they do.

The generator reads these lines; here they are evaluated the way libseccomp compiles them (the
comparisons of one line AND-ed, the lines of one syscall OR-ed). tests/sandbox/test_seccomp.py
attacks the real filter."""

from __future__ import annotations

import errno
import functools
import random

import pytest

from livecode.sandbox import seccomp


@functools.cache
def split_rules() -> list[list[str]]:
    """seccomp.rules(), a pure function of seccomp.py's tables, split once (not once per value of
    the 20,000 random ones below)."""
    return [line.split() for line in seccomp.rules()]


def denied(syscall: str, arg0: int, *more: int) -> int | None:
    """The errno the rules give syscall(arg0, ...), None if allowed."""
    args = (arg0, *more)
    for err, name, *cmp in split_rules():
        if name.split("=")[0] != syscall:
            continue
        holds = True
        for i in range(0, len(cmp), 4):
            arg, op, a, b = int(cmp[i]), cmp[i + 1], int(cmp[i + 2]), int(cmp[i + 3])
            x = args[arg]
            holds &= {"ne": x != a, "gt": x > a, "masked_eq": x & a == b}[op]
        if holds:
            return int(err)
    return None


@pytest.mark.parametrize(
    "value", [0, 0xFFFFFFFF, 0x0008, 0x0040000, 0x0400000, 0x8000000, 0x7FFFFFFF, 0xFFFFFFFE, 1 << 32, (1 << 64) - 1]
)
def test_personality_only_default_and_query(value: int) -> None:
    assert denied("personality", value) == (None if value in (0, 0xFFFFFFFF) else errno.EPERM)


def test_personality_random_values() -> None:
    rng = random.Random(9)
    for _ in range(20_000):
        value = rng.getrandbits(rng.choice([8, 16, 32, 33, 64]))
        assert denied("personality", value) == (None if value in (0, 0xFFFFFFFF) else errno.EPERM), hex(value)


def test_clone_namespace_flags_denied_threads_and_forks_allowed() -> None:
    thread = 0x00010000 | 0x00000100 | 0x00000200 | 0x00000400 | 0x00000800 | 0x00040000 | 0x00080000 | 0x00200000
    for flags in (0x11, thread, 0x00004000 | 0x00000100 | 0x11):  # fork, pthread, vfork
        assert denied("clone", flags) is None
    for name, flag in seccomp.CLONE_NAMESPACE_FLAGS.items():
        assert denied("clone", flag | 0x11) == errno.EPERM, name


def test_only_unix_sockets() -> None:
    assert denied("socket", 1) is None and denied("socketpair", 1) is None
    for family in (2, 10, 16, 17, 40, 0, 1 << 32 | 1):  # INET, INET6, NETLINK, PACKET, VSOCK, ...
        assert denied("socket", family) == errno.EAFNOSUPPORT
        assert denied("socketpair", family) == errno.EAFNOSUPPORT


def test_no_explicit_huge_pages() -> None:
    map_private_anon, map_hugetlb = 0x22, 0x40000
    assert denied("mmap", 0, 4096, 3, map_private_anon) is None
    assert denied("mmap", 0, 4096, 3, map_private_anon | map_hugetlb) == errno.EPERM
    assert denied("memfd_create", 0, 1) is None  # MFD_CLOEXEC
    assert denied("memfd_create", 0, 1 | 4) == errno.EPERM  # MFD_HUGETLB
    assert denied("shmget", 0, 4096, 0o1600) is None  # IPC_CREAT | 0600
    assert denied("shmget", 0, 4096, 0o5600) == errno.EPERM  # SHM_HUGETLB


def test_plain_denials() -> None:
    assert denied("io_setup", 0) == errno.EPERM
    assert denied("clone3", 0) == errno.ENOSYS
    assert denied("listmount", 0) == errno.EPERM
    names = [n for group in seccomp.DENIED.values() for n in group]
    assert len(names) == len(set(names))
