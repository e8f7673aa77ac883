#!/usr/bin/env bash
# Installs what tests/service.rs checks contrib/natter.service with:
# `systemd-analyze` (verify, and the system calls of its filter's groups),
# from Debian's systemd package (the tool only; nothing is started), and
# strace, which lists the calls natter makes. Idempotent: does nothing
# when they are already there.
# Run as root (CI is).
set -euo pipefail

if command -v systemd-analyze >/dev/null && command -v strace >/dev/null; then
    echo "systemd-analyze already installed: $(systemd-analyze --version | head -n1)"
    echo "strace already installed: $(strace -V | head -n1)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends systemd strace >/dev/null
echo "installed: $(systemd-analyze --version | head -n1); $(strace -V | head -n1)"
