"""A spec change takes effect by ordered restarts, on real processes with a writer running:
followers one at a time, the leader last, every acknowledged write kept; a field a running
cluster can't change is refused and changes nothing; a keeper killed in the middle resumes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psutil
import pytest

from quorumkeeper.model import Endpoint
from quorumkeeper.reconciler import Snapshot
from quorumkeeper.runtimes.local.cluster import LocalCluster
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.zookeeper.words import four_letter_word
from tests.acceptance.harness import (
    LocalClusterUnderTest,
    PidWatch,
    Writer,
    spec_file,
    zookeeper_words_tls,
)
from tests.polling import wait_until

pytestmark = pytest.mark.acceptance

CHANGES = {
    "etcd": ({"etcd": {"snapshot_count": 5000}}, "--snapshot-count=5000"),
    "zookeeper": ({"zookeeper": {"max_client_cnxns": 100}}, "maxClientCnxns=100"),
}
"""Per store: a settings change that reaches every member's process, and how it shows there."""


def _runs_with(cluster: LocalClusterUnderTest, status: dict[str, Any], setting: str) -> None:
    """Every member's running process got `setting`: etcd's on its command line, ZooKeeper's
    from the server itself (`conf`), beside the zoo.cfg it was started with."""
    for member in status["members"]:
        if cluster.store == "etcd":
            assert setting in psutil.Process(member["pid"]).cmdline(), member["name"]
            continue
        zoo_cfg = cluster.member_data(member["name"]) / "conf" / "zoo.cfg"
        assert setting in zoo_cfg.read_text().splitlines(), member["name"]
        conf = four_letter_word(member["address"], "conf", 5.0, zookeeper_words_tls(cluster.paths))
        assert setting in conf.splitlines(), f"{member['name']} serves with:\n{conf}"


def _roll_out(cluster: LocalClusterUnderTest, members: int) -> tuple[PidWatch, Writer, str]:
    """Apply the store's settings change to a Ready cluster of `members` with a writer running;
    returns the pid watch, the writer and the leader's name before the change."""
    before = cluster.wait_ready(members)
    leader = cluster.member(before, "leader")["name"]
    fields, _ = CHANGES[cluster.store]
    watch = PidWatch(cluster, cluster.pids(before))
    with Writer(cluster) as writer, watch.running():
        cluster.cli("apply", cluster.name, "--spec-file", str(spec_file(cluster, fields)))
        done = cluster.status()  # apply's exit 0 says the change is in place: no wait here
    assert done["phase"] == "Ready" and done["rollout"] is None, done["step"]
    unhealthy = [m["name"] for m in done["members"] if not m["healthy"]]
    assert not unhealthy and len(done["members"]) == members, f"apply returned early: {unhealthy}"
    return watch, writer, leader


def _check_rolled_out(
    cluster: LocalClusterUnderTest, watch: PidWatch, writer: Writer, leader: str, members: int
) -> dict[str, Any]:
    status = cluster.wait_ready(members)
    assert sorted(watch.changed) == sorted(watch.before), "every member got a new process"
    assert watch.changed[-1] == leader, f"the leader {leader} restarts last: {watch.changed}"
    assert watch.most_down <= 1, "never two members down at once"
    assert [m["config"] for m in status["members"]] == ["updated"] * members
    assert status["rollout"] is None
    _runs_with(cluster, status, CHANGES[cluster.store][1])
    writer.assert_nothing_lost()
    return status


def test_a_settings_change_restarts_followers_one_at_a_time_then_the_leader(
    cluster: LocalClusterUnderTest,
) -> None:
    cluster.up(3)
    watch, writer, leader = _roll_out(cluster, 3)
    status = _check_rolled_out(cluster, watch, writer, leader, 3)
    assert all(m["starts"] == 2 for m in status["members"]), "one restart each, no more"
    print(
        f"{cluster.store}: restart order {watch.changed}, {writer.failed} failed writes, "
        f"longest gap {writer.longest_gap:.2f}s over {len(writer.acknowledged)} writes"
    )


def test_five_members_restart_one_at_a_time(cluster: LocalClusterUnderTest) -> None:
    cluster.up(5)
    watch, writer, leader = _roll_out(cluster, 5)
    _check_rolled_out(cluster, watch, writer, leader, 5)


@pytest.mark.parametrize("store", ["etcd"])
def test_a_field_a_running_cluster_keeps_is_refused_and_changes_nothing(
    cluster: LocalClusterUnderTest,
) -> None:
    cluster.up(1)
    before = cluster.wait_ready(1)
    generation = cluster.paths.load_stored().change.generation
    changes = spec_file(cluster, {"store": "zookeeper", "etcd": {"snapshot_count": 5000}})

    refused = cluster.cli("apply", cluster.name, "--spec-file", str(changes), check=False)

    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "store: can't change from etcd to zookeeper on a running cluster" in message
    assert f"fix: remove store from {changes}" in message
    assert cluster.paths.load_stored().change.generation == generation
    assert cluster.pids(cluster.status()) == cluster.pids(before)

    other_store = spec_file(cluster, {"zookeeper": {"tick_time_ms": 3000}})
    refused = cluster.cli("apply", cluster.name, "--spec-file", str(other_store), check=False)
    assert refused.returncode == 2, refused.stderr
    message = " ".join(refused.stderr.split())
    assert "zookeeper: settings of zookeeper change nothing on the etcd cluster" in message
    assert cluster.paths.load_stored().change.generation == generation

    out_of_bounds = spec_file(cluster, {"etcd": {"snapshot_count": 1}})  # checked as `up` does
    refused = cluster.cli("apply", cluster.name, "--spec-file", str(out_of_bounds), check=False)
    assert refused.returncode == 2 and "etcd.snapshot_count" in refused.stderr, refused.stderr
    assert cluster.paths.load_stored().change.generation == generation

    changes = spec_file(cluster, {"etcd": {"snapshot_count": 5000}})  # the fix
    cluster.cli("apply", cluster.name, "--spec-file", str(changes))
    status = cluster.wait_ready(1)
    assert cluster.paths.load_stored().change.generation == generation + 1
    _runs_with(cluster, status, "--snapshot-count=5000")

    # null takes a setting back to its default (a JSON merge patch), which reaches the process.
    default = spec_file(cluster, {"etcd": {"snapshot_count": None}})
    cluster.cli("apply", cluster.name, "--spec-file", str(default))
    status = cluster.wait_ready(1)
    assert cluster.paths.load_stored().spec.etcd.snapshot_count == EtcdSettings().snapshot_count
    _runs_with(cluster, status, f"--snapshot-count={EtcdSettings().snapshot_count}")


@pytest.mark.parametrize("crash_after", [1, 2, 3])
def test_a_keeper_killed_at_every_step_of_a_rollout_resumes_and_finishes(
    cluster: LocalClusterUnderTest, crash_after: int
) -> None:
    """The keeper dies with SIGKILL right after its Nth action of a 3-member rollout (three
    restarts; etcd hands leadership over before the third); a new keeper finishes it, restarting
    no member twice and the leader last."""
    cluster.up(3)
    before = cluster.wait_ready(3)
    leader = cluster.member(before, "leader")["name"]
    fields, _ = CHANGES[cluster.store]
    watch = PidWatch(cluster, cluster.pids(before))
    with Writer(cluster) as writer, watch.running():
        cluster.kill_keeper()
        cluster.spawn_keeper(QUORUMKEEPER_KEEPER_CRASH_AFTER=str(crash_after))
        changes = spec_file(cluster, fields)
        cluster.cli("apply", cluster.name, "--spec-file", str(changes), "--no-wait")
        wait_until(lambda: cluster.paths.keeper_pid() is None, 120, "the keeper crashed")
        halfway = cluster.status()
        if crash_after < 3:
            assert halfway["rollout"] is not None, "the keeper died before the rollout finished"
            assert len(halfway["rollout"]["updated"]) <= crash_after
        cluster.cli("start", cluster.name, "--timeout", "180")
    status = _check_rolled_out(cluster, watch, writer, leader, 3)
    assert all(m["starts"] == 2 for m in status["members"]), "one restart each, no more"


@pytest.mark.parametrize("store", ["etcd"])
def test_an_observation_torn_by_a_restart_is_taken_again(
    cluster: LocalClusterUnderTest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Newcomer's input: `apply` on ZooKeeper returned while the leader it had just restarted
    was still starting, its old process's answers paired with the new process. Here the
    member's process is made to look replaced between the first pid read and the store's
    answers (the pid read returns another pid once): status observes again, and shows the
    process that answered."""
    cluster.up(1)
    ready = cluster.wait_ready(1)
    local = LocalCluster(cluster.paths)
    real_pids, real_observe = local.runtime.pids, local.reconciler.observe
    observed: list[int] = []

    def old_pid_once(endpoints: Iterable[Endpoint]) -> dict[Endpoint, int | None]:
        pids = real_pids(endpoints)
        return {e: (p + 1 if p and not observed else p) for e, p in pids.items()}

    def counted(**kwargs: bool) -> Snapshot:
        observed.append(1)
        return real_observe(**kwargs)

    monkeypatch.setattr(local.runtime, "pids", old_pid_once)
    monkeypatch.setattr(local.reconciler, "observe", counted)
    snapshot = local.observe()
    assert len(observed) == 2, "the torn observation is taken again"
    (slot,) = snapshot.observation.slots
    assert slot.pid == ready["members"][0]["pid"]
