#!/usr/bin/env bash
# Provides the Python 2.7 that the interoperability tests need
# (tests/python_client.rs, crates/proto/tests/cpython.rs): pyenv's 2.7.18
# or a working python2.7 when the machine has one, otherwise Debian's
# jython package (Jython 2.7, the course's own runtime), which runs the
# course-style client and its pickles. The tests find it themselves, in the
# same order (crates/proto/tests/support/python.rs); under CI they fail
# without one. Idempotent. Run as root (CI is).
set -euo pipefail

works() { "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' >/dev/null 2>&1; }

for candidate in "${NATTER_PYTHON2:-}" /root/.pyenv/versions/2.7.18/bin/python2.7 python2.7 /usr/bin/jython; do
    if [[ -n "$candidate" ]] && works "$candidate"; then
        echo "Python 2.7: $candidate ($("$candidate" -c 'import sys; print(sys.version.split()[0])' 2>&1))"
        exit 0
    fi
done

echo "no Python 2.7 on this machine: installing Debian's jython"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends jython >/dev/null
works /usr/bin/jython || { echo "jython was installed but does not run" >&2; exit 1; }
echo "Python 2.7: /usr/bin/jython"
