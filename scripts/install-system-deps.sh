#!/usr/bin/env bash
# Install what the sandbox and the eight languages need on Debian 12. Idempotent; run as root.
# Used by .ci/run and the README's setup.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
  echo "install-system-deps.sh: run as root (apt-get install needs it)" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive

# bubblewrap: namespaces and mounts; util-linux: setpriv/unshare/prlimit (debugging);
# tar: compiled programs leave the compile sandbox as a tar stream on a pipe;
# libseccomp-dev: the sandbox's seccomp filter is generated with libseccomp (built with gcc at
# first use; the worker refuses to start without it); musl-tools: the launcher and the spawn
# helper, exec'd once per sandbox, are linked statically against musl, whose start-up costs
# ~0.5 ms less CPU than glibc's on a VM (src/livecode/sandbox/cbuild.py; gcc builds them without it).
# Toolchains come from Debian packages only (absolute /usr paths in languages.toml), never
# from root's home (~/.cargo, ~/.pyenv), which the sandbox does not expose.
PACKAGES=(
  bubblewrap
  util-linux
  tar
  libseccomp-dev
  musl-tools
  bash
  python3
  # Python's data libraries (issue 13): listed by GET /api/v1/languages when present.
  python3-numpy
  python3-pandas
  python3-matplotlib
  nodejs
  gcc
  g++
  libc6-dev
  default-jdk-headless
  golang-go
  rustc
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "system packages already installed"
fi

# The sandbox needs unprivileged user namespaces (bubblewrap runs as a per-run unprivileged
# uid) and the cgroup memory + pids controllers (v1 or v2).
if [ -e /proc/sys/kernel/unprivileged_userns_clone ] &&
  [ "$(cat /proc/sys/kernel/unprivileged_userns_clone)" != "1" ]; then
  sysctl -q -w kernel.unprivileged_userns_clone=1
fi
if [ "$(cat /proc/sys/user/max_user_namespaces)" = "0" ]; then
  sysctl -q -w user.max_user_namespaces=15000
fi
if [ ! -e /sys/fs/cgroup/cgroup.controllers ] && [ ! -e /sys/fs/cgroup/memory/cgroup.procs ]; then
  echo "warning: no cgroup memory controller found under /sys/fs/cgroup; the sandbox will refuse to start" >&2
fi

for tool in bwrap python3 node gcc g++ javac java go rustc bash; do
  command -v "$tool" >/dev/null || { echo "missing after install: $tool" >&2; exit 1; }
done
echo "sandbox system dependencies OK"
