"""Two commands at once: exactly one wins, the other is told why, and what a command reports
is what was stored (issue 10.2). The racing commands run as real concurrent processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from quorumkeeper.spec import Store
from quorumkeeper.stores import member_ports
from tests.acceptance.harness import LocalClusterUnderTest, Writer
from tests.polling import loopback_subnet, wait_until

pytestmark = pytest.mark.acceptance


def _launch(cluster: LocalClusterUnderTest, *args: str) -> subprocess.Popen[str]:
    cluster.commands.append(" ".join(args))
    return subprocess.Popen(
        [sys.executable, "-m", "quorumkeeper", *args],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str]:
    """Exit code and the whole output on one line; no command may end in a traceback."""
    stdout, stderr = process.communicate(timeout=timeout)
    output = " ".join(f"{stdout}\n{stderr}".split())
    assert "Traceback" not in output, output
    return process.returncode, output


@contextmanager
def _frozen_keeper(cluster: LocalClusterUnderTest) -> Iterator[None]:
    """Hold the keeper still, so a change stays in flight for as long as the test needs: etcd
    can finish 3 -> 5 faster than a second CLI process starts."""
    keeper = cluster.paths.keeper_pid()
    assert keeper is not None
    os.kill(keeper, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(keeper, signal.SIGCONT)


def test_racing_scales_one_wins(cluster: LocalClusterUnderTest) -> None:
    cluster.up(3)
    cluster.wait_ready(3)
    with Writer(cluster) as writer:
        with _frozen_keeper(cluster):
            grow = _launch(cluster, "scale", cluster.name, "5", "--no-wait")
            shrink = _launch(cluster, "scale", cluster.name, "1", "--no-wait")
            results = {5: _finish(grow), 1: _finish(shrink)}
            winners = [target for target, (code, _) in results.items() if code == 0]
            assert len(winners) == 1, results
            winner, loser = winners[0], 6 - winners[0]
            stored = cluster.paths.load_stored()
            assert (stored.spec.members, stored.change.generation) == (winner, 2)
            assert f"3 -> {winner} members, stored (generation 2" in results[winner][1]
            code, message = results[loser]
            assert code == 2, results
            assert f"a change is in flight: generation 2, by `scale {cluster.name} {winner}" in (
                message
            )
            assert f"set {winner} members (from 3)" in message
            # Repeating the target in flight waits for it instead of being refused; its first
            # line is read while the keeper is still frozen, so the change is still in flight.
            repeat = _launch(cluster, "scale", cluster.name, str(winner), "--timeout", "120")
            assert repeat.stderr is not None
            first_line = repeat.stderr.readline()
        code, message = _finish(repeat)
        assert code == 0, message
        assert f"already on its way to {winner} members" in first_line, (first_line, message)
        cluster.wait_ready(winner)
    assert cluster.paths.load_stored().change.generation == 2
    writer.assert_nothing_lost()


@pytest.mark.parametrize("store", [Store.ETCD.value])
def test_racing_ups_one_creates(cluster: LocalClusterUnderTest) -> None:
    subnets = {cluster.subnet, loopback_subnet(150)}
    racers = {
        subnet: _launch(
            cluster,
            "up",
            cluster.name,
            "--store",
            cluster.store,
            "--subnet",
            subnet,
            "--timeout",
            "120",
        )
        for subnet in subnets
    }
    results = {subnet: _finish(process) for subnet, process in racers.items()}
    winners = [subnet for subnet, (code, _) in results.items() if code == 0]
    assert len(winners) == 1, results
    (winner,) = winners
    (loser,) = subnets - {winner}
    assert f"on {winner}.x (generation 1" in results[winner][1]
    code, message = results[loser]
    assert code == 2 and f"a cluster named {cluster.name!r} already exists" in message, message
    assert f"on {winner}.x" in message
    assert cluster.paths.load_stored().spec.local.subnet == winner
    members = cluster.wait_ready(3)["members"]
    assert all(m["address"].startswith(f"{winner}.") for m in members), members


def _hold(address: str, port: int) -> socket.socket:
    """A listening socket of this test on `address:port`, standing in for another program."""
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past members' TIME_WAIT
    squatter.bind((address, port))
    squatter.listen()
    return squatter


def test_held_port_refuses_scale_up_and_a_stuck_change_can_be_undone(
    cluster: LocalClusterUnderTest,
) -> None:
    cluster.up(3)
    cluster.wait_ready(3)
    address, port = f"{cluster.subnet}.4", member_ports(Store(cluster.store))[0]
    with Writer(cluster) as writer:
        with _hold(address, port):
            result = cluster.cli("scale", cluster.name, "5", check=False)
        message = " ".join(result.stderr.split())
        assert result.returncode == 2, message
        assert f"{address}:{port} is held by pid {os.getpid()}" in message
        assert "scale to at most 3" in message
        assert cluster.paths.load_stored().change.generation == 1

        # The port is taken after the check passed: 3 -> 5 can't progress.
        with _frozen_keeper(cluster):
            cluster.scale(5, "--no-wait")
            squatter = _hold(address, port)
        with squatter:
            waiting = _launch(cluster, "scale", cluster.name, "5", "--timeout", "120")
            assert waiting.stderr is not None
            first_line = waiting.stderr.readline()
            assert "already on its way to 5 members (generation 2" in first_line, first_line
            held = f"{cluster.name}-3 can't start: {address}:{port} is held by pid {os.getpid()}"
            wait_until(lambda: held in cluster.keeper_log_tail(), 60, "the held port is logged")
            timed_out = cluster.cli("scale", cluster.name, "5", "--timeout", "2", check=False)
            assert timed_out.returncode == 1, timed_out.stderr
            assert held in " ".join(timed_out.stderr.split()), "a timeout names what blocks"
            assert waiting.poll() is None, "repeating the target in flight must wait for it"
            message = " ".join(cluster.scale(3).stderr.split())
            assert re.search(
                r"\d -> 3 members, replaces the change in flight \(generation 3", message
            )
            code, message = _finish(waiting)
            assert code == 1, message  # not done: the newer target stands
            assert "replaced: while this command waited, generation 3" in message
            assert "set the target to 3 members" in message
            status = cluster.wait_ready(3)
    assert sorted(m["name"] for m in status["members"]) == [f"{cluster.name}-{n}" for n in range(3)]
    writer.assert_nothing_lost()
