"""The one interface every coordination store implements.

The planner and reconciler only ever speak to this class, so a store module's job is to map
these operations onto its own protocol while keeping the guarantees written here.
"""

from __future__ import annotations

import abc
import mmap
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from quorumkeeper.errors import ExitCode, QuorumkeeperError


class Role(StrEnum):
    LEADER = "leader"
    FOLLOWER = "follower"
    LEARNER = "learner"
    OBSERVER = "observer"


@dataclass(frozen=True)
class Endpoint:
    """Where one member listens: its own address with the store's standard ports."""

    name: str
    address: str

    @property
    def ordinal(self) -> int:
        return int(self.name.rsplit("-", 1)[1])


@dataclass(frozen=True)
class Member:
    """One entry of the committed membership, as the store reports it.

    `started` is false for a member that was added but has never joined (etcd lists such
    members without a name); `healthy` means it answered within the probe timeout and knows
    a leader. `applied_index` and `data_bytes` come from the member itself when it answered:
    how far it has applied the log, and the size of its database.

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
    """

    transfers_leadership: bool = True


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


def unusable_data_line(log_text: str, errors: Sequence[tuple[str, str]]) -> str | None:
    """The line of `log_text` that shows one of `errors` ((regular expression, upstream source)
    pairs), trying them in order: a store's list puts the specific causes before the generic
    wrapper lines that precede them in its log, so the line returned says why. None when no
    pattern matches."""
    lines = log_text.splitlines()
    for pattern, _source in errors:
        compiled = re.compile(pattern)
        for line in lines:
            if compiled.search(line):
                return line.strip()
    return None


NONZERO_LOOKAHEAD = 1 << 16


def data_after(view: mmap.mmap, offset: int, size: int) -> bool:
    """Whether anything but zeros follows `offset` within `NONZERO_LOOKAHEAD` bytes: a zero
    length there hides records (a torn write, or damage) instead of ending the written part.
    Counted in C, so the preallocated tail costs some tens of microseconds."""
    end = min(size, offset + NONZERO_LOOKAHEAD)
    return view[offset:end].count(0) != end - offset


class StoreError(QuorumkeeperError):
    """The store refused or failed an operation; `retryable` says whether trying again helps
    (exit status 1 then, else 2: the store refused and nothing changed)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.exit_code = ExitCode.NOT_DONE if retryable else ExitCode.REFUSED


class StoreUnavailable(StoreError):
    """No member could answer with the authority of a quorum."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class NotCaughtUp(StoreError):
    """A learner is not yet in sync with the leader; promote again later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class AddsRefused(StoreError):
    """The store refuses to add a member for now (etcd's reconfiguration grace); it says so in
    `CoordinationStore.adds_refused` until it may accept again, and the planner waits on that."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class CoordinationStore(abc.ABC):
    """Membership operations on one running cluster.

    Every operation is addressed to the endpoints given at construction (the current members)
    and finds a member able to answer by itself. Mutations need a quorum and are safe to retry:
    each one either succeeds, raises `StoreError` having changed nothing, or leaves a result that
    the next `members()` call shows.
    """

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store object is not used afterwards."""

    @abc.abstractmethod
    def members(self) -> list[Member]:
        """The committed membership with roles and health.

        Read through the consensus protocol (linearizable), so it never shows a change that
        could still be lost. Raises `StoreUnavailable` when no quorum answers.
        """

    def adds_refused(self) -> str | None:
        """Why the store refuses to add a member right now, as learned from its own recent
        refusal; None when it has not refused one lately. Stores without such a rule never
        refuse."""
        return None

    @abc.abstractmethod
    def add_learner(self, endpoint: Endpoint) -> Member:
        """Add `endpoint` as a non-voting member with a fresh identity, before its process
        starts; it counts toward no quorum until promoted. `members()` lists it from then on,
        with `started` false until it answers.

        Not idempotent by itself: callers check `members()` first, which the planner does.
        """

    @abc.abstractmethod
    def promote(self, member: Member) -> None:
        """Make a caught-up learner a voter. Raises `NotCaughtUp` while it lags behind."""

    @abc.abstractmethod
    def remove(self, member: Member) -> None:
        """Remove `member` from the membership. Removing a member that is down is allowed."""

    @abc.abstractmethod
    def transfer_leadership(self, leader: Member, successor: Member) -> None:
        """Hand leadership from `leader` to the voter `successor`, so a removal or restart of the
        old leader costs no election timeout."""

    @abc.abstractmethod
    def write_probe(self, key: str, value: str) -> None:
        """Write one key with a short timeout; used by health checks and benchmarks."""

    @abc.abstractmethod
    def read(self, key: str) -> str | None:
        """Read one key linearizably; None when absent."""


class MemberLauncher(abc.ABC):
    """How a store's member process is started: the argv and what it needs on disk first."""

    @abc.abstractmethod
    def argv(
        self,
        endpoint: Endpoint,
        data_dir: Path,
        peers: list[Peer],
        *,
        bootstrap: bool,
    ) -> list[str]:
        """The command that starts `endpoint` with `peers` (itself included) as its membership.

        `bootstrap` starts a brand-new cluster of this one member; otherwise the member joins a
        membership that already lists it, under the identity its entry in `peers` gives.
        """

    @abc.abstractmethod
    def process_marker(self, data_dir: Path) -> str:
        """An argv element only this member's process carries, so a reused PID is never
        mistaken for it."""

    @abc.abstractmethod
    def has_data(self, data_dir: Path) -> bool:
        """Whether `data_dir` holds this member's state (false after a wipe or before a join)."""

    @abc.abstractmethod
    def data_position(self, data_dir: Path) -> DataPosition | None:
        """How far the data in `data_dir` reaches, as the store would load it; None when there
        is no data (whenever `has_data` is false).

        Never raises on damaged or unexpected data: what can't be read is the position's
        `damage`. Reads only the store's logs and their headers, so it is fast enough to run for
        every stopped member before a cold start.
        """

    @abc.abstractmethod
    def unusable_data(self, log_text: str) -> str | None:
        """The line of `log_text` (what a member printed since its last start) that shows one of
        the store's known errors for data it can't use, else None. A port in use or a bad flag
        is not one: restarting elsewhere or fixing the setting helps, moving data aside does not.
        """
