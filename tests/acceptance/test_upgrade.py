"""Version upgrades on real processes with a writer running: one minor up, members restarted in
order with the leader last, data kept, and each member's own report of its release equal to the
spec at the end; moves off the checked path refused with exit 2, changing nothing."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest

from quorumkeeper import versions
from quorumkeeper.runtimes.local import distributions
from tests.acceptance.harness import LocalClusterUnderTest, PidWatch, Writer, spec_file

pytestmark = pytest.mark.acceptance

UPGRADES = {
    "etcd": (versions.ETCD_PREVIOUS_VERSION, versions.ETCD_VERSION),
    "zookeeper": (versions.ZOOKEEPER_PREVIOUS_VERSION, versions.ZOOKEEPER_VERSION),
}
"""Per store: the release a cluster starts at and the next minor's release it upgrades to."""


def _reported(status: dict[str, object]) -> dict[str, object]:
    members = status["members"]
    assert isinstance(members, list)
    return {member["name"]: member["version"] for member in members}


def _runs_binary_of(cluster: LocalClusterUnderTest, pid: int, version: str) -> bool:
    """The member's process was started from `version`'s build in the cache."""
    cmdline = " ".join(psutil.Process(pid).cmdline())
    if cluster.store == "etcd":
        return str(distributions.etcd_dir(version)) in cmdline
    return str(distributions.zookeeper_lib_dir(version)) in cmdline


def test_an_upgrade_to_the_next_minor_restarts_members_in_order_and_keeps_the_data(
    cluster: LocalClusterUnderTest,
) -> None:
    old, new = UPGRADES[cluster.store]
    cluster.up(3, "--version", old)
    before = cluster.wait_ready(3)
    assert set(_reported(before).values()) == {old}, "every member reports the release it runs"
    leader = cluster.member(before, "leader")["name"]
    watch = PidWatch(cluster, cluster.pids(before))
    with Writer(cluster) as writer, watch.running():
        cluster.cli("apply", cluster.name, "--spec-file", str(spec_file(cluster, {"version": new})))
    after = cluster.wait_ready(3)

    assert sorted(watch.changed) == sorted(watch.before), "every member got a new process"
    assert watch.changed[-1] == leader, f"the leader {leader} restarts last: {watch.changed}"
    assert watch.most_down <= 1, "never two members down at once"
    assert after["version"] == new
    assert set(_reported(after).values()) == {new}, _reported(after)
    assert all(_runs_binary_of(cluster, m["pid"], new) for m in after["members"])
    assert [m["config"] for m in after["members"]] == ["updated"] * 3
    writer.assert_nothing_lost()  # written before, during and after each restart
    print(
        f"{cluster.store} {old} -> {new}: restart order {watch.changed}, {writer.failed} failed "
        f"writes, longest gap {writer.longest_gap:.2f}s over {len(writer.acknowledged)} writes"
    )


def _refused(cluster: LocalClusterUnderTest, version: str) -> str:
    """Apply `version`, expecting a refusal that changes nothing; returns its message."""
    before = cluster.status()
    generation = cluster.paths.load_stored().change.generation
    changes = spec_file(cluster, {"version": version})
    refused = cluster.cli("apply", cluster.name, "--spec-file", str(changes), check=False)
    assert refused.returncode == 2, refused.stderr
    assert cluster.paths.load_stored().change.generation == generation, "nothing stored"
    after = cluster.status()
    assert cluster.pids(after) == cluster.pids(before), "no member restarted"
    assert after["version"] == before["version"]
    return " ".join(refused.stderr.split())


def test_a_downgrade_is_refused_and_changes_nothing(cluster: LocalClusterUnderTest) -> None:
    old, new = UPGRADES[cluster.store]
    cluster.up(1)
    cluster.wait_ready(1)
    message = _refused(cluster, old)
    name = "etcd" if cluster.store == "etcd" else "ZooKeeper"
    assert f"version: {name} {new} -> {old} is a downgrade" in message, message
    assert f"fix: keep version {new}" in message, message
    if cluster.store == "etcd":
        assert "etcd's own downgrade procedure (`etcdctl downgrade enable`" in message, message
        assert "is not supported by quorumkeeper" in message, message


@pytest.mark.parametrize("store", ["etcd"])
def test_a_skipped_minor_is_refused_judged_by_the_release_members_run(
    cluster: LocalClusterUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's cluster: its spec says 3.5.10 while its members run another release. Only
    3.6 and 3.7 build here, so a build cache made for this test files the real 3.6 build under
    3.5.10 (a stand-in for a 3.5.10 build): status shows both, and `apply` of 3.7.3 is refused
    for the spec's 3.5.10, naming every stop-over."""
    cache = tmp_path / "cache"
    real = distributions.etcd_dir(versions.ETCD_PREVIOUS_VERSION)
    labelled = cache / "etcd-v3.5.10" / "bin"
    labelled.mkdir(parents=True)
    for binary in ("etcd", "etcdctl"):
        os.symlink(real / binary, labelled / binary)
    os.symlink(distributions.etcd_dir(versions.ETCD_VERSION).parent, cache / "etcd-v3.7.3")
    monkeypatch.setenv("QUORUMKEEPER_CACHE_DIR", str(cache))
    cluster.up(1, "--version", "3.5.10")
    status = cluster.wait_ready(1)
    assert status["version"] == "3.5.10"
    assert set(_reported(status).values()) == {versions.ETCD_PREVIOUS_VERSION}

    message = _refused(cluster, versions.ETCD_VERSION)

    assert "version: etcd 3.5.10 -> 3.7.3 skips 3.6" in message, message
    assert "one minor at a time" in message, message
    assert "fix: set version 3.5.26, then 3.6.16, then 3.7.3" in message, message
    listed = cluster.cli("status", cluster.name).stdout
    assert versions.ETCD_PREVIOUS_VERSION in listed and "3.5.10" in listed, listed
