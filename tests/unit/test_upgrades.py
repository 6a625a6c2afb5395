"""The checked upgrade path as a table: each move allowed, or refused naming the stop-over."""

from __future__ import annotations

import pytest

from quorumkeeper import versions
from quorumkeeper.spec import Store
from quorumkeeper.upgrades import UpgradeRefused, check_upgrade, release, upgrade_refusal

ETCD, ZOOKEEPER = Store.ETCD, Store.ZOOKEEPER

ALLOWED = [
    (ETCD, "3.7.3", "3.7.3"),
    (ETCD, "3.6.13", "3.6.16"),  # a newer patch
    (ETCD, "3.6.13", "3.7.3"),  # the next minor
    (ETCD, versions.ETCD_PREVIOUS_VERSION, versions.ETCD_VERSION),
    (ETCD, "3.5.26", "3.6.16"),  # the floor itself
    (ETCD, "3.5.27", "3.6.0"),
    (ETCD, "3.5.10", "3.5.26"),  # the stop-over
    (ZOOKEEPER, "3.8.6", "3.9.5"),
    (ZOOKEEPER, versions.DEBIAN_ZOOKEEPER_VERSION, versions.ZOOKEEPER_VERSION),
    (ZOOKEEPER, "3.9.4", "3.9.5"),
]

REFUSED = [
    # (store, running, target, words the refusal must hold)
    (ETCD, "3.5.26", "3.7.3", ["etcd 3.5.26 -> 3.7.3 skips 3.6", "set version 3.6.16, then 3.7.3"]),
    (ETCD, "3.5.10", "3.6.16", ["3.5.26 or newer before 3.6", "#19557", "#20793"]),
    (ETCD, "3.5.25", "3.6.0", ["set version 3.5.26, then 3.6.0"]),
    (ETCD, "3.5.10", "3.7.3", ["skips 3.6", "set version 3.5.26, then 3.6.16, then 3.7.3"]),
    (ETCD, "3.7.3", "3.6.16", ["is a downgrade", "etcdctl downgrade enable", "keep 3.7.3"]),
    (ETCD, "3.7.3", "3.7.2", ["etcd 3.7.3 -> 3.7.2 is a downgrade"]),
    (ETCD, "3.7.3", "4.0.0", ["changes the major version"]),
    (ZOOKEEPER, "3.9.5", "3.8.6", ["ZooKeeper 3.9.5 -> 3.8.6 is a downgrade", "no downgrade"]),
    (ZOOKEEPER, "3.7.2", "3.9.5", ["skips 3.8", "set version 3.8.6, then 3.9.5"]),
]


@pytest.mark.parametrize(("store", "running", "target"), ALLOWED)
def test_allowed(store: Store, running: str, target: str) -> None:
    assert upgrade_refusal(store, running, target) is None
    check_upgrade(store, [running], target)


@pytest.mark.parametrize(("store", "running", "target", "words"), REFUSED)
def test_refused_with_the_stop_over(
    store: Store, running: str, target: str, words: list[str]
) -> None:
    refusal = upgrade_refusal(store, running, target)
    assert refusal is not None
    assert running in refusal and target in refusal, "both versions are named"
    for word in words:
        assert word in refusal.replace("keep version", "keep")


@pytest.mark.parametrize(
    ("store", "running", "target"),
    [(ETCD, "3.5.10", "3.7.3"), (ETCD, "3.5.26", "3.7.3"), (ZOOKEEPER, "3.7.2", "3.9.5")],
)
def test_the_stop_overs_a_refusal_names_each_pass(store: Store, running: str, target: str) -> None:
    """Following the fix a refusal names reaches the target, every move on the checked path."""
    refusal = upgrade_refusal(store, running, target)
    assert refusal is not None
    path = refusal.split("fix: set version ", 1)[1].split(", applying", 1)[0].split(", then ")
    assert path[-1] == target
    for version in path:
        assert upgrade_refusal(store, running, version) is None, f"{running} -> {version}"
        running = version


def test_every_version_the_members_run_is_checked() -> None:
    """A cluster half way through a rollout to 3.7 can't be sent to 3.6: its updated members
    would be downgraded, though the spec still said 3.6."""
    check_upgrade(ETCD, ["3.6.16", "3.7.3"], "3.7.3")
    with pytest.raises(UpgradeRefused, match=r"^version: etcd 3\.7\.3 -> 3\.6\.16 is a downgrade"):
        check_upgrade(ETCD, ["3.6.16", "3.7.3"], "3.6.16")


def test_release_reads_a_reported_version() -> None:
    assert release("3.9.5-0ab1cd2") == (3, 9, 5)
    assert release("3.10.0") > release("3.9.5"), "compared as numbers, not text"
    with pytest.raises(ValueError, match=r"major\.minor\.patch"):
        release("latest")
