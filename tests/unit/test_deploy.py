"""The shipped deployments run several worker replicas on one host: they must share the host's
slot lock directory, because slot uids are host-wide (see sandbox/hostfs.py SlotPool)."""

from __future__ import annotations

from pathlib import Path

import yaml

from livecode.sandbox.hostfs import DEFAULT_LOCK_DIR

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LOCKS = str(DEFAULT_LOCK_DIR)


def test_compose_workers_share_the_host_lock_directory() -> None:
    worker = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]["worker"]
    assert f"{LOCKS}:{LOCKS}" in worker.get("volumes", []), "each replica would lock uids in its own /run"


def test_kubernetes_workers_share_the_node_lock_directory() -> None:
    pod = yaml.safe_load((DEPLOY / "k8s" / "worker.yaml").read_text())["spec"]["template"]["spec"]
    host_paths = {v["name"]: v["hostPath"]["path"] for v in pod.get("volumes", []) if "hostPath" in v}
    mounts = {m["mountPath"]: m["name"] for c in pod["containers"] for m in c.get("volumeMounts", [])}
    assert LOCKS in mounts, "each pod would lock uids in its own /run"
    assert host_paths.get(mounts[LOCKS]) == LOCKS


def test_the_wheel_ships_the_sandbox_data_files() -> None:
    """The C programs and the language table are read at run time from the installed package."""
    import fnmatch
    import tomllib

    root = DEPLOY.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["livecode"]
    package = root / "src" / "livecode"
    needed = [*package.glob("sandbox/csrc/*.c"), *package.glob("sandbox/*.toml")]
    assert any(p.suffix == ".c" for p in needed) and any(p.suffix == ".toml" for p in needed)
    for path in needed:
        rel = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(rel, pattern) for pattern in patterns), f"{rel} is not in package-data"
