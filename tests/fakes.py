"""In-memory fakes of a coordination store, a runtime, a desired-state source and a status sink,
for unit tests of the reconciler.

Fakes, not end-to-end proofs: they keep the guarantees `CoordinationStore` and `Runtime` write
down (one committed membership, learners that must catch up before promotion, no answer without
a quorum, data that is never deleted), so a test can drive the reconciler pass by pass and see
each action it takes. Whether the real stores and runtimes behave like this is proven by the
suites that run them (`tests/acceptance`, `tests/zookeeper`, `tests/stores`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field, replace

from quorumkeeper.model import Endpoint, JoinRules, Member, Peer, Placement, Role, Slot
from quorumkeeper.planner import quorum
from quorumkeeper.reconciler import Reconciler
from quorumkeeper.spec import ClusterSpec, Store
from quorumkeeper.status import ClusterStatus
from quorumkeeper.stores import Backend
from quorumkeeper.stores.base import (
    AddsRefused,
    CoordinationStore,
    NotCaughtUp,
    StoreError,
    StoreUnavailable,
)

# etcd's own refusals (api/v3rpc/rpctypes/error.go), which the fake store answers with.
MEMBER_NOT_FOUND = "etcdserver: member not found"
PEER_URL_EXISTS = "etcdserver: Peer URLs already exists"
MEMBER_NOT_LEARNER = "etcdserver: can only promote a learner member"
LEARNER_NOT_READY = "etcdserver: can only promote a learner member which is in sync with leader"
TOO_MANY_LEARNERS = "etcdserver: too many learner members in cluster"
NOT_LEADER = "etcdserver: not leader"


@dataclass
class _Entry:
    """One committed membership entry of the fake store."""

    id: str
    address: str
    voter: bool
    started: bool
    alarms: tuple[str, ...] = ()


class FakeStore(CoordinationStore):
    """An in-memory stand-in for a coordination store, not an end-to-end proof.

    Keeps one committed membership (ids, voters and learners, in join order) and which members'
    processes run (`up`, told by `FakeRuntime`). A member is healthy while its process runs and
    a quorum of voters runs; without that quorum every call raises `StoreUnavailable`, as it
    does while `available` is false. The leader is the first running voter, kept until it stops,
    is removed or hands over. `promote` raises `NotCaughtUp` until `mark_caught_up`; while
    `refusing_adds` names a reason, `add_learner` raises `AddsRefused` and from then on
    `adds_refused` reports it (as the etcd client does after its store refused an add);
    `refuse_next` is raised by the next mutation instead of changing anything. Every membership
    change that went through is appended to `changes` as (operation, address). Every member
    reports the applied index `applied` (0 by default) unless `lag` says how far behind it is.

    One object stands for the store and its clients: `connect` hands it out and counts, `close`
    counts and keeps the membership.
    """

    def __init__(self) -> None:
        super().__init__([])
        self.entries: dict[str, _Entry] = {}
        self.up: set[str] = set()
        self.leader: str | None = None
        self.caught_up: set[str] = set()
        self.available = True
        self.refusing_adds: str | None = None
        self.refuse_next: StoreError | None = None
        self.changes: list[tuple[str, str]] = []
        self.connects = 0
        self.closes = 0
        self.data: dict[str, str] = {}
        self.applied = 0
        self.lag: dict[str, int] = {}
        self.secured = 0
        """How many times `secure` was called."""
        self.releases: dict[str, str] = {}
        """The release each member reports it runs, by address (none reported when absent)."""
        self._refused_add: str | None = None
        self._next_id = 1

    # The store's clients.

    def connect(self, endpoints: list[Endpoint]) -> FakeStore:
        """`Backend.connect`: a client of this store on `endpoints`."""
        self.endpoints = endpoints
        self.connects += 1
        return self

    def close(self) -> None:
        self.closes += 1

    def secure(self) -> None:
        self.secured += 1

    # What the processes of the runtime do to the store.

    def process_started(self, address: str, *, bootstrap: bool) -> None:
        """The process at `address` runs: it bootstraps a one-member cluster or joins as the
        member listed there (a process no entry lists answers but counts for nothing)."""
        if bootstrap:
            if self.entries:
                raise AssertionError(f"{address} bootstraps a second cluster beside the first")
            self.enlist(address, voter=True, started=True)
        elif address in self.entries:
            self.entries[address].started = True
        self.up.add(address)
        self._elect()

    def process_stopped(self, address: str) -> None:
        self.up.discard(address)
        self._elect()

    # What a test does to the store.

    def enlist(self, address: str, *, voter: bool, started: bool) -> None:
        """Put a member at `address` in the membership, as if it had joined long ago."""
        self._add(address, voter=voter, started=started)
        self._elect()

    def mark_caught_up(self, address: str) -> None:
        """The learner at `address` has the leader's log: it may be promoted."""
        self.caught_up.add(address)

    def raise_alarm(self, address: str, alarm: str) -> None:
        self.entries[address].alarms = (*self.entries[address].alarms, alarm)

    def id_of(self, address: str) -> str:
        return self.entries[address].id

    # CoordinationStore.

    def members(self) -> list[Member]:
        self._need_quorum()
        return [
            Member(
                id=entry.id,
                address=entry.address,
                role=self._role(entry),
                healthy=entry.started and entry.address in self.up,
                started=entry.started,
                alarms=entry.alarms,
                applied_index=self.applied - self.lag.get(entry.address, 0),
                version=self.releases.get(entry.address),
            )
            for entry in self.entries.values()
        ]

    def adds_refused(self) -> str | None:
        return self._refused_add if self.refusing_adds else None

    def add_learner(self, endpoint: Endpoint) -> Member:
        self._may_change()
        if self.refusing_adds:
            self._refused_add = self.refusing_adds
            raise AddsRefused(self.refusing_adds)
        if endpoint.address in self.entries:
            raise StoreError(PEER_URL_EXISTS, retryable=False)
        if any(not entry.voter for entry in self.entries.values()):
            raise StoreError(TOO_MANY_LEARNERS, retryable=False)
        entry = self._add(endpoint.address, voter=False, started=False)
        self.changes.append(("add_learner", endpoint.address))
        return Member(entry.id, entry.address, Role.LEARNER, healthy=False, started=False)

    def promote(self, member: Member) -> None:
        self._may_change()
        entry = self._entry(member)
        if entry.voter:
            raise StoreError(MEMBER_NOT_LEARNER, retryable=False)
        if entry.address not in self.up or entry.address not in self.caught_up:
            raise NotCaughtUp(LEARNER_NOT_READY)
        entry.voter = True
        self.changes.append(("promote", entry.address))
        self._elect()

    def remove(self, member: Member) -> None:
        self._may_change()
        entry = self._entry(member)
        del self.entries[entry.address]
        self.caught_up.discard(entry.address)
        self.changes.append(("remove", entry.address))
        self._elect()

    def transfer_leadership(self, leader: Member, successor: Member) -> None:
        self._may_change()
        if leader.address != self.leader:
            raise StoreError(NOT_LEADER, retryable=True)
        if self._role(self._entry(successor)) is not Role.FOLLOWER:
            raise StoreError(f"{successor.address} is not a running voter", retryable=False)
        self.leader = successor.address
        self.changes.append(("transfer_leadership", successor.address))

    def write_probe(self, key: str, value: str) -> None:
        self._may_change()
        self.data[key] = value

    def read(self, key: str) -> str | None:
        self._need_quorum()
        return self.data.get(key)

    # Internals.

    def _add(self, address: str, *, voter: bool, started: bool) -> _Entry:
        entry = _Entry(f"{self._next_id:x}", address, voter, started)
        self._next_id += 1
        self.entries[address] = entry
        return entry

    def _entry(self, member: Member) -> _Entry:
        entry = self.entries.get(member.address)
        if entry is None or entry.id != member.id:
            raise StoreError(MEMBER_NOT_FOUND, retryable=False)
        return entry

    def _role(self, entry: _Entry) -> Role:
        if not entry.voter:
            return Role.LEARNER
        return Role.LEADER if entry.address == self.leader else Role.FOLLOWER

    def _running_voters(self) -> list[str]:
        return [e.address for e in self.entries.values() if e.voter and e.address in self.up]

    def _has_quorum(self) -> bool:
        voters = sum(1 for entry in self.entries.values() if entry.voter)
        return voters > 0 and len(self._running_voters()) >= quorum(voters)

    def _need_quorum(self) -> None:
        if not self.available or not self._has_quorum():
            raise StoreUnavailable("no quorum of voters answers")

    def _may_change(self) -> None:
        self._need_quorum()
        if self.refuse_next is not None:
            refusal, self.refuse_next = self.refuse_next, None
            raise refusal

    def _elect(self) -> None:
        """Keep a running voter as leader; elect the first running voter when the leader is
        gone, and none without a quorum."""
        running = self._running_voters()
        if not self._has_quorum():
            self.leader = None
        elif self.leader not in running:
            self.leader = running[0]


@dataclass(frozen=True)
class Action:
    """One call the reconciler made on the fake runtime."""

    kind: str
    member: str
    peers: tuple[Peer, ...] = ()
    bootstrap: bool = False


class FakeRuntime:
    """An in-memory stand-in for a runtime, not an end-to-end proof.

    Holds a slot per endpoint (`slots`); `start`, `stop`, `set_aside`, `refill` and `discard`
    change them, append an `Action` to `actions` and tell the linked `store` which processes
    run. Every start
    succeeds at once: the member runs and has data. `set_aside` keeps what it moved in
    `set_aside_data` (never deletes); `discard` forgets the slot. `failures` maps an operation's
    name ("observe", "start", ...) to the exception it raises instead of acting. `seed` and
    `crash` change slots without counting as actions. `disruption_limits` keeps each
    (voters now, voters after) the reconciler sized disruptions by.
    """

    def __init__(self, placement: Placement, store: FakeStore | None = None) -> None:
        self.placement = placement
        self.store = store
        self.slots: dict[Endpoint, Slot] = {}
        self.actions: list[Action] = []
        self.set_aside_data: dict[str, str] = {}
        self.failures: dict[str, Exception] = {}
        self.config: str | None = None
        self.reported: Set[str] = frozenset()
        """The releases the reconciler last said the members run (`configure`)."""
        self.disruption_limits: list[tuple[int, int]] = []

    def seed(self, slot: Slot) -> None:
        """Put `slot` in place, as if the runtime had found it so."""
        self.slots[slot.endpoint] = slot
        if self.store is not None:
            if slot.running:
                self.store.process_started(slot.endpoint.address, bootstrap=False)
            else:
                self.store.process_stopped(slot.endpoint.address)

    def crash(self, endpoint: Endpoint) -> None:
        """The member's process exits by itself; its data stays."""
        self.slots[endpoint] = replace(self.slot(endpoint), running=False, pid=None)
        if self.store is not None:
            self.store.process_stopped(endpoint.address)

    def slot(self, endpoint: Endpoint) -> Slot:
        return self.slots.get(endpoint) or Slot(endpoint, running=False, has_data=False)

    # Runtime.

    def endpoints(self) -> Iterable[Endpoint]:
        return list(self.slots)

    def configure(self, spec: ClusterSpec, reported: Set[str] = frozenset()) -> str:
        self._may("configure")
        self.reported = reported
        settings = spec.etcd if spec.store is Store.ETCD else spec.zookeeper
        text = f"{spec.version} {settings.model_dump_json()}"
        self.config = hashlib.sha256(text.encode()).hexdigest()[:16]
        return self.config

    def limit_disruptions(self, voters_now: int, voters_after: int) -> None:
        self.disruption_limits.append((voters_now, voters_after))

    def observe(
        self, endpoints: Sequence[Endpoint], answered: Set[Endpoint], *, quorum: bool, judge: bool
    ) -> tuple[Slot, ...]:
        self._may("observe")
        return tuple(self.slot(endpoint) for endpoint in endpoints)

    def start(self, endpoint: Endpoint, peers: list[Peer], *, bootstrap: bool) -> None:
        self._may("start")
        self.actions.append(Action("start", endpoint.name, tuple(peers), bootstrap))
        slot = self.slot(endpoint)
        if slot.running:
            return
        self.slots[endpoint] = replace(
            slot,
            running=True,
            has_data=True,
            starts=slot.starts + 1,
            failed_starts=0,
            held_back=0.0,
            last_error=None,
            unusable_data=None,
            pid=10_000 + endpoint.ordinal,
            config=self.config,
        )
        if self.store is not None:
            self.store.process_started(endpoint.address, bootstrap=bootstrap)

    def stop(self, endpoint: Endpoint) -> None:
        self._may("stop")
        self.actions.append(Action("stop", endpoint.name))
        self.slots[endpoint] = replace(self.slot(endpoint), running=False, pid=None)
        if self.store is not None:
            self.store.process_stopped(endpoint.address)

    def restart(self, endpoint: Endpoint, peers: list[Peer]) -> None:
        """`stop`, then `start`, as the local runtime does: each is an action of its own."""
        self._may("restart")
        self.stop(endpoint)
        self.start(endpoint, peers, bootstrap=False)

    def set_aside(self, endpoint: Endpoint, why: str) -> str:
        return self._aside("set_aside", endpoint, why)

    def refill(self, endpoint: Endpoint, why: str) -> str:
        """As `set_aside`, but the member keeps its identity: its slot is stopped and empty."""
        return self._aside("refill", endpoint, why)

    def _aside(self, operation: str, endpoint: Endpoint, why: str) -> str:
        self._may(operation)
        self.actions.append(Action(operation, endpoint.name))
        self.set_aside_data[endpoint.name] = why
        self.slots[endpoint] = Slot(endpoint, running=False, has_data=False)
        return f"set-aside/{endpoint.name}"

    def discard(self, endpoint: Endpoint) -> None:
        self._may("discard")
        self.actions.append(Action("discard", endpoint.name))
        self.slots.pop(endpoint, None)

    def _may(self, operation: str) -> None:
        failure = self.failures.get(operation)
        if failure is not None:
            raise failure


@dataclass
class FakeSource:
    """An in-memory stand-in for a desired-state source (a spec file, a custom resource), not
    an end-to-end proof: `spec` is what `current` returns, `scale` changes its member count."""

    spec: ClusterSpec

    def current(self) -> ClusterSpec:
        return self.spec

    def scale(self, members: int) -> None:
        self.spec = ClusterSpec.model_validate({**self.spec.model_dump(), "members": members})

    def change(self, **fields: object) -> None:
        """Replace top-level spec fields, e.g. `etcd={"snapshot_count": 5000}`."""
        self.spec = ClusterSpec.model_validate({**self.spec.model_dump(), **fields})


@dataclass
class ListSink:
    """An in-memory stand-in for a status sink (status.json, a custom resource's status), not an
    end-to-end proof: keeps every status recorded; raises `fail_with` instead while it is set."""

    statuses: list[ClusterStatus] = field(default_factory=list)
    fail_with: OSError | None = None

    def record(self, status: ClusterStatus) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.statuses.append(status)

    @property
    def last(self) -> ClusterStatus:
        return self.statuses[-1]


def fake_backend(store: FakeStore, rules: JoinRules | None = None) -> Backend:
    """A `Backend` for the fake store, whose clients are `store` itself: URLs are
    `fake://<client host>`, a member answers while its process runs, and no port is bound."""

    def url(endpoint: Endpoint) -> str:
        return f"fake://{endpoint.client_host}"

    return Backend(
        rules=rules or JoinRules(),
        client_url=url,
        connect_string=lambda endpoints: ",".join(map(url, endpoints)),
        connect=store.connect,
        answers=lambda endpoint: endpoint.address in store.up,
        ports=(),
    )


@dataclass
class Fakes:
    """A reconciler wired to fakes of everything it drives (in-memory stand-ins, not an
    end-to-end proof)."""

    source: FakeSource
    store: FakeStore
    runtime: FakeRuntime
    sink: ListSink
    reconciler: Reconciler

    def endpoint(self, ordinal: int) -> Endpoint:
        return self.runtime.placement.endpoint(ordinal)

    def address(self, ordinal: int) -> str:
        return self.endpoint(ordinal).address

    def member(self, ordinal: int) -> Member:
        """Member `ordinal` as the store lists it now."""
        address = self.address(ordinal)
        return next(m for m in self.store.members() if m.address == address)

    def join(self, ordinal: int, *, voter: bool = True, running: bool = True) -> None:
        """Member `ordinal` is in the membership (and has started), its data is on disk and its
        process runs (or not)."""
        self.store.enlist(self.address(ordinal), voter=voter, started=True)
        self.runtime.seed(
            Slot(
                self.endpoint(ordinal),
                running=running,
                has_data=True,
                config=self.runtime.config,
            )
        )


def fakes(
    placement: Placement,
    *,
    running: int = 0,
    desired: int = 3,
    store: Store = Store.ETCD,
    rules: JoinRules | None = None,
    name: str = "c",
    hold_store: bool = False,
) -> Fakes:
    """A reconciler on fakes for a cluster `name` that wants `desired` members, of which members
    0 to `running - 1` are voters and run; member 0 leads. `hold_store` as for `Reconciler`."""
    fake_store = FakeStore()
    runtime = FakeRuntime(placement, fake_store)
    source = FakeSource(
        ClusterSpec.model_validate({"name": name, "store": store, "members": desired})
    )
    sink = ListSink()
    backend = fake_backend(fake_store, rules)
    reconciler = Reconciler(source, backend, runtime, sink, hold_store=hold_store)
    built = Fakes(source, fake_store, runtime, sink, reconciler)
    for ordinal in range(running):
        built.join(ordinal)
    return built
