"""Health, role and alarms as separate facts, on real processes (issue 10, part 1).

a) etcd filled to NOSPACE: status names the alarm and its member, every member keeps its real
   role and health, the phase is Degraded with the alarm as reason, and `maintenance
   reclaim-space` brings writes back without losing an acknowledged one.
b) A ZooKeeper leader back from a partition (SIGSTOP longer than syncLimit x tickTime: members
   dial peers from 127.0.0.1, so stopping the process is the partition available here) still
   claims leadership for a moment next to the new leader: status must never show two leaders.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from quorumkeeper.model import Endpoint, Member, Role
from quorumkeeper.planner import Observation, Phase, plan
from quorumkeeper.runtimes.local.cluster import LocalCluster
from quorumkeeper.stores.base import CoordinationStore, StoreError
from quorumkeeper.stores.zookeeper.words import server_state
from tests.acceptance.harness import (
    FILLER,
    SMALL_QUOTA,
    LocalClusterUnderTest,
    Writer,
    delete_prefix,
    fill_until_nospace,
    zookeeper_words_tls,
)
from tests.polling import loopback_subnet, wait_until

pytestmark = pytest.mark.acceptance

SHORT_TICKS = """zookeeper:
  tick_time_ms: 500
  min_session_timeout_ms: 1000
  max_session_timeout_ms: 10000
"""
"""syncLimit x tickTime = 2.5 s, so a partition that outlasts it is short."""


def _with_alarm(cluster: LocalClusterUnderTest) -> dict[str, Any] | None:
    status = cluster.status()
    return status if status["alarms"] else None


def test_etcd_nospace_is_shown_as_an_alarm_and_reclaim_space_recovers(tmp_path: Path) -> None:
    spec_file = tmp_path / "quota.yaml"
    spec_file.write_text(SMALL_QUOTA)
    cluster = LocalClusterUnderTest("etcd", "full", loopback_subnet(60), tmp_path / "state")
    try:
        cluster.up(3, "--spec-file", str(spec_file))
        cluster.wait_ready(3)
        with Writer(cluster) as writer:
            wait_until(lambda: writer.ack_times, 10, "a first small write")
            assert fill_until_nospace(cluster) > 0
            status = wait_until(lambda: _with_alarm(cluster), 30, "the alarm in status")
            names = {m["name"] for m in status["members"]}
            assert status["alarms"], status
            assert all(a["alarm"] == "NOSPACE" and a["member"] in names for a in status["alarms"])
            assert status["phase"] == "Degraded", status
            assert "NOSPACE" in status["step"]["reason"], status["step"]
            assert all(m["healthy"] for m in status["members"]), status["members"]
            roles = sorted(m["role"] for m in status["members"])
            assert roles == ["follower", "follower", "leader"], status["members"]
            table = cluster.cli("status", cluster.name).stdout
            assert "alarm: NOSPACE on" in table, table
            wait_until(lambda: writer.failed > 0, 10, "the small writes refused as well")

            # what a user does first: `etcdctl del --prefix big/`
            assert (
                delete_prefix(cluster.paths, cluster.member(status, "leader")["address"], FILLER)
                > 0
            )
            result = cluster.cli("maintenance", "reclaim-space", cluster.name)
            lines = result.stdout.splitlines()
            steps = [
                "compacting",
                "defragmenting full-",  # a follower
                "defragmenting full-",  # the other follower
                "handing leadership",
                "defragmenting full-",  # the old leader
                "disarming NOSPACE",
            ]
            at = 0
            for line in lines:
                if at < len(steps) and line.startswith(steps[at]):
                    at += 1
            assert at == len(steps), f"steps out of order or missing:\n{result.stdout}"
            before, after = result.stdout.split("handing leadership")
            assert before.count("(follower") == 2 and "(old leader" in after, result.stdout
            assert "of its 16.0 MiB quota" in after and "fills up again" not in after, after
            recovered_at = time.monotonic()
            wait_until(
                lambda: writer.first_ack_of_write_sent_after(recovered_at), 30, "writes accepted"
            )
            status = cluster.wait_ready(3)
            assert status["alarms"] == [] and status["step"]["reason"] == "cluster matches its spec"
        writer.assert_nothing_lost()
    finally:
        cluster.destroy()


def _leaders(members: list[Member]) -> list[Member]:
    return [m for m in members if m.role is Role.LEADER]


PARTITION_ATTEMPTS = 8
MEMBERS_SAMPLES = 10
"""The old leader's stale claim lasts about 0.3 s after it resumes: on a loaded machine the
samples can miss it (over TLS each sample's handshakes take longer), so the partition is
repeated until both the direct claims and `members()` caught it. Under the suite's load
`members()` can still miss it in every round (its reads and handshakes outlast the 0.3 s), so
the test asserts the claims reproduced and that no sample of `members()` shows two leaders."""


def _partition_and_sample(
    cluster: LocalClusterUnderTest,
    store: CoordinationStore,
    old: dict[str, Any],
    endpoints: list[Endpoint],
) -> list[tuple[list[str], list[Member]]]:
    """SIGSTOP the leader until another is elected, resume it, and sample which servers claim
    leadership and what `members()` shows: for 4 s, and on until `members()` answered
    `MEMBERS_SAMPLES` times (a loaded machine answers fewer per second), 60 s at most."""
    os.kill(old["pid"], signal.SIGSTOP)
    try:
        wait_until(
            lambda: any(m.address != old["address"] for m in _leaders(_members_or_none(store))),
            60,
            "a new leader elected without the stopped one",
        )
    finally:
        os.kill(old["pid"], signal.SIGCONT)
    samples = []
    words_tls = zookeeper_words_tls(cluster.paths)
    resumed = time.monotonic()
    answered = 0
    while (elapsed := time.monotonic() - resumed) < 4 or (
        answered < MEMBERS_SAMPLES and elapsed < 60
    ):
        claims = [
            e.address
            for e in endpoints
            if (state := server_state(e.address, 0.3, tls=words_tls)) and state.mode == "leader"
        ]
        members = _members_or_none(store)
        answered += bool(members)
        samples.append((claims, members))
        time.sleep(0.05)
    return samples


def test_zookeeper_leader_back_from_a_partition_is_never_a_second_leader(tmp_path: Path) -> None:
    spec_file = tmp_path / "ticks.yaml"
    spec_file.write_text(SHORT_TICKS)
    cluster = LocalClusterUnderTest("zookeeper", "zk", loopback_subnet(61), tmp_path / "state")
    try:
        cluster.up(3, "--spec-file", str(spec_file))
        old = cluster.member(cluster.wait_ready(3), "leader")
        local = LocalCluster(cluster.paths)
        endpoints = [local.reconciler.desired.endpoint(n) for n in range(3)]
        slots = local.reconciler.observe().observation.slots
        store = local.reconciler.store(tuple(endpoints))
        samples: list[tuple[list[str], list[Member]]] = []
        stopped: list[str] = []
        try:
            with Writer(cluster) as writer:
                for _attempt in range(PARTITION_ATTEMPTS):
                    stopped.append(old["address"])
                    samples += _partition_and_sample(cluster, store, old, endpoints)
                    caught = any(m.stale_leader for _, members in samples for m in members)
                    if caught and any(len(claims) == 2 for claims, _ in samples):
                        break
                    old = cluster.member(cluster.wait_ready(3), "leader")
            writer.assert_nothing_lost()
        finally:
            store.close()

        answered = [members for _, members in samples if members]
        assert len(answered) >= MEMBERS_SAMPLES, f"members() answered only {len(answered)} times"
        assert any(len(claims) == 2 for claims, _ in samples), (
            "the old leader never claimed leadership next to the new one: the fault did not "
            "reproduce"
        )
        for claims, members in samples:
            assert len(_leaders(members)) <= 1, (claims, members)
            for member in members:
                if member.stale_leader:
                    assert member.address in stopped and not member.healthy
                    assert member.role is Role.FOLLOWER
                    step = plan(local.reconciler.desired, Observation(tuple(members), slots))
                    assert step.phase is not Phase.READY, step
        status = cluster.wait_ready(3)
        assert len([m for m in status["members"] if m["role"] == "leader"]) == 1

        refused = cluster.cli("maintenance", "reclaim-space", cluster.name, check=False)
        assert refused.returncode == 2, refused
        assert "runs zookeeper" in refused.stderr and "etcd's" in refused.stderr, refused.stderr
    finally:
        cluster.destroy()


def _members_or_none(store: CoordinationStore) -> list[Member]:
    """`members()`, or nothing while no quorum answers (the election in progress)."""
    try:
        return list(store.members())
    except StoreError:
        return []
