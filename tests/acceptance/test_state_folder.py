"""Folders that were not ours (issue 9.4a) and a full state disk (issue 9.5), on real etcd."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest

from quorumkeeper.runtimes.local.state import OWNER_MARKER
from tests.acceptance.harness import LocalClusterUnderTest, Writer
from tests.polling import loopback_subnet, wait_until

pytestmark = pytest.mark.acceptance


@dataclass
class _ClusterWithDataDir(LocalClusterUnderTest):
    """A cluster whose member data lives under spec `data_dir`, outside the state folder."""

    data_dir: Path = field(default_factory=Path)

    @property
    def members_root(self) -> Path:
        return self.data_dir / self.name

    def write_spec_file(self, path: Path, **local: object) -> Path:
        path.write_text(json.dumps({"data_dir": str(self.data_dir), "local": local}))
        return path

    def member_pid_files(self) -> list[Path]:
        return [*super().member_pid_files(), *sorted(self.members_root.glob("*/pid"))]

    def listed(self) -> dict[str, Any]:
        rows = json.loads(self.cli("list", "-o", "json").stdout)
        row: dict[str, Any] = next(r for r in rows if r["name"] == self.name)
        return row


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_up_refuses_a_folder_it_did_not_create_and_purge_deletes_only_its_own(
    tmp_path: Path,
) -> None:
    cluster = _ClusterWithDataDir(
        store="etcd",
        name="qk",
        subnet=loopback_subnet(170),
        state_dir=tmp_path / "state",
        data_dir=tmp_path / "data",
    )
    try:
        users_folder = cluster.members_root
        users_folder.mkdir(parents=True)
        (users_folder / "notes.txt").write_text("the user's")
        spec_file = cluster.write_spec_file(tmp_path / "spec.json", keep_removed_data=True)
        result = cluster.cli(
            "up",
            cluster.name,
            "--subnet",
            cluster.subnet,
            "--spec-file",
            str(spec_file),
            check=False,
        )
        message = " ".join(result.stderr.split())
        assert result.returncode == 2, message
        assert f"data_dir: {cluster.data_dir} holds {users_folder}" in message
        assert "notes.txt" in message and "fix: point data_dir at a folder without" in message
        assert not cluster.paths.root.exists()
        assert [p.name for p in users_folder.iterdir()] == ["notes.txt"]

        # The fix given, applied: a data_dir without an entry of that name.
        cluster.data_dir = tmp_path / "data-2"
        spec_file = cluster.write_spec_file(tmp_path / "spec.json", keep_removed_data=True)
        cluster.up(3, "--spec-file", str(spec_file))
        cluster.wait_ready(3)
        assert (cluster.members_root / OWNER_MARKER).is_file()
        assert (cluster.paths.root / OWNER_MARKER).is_file()
        cluster.scale(2)
        pids = cluster.pids(cluster.wait_ready(2))
        archive = cluster.members_root / ".removed"
        wait_until(lambda: list(archive.glob("qk-2-*")), 30, "qk-2's data archived")

        planted = {
            cluster.members_root / "notes.txt": "next to the member folders",
            cluster.members_root / "qk-backup" / "dump.db": "a folder named like a member",
            archive / "old.tar": "in the archive folder",
            cluster.paths.root / "notes.txt": "in the state folder",
        }
        for path, text in planted.items():
            path.parent.mkdir(exist_ok=True)
            path.write_text(text)
        result = cluster.cli("down", cluster.name, "--purge")
        assert "kept what quorumkeeper did not create" in result.stderr
    finally:
        cluster.destroy()
    assert all(_gone(pid) for pid in pids.values())
    for path, text in planted.items():
        assert path.read_text() == text
    assert sorted(p.name for p in cluster.members_root.iterdir()) == [
        ".removed",
        "notes.txt",
        "qk-backup",
    ]
    assert [p.name for p in archive.iterdir()] == ["old.tar"]
    assert [p.name for p in cluster.paths.root.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("store", ["etcd", "zookeeper"])
def test_purge_of_an_untouched_cluster_leaves_no_folder(tmp_path: Path, store: str) -> None:
    """Every file either store's cluster writes is known to purge (ZooKeeper: its superuser
    password, zoo.cfg and dynamic configs), so nothing of a purged cluster is left."""
    cluster = _ClusterWithDataDir(
        store=store,
        name="qk",
        subnet=loopback_subnet(171),
        state_dir=tmp_path / "state",
        data_dir=tmp_path / "data",
    )
    try:
        cluster.up(1, "--spec-file", str(cluster.write_spec_file(tmp_path / "spec.json")))
        cluster.wait_ready(1)
        cluster.cli("down", cluster.name, "--purge")
    finally:
        cluster.destroy()
    assert not cluster.paths.root.exists() and not cluster.members_root.exists()
    assert cluster.data_dir.is_dir(), "the user's data_dir itself stays"
    empty = cluster.cli("list")
    assert "no clusters in" in empty.stderr and "quorumkeeper up NAME" in empty.stderr


@pytest.fixture
def small_state_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of this test's own, unmounted afterwards whatever happened."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount_point = tmp_path / "state"
    mount_point.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "qk-test-state", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def _fill(folder: Path) -> Path:
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as error:
            assert error.errno == errno.ENOSPC, error
    return filler


def test_full_state_disk_is_visible_and_the_cluster_recovers(
    tmp_path: Path, small_state_disk: Path
) -> None:
    cluster = _ClusterWithDataDir(
        store="etcd",
        name="qk",
        subnet=loopback_subnet(172),
        state_dir=small_state_disk,
        data_dir=tmp_path / "data",  # etcd preallocates 64 MB of WAL per member: not on 4 MiB
    )
    try:
        cluster.up(3, "--spec-file", str(cluster.write_spec_file(tmp_path / "spec.json")))
        victim = cluster.member(cluster.wait_ready(3), "follower")
        with Writer(cluster) as writer:
            filler = _fill(small_state_disk)
            os.kill(victim["pid"], signal.SIGKILL)

            def restarted_while_full() -> dict[str, Any] | None:
                status = cluster.status()
                member = next(m for m in status["members"] if m["name"] == victim["name"])
                healthy = member["healthy"] and member["pid"] not in (None, victim["pid"])
                return status if healthy else None

            status = wait_until(restarted_while_full, 60, f"{victim['name']} restarted")
            disk = next(d for d in status["disks"] if d["path"] == str(cluster.paths.root))
            assert disk["full"] and disk["free_bytes"] < 65536 and disk["holds"] == ["state"]
            assert any("status.json" in blocked for blocked in disk["blocked"])
            assert status["phase"] == "Degraded"
            assert any(f"disk full at {cluster.paths.root}" in p for p in status["problems"])

            row = wait_until(lambda: (r := cluster.listed())["stale"] and r, 30, "list: stale")
            assert row["phase"] is None and row["state_disk_full"]
            wide = {**cluster.env, "COLUMNS": "200"}  # one table row per line
            table = subprocess.run(
                [sys.executable, "-m", "quorumkeeper", "list"],
                env=wide,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert "stale: Ready" in table and "(state disk full)" in table

            refused = cluster.cli("scale", cluster.name, "5", check=False)
            assert refused.returncode == 2
            assert "No space left on device" in " ".join(refused.stderr.split())
            assert cluster.paths.load_stored().spec.members == 3

            filler.unlink()
            wait_until(lambda: cluster.listed()["phase"] == "Ready", 30, "list: Ready again")
            cluster.wait_ready(3)
        writer.assert_nothing_lost()
        assert not list(cluster.paths.root.glob(".*.tmp")), "failed writes left temporaries"
        log = cluster.paths.keeper_log.read_text()
        assert "Traceback" not in log, log[-3000:]
        failures = re.findall(
            r"status.json not written.*'No space left on device.*' failed (\d+) times.*works again",
            log,
        )
        assert len(failures) == 1 and int(failures[0]) > 1, log[-3000:]
    finally:
        cluster.destroy()


def test_status_and_down_need_no_binaries_and_start_names_the_install(
    cluster: LocalClusterUnderTest, tmp_path: Path
) -> None:
    """Observing and stopping members needs no store binary: with an empty cache `status` and
    `down` work, and only `start` is refused, naming the command that installs the store."""
    cluster.up(3)
    pids = [member["pid"] for member in cluster.wait_ready(3)["members"]]
    empty = {**cluster.env, "QUORUMKEEPER_CACHE_DIR": str(tmp_path / "empty-cache")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "quorumkeeper", *args]
        return subprocess.run(command, env=empty, capture_output=True, text=True, timeout=120)

    status = run("status", cluster.name, "-o", "json")
    assert status.returncode == 0, status.stderr
    members = json.loads(status.stdout)["members"]
    assert sorted(m["pid"] for m in members) == sorted(pids)
    assert all(m["healthy"] for m in members)
    down = run("down", cluster.name)
    assert down.returncode == 0, down.stderr
    wait_until(lambda: not any(map(psutil.pid_exists, pids)), 30, "members stopped")
    listed = json.loads(run("list", "-o", "json").stdout)
    assert [r["phase"] for r in listed if r["name"] == cluster.name] == ["Stopped"], listed
    start = run("start", cluster.name)
    assert start.returncode == 2, start.stderr
    assert "quorumkeeper install" in start.stderr and "Traceback" not in start.stderr
    assert not any(
        m["pid"] for m in json.loads(run("status", cluster.name, "-o", "json").stdout)["members"]
    )
