"""`EtcdLauncher.data_position` and `unusable_data` against WAL files written by real etcd
processes, checked against what etcd itself reports and does with them."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from quorumkeeper import versions
from quorumkeeper.model import DataPosition, Endpoint, Peer, Role
from quorumkeeper.runtimes.local.launchers import EtcdLauncher
from quorumkeeper.runtimes.local.processes import wait_for_exit
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.etcd.client import CLIENT_PORT, EtcdStore, client_url
from tests.local_runtime import spawner
from tests.polling import loopback_subnet, wait_until
from tests.stores.files import (
    folder_bytes,
    log_since,
    log_size,
    median_ms,
    overwrite_middle,
    written_bytes,
)

KEYS = 600
VALUE = "v" * 100


class EtcdTrio:
    """Three etcd members started from a static member list, each stopped by its PID."""

    def __init__(self, root: Path, subnet: str) -> None:
        settings = EtcdSettings(snapshot_count=100)  # WAL snapshot records past index 0
        self.launcher = EtcdLauncher(versions.ETCD_VERSION, settings, "qk-data-test")
        self.runtime = spawner(root / "members", self.launcher, "etcd", subnet)
        self.members = [self.runtime.placement.endpoint(n) for n in range(3)]
        self.stores: list[EtcdStore] = []

    def data(self, member: Endpoint) -> Path:
        return self.runtime.data_dir(member)

    def start(self, member: Endpoint, *, new: bool = False) -> tuple[int, int]:
        """Start `member`; returns its PID and where its log stood before, so the caller reads
        only what this start printed."""
        peers = [Peer(endpoint, None) for endpoint in self.members]
        before = log_size(self.runtime.log_path(member))
        argv = self.launcher.argv(member, self.data(member), peers, bootstrap=new)
        return self.runtime.spawn(member, argv), before

    def kill(self, *members: Endpoint) -> None:
        """SIGKILL at once: nothing is written on the way down (a SIGTERMed leader would hand
        leadership over, a new term with one more entry)."""
        pids = [self.runtime.pid(member) for member in members]
        for pid in pids:
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
        for pid in pids:
            assert pid is not None and wait_for_exit(pid, 10)

    def store(self, members: list[Endpoint]) -> EtcdStore:
        store = EtcdStore(members)
        self.stores.append(store)
        return store

    def healthy(self, members: list[Endpoint]) -> bool:
        try:
            listed = self.store(members).members()
        except Exception:  # a starting member refuses calls; the caller polls
            return False
        up = {m.address for m in listed if m.healthy}
        return up >= {m.address for m in members}

    def failed_start_log(self, member: Endpoint, pid: int, before: int) -> str:
        assert wait_for_exit(pid, 60), f"{member.name} kept running"
        return log_since(self.runtime.log_path(member), before)

    def destroy(self) -> None:
        for store in self.stores:
            store.close()
        for member in self.members:
            self.runtime.stop(member, grace=5)


def status(address: str) -> tuple[int, int, int] | None:
    """(raftTerm, raftIndex, raftAppliedIndex) from the member itself."""
    try:
        answer = httpx.post(f"{client_url(address)}/v3/maintenance/status", json={}, timeout=1)
        fields = answer.json()
        return int(fields["raftTerm"]), int(fields["raftIndex"]), int(fields["raftAppliedIndex"])
    except (httpx.HTTPError, KeyError, ValueError):
        return None


def settled(members: list[Endpoint]) -> Iterator[dict[str, tuple[int, int]] | None]:
    """Yields, poll after poll, the members' (term, index) once every member has applied all it
    committed, all agree, and nothing moved since the previous poll; None until then."""
    previous = None
    while True:
        statuses = [status(member.address) for member in members]
        applied = [s for s in statuses if s is not None and s[1] == s[2]]
        now = (
            {m.name: (s[0], s[1]) for m, s in zip(members, applied, strict=True)}
            if len(applied) == len(members)
            else None
        )
        agreed = now is not None and len(set(now.values())) == 1
        yield now if agreed and now == previous else None
        previous = now


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[EtcdTrio]:
    made = EtcdTrio(tmp_path, loopback_subnet(150))
    yield made
    made.destroy()


def test_positions_match_etcd_and_damage_is_seen_as_etcd_sees_it(trio: EtcdTrio) -> None:
    zero = trio.members[0]
    for member in trio.members:
        trio.start(member, new=True)
    wait_until(lambda: trio.healthy(trio.members), 60, "3 healthy etcd members")
    writer = trio.store(trio.members)
    for n in range(KEYS):
        writer.write_probe(f"key-{n}", VALUE)

    # 1. Intact data: each member's WAL reaches exactly the (term, index) it reports itself.
    polls = settled(trio.members)
    reported = wait_until(lambda: next(polls), 30, "members agree on a settled raft index")
    trio.kill(*trio.members)
    for member in trio.members:
        term, index = reported[member.name]
        position = trio.launcher.data_position(trio.data(member))
        assert position == DataPosition(term, index, "")
        assert (position.label, position.damage, position.loads) == (
            f"term {term}, index {index}",
            None,
            True,
        )
        wal = trio.data(member) / "member" / "wal"
        newest = sorted(wal.glob("*.wal"))[-1]
        data = trio.data(member)
        took, cpu = median_ms(lambda: trio.launcher.data_position(data))  # noqa: B023 - called here
        print(
            f"\n{member.name}: data_position {took:.1f} ms wall, {cpu:.1f} ms CPU (medians of 5);"
            f" WAL {folder_bytes(wal) / 2**20:.1f} MiB on disk, "
            f"{written_bytes(newest) / 1024:.0f} KiB written; {index} entries"
        )
        assert cpu < 50

    # A clean restart's log shows no unusable data.
    restarted = {member: trio.start(member) for member in trio.members}
    wait_until(lambda: trio.healthy(trio.members), 60, "the 3 members healthy again")
    for member, (_, before) in restarted.items():
        assert trio.launcher.unusable_data(log_since(trio.runtime.log_path(member), before)) is None
    writer.write_probe("after-restart", "1")

    # 3a. A follower wiped while the leader knows how far it had got, restarted under its old
    # identity: raft panics on the commit index the leader sends it. (A new leader would not
    # know, and would send it the log from the start.) The others keep their roles below.
    leader = next(m for m in writer.members() if m.role is Role.LEADER)
    two = next(m for m in trio.members if m.address != leader.address and m != zero)
    one = next(m for m in trio.members if m not in (zero, two))
    trio.kill(two)
    shutil.move(trio.data(two), trio.data(two).with_name("wiped"))
    pid, before = trio.start(two)
    wiped_log = trio.failed_start_log(two, pid, before)
    line = trio.launcher.unusable_data(wiped_log)
    assert line is not None and "tocommit(" in line and "is out of range [lastIndex(0)]" in line

    # 2. Damage: random bytes over the middle of a stopped member's newest WAL file; the member
    # is then started alone, so nothing but etcd's own reading changes its files.
    trio.kill(zero, one)
    intact = trio.launcher.data_position(trio.data(one))
    assert intact is not None and intact.damage is None
    newest = sorted((trio.data(one) / "member" / "wal").glob("*.wal"))[-1]
    seed = time.time_ns()
    offset = overwrite_middle(newest, 16 * 1024, seed)
    damaged = trio.launcher.data_position(trio.data(one))
    assert damaged is not None and damaged < intact, (seed, offset, damaged, intact)
    assert damaged.damage is not None and newest.name in damaged.damage
    print(f"\n{one.name} damaged at byte {offset} of {newest.name}: {damaged}")
    pid, before = trio.start(one)
    if damaged.loads:  # the damage began on a length field: etcd truncates the file and starts
        wait_until(
            lambda: "bootstrap successfully" in log_since(trio.runtime.log_path(one), before),
            60,
            f"{one.name} started after its repair",
        )
        assert "repaired WAL" in log_since(trio.runtime.log_path(one), before)
        trio.kill(one)
        repaired = trio.launcher.data_position(trio.data(one))
        assert repaired == damaged and repaired is not None and repaired.damage is None
    else:  # a CRC mismatch, the usual case: etcd refuses to start, every time
        failure = trio.failed_start_log(one, pid, before)
        line = trio.launcher.unusable_data(failure)
        assert line is not None, failure[-3000:]
        assert "bootstrap failed" in line or "cannot be repaired" in line, line

    # 3b. A port held by another program is not unusable data.
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past its TIME_WAITs
        holder.bind((zero.address, CLIENT_PORT))
        holder.listen()
        pid, before = trio.start(zero)
        port_failure = trio.failed_start_log(zero, pid, before)
    assert "address already in use" in port_failure
    assert trio.launcher.unusable_data(port_failure) is None

    # 2b. A record cut short in the last file (here: its length field overwritten with a size
    # past the end): etcd truncates the file there and starts, as the reader predicts.
    intact = trio.launcher.data_position(trio.data(zero))
    newest = sorted((trio.data(zero) / "member" / "wal").glob("*.wal"))[-1]
    starts = frame_starts(newest)
    with open(newest, "r+b") as handle:
        handle.seek(starts[len(starts) // 2])
        handle.write((1 << 40).to_bytes(8, "little"))
    cut = trio.launcher.data_position(trio.data(zero))
    assert intact is not None and cut is not None and cut < intact and cut.loads
    assert cut.damage is not None and "etcd truncates the file there" in cut.damage
    pid, before = trio.start(zero)
    started = wait_until(
        lambda: "bootstrap successfully" in log_since(trio.runtime.log_path(zero), before),
        60,
        f"{zero.name} started after its repair",
    )
    assert started and "repaired WAL" in log_since(trio.runtime.log_path(zero), before)
    trio.kill(zero)
    repaired = trio.launcher.data_position(trio.data(zero))
    assert repaired == cut and repaired is not None and repaired.damage is None

    # 3c. The database gone, the WAL kept: etcd can't rebuild it from past its last snapshot.
    snap = trio.data(zero) / "member" / "snap"
    shutil.move(snap / "db", snap.with_name("db-moved-aside"))
    missing = trio.launcher.data_position(trio.data(zero))
    assert missing is not None and not missing.loads and "database snapshot" in str(missing.damage)
    pid, before = trio.start(zero)
    line = trio.launcher.unusable_data(trio.failed_start_log(zero, pid, before))
    assert line is not None and "failed to find database snapshot file" in line


def frame_starts(wal: Path) -> list[int]:
    """Where each frame of a WAL file starts, from the length fields alone."""
    data, offset = wal.read_bytes(), 0
    starts: list[int] = []
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset : offset + 8], "little", signed=True)
        if length == 0:
            return starts
        starts.append(offset)
        padding = (length >> 56) & 0x7 if length < 0 else 0
        offset += 8 + (length & ((1 << 56) - 1)) + padding
    return starts


def test_a_kept_client_lists_members_again_once_anything_was_committed(trio: EtcdTrio) -> None:
    """A client reads the member list again only when the leader's commit index moved or a
    member does not answer, so a member that died shows at its next call, and so does a
    change made by another client."""
    for member in trio.members:
        trio.start(member, new=True)
    wait_until(lambda: trio.healthy(trio.members), 60, "3 healthy etcd members")
    watcher = trio.store(trio.members)
    for _ in range(3):  # the first call keeps the list, the next ones reuse it
        assert all(m.healthy for m in watcher.members())

    # A restarted member answers the kept client's first status call: the kept-alive
    # connection to its old process fails at once and the call is made again on a new one.
    restarted = trio.members[0]
    trio.kill(restarted)
    trio.start(restarted)
    wait_until(lambda: trio.healthy(trio.members), 60, "the restarted member healthy")
    assert watcher.member_status(restarted.address) is not None

    other = trio.store(trio.members)
    follower = next(m for m in other.members() if m.role is Role.FOLLOWER)
    trio.kill(next(e for e in trio.members if e.address == follower.address))
    dead = next(m for m in watcher.members() if m.address == follower.address)
    assert not dead.healthy and dead.applied_index is None
    other.remove(follower)
    assert follower.address not in {m.address for m in watcher.members()}
