"""etcd through its v3 JSON gateway (grpc-gateway), which covers all membership work.

The gateway is used instead of a Python etcd client because none of the maintained ones exposes
learner add and promote. IDs travel as decimal strings and keys and values as base64.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores import etcd_wal
from quorumkeeper.stores.base import (
    CoordinationStore,
    DataPosition,
    Endpoint,
    Member,
    MemberLauncher,
    NotCaughtUp,
    Peer,
    Role,
    StoreError,
    StoreUnavailable,
    unusable_data_line,
)

CLIENT_PORT = 2379
PEER_PORT = 2380

_RETRYABLE_HTTP = {408, 429, 500, 502, 503, 504}


def client_url(address: str) -> str:
    return f"http://{address}:{CLIENT_PORT}"


def peer_url(address: str) -> str:
    return f"http://{address}:{PEER_PORT}"


def answers(address: str, timeout: float = 0.5) -> bool:
    """Whether the member's server is up, quorum or not: etcd serves HTTP only once it has
    loaded its data, and `/health` answers at once without a leader ("RAFT NO LEADER")."""
    try:
        httpx.get(f"{client_url(address)}/health", timeout=timeout)
    except httpx.HTTPError:
        return False
    return True


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdStore(CoordinationStore):
    """Membership of one etcd cluster, asked of whichever member answers first."""

    def __init__(
        self, endpoints: list[Endpoint], *, timeout: float = 2.0, probe_timeout: float = 0.5
    ) -> None:
        super().__init__(endpoints)
        self._http = httpx.Client(timeout=timeout)
        self._probe = httpx.Client(timeout=probe_timeout)

    def close(self) -> None:
        self._http.close()
        self._probe.close()

    def _post_to(
        self, address: str, path: str, body: dict[str, Any], *, probe: bool = False
    ) -> dict[str, Any]:
        client = self._probe if probe else self._http
        response = client.post(f"{client_url(address)}{path}", json=body)
        payload: dict[str, Any] = response.json()
        if response.status_code != 200:
            message = str(payload.get("message", response.text))
            if "in sync with leader" in message:
                raise NotCaughtUp(message)
            raise StoreError(
                message,
                retryable=response.status_code in _RETRYABLE_HTTP or "not leader" in message,
            )
        return payload

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first member that can serve the call; learners can't, so skip them."""
        failures = []
        for endpoint in self.endpoints:
            try:
                return self._post_to(endpoint.address, path, body)
            except httpx.HTTPError as error:
                failures.append(f"{endpoint.name}: {error.__class__.__name__}")
            except StoreError as error:
                if not error.retryable and "learner" not in str(error):
                    raise
                failures.append(f"{endpoint.name}: {error}")
        raise StoreUnavailable(f"no etcd member answered {path}: {'; '.join(failures)}")

    def _statuses(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        for endpoint in self.endpoints:
            try:
                status = self._post_to(endpoint.address, "/v3/maintenance/status", {}, probe=True)
                yield endpoint.address, status
            except (httpx.HTTPError, StoreError, ValueError):
                yield endpoint.address, None

    def members(self) -> list[Member]:
        listed = self._post("/v3/cluster/member/list", {"linearizable": True})["members"]
        statuses = dict(self._statuses())
        leaders = {s["leader"] for s in statuses.values() if s is not None and s.get("leader")}
        members = []
        for entry in listed:
            address = httpx.URL(entry["peerURLs"][0]).host
            status = statuses.get(address)
            healthy = (
                status is not None and status.get("leader", "0") != "0" and not status.get("errors")
            )
            if entry.get("isLearner"):
                role = Role.LEARNER
            elif entry["ID"] in leaders and healthy:
                role = Role.LEADER
            else:
                role = Role.FOLLOWER
            members.append(
                Member(
                    id=entry["ID"],
                    address=address,
                    role=role,
                    healthy=healthy,
                    started=bool(entry.get("name")),
                    applied_index=int(status["raftAppliedIndex"]) if status else None,
                    data_bytes=int(status["dbSize"]) if status else None,
                )
            )
        return members

    def add_learner(self, endpoint: Endpoint) -> Member:
        body = {"peerURLs": [peer_url(endpoint.address)], "isLearner": True}
        added = self._post("/v3/cluster/member/add", body)["member"]
        return Member(
            id=added["ID"],
            address=endpoint.address,
            role=Role.LEARNER,
            healthy=False,
            started=False,
        )

    def promote(self, member: Member) -> None:
        self._post("/v3/cluster/member/promote", {"ID": member.id})

    def remove(self, member: Member) -> None:
        self._post("/v3/cluster/member/remove", {"ID": member.id})

    def transfer_leadership(self, leader: Member, successor: Member) -> None:
        self._post_to(
            leader.address, "/v3/maintenance/transfer-leadership", {"targetID": successor.id}
        )

    def write_probe(self, key: str, value: str) -> None:
        self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def read(self, key: str) -> str | None:
        kvs = self._post("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None


UNUSABLE_DATA_ERRORS: tuple[tuple[str, str], ...] = (
    # (regular expression, upstream source in etcd v3.7.3 / go.etcd.io/raft v3.7), causes first
    (r"walpb: crc mismatch", "server/storage/wal/walpb/record.go ErrCRCMismatch"),
    (
        r"proto: cannot parse invalid wire-format data",
        "google.golang.org/protobuf errDecode, from storage/wal/decoder.go decodeRecord",
    ),
    (
        r"tocommit\(\d+\) is out of range \[lastIndex\(\d+\)\]",
        "raft log.go raftLog.commitTo (a wiped member restarted under its old identity)",
    ),
    (r"state\.commit \d+ is out of range", "raft raft.go raft.loadState"),
    (r"wal: snapshot not found", "server/storage/wal/wal.go ErrSnapshotNotFound"),
    (r"wal: snapshot mismatch", "server/storage/wal/wal.go ErrSnapshotMismatch"),
    (r"wal: slice bounds out of range", "server/storage/wal/wal.go ErrSliceOutOfRange"),
    (r"wal: conflicting metadata found", "server/storage/wal/wal.go ErrMetadataConflict"),
    (r"wal: file not found", "server/storage/wal/wal.go selectWALFiles, ErrFileNotFound"),
    (r"wal: file sequence numbers", "server/storage/wal/wal.go selectWALFiles"),
    (r"failed to find database snapshot file", "server/storage/backend.go OpenSnapshotBackend"),
    (r"does not match with snapshot", "server/etcdserver/bootstrap.go recoverSnapshot"),
    (r"failed to recover v3 backend from snapshot", "server/etcdserver/bootstrap.go"),
    (r"failed to open database", "server/storage/backend/backend.go newBackend (bbolt)"),
    (r"failed to read WAL, cannot be repaired", "server/etcdserver/bootstrap.go"),
    (r"failed to repair WAL", "server/etcdserver/bootstrap.go openWALFromSnapshot"),
)
"""etcd's errors for data it can't start from: restarting never helps. Not here: "address
already in use" (a port another program holds) and bad flags, which moving data can't fix."""


class EtcdLauncher(MemberLauncher):
    """The etcd command line of one member of the local runtime."""

    def __init__(self, binary: Path, settings: EtcdSettings, cluster_token: str) -> None:
        self.binary = binary
        self.settings = settings
        self.cluster_token = cluster_token

    def argv(
        self,
        endpoint: Endpoint,
        data_dir: Path,
        peers: list[Peer],
        *,
        bootstrap: bool,
    ) -> list[str]:
        """etcd names peers, not member IDs, in `--initial-cluster`; it learns IDs itself."""
        settings = self.settings
        initial = ",".join(
            f"{peer.endpoint.name}={peer_url(peer.endpoint.address)}" for peer in peers
        )
        return [
            str(self.binary),
            f"--name={endpoint.name}",
            self.process_marker(data_dir),
            f"--listen-client-urls={client_url(endpoint.address)}",
            f"--advertise-client-urls={client_url(endpoint.address)}",
            f"--listen-peer-urls={peer_url(endpoint.address)}",
            f"--initial-advertise-peer-urls={peer_url(endpoint.address)}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-state={'new' if bootstrap else 'existing'}",
            f"--initial-cluster-token={self.cluster_token}",
            f"--heartbeat-interval={settings.heartbeat_interval_ms}",
            f"--election-timeout={settings.election_timeout_ms}",
            f"--snapshot-count={settings.snapshot_count}",
            f"--quota-backend-bytes={settings.quota_backend_bytes}",
            f"--auto-compaction-mode={settings.auto_compaction_mode}",
            f"--auto-compaction-retention={settings.auto_compaction_retention}",
            "--log-level=info",
        ]

    def process_marker(self, data_dir: Path) -> str:
        return f"--data-dir={data_dir}"

    def has_data(self, data_dir: Path) -> bool:
        return (data_dir / "member" / "wal").is_dir()

    def data_position(self, data_dir: Path) -> DataPosition | None:
        """The member's last raft log position from its WAL (`etcd_wal.read_position`); a
        WAL that can't be read at all counts as data etcd can't load."""
        if not self.has_data(data_dir):
            return None
        wal_dir = data_dir / "member" / "wal"
        try:
            return etcd_wal.read_position(wal_dir)
        except OSError as error:
            return DataPosition(0, 0, "unreadable", damage=f"{wal_dir}: {error}", loads=False)

    def unusable_data(self, log_text: str) -> str | None:
        return unusable_data_line(log_text, UNUSABLE_DATA_ERRORS)
