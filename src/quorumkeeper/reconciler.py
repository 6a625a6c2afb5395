"""Observe, plan, act, record: one pass at a time, for one local cluster.

Each pass asks the store and the runtime afresh, so a reconciler that crashed anywhere resumes
by simply running again. Before acting it records the step it is about to take in status.json,
for people to read; the next pass never trusts that note, it observes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quorumkeeper.planner import (
    AddLearner,
    Bootstrap,
    Desired,
    DiscardData,
    Done,
    Observation,
    Promote,
    RemoveMember,
    SetDataAside,
    Slot,
    StartMember,
    Step,
    StopMember,
    TransferLeadership,
    Wait,
    plan,
)
from quorumkeeper.runtimes.local import (
    STAYS_UP_SECONDS,
    LocalRuntime,
    StartHistory,
    held_ports,
    last_error_line,
    readable_line,
)
from quorumkeeper.spec import ClusterSpec
from quorumkeeper.state import ClusterPaths, StatusWriter, file_identity
from quorumkeeper.stores import backend_for
from quorumkeeper.stores.base import (
    AddsRefused,
    CoordinationStore,
    DataPosition,
    Endpoint,
    Member,
    NotCaughtUp,
    Peer,
    Role,
    StoreError,
    StoreUnavailable,
)

BOOT_GRACE_SECONDS = 30.0
"""How long a started member that does not answer yet holds back the next start of a cold
start; after that it is presumed hung and blocks no one."""


@dataclass(frozen=True)
class Snapshot:
    """One observation together with the endpoints it covered and each member's start
    history and process."""

    observation: Observation
    endpoints: tuple[Endpoint, ...]
    histories: dict[Endpoint, StartHistory]
    pids: dict[Endpoint, int | None]


class LocalCluster:
    """A cluster of the local runtime: its spec, member processes and store, seen together."""

    def __init__(self, paths: ClusterPaths, *, hold_store: bool = False) -> None:
        """`hold_store`: keep the store client from one `observe` to the next (the keeper);
        without it (one-shot commands) each `observe` closes it, so no session outlives it."""
        self.paths = paths
        self.hold_store = hold_store
        self.spec: ClusterSpec = paths.load_spec()
        self._spec_stat = file_identity(paths.spec_file)
        self.backend = backend_for(self.spec, paths.root)
        self.runtime = LocalRuntime(paths.members_root(self.spec), self.backend.launcher)
        self._positions: dict[Endpoint, DataPosition | None] = {}
        """Each member's data position as last read while it was stopped."""
        self._store: CoordinationStore | None = None
        self._store_endpoints: tuple[Endpoint, ...] = ()

    @property
    def desired(self) -> Desired:
        spec = self.spec
        return Desired(spec.members, spec.name, spec.local.subnet, self.backend.rules)

    def reload(self) -> None:
        """Pick up a new member count from the spec file; other fields take effect on the next
        keeper start. The file is parsed again only when it changed (commands replace it by a
        rename, so its inode changes), which spares the keeper a YAML parse every pass."""
        identity = file_identity(self.paths.spec_file)
        if identity != self._spec_stat or identity is None:
            self.spec = self.paths.load_spec()
            self._spec_stat = identity

    def endpoint_of(self, name: str) -> Endpoint | None:
        prefix, _, ordinal = name.rpartition("-")
        if prefix != self.spec.name or not ordinal.isdigit():
            return None
        return self.desired.endpoint(int(ordinal))

    def store(self, endpoints: tuple[Endpoint, ...]) -> CoordinationStore:
        """The cluster's one store client, held from pass to pass and made anew when asked for
        other `endpoints` (after `close`, or when the membership or the spec changed them).

        A held client keeps its connections (ZooKeeper: its session, whose opening and closing
        are two transactions each; etcd: HTTP keep-alive connections), so an idle keeper
        writes nothing to the store and opens no connection.
        """
        if self._store is None or endpoints != self._store_endpoints:
            self.close()
            self._store = self.backend.connect(list(endpoints))
            self._store_endpoints = endpoints
        return self._store

    def close(self) -> None:
        """Release the held store client; the next `store` call connects again."""
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    def observe(self, *, judge: bool = False) -> Snapshot:
        """Ask the store and the runtime afresh. With `judge` (the keeper's passes), the last
        start of each member is judged: good once it stayed up, failed once it exited."""
        known = {self.desired.endpoint(n) for n in range(self.spec.members)}
        known.update(e for e in map(self.endpoint_of, self.runtime.member_names()) if e)
        endpoints = tuple(sorted(known, key=lambda e: e.ordinal))
        adds_refused = None
        try:
            store = self.store(endpoints)
            membership: tuple[Member, ...] | None = tuple(store.members())
            adds_refused = store.adds_refused()
        except StoreUnavailable:
            membership = None
            self.close()  # the next pass starts over on whichever member answers then
        finally:
            if not self.hold_store:
                self.close()
        if membership is not None:
            listed = {self.desired.endpoint_at(m.address) for m in membership}
            endpoints = tuple(sorted(known | listed, key=lambda e: e.ordinal))
        pids = self.runtime.pids(endpoints)
        answered = {
            self.desired.endpoint_at(m.address) for m in membership or () if m.healthy
        }
        histories = {
            e: self._history(e, pids[e] is not None, e in answered, judge=judge)
            for e in endpoints
        }
        slots = tuple(
            self._slot(e, pids[e] is not None, histories[e], cold=membership is None)
            for e in endpoints
        )
        observation = Observation(membership, slots, adds_refused)
        return Snapshot(observation, endpoints, histories, pids)

    def _history(
        self, endpoint: Endpoint, running: bool, answered: bool, *, judge: bool
    ) -> StartHistory:
        """Judge the last start: good once the member answered as healthy or stayed up
        `STAYS_UP_SECONDS`, failed once it exited before either. A member killed after it
        served is not a failed start, so its next start's error is judged on its own."""
        history = self.runtime.history(endpoint)
        if not judge or history.judged:
            return history
        if running and answered:
            history.failed_in_row = 0
        elif not running:
            history.failed_in_row += 1
        elif time.time() - history.last_start >= STAYS_UP_SECONDS:
            history.failed_in_row = 0
        else:
            return history
        history.judged = True
        self.runtime.save_history(endpoint, history)
        return history

    def _slot(
        self, endpoint: Endpoint, running: bool, history: StartHistory, *, cold: bool
    ) -> Slot:
        """What the planner needs of one member's process and data. `cold`: no quorum answers,
        so a member started moments ago that does not answer yet holds back the next start."""
        runtime = self.runtime
        launcher = runtime.launcher
        data_dir = runtime.data_dir(endpoint)
        has_data = launcher.has_data(data_dir)
        if running or not has_data:
            position = self._positions.get(endpoint) if has_data else None
        else:
            position = self._positions[endpoint] = launcher.data_position(data_dir)
        if running:
            since_start = time.time() - history.last_start
            booting = cold and since_start < BOOT_GRACE_SECONDS
            return Slot(
                endpoint,
                running=True,
                has_data=has_data,
                position=position,
                booting=booting and not self.backend.answers(endpoint.address),
            )
        output = runtime.last_start_output(endpoint) if history.failed_in_row else ""
        unusable = launcher.unusable_data(output) if output else None
        held = held_ports(endpoint.address, self.backend.ports)
        return Slot(
            endpoint,
            running=False,
            has_data=has_data,
            position=position,
            failed_starts=history.failed_in_row,
            held_back=history.held_back(time.time()),
            last_error=last_error_line(output),
            unusable_data=readable_line(unusable)[:300] if unusable else None,
            blocked_by="; ".join(map(str, held)) or None,
        )

    def report(self, snapshot: Snapshot, step: Step) -> dict[str, Any]:
        """The status document: what `status --output json` prints and status.json holds.

        Without a quorum there is no membership to show, so `members` lists the member folders
        with what the runtime knows of them (role "unknown").
        """
        membership = snapshot.observation.membership
        slots = {slot.endpoint: slot for slot in snapshot.observation.slots}
        members = []
        if membership is None:
            entries: list[tuple[Endpoint, Member | None]] = [
                (slot.endpoint, None) for slot in snapshot.observation.slots if slot.has_data
            ]
        else:
            entries = [(self.desired.endpoint_at(m.address), m) for m in membership]
        for endpoint, member in sorted(entries, key=lambda entry: entry[0].ordinal):
            slot = slots.get(endpoint) or Slot(endpoint, running=False, has_data=False)
            history = snapshot.histories.get(endpoint) or StartHistory()
            members.append(
                {
                    "name": endpoint.name,
                    "id": member.id if member else None,
                    "address": endpoint.address,
                    "client_url": self.backend.client_url(endpoint.address),
                    "role": member.role.value if member else "unknown",
                    "healthy": member.healthy if member else False,
                    "applied_index": member.applied_index if member else None,
                    "data_bytes": member.data_bytes if member else None,
                    "pid": snapshot.pids.get(endpoint),
                    "starts": history.starts,
                    "failed_starts": slot.failed_starts,
                    "restart_in_seconds": round(slot.held_back, 1) or None,
                    "last_error": slot.last_error,
                    "blocked_by": slot.blocked_by,
                    "data_position": slot.position.label if slot.position else None,
                    "data_damage": slot.position.damage if slot.position else None,
                    "stale_leader": member.stale_leader if member else False,
                }
            )
        voters = [m.address for m in membership or () if m.role is not Role.LEARNER]
        return {
            "name": self.spec.name,
            "store": self.spec.store.value,
            "version": self.spec.version,
            "members": members,
            "desired_members": self.spec.members,
            "phase": step.phase.value,
            "quorum": membership is not None,
            "connect_string": self.backend.connect_string(voters),
            "step": {"kind": type(step).__name__, "reason": step.reason},
            "alarms": [
                {"member": self.desired.endpoint_at(m.address).name, "alarm": alarm}
                for m in membership or ()
                for alarm in m.alarms
            ],
        }


class Reconciler:
    """Drives a `LocalCluster` toward its spec, one planned step per pass."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.last_error: str | None = None
        self.last_status: dict[str, Any] = {}
        """The status document of the last pass, written or not."""
        self.set_aside: Path | None = None
        """Where the last data set aside went, for the keeper's log."""
        self.status_writer = StatusWriter(cluster.paths)
        self.status_write_error: OSError | None = None

    def run_once(self) -> Step:
        """Observe, plan, record, act. Returns the step taken (Wait and Done included)."""
        self.cluster.reload()
        snapshot = self.cluster.observe(judge=True)
        step = plan(self.cluster.desired, snapshot.observation)
        status = self.cluster.report(snapshot, step)
        status["error"] = self.last_error
        status["updated_at"] = time.time()
        self.status_write_error = self.status_writer.record(status)
        self.last_status = status
        try:
            self.act(step, snapshot)
            self.last_error = None
        except (NotCaughtUp, AddsRefused):
            pass  # not an error: the next observation shows the condition and the plan waits
        except StoreError as error:
            self.last_error = f"{type(step).__name__}: {error}"
        return step

    def act(self, step: Step, snapshot: Snapshot) -> None:
        cluster = self.cluster
        runtime = cluster.runtime
        match step:
            case Bootstrap(endpoint=endpoint):
                first = [Peer(endpoint, member_id=None)]
                runtime.start(endpoint, self._argv(endpoint, first, bootstrap=True))
            case StartMember(endpoint=endpoint):
                peers = self._peers(snapshot, endpoint)
                runtime.start(endpoint, self._argv(endpoint, peers, bootstrap=False))
            case StopMember(endpoint=endpoint):
                runtime.stop(endpoint)
            case SetDataAside(endpoint=endpoint, reason=reason):
                self.set_aside = runtime.set_aside(endpoint, reason)
            case DiscardData(endpoint=endpoint):
                runtime.discard_data(endpoint, keep=cluster.spec.local.keep_removed_data)
            case AddLearner(endpoint=endpoint):
                self._with_store(snapshot, lambda store: store.add_learner(endpoint))
            case Promote(member=member):
                self._with_store(snapshot, lambda store: store.promote(member))
            case RemoveMember(member=member):
                self._with_store(snapshot, lambda store: store.remove(member))
            case TransferLeadership(leader=leader, successor=successor):
                self._with_store(
                    snapshot, lambda store: store.transfer_leadership(leader, successor)
                )
            case Wait() | Done():
                pass

    def _with_store(
        self, snapshot: Snapshot, operation: Callable[[CoordinationStore], object]
    ) -> None:
        operation(self.cluster.store(snapshot.endpoints))

    def _argv(self, endpoint: Endpoint, peers: list[Peer], *, bootstrap: bool) -> list[str]:
        runtime = self.cluster.runtime
        return runtime.launcher.argv(
            endpoint, runtime.data_dir(endpoint), peers, bootstrap=bootstrap
        )

    def _peers(self, snapshot: Snapshot, member: Endpoint) -> list[Peer]:
        """The membership a member starts with: every member that has joined, plus its own
        entry (a store restarting from its own data may ignore this)."""
        desired = self.cluster.desired
        peers: dict[Endpoint, str | None] = {
            desired.endpoint_at(m.address): m.id
            for m in snapshot.observation.membership or ()
            if m.started or m.address == member.address
        }
        peers.setdefault(member, None)
        return [Peer(e, peers[e]) for e in sorted(peers, key=lambda e: e.ordinal)]
