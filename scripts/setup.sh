#!/usr/bin/env bash
# Sets up a fresh Debian machine for quorumkeeper: Python venv with the pinned dependencies in
# .venv, etcd built from its pinned Go modules and ZooKeeper fetched from Maven Central into the
# cache (~/.cache/quorumkeeper, or $QUORUMKEEPER_CACHE_DIR). Idempotent: a second run only
# checks what is already there.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { echo "setup: $*" >&2; }
# shellcheck source=lib.sh
source scripts/lib.sh

python=""
for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null &&
        "$candidate" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        python="$(command -v "$candidate")"
        break
    fi
done
if [[ -z "$python" ]]; then
    apt_install python3 python3-venv
    python=/usr/bin/python3
fi

if ! command -v go >/dev/null && [[ ! -x /usr/local/go/bin/go ]]; then
    # Debian's Go is older than etcd needs; GOTOOLCHAIN=auto fetches the newer toolchain
    # etcd's go.mod asks for from the Go module proxy.
    apt_install golang-go
    export GOTOOLCHAIN=auto
fi
export PATH="$PATH:/usr/local/go/bin"
command -v java >/dev/null || apt_install default-jre-headless
command -v mvn >/dev/null || apt_install maven

if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv with $python"
    "$python" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [[ ! -f "$stamp" ]]; then
    log "installing quorumkeeper and its pinned dependencies into .venv"
    .venv/bin/python -m pip install --quiet --upgrade pip==25.3
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi

.venv/bin/quorumkeeper install etcd
.venv/bin/quorumkeeper install zookeeper
