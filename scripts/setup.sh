#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12 machine: system packages (as root), then a virtual
# environment in .venv with LiveCode and its development tools. Re-running is cheap.
#   scripts/setup.sh            everything the service needs
#   scripts/setup.sh --test     plus what the test suite needs (PostgreSQL and Redis binaries,
#                               Chromium for the browser tests, QEMU and a kernel image for the
#                               cgroup v2 VM of scripts/test-cgroup-v2)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root to run: $*" >&2; return 1; fi
}

apt_missing() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  echo "${missing[@]:-}"
}

apt_install() {
  local missing
  missing=$(apt_missing "$@")
  [ -z "$missing" ] && return 0
  echo "setup: installing system packages: $missing"
  if [ ! -f /var/lib/apt/periodic/livecode-updated ]; then
    as_root apt-get update -qq
    as_root mkdir -p /var/lib/apt/periodic && as_root touch /var/lib/apt/periodic/livecode-updated
  fi
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends $missing
}

if command -v dpkg-query >/dev/null; then
  apt_install python3 python3-venv python3-dev ca-certificates
  # The sandbox (bubblewrap) and the language toolchains.
  if [ -x scripts/install-system-deps.sh ]; then
    as_root bash scripts/install-system-deps.sh
  fi
  if [ "$want_test" = 1 ]; then
    pkgs=(redis-server chromium chromium-driver wrk)  # wrk: bench/ (autosave load)
    # scripts/test-cgroup-v2 boots Debian's kernel under QEMU (virtme-ng, from the dev extra).
    pkgs+=(qemu-system-x86 busybox-static)
    [ "$(dpkg --print-architecture)" = amd64 ] && pkgs+=(linux-image-amd64)
    command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || pkgs+=(postgresql)
    apt_install "${pkgs[@]}"
  fi
else
  echo "setup: not a Debian system; install bubblewrap, the language toolchains, PostgreSQL and Redis yourself" >&2
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.livecode-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev]'
  touch "$stamp"
fi
