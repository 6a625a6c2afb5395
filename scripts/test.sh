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
    # Not `exec`: the trap removes the temporary folder once pytest is done.
    .venv/bin/pytest --basetemp="$basetemp" -p no:cacheprovider "$@"
    exit
fi

# The whole suite as two groups at once, each on its own loopback network
# (QUORUMKEEPER_TEST_NETWORK): the tests on the Kubernetes test bed spend most of their time
# waiting for pods, and the rest (local processes, a lone API server) fill that time. The Ceph
# tests go with the test bed's, which start the same Ceph cluster. After them, the test bed
# stopped, the same group runs `SECOND_GROUP_LOCAL`, local tests moved over to even out the two
# (measured on two cores, warm: the test bed's group 32 min, the other 51 before the move).
# Both groups write their output as they go; the test bed's is printed when both are done.
SECOND_GROUP_LOCAL=(tests/acceptance/test_failing_starts.py tests/acceptance/test_alarms.py)
testbed_log="$basetemp/testbed.log"
# Each run ends with its slowest tests (--durations), to keep the two groups balanced.
(
    status=0
    QUORUMKEEPER_TEST_NETWORK=2 .venv/bin/pytest --basetemp="$basetemp/testbed" --durations=15 \
        -p no:cacheprovider -m "testbed or ceph" || status=$?
    QUORUMKEEPER_TEST_NETWORK=2 .venv/bin/pytest --basetemp="$basetemp/moved" --durations=10 \
        -p no:cacheprovider "${SECOND_GROUP_LOCAL[@]}" || status=$?
    exit "$status"
) >"$testbed_log" 2>&1 &
testbed_pid=$!
local_status=0
ignored=("${SECOND_GROUP_LOCAL[@]/#/--ignore=}")
QUORUMKEEPER_TEST_NETWORK=1 .venv/bin/pytest --basetemp="$basetemp/local" --durations=30 \
    -p no:cacheprovider -m "not testbed and not ceph" "${ignored[@]}" || local_status=$?
testbed_status=0
wait "$testbed_pid" || testbed_status=$?
echo "=== tests on the Kubernetes test bed and Ceph (pytest -m 'testbed or ceph'), then ${SECOND_GROUP_LOCAL[*]} ==="
cat "$testbed_log"
echo "=== exit status: $local_status without the test bed, $testbed_status on it ==="
((local_status == 0 && testbed_status == 0))
