"""`data_position` on real data cut short or overwritten anywhere: it never raises, never reads
further than the intact data, and leaves the files as they were.

Each store's data is written once per module by a real one-member cluster; every example then
damages one file in place and puts it back, so no example pays for copying a preallocated log.
"""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkeeper import versions
from quorumkeeper.model import DataPosition, Peer
from quorumkeeper.runtimes.local.launchers import EtcdLauncher, MemberLauncher
from quorumkeeper.runtimes.local.processes import wait_for_exit
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.etcd.client import EtcdStore
from tests.local_runtime import spawner
from tests.polling import loopback_subnet, wait_until
from tests.stores.files import written_bytes
from tests.zookeeper.conftest import TEST_SETTINGS, Ensemble


@dataclass
class WrittenData:
    """One stopped member's data and what `data_position` says of it intact."""

    launcher: MemberLauncher
    data_dir: Path
    files: list[Path]
    intact: DataPosition


def _kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    assert wait_for_exit(pid, 10)


@pytest.fixture(scope="module")
def etcd_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WrittenData]:
    root = tmp_path_factory.mktemp("etcd")
    launcher = EtcdLauncher(versions.ETCD_VERSION, EtcdSettings(), "qk-odd-data")
    runtime = spawner(root / "members", launcher, "etcd", loopback_subnet(152))
    member = runtime.placement.endpoint(0)
    data_dir = runtime.data_dir(member)
    pid = runtime.spawn(
        member, launcher.argv(member, data_dir, [Peer(member, None)], bootstrap=True)
    )
    try:
        store = EtcdStore([member])
        wait_until(lambda: _writes(store.write_probe), 60, "etcd takes writes")
        store.close()
    finally:
        _kill(pid)
    intact = launcher.data_position(data_dir)
    assert intact is not None and intact.damage is None and intact.index > 200
    files = sorted((data_dir / "member" / "wal").glob("*.wal"))
    yield WrittenData(launcher, data_dir, files, intact)


@pytest.fixture(scope="module")
def zookeeper_data(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WrittenData]:
    ensemble = Ensemble(
        tmp_path_factory.mktemp("zk"),
        loopback_subnet(153),
        TEST_SETTINGS,
        versions.ZOOKEEPER_VERSION,
    )
    member = ensemble.endpoint(0)
    try:
        store = ensemble.bootstrap()
        assert _writes(store.write_probe)
        store.close()
        _kill(ensemble.pid(member))
    finally:
        ensemble.destroy()
    launcher = ensemble.runtime.launcher
    data_dir = ensemble.runtime.data_dir(member)
    intact = launcher.data_position(data_dir)
    assert intact is not None and intact.damage is None and intact.index > 200
    files = sorted(
        p for p in data_dir.rglob("*") if p.name.startswith(("log.", "snapshot.")) and p.is_file()
    )
    yield WrittenData(launcher, data_dir, files, intact)


def _writes(write: Callable[[str, str], None]) -> bool:
    try:
        for n in range(300):
            write(f"key-{n}", "v" * 64)
    except Exception:  # not serving yet; the caller polls
        return False
    return True


damages = st.tuples(
    st.integers(min_value=0, max_value=10),  # which file (modulo their number)
    st.sampled_from(["truncate", "random", "zeros"]),
    st.floats(min_value=0, max_value=1),  # where, as a fraction of the written part
    st.integers(min_value=1, max_value=4096),  # how many bytes
    st.integers(min_value=0, max_value=2**32),  # seed of the random bytes
)


def _damaged_position(data: WrittenData, damage: tuple[int, str, float, int, int]) -> None:
    """Damage one file as `damage` says, read the position, and put the file back."""
    which, kind, where, size, seed = damage
    path = data.files[which % len(data.files)]
    original_size = path.stat().st_size
    written = written_bytes(path)
    offset = int(where * written)
    with open(path, "r+b") as handle:
        handle.seek(offset)
        saved = handle.read(written - offset if kind == "truncate" else size)
        if kind == "truncate":
            handle.truncate(offset)
        else:
            handle.seek(offset)
            handle.write(random.Random(seed).randbytes(size) if kind == "random" else bytes(size))
    try:
        position = data.launcher.data_position(data.data_dir)
    finally:
        with open(path, "r+b") as handle:
            handle.truncate(original_size)  # back to its length, the zero tail included
            handle.seek(offset)
            handle.write(saved)
    assert position is not None
    assert position <= data.intact, (path.name, damage, position)
    if kind != "truncate" and position.damage is None:  # overwritten bytes are always seen
        assert position == data.intact, (path.name, damage, position)


@settings(max_examples=60, deadline=None)
@given(damage=damages)
def test_etcd_wal_cut_or_overwritten_anywhere(
    etcd_data: WrittenData, damage: tuple[int, str, float, int, int]
) -> None:
    _damaged_position(etcd_data, damage)
    assert etcd_data.launcher.data_position(etcd_data.data_dir) == etcd_data.intact


@settings(max_examples=60, deadline=None)
@given(damage=damages)
def test_zookeeper_files_cut_or_overwritten_anywhere(
    zookeeper_data: WrittenData, damage: tuple[int, str, float, int, int]
) -> None:
    _damaged_position(zookeeper_data, damage)
    intact = zookeeper_data.launcher.data_position(zookeeper_data.data_dir)
    assert intact == zookeeper_data.intact


def test_no_data_is_no_position(tmp_path: Path) -> None:
    """A member folder before its first start, or after a wipe, has no position at all; a WAL
    folder without a WAL file is data etcd can't start from."""
    etcd = EtcdLauncher(versions.ETCD_VERSION, EtcdSettings(), "qk-odd-data")
    zookeeper = Ensemble(
        tmp_path / "zk", loopback_subnet(154), TEST_SETTINGS, versions.ZOOKEEPER_VERSION
    ).runtime.launcher
    for launcher in (etcd, zookeeper):
        assert launcher.data_position(tmp_path / "never-started") is None
    (tmp_path / "etcd" / "member" / "wal").mkdir(parents=True)
    empty_wal = etcd.data_position(tmp_path / "etcd")
    assert empty_wal is not None and not empty_wal.loads and "no WAL file" in str(empty_wal.damage)
    for folder in (TEST_SETTINGS.data_dir, TEST_SETTINGS.data_log_dir):
        (tmp_path / "zk-data" / folder / "version-2").mkdir(parents=True, exist_ok=True)
    assert zookeeper.data_position(tmp_path / "zk-data") == DataPosition(0, 0, "")


def test_positions_order_by_term_then_index() -> None:
    """The order both stores elect by: a later term wins over a longer log of an older one."""
    assert DataPosition(3, 1, "term 3, index 1") > DataPosition(2, 900, "term 2, index 900")
    assert DataPosition(2, 901, "a") > DataPosition(2, 900, "b", damage="x", loads=False)
    assert DataPosition(2, 900, "a") == DataPosition(2, 900, "b", damage="x", loads=False)
