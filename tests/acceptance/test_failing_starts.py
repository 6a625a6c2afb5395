"""Members that keep failing to start, and member processes the keeper lost track of."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psutil
import pytest

from quorumkeeper.runtimes.local.processes import START_MARKER, wait_for_exit
from tests.acceptance.harness import (
    LocalClusterUnderTest,
    Writer,
    holding_port,
)
from tests.polling import wait_until

pytestmark = pytest.mark.acceptance

CLIENT_PORT = {"etcd": 2379, "zookeeper": 2181}


def test_unusable_data_is_set_aside_and_the_member_rejoins(cluster: LocalClusterUnderTest) -> None:
    """Issue input: keeper frozen, a follower killed and its data damaged, keeper resumed.
    Every start would fail the same way: the data is moved aside (not deleted), the old
    identity removed and a new one joins, after one failed start."""
    cluster.up(3)
    victim = cluster.member(cluster.wait_ready(3), "follower")
    with Writer(cluster) as writer:
        wait_until(lambda: len(writer.acknowledged) >= 500, 60, "500 writes: a WAL worth damaging")
        keeper = cluster.freeze_keeper()
        os.kill(victim["pid"], signal.SIGKILL)
        assert wait_for_exit(victim["pid"], 10)
        error = cluster.make_unusable(victim["name"])
        os.kill(keeper, signal.SIGCONT)
        status = cluster.wait_ready(3, timeout=120)
    replaced = cluster.named(status, victim["name"])
    assert replaced["id"] != victim["id"], "the member rejoins under a new identity"
    aside = list((cluster.member_data(victim["name"]).parent.parent / ".set-aside").iterdir())
    kept = [path for path in aside if path.is_dir()]
    assert len(kept) == 1 and any(kept[0].iterdir()), "the damaged data is kept, not deleted"
    why = Path(f"{kept[0]}.why").read_text()
    assert any(line in why for line in error), why
    assert "(1 failed start(s)" in why, "a known unusable-data error needs no second try"
    assert replaced["starts"] == 1, "the new identity starts once"
    writer.assert_nothing_lost()


@pytest.mark.parametrize("store", ["zookeeper"])
def test_a_member_that_keeps_failing_backs_off_then_is_replaced(
    cluster: LocalClusterUnderTest,
) -> None:
    """A follower whose every start fails for a reason not in the store's list (here a broken
    zoo.cfg): starts back off exponentially, status shows the count and the last error line,
    and after five failures in a row, with a healthy quorum left, it is replaced."""
    cluster.up(3)
    victim = cluster.member(cluster.wait_ready(3), "follower")
    name = victim["name"]
    with Writer(cluster) as writer:
        keeper = cluster.freeze_keeper()
        os.kill(victim["pid"], signal.SIGKILL)
        assert wait_for_exit(victim["pid"], 10)
        zoo_cfg = cluster.member_data(name) / "conf" / "zoo.cfg"
        zoo_cfg.write_text(zoo_cfg.read_text().replace("tickTime=2000", "tickTime=banana"))
        os.kill(keeper, signal.SIGCONT)

        def failing_twice() -> dict[str, Any] | None:
            member = cluster.named(cluster.status(), name)
            return member if member["failed_starts"] >= 2 else None

        member = wait_until(failing_twice, 60, f"{name} failed to start twice")
        assert member["last_error"] and "banana" in member["last_error"], member
        assert member["healthy"] is False
        status = cluster.wait_ready(3, timeout=180)
    replaced = cluster.named(status, name)
    assert replaced["id"] != victim["id"]
    log = cluster.member_log(name)
    assert log.count(START_MARKER) <= 1 + 5 + 1, "bootstrap or join, five failures, the new one"
    assert "moved aside" in cluster.paths.keeper_log.read_text()
    writer.assert_nothing_lost()


def test_a_held_port_is_reported_not_mistaken_for_lost_data(cluster: LocalClusterUnderTest) -> None:
    """A follower's client port taken by another program while it is down: it is not started
    into the held port again and again, status names address, port and owning PID, and it
    comes back with its identity once the port is free."""
    cluster.up(3)
    victim = cluster.member(cluster.wait_ready(3), "follower")
    port = CLIENT_PORT[cluster.store]
    with Writer(cluster) as writer:
        keeper = cluster.freeze_keeper()
        os.kill(victim["pid"], signal.SIGKILL)
        assert wait_for_exit(victim["pid"], 10)
        with holding_port(victim["address"], port):
            os.kill(keeper, signal.SIGCONT)
            owner = f"pid {os.getpid()} ({psutil.Process().name()})"

            def reported() -> dict[str, Any] | None:
                status = cluster.status()
                member = cluster.named(status, victim["name"])
                return status if member["blocked_by"] else None

            status = wait_until(reported, 30, "the held port is reported")
            member = cluster.named(status, victim["name"])
            assert member["blocked_by"] == f"{victim['address']}:{port} is held by {owner}"
            assert status["phase"] == "Degraded" and victim["name"] in status["step"]["reason"]
            starts = member["starts"]
        status = cluster.wait_ready(3)
    back = cluster.named(status, victim["name"])
    assert back["id"] == victim["id"], "a held port is not data loss: the identity stays"
    assert back["starts"] == starts + 1
    writer.assert_nothing_lost()


def test_a_member_whose_pid_file_is_lost_is_adopted_and_stopped_by_down(
    cluster: LocalClusterUnderTest,
) -> None:
    """Issue input: a running member's pid file deleted (as when the keeper dies between start
    and write). The keeper finds the process by its data-dir marker instead of starting a
    second one, and `down --purge` stops it before anything is deleted."""
    cluster.up(3)
    status = cluster.wait_ready(3)
    victim = cluster.member(status, "follower")
    pid_file = cluster.member_data(victim["name"]).parent / "pid"
    starts = cluster.member_log(victim["name"]).count(START_MARKER)
    with Writer(cluster) as writer:
        pid_file.unlink()
        adopted = wait_until(pid_file.is_file, 10, "the keeper adopts the running member")
        assert adopted and int(pid_file.read_text()) == victim["pid"]
        cluster.kill_keeper()
        pid_file.unlink()
        status = cluster.status()
        assert cluster.named(status, victim["name"])["pid"] == victim["pid"]
        cluster.spawn_keeper()
        cluster.wait_ready(3)
    assert cluster.member_log(victim["name"]).count(START_MARKER) == starts, "never started twice"
    writer.assert_nothing_lost()

    pid_file.unlink()
    pids = [m["pid"] for m in status["members"]]
    cluster.cli("down", cluster.name, "--purge")
    assert all(wait_for_exit(pid, 15) for pid in pids), "down stops every member process"
    assert not cluster.paths.root.exists()
