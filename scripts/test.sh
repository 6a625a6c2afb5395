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
if (($#)); then
    .venv/bin/pytest --basetemp="$basetemp" -p no:cacheprovider "$@"
    exit
fi

# The whole suite spread over two workers, each on its own loopback network (worker gwK on
# 127.<1+K>): the test bed's and Ceph's tests go to one worker as one share (tests/conftest.py),
# since they spend most of their time waiting for pods and start the same Ceph cluster; every
# other module is a share of its own, handed to whichever worker is free, so the worker with the
# test bed fills its waits and neither idles at the end (measured on two cores, warm: two fixed
# groups side by side took 36 min, the local one 35.7 min of it and the test bed's 18).
QUORUMKEEPER_TEST_NETWORK=1 .venv/bin/pytest --basetemp="$basetemp" -p no:cacheprovider \
    --numprocesses 2 --dist loadgroup --durations 25
