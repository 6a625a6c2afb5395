"""The vocabulary every layer shares: members, their places and their slots.

Pure data and pure functions only (no I/O imports, enforced by the layer contracts in
`pyproject.toml`), so the planner that speaks it stays a pure function and runs unchanged for
every runtime and store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Protocol


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    LEARNER = "learner"
    OBSERVER = "observer"


@dataclass(frozen=True)
class Endpoint:
    """Where member `ordinal` of a cluster lives, as its runtime's `Placement` gives it.

    `address` is the host its peers and the store's membership know it by (a loopback address
    locally, a pod's DNS name on Kubernetes), served on the store's standard ports;
    `client_address` the host clients reach it at, when that differs. Both are used as given and
    never parsed: the ordinal is a field, and an address is mapped back to its endpoint only by
    `Placement.locate`.
    """

    name: str
    ordinal: int
    address: str
    client_address: str | None = None

    @property
    def client_host(self) -> str:
        return self.client_address or self.address


@dataclass(frozen=True)
class Member:
    """One entry of the committed membership, as the store reports it.

    `started` is false for a member that was added but has never joined (etcd lists such
    members without a name); `healthy` means it answered within the probe timeout and knows
    a leader. `applied_index`, `data_bytes` and `version` come from the member itself when it
    answered: how far it has applied the log, the size of its database, the release it runs.

    Health, role and alarms are separate facts. `role` is the member's real role whenever it
    answers, alarms or not; `Role.LEADER` only for the leader the quorum follows. A member that
    claims leadership without a quorum behind it (a leader cut off and not yet stepped down) is
    `stale_leader`, shown as a follower and not healthy. `alarms` are the store's own alarms on
    this member (etcd's `NOSPACE`, `CORRUPT`): a member with an alarm that answers and knows a
    leader stays healthy, because restarting or replacing it fixes nothing; the alarm makes the
    cluster Degraded instead.
    """

    id: str
    address: str
    role: Role
    healthy: bool
    started: bool
    applied_index: int | None = None
    data_bytes: int | None = None
    alarms: tuple[str, ...] = ()
    stale_leader: bool = False
    version: str | None = None
    """The store release the member's process runs, as it reports it ("3.7.3"); None when it
    does not answer. It differs from the spec's while a rollout is under way."""

    @property
    def voter(self) -> bool:
        return self.role in (Role.LEADER, Role.FOLLOWER)


@dataclass(frozen=True)
class Peer:
    """A member as a starting process must know it: where it listens and its identity in the
    store. `member_id` is None only for the first member of a new cluster, which has none yet."""

    endpoint: Endpoint
    member_id: str | None


@dataclass(frozen=True)
class JoinRules:
    """How a store lets members in and out; the planner orders its steps by these.

    `transfers_leadership`: etcd can hand leadership over before its leader is removed;
    ZooKeeper can't, so its leader is removed last and a short election is the price.
    `removes_highest_ordinal_only`: the runtime can only take away its highest ordinal (a
    StatefulSet shrinks from the top), so a scale-down removes the highest-ordinal member
    whatever its health or role, rather than the unhealthy one or the leader last.
    `refills_emptied_voter`: a voter restarted under its own identity with its database moved
    away is sent the leader's snapshot (ZooKeeper: the Administrator's Guide's way to rebuild a
    server), so one whose data does not load can rejoin while no quorum answers. etcd panics on
    a member that kept its ID but lost its raft log ("tocommit(N) is out of range
    [lastIndex(0)]"), so it is only replaced, under a new ID, with a quorum; a runtime that can't
    move data aside inside a member's volume turns it off.
    """

    transfers_leadership: bool = True
    removes_highest_ordinal_only: bool = False
    refills_emptied_voter: bool = False


@dataclass(frozen=True, order=True)
class DataPosition:
    """How far a member's data on disk reaches, read the way the store reads it when it loads:
    only records that pass the store's own checksums count.

    Ordered as (term, index), the order both stores elect by: raft's (last term, last index) for
    etcd, the zxid's (epoch, counter) for ZooKeeper. `label` is the position in the store's own
    words ("term 3, index 1642", "zxid 0x300000642"). `damage` names the first record that failed
    a check (file, byte offset, what failed), None when everything read is intact. `loads` is
    False when the store refuses to start on this data (etcd stops at a WAL CRC mismatch), True
    when it starts from `(term, index)` (ZooKeeper truncates its log at the damage).
    """

    term: int
    index: int
    label: str = field(compare=False)
    damage: str | None = field(default=None, compare=False)
    loads: bool = field(default=True, compare=False)


class Placement(Protocol):
    """Where each member of a cluster lives; given by the runtime, asked by the planner.

    Locally member N listens on its own loopback address; on Kubernetes it is pod N of a
    StatefulSet, reached by its DNS name under the headless peer Service.
    """

    def endpoint(self, ordinal: int) -> Endpoint:
        """Member `ordinal`'s endpoint; the same every time it is asked."""
        ...

    def locate(self, address: str) -> Endpoint | None:
        """The endpoint whose `address` is `address`, or None when no ordinal is placed there
        (a member this cluster did not place)."""
        ...

    def named(self, name: str) -> Endpoint | None:
        """The endpoint called `name`, or None when no ordinal is placed under that name."""
        ...


MAX_ORDINALS = 254
"""Ordinals a placement can place: beyond any membership the spec allows (at most 9 members,
one more while a change is in flight), within a /24 for the local runtime's addresses."""


class OrdinalPlacement:
    """A placement that builds each endpoint from its ordinal and finds one by its address in
    a table of the ordinals it can place, never by parsing the address."""

    def endpoint(self, ordinal: int) -> Endpoint:
        raise NotImplementedError

    def locate(self, address: str) -> Endpoint | None:
        return self._placed.get(address)

    def named(self, name: str) -> Endpoint | None:
        return self._placed.get(name)

    @cached_property
    def _placed(self) -> dict[str, Endpoint]:
        """Every placeable endpoint by address and by name, built once."""
        endpoints = [self.endpoint(ordinal) for ordinal in range(MAX_ORDINALS)]
        return {e.address: e for e in endpoints} | {e.name: e for e in endpoints}


MAX_FAILED_STARTS = 5
"""Starts in a row that end without the member staying up, after which its data counts as lost
(when the others keep a healthy quorum): a start that keeps failing for any other reason, a
setting say, is then at least reported by a replacement that fails the same way."""


@dataclass(frozen=True)
class Slot:
    """A member's place in the runtime: its process and its data, whatever the store says.

    The runtime adds what it knows of the process's recent starts, so the planner stays a pure
    function: `position` is how far its data reaches (read from disk while it was stopped),
    `booting` a process started moments ago that does not answer yet, `starts` how often the
    runtime started it, `failed_starts` the starts in a row that ended without it staying up,
    `held_back` the seconds its next start must still wait (exponential backoff), `last_error`
    the last error line its process printed, `unusable_data` that line when it is one of the
    store's known unusable-data errors, `blocked_by` a cause outside its data, such as another
    program holding its port, `blocked_reason` that cause as one CamelCase word for a
    condition's reason (None where the runtime has none), `pid` its process id where the runtime
    has one, and `config` the configuration fingerprint its process was last started with
    (`Runtime.configure`), None when the runtime does not know it (a process started before
    fingerprints were recorded).
    """

    endpoint: Endpoint
    running: bool
    has_data: bool
    position: DataPosition | None = None
    booting: bool = False
    starts: int = 0
    failed_starts: int = 0
    held_back: float = 0.0
    last_error: str | None = None
    unusable_data: str | None = None
    blocked_by: str | None = None
    blocked_reason: str | None = None
    pid: int | None = None
    config: str | None = None

    @property
    def name(self) -> str:
        return self.endpoint.name

    @property
    def may_start(self) -> bool:
        """Neither backoff nor a held port keeps it from starting now."""
        return self.held_back <= 0 and self.blocked_by is None

    @property
    def data_unloadable(self) -> bool:
        """The store refuses its data: read so from disk (`DataPosition.loads`), or said so by
        a failed start (`unusable_data`). Starting it again can't help."""
        return self.unusable_data is not None or (
            self.position is not None and not self.position.loads
        )

    @property
    def data_lost(self) -> bool:
        """Its data can't start a member: a known unusable-data error, or too many failed starts
        with nothing outside the data to blame."""
        return self.blocked_by is None and (
            self.unusable_data is not None or self.failed_starts >= MAX_FAILED_STARTS
        )

    def why_down(self) -> str:
        """What keeps it from running, for step reasons and status."""
        if self.blocked_by:
            return self.blocked_by
        if not self.failed_starts and self.position is not None and not self.position.loads:
            return f"its data does not load: {self.position.damage}"
        cause = self.unusable_data or self.last_error or "no error printed"
        return f"{self.failed_starts} failed start(s), last: {cause}"
