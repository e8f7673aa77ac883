#!/usr/bin/env bash
# Provides the tmux that the terminal client's end-to-end tests drive
# (tests/chat_tmux.rs: keys in with send-keys, the screen out with
# capture-pane); under CI they fail without it. Debian's package.
# Idempotent. Run as root (CI is).
set -euo pipefail

if command -v tmux >/dev/null 2>&1; then
    echo "tmux: $(tmux -V)"
    exit 0
fi
echo "no tmux on this machine: installing Debian's"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends tmux >/dev/null
echo "tmux: $(tmux -V)"
