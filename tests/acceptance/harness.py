"""Drives real clusters through the real CLI and keeper, the way an operator would.

`LocalClusterUnderTest` runs `quorumkeeper` commands in a subprocess against a private state
dir; `Writer` writes through the store interface during a scenario and remembers which writes
were acknowledged, so every fault test can check that none of them was lost.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import itertools
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import yaml
from cryptography import x509

from quorumkeeper.certificates import TlsFiles
from quorumkeeper.model import Endpoint
from quorumkeeper.planner import Desired
from quorumkeeper.runtimes.local import keeper
from quorumkeeper.runtimes.local.authority import KEEPER, LocalAuthority
from quorumkeeper.runtimes.local.cluster import LocalCluster, SpecFile
from quorumkeeper.runtimes.local.placement import LoopbackPlacement
from quorumkeeper.runtimes.local.processes import end_process, wait_for_exit
from quorumkeeper.runtimes.local.state import ClusterPaths
from quorumkeeper.spec import MAX_MEMBERS
from quorumkeeper.stores.base import CoordinationStore, StoreError, StoreUnavailable
from quorumkeeper.stores.etcd.client import ROOT, Connections, EtcdStore, Tokens
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from tests.polling import wait_until


def zookeeper_tls(paths: ClusterPaths) -> TlsFiles | None:
    """The keeper's client certificate of the ZooKeeper cluster in `paths`, as the keeper
    connects; None when its spec has `tls: false`, or when it has no spec (the benchmark's
    seed method runs plain-text members by hand)."""
    if not paths.spec_file.is_file():
        return None
    spec = SpecFile(paths).current()
    return LocalAuthority(paths.tls_dir, spec.name).client(KEEPER) if spec.tls else None


def zookeeper_words_tls(paths: ClusterPaths) -> ssl.SSLContext | None:
    """What the four-letter words of the cluster in `paths` are asked with (None: plain)."""
    tls = zookeeper_tls(paths)
    return tls.client_context() if tls else None


def zookeeper_client(
    paths: ClusterPaths, endpoints: list[Endpoint], timeout: float
) -> ZookeeperStore:
    """A superuser client of the ZooKeeper cluster in `paths`, over TLS when it runs TLS."""
    password = (paths.root / "superuser").read_text().strip()
    return ZookeeperStore(endpoints, password=password, tls=zookeeper_tls(paths), timeout=timeout)


@dataclass
class LocalClusterUnderTest:
    store: str
    name: str
    subnet: str
    state_dir: Path
    commands: list[str] = field(default_factory=list)

    @property
    def paths(self) -> ClusterPaths:
        return ClusterPaths(self.state_dir, self.name)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "QUORUMKEEPER_STATE_DIR": str(self.state_dir)}

    def cli(
        self, *args: str, check: bool = True, timeout: float = 180
    ) -> subprocess.CompletedProcess[str]:
        self.commands.append(" ".join(args))
        result = subprocess.run(
            [sys.executable, "-m", "quorumkeeper", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"quorumkeeper {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}\nkeeper log:\n{self.keeper_log_tail()}"
            )
        return result

    def up(self, members: int, *extra: str) -> None:
        self.cli(
            "up",
            self.name,
            "--store",
            self.store,
            "--members",
            str(members),
            "--subnet",
            self.subnet,
            "--timeout",
            "120",
            *extra,
        )

    def scale(self, members: int, *extra: str) -> subprocess.CompletedProcess[str]:
        return self.cli("scale", self.name, str(members), "--timeout", "120", *extra)

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.cli("status", self.name, "-o", "json").stdout)
        return document

    def keeper_log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.paths.keeper_log.read_text().splitlines()[-lines:])
        except OSError:
            return "(no keeper log)"

    def desired(self, members: int) -> Desired:
        return Desired(members=members, placement=LoopbackPlacement(self.name, self.subnet))

    def all_endpoints(self) -> list[Endpoint]:
        desired = self.desired(MAX_MEMBERS)
        return [desired.endpoint(n) for n in range(MAX_MEMBERS)]

    def client(self, timeout: float) -> CoordinationStore:
        """A store client over every address the cluster may use, for writers and checks."""
        if self.store == "etcd":
            tls, password = etcd_access(self.paths)
            return EtcdStore(
                self.all_endpoints(),
                tls=tls,
                root_password=password,
                timeout=timeout,
                probe_timeout=timeout,
            )
        return zookeeper_client(self.paths, self.all_endpoints(), timeout)

    def member(self, status: dict[str, Any], role: str) -> dict[str, Any]:
        return next(m for m in status["members"] if m["role"] == role)

    def named(self, status: dict[str, Any], name: str) -> dict[str, Any]:
        return next(m for m in status["members"] if m["name"] == name)

    def freeze_keeper(self) -> int:
        """SIGSTOP the keeper, so a test can set up a fault between two of its passes."""
        pid = self.paths.keeper_pid()
        assert pid, "keeper is not running"
        os.kill(pid, signal.SIGSTOP)
        return pid

    def pids(self, status: dict[str, Any]) -> dict[str, int]:
        return {m["name"]: m["pid"] for m in status["members"]}

    def wait_ready(self, members: int, timeout: float = 90) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            status = self.status()
            ok = (
                status["phase"] == "Ready"
                and len(status["members"]) == members
                and all(
                    m["healthy"] and m["role"] in ("leader", "follower") for m in status["members"]
                )
            )
            return status if ok else None

        result: dict[str, Any] = wait_until(
            ready, timeout, f"{self.name} Ready with {members} members\n{self.keeper_log_tail()}"
        )
        return result

    def member_data(self, name: str) -> Path:
        return self.state_dir / self.name / "members" / name / "data"

    def member_log(self, name: str) -> str:
        return (self.state_dir / self.name / "members" / name / "member.log").read_text(
            errors="replace"
        )

    def newest_log(self, name: str) -> Path:
        """The newest transaction log (ZooKeeper) or WAL file (etcd) of a member."""
        data = self.member_data(name)
        if self.store == "etcd":
            return newest(data / "member" / "wal", "*.wal")
        return newest(data / "data" / "log" / "version-2", "log.*")

    def make_unusable(self, name: str) -> tuple[str, ...]:
        """Damage a stopped member's data the way its store can't start on, and return what the
        store may then print: etcd refuses a WAL record whose CRC or encoding fails (random bytes
        that hit a length field instead make etcd truncate the file, which is not this case: such
        damage is undone and tried elsewhere); ZooKeeper refuses txn logs without a snapshot."""
        data = self.member_data(name)
        if self.store == "etcd":
            launcher = LocalCluster(self.paths).runtime.launcher
            wal = self.newest_log(name)
            original = wal.read_bytes()
            middle = len(original.rstrip(b"\0")) // 2
            for step in range(40):  # one flipped byte; one that hits a length field is tried again
                damaged = bytearray(original)
                damaged[middle + 37 * step] ^= 0xFF
                wal.write_bytes(damaged)
                position = launcher.data_position(data)
                if position is not None and not position.loads:
                    return ("walpb: crc mismatch", "proto: cannot parse invalid wire-format data")
            raise AssertionError("no flipped byte of the WAL gave a record etcd refuses")
        for snapshot in (data / "data" / "version-2").glob("snapshot.*"):
            snapshot.unlink()
        return ("No snapshot found, but there are log entries",)

    def kill_keeper(self) -> None:
        pid = self.paths.keeper_pid()
        assert pid, "keeper is not running"
        os.kill(pid, signal.SIGKILL)
        assert wait_for_exit(pid, 10)

    def spawn_keeper(self, **env: str) -> None:
        keeper.spawn(self.paths, env={**self.env, **env})
        wait_until(self.paths.keeper_pid, 10, "keeper holds its lock")

    def member_pid_files(self) -> list[Path]:
        return sorted((self.state_dir / self.name / "members").glob("*/pid"))

    def member_pids_on_disk(self) -> list[int]:
        pids = []
        for pid_file in self.member_pid_files():
            try:
                pids.append(int(pid_file.read_text()))
            except ValueError:
                continue
        return pids

    def destroy(self) -> None:
        """Stop everything this cluster started, whatever state the test left it in: by PID,
        each process checked to be this cluster's first (a pid file may name a member that
        ended minutes ago, and its PID another program's process since)."""
        keeper_pid = self.paths.keeper_pid()
        if keeper_pid:
            end_process(keeper_pid, keeper.runs_for(self.paths), 0)
        for pid_file in self.member_pid_files():
            with contextlib.suppress(ValueError, OSError):
                end_process(int(pid_file.read_text()), self.started_in(pid_file.parent), 0)

    @staticmethod
    def started_in(member_dir: Path) -> Callable[[list[str]], bool]:
        """Whether a command line is that of a member whose folder is `member_dir`: every
        launcher's process marker names the member's data folder."""
        data = str(member_dir / "data")
        return lambda argv: any(data in argument for argument in argv)


@dataclass
class PidWatch:
    """Polls the members' pid files 20 times a second while a rollout runs: the order in which
    members got a new process, and the most members down at one moment."""

    cluster: LocalClusterUnderTest
    before: dict[str, int]
    changed: list[str] = field(default_factory=list)
    most_down: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _poll(self) -> None:
        folder = self.cluster.state_dir / self.cluster.name / "members"
        while not self._stop.wait(0.05):
            down = 0
            for name, old in self.before.items():
                pid = _pid(folder / name / "pid")
                if pid is None or not psutil.pid_exists(pid):
                    down += 1
                elif pid != old and name not in self.changed:
                    self.changed.append(name)
            self.most_down = max(self.most_down, down)

    @contextlib.contextmanager
    def running(self) -> Iterator[PidWatch]:
        thread = threading.Thread(target=self._poll, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=10)


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return None


def spec_file(cluster: LocalClusterUnderTest, fields: dict[str, Any]) -> Path:
    """A spec file for `apply` holding `fields`, beside the cluster's state dir."""
    path = cluster.state_dir.parent / "change.yaml"
    path.write_text(yaml.safe_dump(fields))
    return path


LOST_CHECK_SECONDS = 60.0


class Writer:
    """Writes `w/<n>` every `interval` seconds until stopped, remembering what was acknowledged.

    A write waits at most `timeout` seconds per member before the next member is tried, the way
    a client with short timeouts and retries rides out a leader change.
    """

    def __init__(
        self, cluster: LocalClusterUnderTest, interval: float = 0.01, timeout: float = 1.0
    ) -> None:
        self.cluster = cluster
        self.interval = interval
        self.timeout = timeout
        self.acknowledged: list[str] = []
        self.failed = 0
        self.failures: list[str] = []
        """Why each failed write failed, for a test's message."""
        self.ack_times: list[float] = []
        self.issue_times: list[float] = []
        """When each acknowledged write was sent, aligned with `ack_times`."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Writer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        client = self.cluster.client(timeout=self.timeout)
        try:
            sequence = 0
            while not self._stop.is_set():
                key = f"w/{sequence:06d}"
                issued = time.monotonic()
                try:
                    client.write_probe(key, str(sequence))
                except (StoreError, httpx.HTTPError) as error:
                    self.failed += 1
                    self.failures.append(f"{time.monotonic():.1f} {error}")
                else:
                    self.acknowledged.append(key)
                    self.issue_times.append(issued)
                    self.ack_times.append(time.monotonic())
                sequence += 1
                self._stop.wait(self.interval)
        finally:
            client.close()

    def first_ack_of_write_sent_after(self, moment: float) -> float | None:
        """When the first write sent after `moment` was acknowledged: writes already in flight
        at `moment` say nothing about whether the store serves again."""
        pairs = zip(self.issue_times, self.ack_times, strict=True)
        return next((acked for issued, acked in pairs if issued > moment), None)

    @property
    def longest_gap(self) -> float:
        times = self.ack_times
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def lost(self) -> list[str]:
        """The keys of acknowledged writes that the cluster no longer holds with their value.
        Read once a quorum answers: a ZooKeeper ensemble may still be electing a leader right
        after a change, which is asked again until `LOST_CHECK_SECONDS`, not taken as a loss."""
        assert self.acknowledged, "the writer never got a write acknowledged"

        def read_all() -> tuple[list[str]] | None:
            client = self.cluster.client(timeout=5.0)  # connects on its first request
            try:
                return ([k for k in self.acknowledged if client.read(k) != str(int(k[2:]))],)
            except StoreUnavailable:
                return None
            finally:
                client.close()

        return wait_until(read_all, LOST_CHECK_SECONDS, "a quorum answers the final reads")[0]

    def assert_nothing_lost(self) -> None:
        missing = self.lost()
        assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def newest(folder: Path, pattern: str) -> Path:
    """The file matching `pattern` in `folder` that starts furthest: store logs are named by
    their first index or zxid in hex, unpadded in ZooKeeper's case, so longer names are later."""
    files = sorted(folder.glob(pattern), key=lambda path: (len(path.name), path.name))
    assert files, f"no {pattern} in {folder}"
    return files[-1]


@contextlib.contextmanager
def holding_port(address: str, port: int) -> Iterator[socket.socket]:
    """Listen on `address:port` as another program would, until the block ends."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)

        def bound() -> bool:
            try:
                listener.bind((address, port))
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    raise
                return False
            return True

        wait_until(bound, 15, f"{address}:{port} is free to hold (a killed member's socket)")
        listener.listen()
        yield listener


SMALL_QUOTA = """etcd:
  quota_backend_bytes: 16777216
  auto_compaction_retention: "0"
"""
"""A spec file from a real report: a 16 MiB quota with automatic compaction off."""

FILLER = "big/"
"""Where `fill_until_nospace` puts its 512 KiB values."""


def fill_until_nospace(cluster: LocalClusterUnderTest) -> int:
    """Put 512 KiB values under `FILLER` until etcd refuses with "database space exceeded";
    returns how many it accepted."""
    store = cluster.client(timeout=5.0)
    value = "x" * 512 * 1024
    try:
        for count in range(1000):
            try:
                store.write_probe(f"{FILLER}{count:04d}", value)
            except StoreError as error:
                assert "database space exceeded" in str(error), error
                return count
    finally:
        store.close()
    raise AssertionError("etcd accepted 500 MiB without raising NOSPACE")


def etcd_access(paths: ClusterPaths) -> tuple[TlsFiles | None, str | None]:
    """How a test connects to the local etcd cluster at `paths` as its keeper does: the
    keeper's client certificate (None for a `tls: false` cluster) and the root password (None
    for an `auth: false` one)."""
    tls = None
    if (paths.tls_dir / "ca.crt").is_file():
        tls = LocalAuthority(paths.tls_dir, paths.name).client(KEEPER)
    password_file = paths.root / "root-password"
    password = password_file.read_text().strip() if password_file.is_file() else None
    return tls, password


def etcd_post(
    paths: ClusterPaths, address: str, path: str, body: dict[str, Any], timeout: float = 10.0
) -> tuple[int, dict[str, Any]]:
    """POST `body` to `path` on the member at `address` of the local etcd cluster at `paths`,
    with its keeper's certificate and root token (`etcd_access`): (HTTP status, JSON answer)."""
    tls, password = etcd_access(paths)
    tokens = Tokens(ROOT, password) if password is not None else None
    connections = Connections(timeout, tls.client_context() if tls else None, tokens)
    try:
        status, answer = connections.post(address, path, json.dumps(body).encode())
    finally:
        connections.close()
    document: dict[str, Any] = json.loads(answer)
    return status, document


def delete_prefix(paths: ClusterPaths, address: str, prefix: str) -> int:
    """`etcdctl del --prefix` through the member on `address` of the cluster at `paths` (etcd
    serves deletes during NOSPACE); returns how many keys went."""
    end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    body = {"key": _base64(prefix), "range_end": _base64(end)}
    status, answer = etcd_post(paths, address, "/v3/kv/deleterange", body)
    assert status == 200, answer
    return int(answer.get("deleted", 0))


def _base64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def served_certificate(address: str, port: int, client: TlsFiles) -> x509.Certificate:
    """The certificate a member serves a new TLS connection on `address`:`port`, asked with
    `client`'s certificate and trust bundle (host names unchecked: only the certificate
    matters here)."""
    context = ssl.create_default_context(cafile=str(client.trust))
    context.load_cert_chain(client.certificate, client.key)
    context.check_hostname = False
    with (
        socket.create_connection((address, port), timeout=5) as raw,
        context.wrap_socket(raw) as wrapped,
    ):
        der = wrapped.getpeercert(binary_form=True)
    assert der is not None, f"{address}:{port} served no certificate"
    return x509.load_der_x509_certificate(der)
