#!/usr/bin/env bash
# Installs what tests/docs_metrics.rs runs besides natter: curl (the
# scrape example in docs/OPERATIONS.md) and Debian's prometheus for
# `promtool check config` (the example's scrape job). Idempotent: does
# nothing when both are there. Run as root (CI is).
set -euo pipefail

if command -v curl >/dev/null && command -v promtool >/dev/null; then
    echo "curl and promtool already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends curl prometheus >/dev/null
echo "installed: $(promtool --version 2>&1 | head -1)"
