#!/usr/bin/env bash
# Installs what tests/service.rs checks contrib/natter.service with:
# `systemd-analyze verify`, from Debian's systemd package (the tool only;
# nothing is started). Idempotent: does nothing when it is already there.
# Run as root (CI is).
set -euo pipefail

if command -v systemd-analyze >/dev/null; then
    echo "systemd-analyze already installed: $(systemd-analyze --version | head -n1)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends systemd >/dev/null
echo "installed: $(systemd-analyze --version | head -n1)"
