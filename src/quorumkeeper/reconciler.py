"""Observe, plan, act, record: one pass at a time, for one local cluster.

Each pass asks the store and the runtime afresh, so a reconciler that crashed anywhere resumes
by simply running again. Before acting it records the step it is about to take in status.json,
for people to read; the next pass never trusts that note, it observes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
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
    StartMember,
    Step,
    StopMember,
    TransferLeadership,
    Wait,
    plan,
)
from quorumkeeper.runtimes.local import LocalRuntime
from quorumkeeper.spec import ClusterSpec
from quorumkeeper.state import ClusterPaths
from quorumkeeper.stores import backend_for
from quorumkeeper.stores.base import (
    CoordinationStore,
    Endpoint,
    Member,
    NotCaughtUp,
    Peer,
    Role,
    StoreError,
    StoreUnavailable,
)


@dataclass(frozen=True)
class Snapshot:
    """One observation together with the endpoints it covered."""

    observation: Observation
    endpoints: tuple[Endpoint, ...]


class LocalCluster:
    """A cluster of the local runtime: its spec, member processes and store, seen together."""

    def __init__(self, paths: ClusterPaths) -> None:
        self.paths = paths
        self.spec: ClusterSpec = paths.load_spec()
        self.backend = backend_for(self.spec, paths.root)
        self.runtime = LocalRuntime(paths.members_root(self.spec), self.backend.launcher)

    @property
    def desired(self) -> Desired:
        spec = self.spec
        return Desired(spec.members, spec.name, spec.local.subnet, self.backend.rules)

    def reload(self) -> None:
        """Pick up a new member count from the spec file; other fields take effect on the next
        keeper start."""
        self.spec = self.paths.load_spec()

    def endpoint_of(self, name: str) -> Endpoint | None:
        prefix, _, ordinal = name.rpartition("-")
        if prefix != self.spec.name or not ordinal.isdigit():
            return None
        return self.desired.endpoint(int(ordinal))

    def store(self, endpoints: tuple[Endpoint, ...]) -> CoordinationStore:
        return self.backend.connect(list(endpoints))

    def observe(self) -> Snapshot:
        known = {self.desired.endpoint(n) for n in range(self.spec.members)}
        known.update(e for e in map(self.endpoint_of, self.runtime.member_names()) if e)
        endpoints = tuple(sorted(known, key=lambda e: e.ordinal))
        store = self.store(endpoints)
        try:
            membership: tuple[Member, ...] | None = tuple(store.members())
        except StoreUnavailable:
            membership = None
        finally:
            store.close()
        if membership is not None:
            listed = {self.desired.endpoint_at(m.address) for m in membership}
            endpoints = tuple(sorted(known | listed, key=lambda e: e.ordinal))
        slots = tuple(self.runtime.slots(list(endpoints)))
        return Snapshot(Observation(membership, slots), endpoints)

    def report(self, snapshot: Snapshot, step: Step) -> dict[str, Any]:
        """The status document: what `status --output json` prints and status.json holds."""
        membership = snapshot.observation.membership or ()
        members = []
        for member in sorted(membership, key=lambda m: self.desired.endpoint_at(m.address).ordinal):
            endpoint = self.desired.endpoint_at(member.address)
            members.append(
                {
                    "name": endpoint.name,
                    "id": member.id,
                    "address": member.address,
                    "client_url": self.backend.client_url(member.address),
                    "role": member.role.value,
                    "healthy": member.healthy,
                    "applied_index": member.applied_index,
                    "data_bytes": member.data_bytes,
                    "pid": self.runtime.pid(endpoint),
                }
            )
        return {
            "name": self.spec.name,
            "store": self.spec.store.value,
            "version": self.spec.version,
            "members": members,
            "desired_members": self.spec.members,
            "phase": step.phase.value,
            "quorum": snapshot.observation.membership is not None,
            "connect_string": self.backend.connect_string(
                [m.address for m in membership if m.role is not Role.LEARNER]
            ),
            "step": {"kind": type(step).__name__, "reason": step.reason},
        }


class Reconciler:
    """Drives a `LocalCluster` toward its spec, one planned step per pass."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster
        self.last_error: str | None = None

    def run_once(self) -> Step:
        """Observe, plan, record, act. Returns the step taken (Wait and Done included)."""
        self.cluster.reload()
        snapshot = self.cluster.observe()
        step = plan(self.cluster.desired, snapshot.observation)
        status = self.cluster.report(snapshot, step)
        status["error"] = self.last_error
        status["updated_at"] = time.time()
        self.status_write_error = self.cluster.paths.record_status(status)
        try:
            self.act(step, snapshot)
            self.last_error = None
        except NotCaughtUp:
            pass
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
        store = self.cluster.store(snapshot.endpoints)
        try:
            operation(store)
        finally:
            store.close()

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
