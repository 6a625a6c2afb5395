#!/usr/bin/env bash
# Runs the whole test suite: setup (idempotent), the Ceph packages and the Kubernetes test bed
# builds the suite needs, then lint, types and every test on real components.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

bash scripts/setup.sh
# The releases the upgrade tests start from (versions.py), built beside the pinned ones; cached,
# so only a cold machine pays for them (measured: 165 s for etcd, 28 s for ZooKeeper).
previous() { .venv/bin/python -c "from quorumkeeper import versions; print(versions.$1)"; }
.venv/bin/quorumkeeper install etcd --version "$(previous ETCD_PREVIOUS_VERSION)"
.venv/bin/quorumkeeper install zookeeper --version "$(previous ZOOKEEPER_PREVIOUS_VERSION)"
# shellcheck source=lib.sh
source scripts/lib.sh
# Debian's ZooKeeper 3.8 package: the suite checks that selecting version 3.8.0 runs it.
apt_install zookeeper libslf4j-java libnetty-java
bash scripts/install-ceph.sh
bash scripts/build-kubernetes.sh

.venv/bin/ruff check src tests benchmarks testbed
.venv/bin/ruff format --check src tests benchmarks testbed
.venv/bin/mypy
# The layer contracts in pyproject.toml; building the graph takes a fraction of a second uncached.
.venv/bin/lint-imports --no-cache --no-logo

basetemp="$(mktemp -d /tmp/quorumkeeper-tests.XXXXXX)"
trap 'rm -rf "$basetemp"' EXIT
.venv/bin/pytest --basetemp="$basetemp" -p no:cacheprovider "$@"
