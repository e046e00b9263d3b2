#!/usr/bin/env bash
# Install everything Mooring needs on a fresh Debian 12 machine, then the project itself.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
if ! command -v etcd >/dev/null || ! command -v redis-server >/dev/null || ! command -v promtool >/dev/null \
  || ! command -v shellcheck >/dev/null; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
    etcd-server redis-server prometheus iptables iproute2 shellcheck
fi
# The Debian packages start system services we do not use; Mooring starts its own.
for svc in etcd redis-server prometheus; do
  $SUDO systemctl disable --now "$svc" >/dev/null 2>&1 || true
done
python3 -m pip install -q --disable-pip-version-check -e '.[dev,chaos]'
