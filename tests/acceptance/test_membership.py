"""The acceptance suite: every store, real processes, through the CLI and the keeper."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from functools import partial

import pytest

from tests.acceptance.harness import LocalClusterUnderTest, Writer, spec_file
from tests.polling import wait_until

pytestmark = pytest.mark.acceptance


def _names(cluster: LocalClusterUnderTest, count: int) -> list[str]:
    return [f"{cluster.name}-{n}" for n in range(count)]


@pytest.mark.parametrize("members", [1, 3, 5])
def test_bootstrap(cluster: LocalClusterUnderTest, members: int) -> None:
    cluster.up(members)
    status = cluster.wait_ready(members)
    assert sorted(m["name"] for m in status["members"]) == _names(cluster, members)
    assert [m["role"] for m in status["members"]].count("leader") == 1
    assert len({m["address"] for m in status["members"]}) == members
    document = cluster.paths.load_status()
    assert document is not None
    recorded = {c["type"]: c for c in document["conditions"]}
    for condition in status["conditions"]:  # when each changed, as the keeper recorded it
        assert condition["lastTransitionTime"], condition
        kept = recorded.get(condition["type"])
        if kept and kept["status"] == condition["status"]:
            assert condition["lastTransitionTime"] == kept["lastTransitionTime"], condition
    table = cluster.cli("status", cluster.name).stdout
    rows = [line for line in table.splitlines() if f" {cluster.name}-" in line]
    index = r"0x[0-9a-f]+" if cluster.store == "zookeeper" else r"[0-9]+"
    for row in rows:  # the store's own way of writing a position; sizes with their unit
        assert re.search(rf"│ {index} +│ [0-9.]+ (bytes|kB|MB) +│", row), row


@pytest.mark.parametrize(("start", "peak"), [(3, 5), (2, 3)], ids=["3-5-3", "2-3-2"])
def test_scale_up_and_down_keeps_untouched_members_running(
    cluster: LocalClusterUnderTest, start: int, peak: int
) -> None:
    cluster.up(start)
    before = cluster.pids(cluster.wait_ready(start))
    with Writer(cluster) as writer:
        cluster.scale(peak)
        grown = cluster.wait_ready(peak)
        cluster.scale(start)
        shrunk = cluster.wait_ready(start)
    assert sorted(m["name"] for m in grown["members"]) == _names(cluster, peak)
    assert sorted(m["name"] for m in shrunk["members"]) == _names(cluster, start)
    assert cluster.pids(shrunk) == before, "a member that was not scaled was restarted"
    writer.assert_nothing_lost()


@pytest.mark.parametrize("role", ["follower", "leader"])
def test_member_killed_with_sigkill_is_restarted(cluster: LocalClusterUnderTest, role: str) -> None:
    cluster.up(3)
    victim = cluster.member(cluster.wait_ready(3), role)
    with Writer(cluster) as writer:
        killed_at = time.monotonic()
        os.kill(victim["pid"], signal.SIGKILL)
        wait_until(
            lambda: cluster.pids(cluster.status()).get(victim["name"]) not in (None, victim["pid"]),
            30,
            f"{victim['name']} restarted",
        )
        status = cluster.wait_ready(3)
    assert sorted(m["name"] for m in status["members"]) == _names(cluster, 3)
    rejoined = next(m for m in status["members"] if m["name"] == victim["name"])
    assert rejoined["id"] == victim["id"], "a restarted member keeps its identity"
    assert [m["role"] for m in status["members"]].count("leader") == 1
    assert writer.first_ack_of_write_sent_after(killed_at), "no write succeeded after the kill"
    writer.assert_nothing_lost()


def test_hung_leader_is_voted_out_and_rejoins(cluster: LocalClusterUnderTest) -> None:
    """SIGSTOP keeps the leader's process and sockets alive but silent: the followers must
    elect a new leader by themselves, and the old one must rejoin once it runs again."""
    cluster.up(3)
    leader = cluster.member(cluster.wait_ready(3), "leader")
    with Writer(cluster) as writer:
        stopped_at = time.monotonic()
        os.kill(leader["pid"], signal.SIGSTOP)
        try:
            wait_until(
                lambda: writer.first_ack_of_write_sent_after(stopped_at), 60, "writes resumed"
            )
        finally:
            os.kill(leader["pid"], signal.SIGCONT)
        status = cluster.wait_ready(3)
    assert cluster.pids(status)[leader["name"]] == leader["pid"], "a hung member is not killed"
    assert sorted(m["name"] for m in status["members"]) == _names(cluster, 3)
    writer.assert_nothing_lost()


def test_wiped_member_is_replaced_under_a_new_identity(cluster: LocalClusterUnderTest) -> None:
    cluster.up(3)
    status = cluster.wait_ready(3)
    victim = cluster.member(status, "follower")
    with Writer(cluster) as writer:
        cluster.kill_keeper()
        os.kill(victim["pid"], signal.SIGKILL)
        shutil.rmtree(cluster.member_data(victim["name"]))
        cluster.spawn_keeper()
        status = cluster.wait_ready(3)
    replaced = next(m for m in status["members"] if m["name"] == victim["name"])
    assert replaced["id"] != victim["id"], "the wiped member must join under a new identity"
    assert victim["id"] not in {m["id"] for m in status["members"]}
    assert replaced["pid"] != victim["pid"]
    removal = f"RemoveMember: {victim['name']} lost its data"
    assert removal in cluster.paths.keeper_log.read_text(), "the old identity was not removed"
    assert sorted(m["name"] for m in status["members"]) == _names(cluster, 3)
    writer.assert_nothing_lost()


SCALE_UP_ACTIONS = 6
"""3 -> 5: add, start and promote each of two members."""


def test_keeper_killed_after_every_step_resumes(cluster: LocalClusterUnderTest) -> None:
    """The keeper dies with SIGKILL right after each of its actions, through a scale-up 3 -> 5
    (six actions) and a scale-down 5 -> 3 (four to six, as a removed etcd member exits by
    itself): each new keeper takes the next step from what it observes, and the cluster ends
    with no duplicate or dead member."""
    cluster.up(3)
    cluster.wait_ready(3)
    with Writer(cluster) as writer:
        for target in (5, 3):
            cluster.kill_keeper()
            cluster.spawn_keeper(QUORUMKEEPER_KEEPER_CRASH_AFTER="1")
            cluster.scale(target, "--no-wait")  # with no keeper running, it would start one
            crashes = 0
            while True:
                wait_until(
                    partial(_crashed_or_ready, cluster, target),
                    90,
                    "the keeper crashed or finished",
                )
                if cluster.paths.keeper_pid() is not None:
                    break
                crashes += 1
                assert crashes <= 5 * SCALE_UP_ACTIONS, "keepers crash without progress"
                cluster.spawn_keeper(QUORUMKEEPER_KEEPER_CRASH_AFTER="1")
            if target == 5:
                assert crashes >= SCALE_UP_ACTIONS, f"{crashes} crashes for {SCALE_UP_ACTIONS}"
            status = cluster.wait_ready(target)
            assert sorted(m["name"] for m in status["members"]) == _names(cluster, target)
            assert len({m["id"] for m in status["members"]}) == target
        cluster.kill_keeper()
        cluster.cli("start", cluster.name, "--timeout", "120")
        cluster.wait_ready(3)
    running = [pid for pid in cluster.member_pids_on_disk() if _alive(pid)]
    assert len(running) == 3, f"stray member processes: {running}"
    writer.assert_nothing_lost()


def _crashed_or_ready(cluster: LocalClusterUnderTest, members: int) -> bool:
    return cluster.paths.keeper_pid() is None or _ready(cluster, members)


def _ready(cluster: LocalClusterUnderTest, members: int) -> bool:
    status = cluster.status()
    return status["phase"] == "Ready" and len(status["members"]) == members


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("store", ["etcd"])
def test_up_takes_the_subnet_of_its_spec_file(cluster: LocalClusterUnderTest) -> None:
    """Newcomer's input: `up --spec-file` with `local: {subnet: ...}` made the cluster on
    another, free subnet without a word. The file's subnet is the cluster's, as `--subnet`."""
    fields = {"store": cluster.store, "members": 1, "local": {"subnet": cluster.subnet}}
    cluster.cli("up", cluster.name, "--spec-file", str(spec_file(cluster, fields)))
    status = cluster.wait_ready(1)
    assert status["members"][0]["address"] == f"{cluster.subnet}.1"
