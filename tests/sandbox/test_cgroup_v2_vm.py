"""The sandbox's attack and limit tests on a pure cgroup v2 host, in a VM (scripts/test-cgroup-v2):
most hosts (Kubernetes nodes included) are cgroup v2, whatever the machine running the suite has.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .helpers import REPO

SCRIPT = REPO / "scripts" / "test-cgroup-v2"
SKIPPED = 77  # the script's "cannot run here"
# Runs the script as a child subreaper and reaps whatever the VM leaves behind (virtiofsd outlives
# vng): orphaned here, it would become this process's zombie (the sandbox runner made this
# process a subreaper), and the zombie checks of later tests would find it.
REAPER = """
import ctypes, os, subprocess, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
code = subprocess.call(sys.argv[1:], stdin=subprocess.DEVNULL)

def children():
    me = str(os.getpid())
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1] == me:
                yield int(pid)
        except OSError:
            pass

deadline = time.monotonic() + 20
while True:
    try:
        pid, _ = os.waitpid(-1, os.WNOHANG)
    except ChildProcessError:
        break
    if pid == 0:
        if time.monotonic() > deadline:
            for child in children():
                os.kill(child, 9)
        time.sleep(0.1)
sys.exit(code)
"""


@pytest.mark.slow
@pytest.mark.sandbox
@pytest.mark.timeout(1000)
def test_sandbox_tests_pass_on_cgroup_v2() -> None:
    if os.environ.get("LIVECODE_TEST_CGROUP_V2_GUEST") == "1":
        pytest.skip("already inside the cgroup v2 VM")
    if os.environ.get("LIVECODE_TEST_CGROUP_V2", "1") == "0":
        pytest.skip("LIVECODE_TEST_CGROUP_V2=0: the cgroup v2 VM run is switched off")
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, "-c", REAPER, str(SCRIPT)], env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=960)
    out = proc.stdout + proc.stderr
    if proc.returncode == SKIPPED:
        pytest.skip(out.strip().splitlines()[-1])
    tail = "\n".join(out.splitlines()[-60:])
    assert proc.returncode == 0, f"scripts/test-cgroup-v2 failed (exit {proc.returncode}):\n{tail}"
    assert " passed" in out and " failed" not in out and " error" not in out, tail
    assert "livecode-cgroup-v2: kernel" in out, tail  # it really ran on the v2 guest
