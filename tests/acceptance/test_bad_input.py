"""Bad input and unsafe requests: a clear error naming the field and the fix, nothing changed."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from tests.acceptance.harness import LocalClusterUnderTest, wait_until

pytestmark = pytest.mark.acceptance


def _refused(cluster: LocalClusterUnderTest, *args: str) -> str:
    result = cluster.cli(*args, check=False)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    return " ".join(result.stderr.split())


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--members", "0"), "members must be between 1 and 9"),
        (("--members", "10"), "members must be between 1 and 9"),
        (("--store", "redis"), "store:"),
        (("--version", "3.4.23"), "3.5, 3.6, 3.7"),
    ],
)
def test_bad_up_requests_change_nothing(
    cluster: LocalClusterUnderTest, args: tuple[str, ...], expected: str
) -> None:
    message = _refused(cluster, "up", cluster.name, "--subnet", cluster.subnet, *args)
    assert expected in message
    assert not cluster.paths.root.exists()


def test_bad_name_is_refused(cluster: LocalClusterUnderTest) -> None:
    message = _refused(cluster, "up", "Bad_Name")
    assert "name:" in message and "DNS-1123" in message
    assert not (cluster.state_dir / "Bad_Name").exists()


def test_unwritable_state_dir_is_refused(cluster: LocalClusterUnderTest, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    message = _refused(cluster, "up", cluster.name, "--state-dir", str(blocker / "state"))
    assert "not writable" in message and "--state-dir" in message


def test_taken_port_is_refused(cluster: LocalClusterUnderTest) -> None:
    with socket.socket() as squatter:
        squatter.bind((f"{cluster.subnet}.1", 2379))
        squatter.listen()
        message = _refused(cluster, "up", cluster.name, "--subnet", cluster.subnet)
    assert f"{cluster.subnet}.1:2379 already in use" in message and "--subnet" in message
    assert not cluster.paths.root.exists()


def test_name_in_use_and_in_flight_scale_and_lost_quorum(cluster: LocalClusterUnderTest) -> None:
    cluster.up(3)
    cluster.wait_ready(3)
    spec_before = cluster.paths.spec_file.read_text()

    message = _refused(cluster, "up", cluster.name, "--subnet", "127.0.99")
    assert "already exists" in message and "down" in message

    message = _refused(cluster, "scale", cluster.name, "0")
    assert "members must be between 1 and 9" in message
    assert cluster.paths.spec_file.read_text() == spec_before

    # The keeper is frozen so the first change is still in flight when the second one comes:
    # etcd can finish 3 -> 5 faster than a second CLI process starts.
    keeper = cluster.paths.keeper_pid()
    assert keeper is not None
    os.kill(keeper, signal.SIGSTOP)
    try:
        cluster.scale(5, "--no-wait")
        message = _refused(cluster, "scale", cluster.name, "4")  # 3 would undo it: allowed
    finally:
        os.kill(keeper, signal.SIGCONT)
    assert "a change is in flight" in message
    cluster.wait_ready(5)

    followers = [m for m in cluster.status()["members"] if m["role"] == "follower"]
    for follower in followers[:3]:
        os.kill(follower["pid"], signal.SIGSTOP)
    try:
        wait_until(lambda: cluster.status()["phase"] == "Unavailable", 30, "quorum lost")
        spec_before = cluster.paths.spec_file.read_text()
        message = _refused(cluster, "scale", cluster.name, "3")
        assert "no quorum" in message
        assert cluster.paths.spec_file.read_text() == spec_before
    finally:
        for follower in followers[:3]:
            os.kill(follower["pid"], signal.SIGCONT)


def test_even_member_count_warns_but_runs(cluster: LocalClusterUnderTest) -> None:
    result = cluster.cli(
        "up", cluster.name, "--members", "2", "--subnet", cluster.subnet, "--timeout", "120"
    )
    assert "warning" in result.stderr and "odd" in result.stderr
    cluster.wait_ready(2)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ("zookeeper:\n  heap: lots\n", "zookeeper.heap"),
        ("zookeeper:\n  tick_time_ms: 200\n", "max_session_timeout_ms must be at most"),
        ("etcd:\n  heartbeat_interval_ms: 500\n", "election_timeout_ms"),
        ("- not a mapping\n", "--spec-file"),
    ],
)
def test_bad_spec_file_is_refused(
    cluster: LocalClusterUnderTest, tmp_path: Path, settings: str, expected: str
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(settings)
    message = _refused(cluster, "up", cluster.name, "--spec-file", str(spec_file))
    assert expected in message
    assert not cluster.paths.root.exists()
