"""Bad input and unsafe requests: a clear error naming the field and the fix, nothing changed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from quorumkeeper.runtimes.local.processes import end_process
from tests.acceptance.harness import LocalClusterUnderTest
from tests.polling import wait_until

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
        (("--members", "10"), "fix: --members 9"),  # the option given, not spec syntax
        (("--store", "redis"), "store:"),
        (("--store", "redis"), "fix: --store etcd"),
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
    assert "fix: `quorumkeeper up bad-name`" in message, message
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
    assert f"{cluster.subnet}.1:2379 is held by" in message and "--subnet" in message
    assert not cluster.paths.root.exists()


def test_name_in_use_and_in_flight_scale_and_lost_quorum(cluster: LocalClusterUnderTest) -> None:
    cluster.up(3)
    cluster.wait_ready(3)
    spec_before = cluster.paths.spec_file.read_text()

    message = _refused(cluster, "up", cluster.name, "--subnet", "127.0.99")
    assert "already exists" in message and "down" in message

    message = _refused(cluster, "scale", cluster.name[:-1], "5")  # newcomer's input: a typo
    assert f"no cluster '{cluster.name[:-1]}'" in message, message
    assert f"fix: use `{cluster.name}`, or create it" in message, message

    message = _refused(cluster, "scale", cluster.name, "0")
    assert "members must be between 1 and 9" in message
    assert f"fix: `quorumkeeper scale {cluster.name} 1`, or `quorumkeeper down" in message
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
        ("zookeeper:\n  min_session_timeout_ms: 60000\n", "max_session_timeout_ms: 60000"),
        ("etcd:\n  heartbeat_interval_ms: 500\n", "election_timeout_ms"),
        ("- not a mapping\n", "--spec-file"),
        ("members: [3\n", 'spec.yaml", line 1'),  # YAML that does not parse: where, by file
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


def _keepers_of(cluster: LocalClusterUnderTest) -> list[int]:
    """Keeper processes started for this test's state dir, found by their command line."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        command = process.info["cmdline"] or []
        if "quorumkeeper.runtimes.local.keeper" in command and str(cluster.state_dir) in command:
            found.append(process.info["pid"])
    return found


@pytest.mark.parametrize(
    ("spec_file", "args", "says"),
    [
        ("zookeeper:\n  heap: 99999999G\n", (), ["zookeeper.heap: 99999999G;", "fix: set"]),
        (
            "etcd:\n  auto_compaction_retention: banana\n",
            (),
            ["etcd.auto_compaction_retention: banana;", "fix: set"],
        ),
        ("members: true\n", (), ["members: true;", "fix: set members: 3"]),
        ("", ("--timeout", "-5"), ["--timeout", "-5", "fix: --timeout 120"]),
    ],
)
def test_bad_values_create_nothing(
    cluster: LocalClusterUnderTest,
    tmp_path: Path,
    spec_file: str,
    args: tuple[str, ...],
    says: list[str],
) -> None:
    """Issue 10: these used to create the cluster and a crash-looping keeper, then exit 1."""
    command = ["up", cluster.name, "--store", cluster.store, "--subnet", cluster.subnet, *args]
    if spec_file:
        (tmp_path / "spec.yaml").write_text(spec_file)
        command += ["--spec-file", str(tmp_path / "spec.yaml")]
    message = _refused(cluster, *command)
    for words in says:
        assert words in message, message
    assert not cluster.paths.root.exists()
    assert _keepers_of(cluster) == []


def _up_args(cluster: LocalClusterUnderTest, members: int, spec_file: Path) -> list[str]:
    return [
        "up",
        cluster.name,
        "--store",
        cluster.store,
        "--members",
        str(members),
        "--subnet",
        cluster.subnet,
        "--spec-file",
        str(spec_file),
        "--timeout",
        "120",
    ]


def test_a_refused_up_creates_no_state_dir(cluster: LocalClusterUnderTest, tmp_path: Path) -> None:
    """A release that is not installed is refused before the state dir is made."""
    fresh = tmp_path / "fresh-state"
    missing = {"etcd": "3.6.99", "zookeeper": "3.8.99"}[cluster.store]
    message = _refused(
        cluster,
        *("up", cluster.name, "--store", cluster.store, "--version", missing),
        *("--subnet", cluster.subnet, "--state-dir", str(fresh)),
    )
    assert "version:" in message and "install" in message
    assert not fresh.exists()


@pytest.mark.parametrize("store", ["etcd"])
def test_up_warns_when_a_quota_is_set_with_compaction_off(
    cluster: LocalClusterUnderTest, tmp_path: Path
) -> None:
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "etcd:\n  quota_backend_bytes: 16777216\n  auto_compaction_retention: '0'\n"
    )
    warning = " ".join(cluster.cli(*_up_args(cluster, 1, spec_file)).stderr.split())
    assert "warning:" in warning and "NOSPACE" in warning and "16777216" in warning
    assert "fix: set etcd.auto_compaction_retention: 1h" in warning


def _cli_in(
    cluster: LocalClusterUnderTest, folder: Path, *args: str, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The CLI run from `folder`, as a user in another directory would."""
    result = subprocess.run(
        [sys.executable, "-m", "quorumkeeper", *args],
        cwd=folder,
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert not check or result.returncode == 0, (args, result.stdout, result.stderr)
    return result


@pytest.mark.parametrize("store", ["etcd"])
def test_relative_data_dir_is_resolved_once_where_up_runs(
    cluster: LocalClusterUnderTest, tmp_path: Path
) -> None:
    """Issue 9: with `data_dir: reldata`, `status` from another folder planned to remove
    healthy members, and a keeper with another working directory replaced them."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    spec_file = here / "spec.yaml"
    spec_file.write_text("data_dir: reldata\n")
    members_root = here / "reldata" / cluster.name
    try:
        _cli_in(cluster, here, *_up_args(cluster, 3, spec_file))
        assert cluster.paths.load_spec().data_dir == here / "reldata"
        members = sorted(p.name for p in members_root.iterdir() if not p.name.startswith("."))
        assert members == [f"qk-{n}" for n in range(3)]

        seen_here = json.loads(_cli_in(cluster, here, "status", cluster.name, "-o", "json").stdout)
        seen_elsewhere = json.loads(
            _cli_in(cluster, elsewhere, "status", cluster.name, "-o", "json").stdout
        )
        assert seen_elsewhere["step"]["kind"] == "Done", seen_elsewhere["step"]
        assert seen_elsewhere["phase"] == "Ready"
        assert cluster.pids(seen_elsewhere) == cluster.pids(seen_here)
        assert all(m["healthy"] and m["pid"] for m in seen_elsewhere["members"])
        assert not (elsewhere / "reldata").exists()

        # A keeper started from yet another folder (the test's own) finds the same members.
        cluster.kill_keeper()
        cluster.spawn_keeper()
        assert Path.cwd() != here
        settled = cluster.wait_ready(3)
        assert cluster.pids(settled) == cluster.pids(seen_here)
    finally:
        _cli_in(cluster, elsewhere, "down", cluster.name, check=False)
        for pid_file in members_root.glob("*/pid"):  # in case `down` failed: stop by PID
            with contextlib.suppress(ValueError, OSError):
                pid = int(pid_file.read_text())
                end_process(pid, cluster.started_in(pid_file.parent), 0)
