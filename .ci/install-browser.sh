#!/usr/bin/env bash
# Installs what the real-browser test (tests/browser.rs) drives: Debian's
# headless-capable Chromium and the chromedriver built for it. Idempotent:
# does nothing when both are already there. Run as root (CI is).
set -euo pipefail

if [ -x /usr/bin/chromium ] && { [ -x /usr/bin/chromedriver ] || [ -x /usr/lib/chromium/chromedriver ]; }; then
    echo "chromium and chromedriver already installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Recommends would bring printing and desktop services; fonts are all a
# headless browser needs from them (for readable screenshots).
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null
echo "installed: $(/usr/bin/chromium --version 2>/dev/null || true)"
