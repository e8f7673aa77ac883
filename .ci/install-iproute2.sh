#!/usr/bin/env bash
# Provides iproute2's `ss`: the listener's backlog test
# (crates/server/src/listener.rs) reads a listening socket's queue size
# with `ss -lnt`, which nothing in /proc shows. Debian's package.
# Idempotent. Run as root (CI is).
set -euo pipefail

if command -v ss >/dev/null 2>&1; then
    echo "ss: $(ss -V)"
    exit 0
fi
echo "no ss on this machine: installing Debian's iproute2"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
echo "ss: $(ss -V)"
