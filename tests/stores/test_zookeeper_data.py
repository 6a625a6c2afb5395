"""`ZookeeperLauncher.data_position` and `unusable_data` against snapshots and transaction logs
written by real ZooKeeper servers, checked against what ZooKeeper itself reports and loads."""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumkeeper import versions
from quorumkeeper.model import DataPosition, Endpoint, Peer
from quorumkeeper.runtimes.local.processes import wait_for_exit
from quorumkeeper.stores.zookeeper.ensemble import CLIENT_PORT
from quorumkeeper.stores.zookeeper.words import server_state
from tests.polling import loopback_subnet, wait_until
from tests.stores.files import (
    folder_bytes,
    log_since,
    log_size,
    median_ms,
    overwrite_middle,
    written_bytes,
)
from tests.zookeeper.conftest import TEST_SETTINGS, Ensemble

KEYS = 1000
VALUE = "v" * 200
LOADED = re.compile(r"Snapshot loaded in \d+ ms, highest zxid is 0x([0-9a-f]+)")
"""`ZKDatabase.loadDataBase` logs this once the database is loaded, before any election."""


@pytest.fixture
def ensemble(tmp_path: Path) -> Iterator[Ensemble]:
    made = Ensemble(
        tmp_path / "zk", loopback_subnet(151), TEST_SETTINGS, versions.ZOOKEEPER_VERSION
    )
    yield made
    made.destroy()


def position(ensemble: Ensemble, member: Endpoint) -> DataPosition:
    found = ensemble.launcher.data_position(ensemble.runtime.data_dir(member))
    assert found is not None
    return found


def version_2(ensemble: Ensemble, member: Endpoint, *, logs: bool) -> Path:
    settings = TEST_SETTINGS
    folder = settings.data_log_dir if logs else settings.data_dir
    return ensemble.runtime.data_dir(member) / folder / "version-2"


def settled_zxids(ensemble: Ensemble, members: list[Endpoint]) -> Iterator[int | None]:
    """Yields, poll after poll, the zxid every member reports in `srvr` once all agree and it
    did not move since the previous poll; None until then."""
    previous = None
    while True:
        states = [server_state(m.address, 1.0, tls=ensemble.words_tls) for m in members]
        zxids = {state.zxid if state is not None and state.serving else None for state in states}
        now = zxids.pop() if len(zxids) == 1 else None
        yield now if now is not None and now == previous else None
        previous = now


def kill(ensemble: Ensemble, *members: Endpoint) -> None:
    """SIGKILL at once: nothing is written on the way down."""
    pids = [ensemble.pid(member) for member in members]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        assert wait_for_exit(pid, 10)


def start_alone(ensemble: Ensemble, member: Endpoint) -> tuple[int, int]:
    """Start a member that has data with its own files; returns its PID and where its log
    stood before, so the caller reads only what this start printed."""
    before = log_size(ensemble.runtime.log_path(member))
    return ensemble.start(member, [Peer(member, None)]), before


def loaded_zxid(ensemble: Ensemble, member: Endpoint, before: int) -> int:
    def loaded() -> int | None:
        found = LOADED.search(log_since(ensemble.runtime.log_path(member), before))
        return int(found[1], 16) if found else None

    return wait_until(loaded, 60, f"{member.name} loaded its database")


def failed_start_log(ensemble: Ensemble, member: Endpoint, pid: int, before: int) -> str:
    assert wait_for_exit(pid, 60), f"{member.name} kept running"
    return log_since(ensemble.runtime.log_path(member), before)


def test_positions_match_zookeeper_and_damage_is_loaded_as_zookeeper_loads_it(
    ensemble: Ensemble,
) -> None:
    zero, one, two = (ensemble.endpoint(n) for n in range(3))
    first = ensemble.bootstrap()
    ensemble.join(first, one)
    ensemble.join(first, two)
    first.close()
    writer = ensemble.store([zero, one, two])
    for n in range(KEYS):
        writer.write_probe(f"key-{n}", VALUE)
    writer.close()  # its session's close is a transaction too: before the zxids are read

    # 1. Intact data: each member's files reach exactly the zxid it reports in `srvr`.
    polls = settled_zxids(ensemble, [zero, one, two])
    zxid = wait_until(lambda: next(polls), 30, "members agree on a settled zxid")
    kill(ensemble, zero, one, two)
    for member in (zero, one, two):
        found = position(ensemble, member)
        assert found == DataPosition(zxid >> 32, zxid & 0xFFFFFFFF, "")
        assert (found.label, found.damage, found.loads) == (f"zxid 0x{zxid:x}", None, True)
        logs = version_2(ensemble, member, logs=True)
        newest = max(logs.glob("log.*"), key=lambda p: int(p.name.split(".")[1], 16))
        took, cpu = median_ms(lambda: position(ensemble, member))  # noqa: B023 - called here
        print(
            f"\n{member.name}: data_position {took:.1f} ms wall, {cpu:.1f} ms CPU (medians of 5);"
            f" snapshots {folder_bytes(version_2(ensemble, member, logs=False)) / 1024:.0f} KiB,"
            f" logs {folder_bytes(logs) / 2**20:.1f} MiB on disk, newest"
            f" {written_bytes(newest) / 1024:.0f} KiB written; zxid 0x{zxid:x}"
        )
        assert cpu < 50

    # A clean start loads exactly that, and its log shows no unusable data.
    pid, before = start_alone(ensemble, zero)
    assert loaded_zxid(ensemble, zero, before) == zxid
    clean = log_since(ensemble.runtime.log_path(zero), before)
    assert ensemble.launcher.unusable_data(clean) is None
    ensemble.stop(zero)

    # 2. Damage: random bytes over the middle of the newest log's written part. ZooKeeper loads
    # up to the first record that fails (or refuses to load at all); the reader says the same.
    logs = version_2(ensemble, one, logs=True)
    newest = max(logs.glob("log.*"), key=lambda p: int(p.name.split(".")[1], 16))
    seed = time.time_ns()
    offset = overwrite_middle(newest, 8 * 1024, seed)
    damaged = position(ensemble, one)
    intact = DataPosition(zxid >> 32, zxid & 0xFFFFFFFF, "")
    assert damaged < intact, (seed, offset, damaged)
    assert damaged.damage is not None and newest.name in damaged.damage
    print(f"\n{one.name} damaged at byte {offset} of {newest.name}: {damaged}")
    pid, before = start_alone(ensemble, one)
    if damaged.loads:  # the usual case: "Last transaction was partial", the log ends there
        assert loaded_zxid(ensemble, one, before) == (damaged.term << 32) | damaged.index
        assert "Last transaction was partial" in log_since(ensemble.runtime.log_path(one), before)
        ensemble.stop(one)
    else:  # the damage began on a record's checksum or length: ZooKeeper refuses to load
        failure = failed_start_log(ensemble, one, pid, before)
        assert ensemble.launcher.unusable_data(failure) is not None, failure[-3000:]

    # 3a. Every snapshot deleted, the logs kept: ZooKeeper refuses to start.
    for snapshot in version_2(ensemble, two, logs=False).glob("snapshot.*"):
        snapshot.unlink()
    refused = position(ensemble, two)
    assert not refused.loads and refused.damage is not None
    assert "No snapshot found, but there are log entries" in refused.damage
    pid, before = start_alone(ensemble, two)
    line = ensemble.launcher.unusable_data(failed_start_log(ensemble, two, pid, before))
    assert line is not None and "No snapshot found, but there are log entries" in line

    # 3b. An epoch file older than the data (a restored backup of the files, say).
    current_epoch = version_2(ensemble, zero, logs=False) / "currentEpoch"
    kept = current_epoch.read_text()
    current_epoch.write_text("0")
    stale = position(ensemble, zero)
    assert not stale.loads and stale.damage is not None and "current epoch" in stale.damage
    pid, before = start_alone(ensemble, zero)
    line = ensemble.launcher.unusable_data(failed_start_log(ensemble, zero, pid, before))
    assert line is not None and "is older than the last zxid" in line
    current_epoch.write_text(kept)
    assert position(ensemble, zero) == intact

    # 3c. A port held by another program is not unusable data.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past its TIME_WAITs
        holder.bind((zero.address, CLIENT_PORT))
        holder.listen()
        pid, before = start_alone(ensemble, zero)
        port_failure = failed_start_log(ensemble, zero, pid, before)
    assert "Address already in use" in port_failure
    assert ensemble.launcher.unusable_data(port_failure) is None

    # 2b. One byte changed inside a transaction, its framing intact: ZooKeeper's checksum
    # catches it and it refuses to load (it does not stop the log there), as the reader says.
    logs = version_2(ensemble, zero, logs=True)
    newest = max(logs.glob("log.*"), key=lambda p: int(p.name.split(".")[1], 16))
    starts = record_starts(newest)
    middle = starts[len(starts) // 2] + 12 + 4  # inside the transaction's header
    with open(newest, "r+b") as handle:
        handle.seek(middle)
        byte = handle.read(1)[0]
        handle.seek(middle)
        handle.write(bytes([byte ^ 0xFF]))
    flipped = position(ensemble, zero)
    assert not flipped.loads and "CRC check failed" in str(flipped.damage) and flipped < intact
    pid, before = start_alone(ensemble, zero)
    line = ensemble.launcher.unusable_data(failed_start_log(ensemble, zero, pid, before))
    assert line is not None and "CRC check failed" in line


def record_starts(log: Path) -> list[int]:
    """Where each record of a transaction log starts, from its length fields alone."""
    data, offset = log.read_bytes(), 16
    starts: list[int] = []
    while offset + 12 <= len(data):
        length = int.from_bytes(data[offset + 8 : offset + 12], "big")
        if length == 0:
            return starts
        starts.append(offset)
        offset += 12 + length + 1
    return starts
