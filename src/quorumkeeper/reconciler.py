"""Observe, plan, record, act: one pass at a time, for one cluster, on any runtime.

A `Reconciler` is built from a desired-state source, a store backend, a runtime and a status
sink; nothing in it knows which runtime it drives. Each pass asks the store and the runtime
afresh, so a reconciler that crashed anywhere resumes by simply running again. Before acting it
records the status with the step it is about to take, for people to read; the next pass never
trusts that note, it observes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from quorumkeeper.model import Endpoint, Member, Peer, Role, Slot
from quorumkeeper.planner import (
    AddLearner,
    Bootstrap,
    Desired,
    DiscardData,
    Done,
    Observation,
    Phase,
    Promote,
    RefillMember,
    RemoveMember,
    RestartMember,
    SetDataAside,
    StartMember,
    Step,
    StopMember,
    TransferLeadership,
    Wait,
    plan,
    restart_candidate,
)
from quorumkeeper.runtime import ConfigurationRefused, DisruptionRefused, Runtime
from quorumkeeper.spec import ClusterSpec
from quorumkeeper.status import (
    AUTH_PENDING,
    AlarmStatus,
    ClusterStatus,
    Condition,
    ConditionType,
    MemberStatus,
    RolloutStatus,
    StepStatus,
    carry_transitions,
)
from quorumkeeper.stores import Backend
from quorumkeeper.stores.base import (
    AddsRefused,
    CoordinationStore,
    NotCaughtUp,
    StoreError,
    StoreUnavailable,
)
from quorumkeeper.upgrades import UpgradeRefused

VOTER_ROLES = (Role.LEADER, Role.FOLLOWER)


class DesiredSource(Protocol):
    """Where the spec comes from (a spec file, a custom resource)."""

    def current(self) -> ClusterSpec:
        """The spec as it is now."""
        ...


class StatusSink(Protocol):
    """Where each pass's status goes (status.json, a custom resource's status)."""

    def record(self, status: ClusterStatus) -> None:
        """Store `status`. May raise OSError; the reconciler reports it and goes on healing."""
        ...


@dataclass(frozen=True)
class Snapshot:
    """One observation together with the endpoints it covered."""

    observation: Observation
    endpoints: tuple[Endpoint, ...]


class Reconciler:
    """Drives one cluster toward its spec, one planned step per pass."""

    def __init__(
        self,
        source: DesiredSource,
        backend: Backend,
        runtime: Runtime,
        sink: StatusSink,
        *,
        hold_store: bool = False,
    ) -> None:
        """`hold_store`: keep the store client from one pass to the next (a long-running
        reconciler); without it (one-shot commands) each `observe` closes it, so no session
        outlives it."""
        self.source = source
        self.backend = backend
        self.runtime = runtime
        self.sink = sink
        self.hold_store = hold_store
        self.spec = source.current()
        """The spec as last accepted by the runtime (a version it refused is not taken)."""
        self.config: str | None = None
        """The fingerprint of the configuration members of `spec` start with (None: the
        runtime does not restart members for a new one, or refused the first spec)."""
        self.refused: str | None = None
        """Why the runtime refused the source's spec (`upgrades.UpgradeRefused`,
        `runtime.ConfigurationRefused`), until it takes one."""
        self.refused_reason = "UpgradeRefused"
        """The Degraded reason of that refusal: the refusal's class name."""
        self.last_status: ClusterStatus | None = None
        """The status of the last pass, recorded or not."""
        self._configure(self.spec)
        self.last_error: str | None = None
        """The last refusal or failure, until a step goes through."""
        self.record_error: OSError | None = None
        """Why the last status could not be recorded, None when it was."""
        self.acted = False
        """Whether the last pass's step went through (False when the store refused it)."""
        self.deferred = False
        """Whether the store refused the last pass's step for now (`NotCaughtUp`, `AddsRefused`),
        or said it refuses adds for now (`Observation.adds_refused`): what it waits for ends by
        itself, soon."""
        self.set_aside: str | None = None
        """Where the last data set aside went, for the keeper's log."""
        self._store: CoordinationStore | None = None
        self._store_endpoints: tuple[Endpoint, ...] = ()
        self.secured = False
        """Whether this reconciler has seen the store's authentication on (`secure`)."""

    def reload(self) -> None:
        """Take the spec as its source has it now; a changed spec reaches the runtime, so that
        members started from now on get its settings."""
        spec = self.source.current()
        if spec is not self.spec:
            self._configure(spec)

    def reconfigure(self) -> None:
        """Hand the current spec to the runtime again, for a configuration that changed
        outside the spec (reissued certificates): members restart onto it in order."""
        self._configure(self.spec)

    def _configure(self, spec: ClusterSpec) -> None:
        """Hand `spec` to the runtime, with the releases the members reported at the last
        pass. A version off the checked upgrade path is refused there and changes nothing:
        the spec and configuration accepted before stay (a refused first spec gives no
        configuration, so no member restarts), and the status says why."""
        members = self.last_status.members if self.last_status else []
        reported = frozenset(m.version for m in members if m.version)
        try:
            self.config = self.runtime.configure(spec, reported)
        except (UpgradeRefused, ConfigurationRefused) as error:
            self.refused = str(error)
            self.refused_reason = type(error).__name__
            return
        self.spec = spec
        self.refused = None

    @property
    def desired(self) -> Desired:
        return Desired(self.spec.members, self.runtime.placement, self.backend.rules, self.config)

    def store(self, endpoints: tuple[Endpoint, ...]) -> CoordinationStore:
        """The cluster's one store client, held from pass to pass and made anew when asked for
        other `endpoints` (after `close`, or when the membership or the spec changed them).

        A held client keeps its connections (ZooKeeper: its session, whose opening and closing
        are two transactions each; etcd: HTTP keep-alive connections), so an idle reconciler
        writes nothing to the store and opens no connection.
        """
        if self._store is None or endpoints != self._store_endpoints:
            self.close()
            self._store = self.backend.connect(list(endpoints))
            self._store_endpoints = endpoints
        return self._store

    @property
    def held_store(self) -> CoordinationStore | None:
        """The store client the last pass kept (`hold_store`): None when no quorum answered
        it, or when the reconciler does not hold one."""
        return self._store

    def close(self) -> None:
        """Release the held store client; the next `store` call connects again."""
        if self._store is not None:
            store, self._store = self._store, None
            store.close()

    def observe(self, *, judge: bool = False) -> Snapshot:
        """Ask the store and the runtime afresh. With `judge` (the reconciler's own passes),
        the runtime settles how each member's last start went."""
        desired = self.desired
        known = {desired.endpoint(n) for n in range(self.spec.members)}
        known.update(self.runtime.endpoints())
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
        placement = self.runtime.placement
        located = {m: placement.locate(m.address) for m in membership or ()}
        if membership is not None:
            listed = {endpoint for endpoint in located.values() if endpoint is not None}
            endpoints = tuple(sorted(known | listed, key=lambda e: e.ordinal))
        answered = {e for m, e in located.items() if e is not None and m.healthy}
        slots = self.runtime.observe(
            endpoints, answered, quorum=membership is not None, judge=judge
        )
        return Snapshot(Observation(membership, slots, adds_refused), endpoints)

    def report(self, snapshot: Snapshot, step: Step) -> ClusterStatus:
        """The status of `snapshot` with `step` next.

        Without a quorum there is no membership to show, so `members` lists the members that
        have data with what the runtime knows of them (role "unknown").
        """
        membership = snapshot.observation.membership
        slots = {slot.endpoint: slot for slot in snapshot.observation.slots}
        placement = self.runtime.placement
        if membership is None:
            entries: list[tuple[Endpoint, Member | None]] = [
                (slot.endpoint, None) for slot in snapshot.observation.slots if slot.has_data
            ]
        else:
            entries = [(e, m) for m in membership if (e := placement.locate(m.address))]
        desired = self.desired
        members = [
            self._member_status(desired, endpoint, member, slots.get(endpoint))
            for endpoint, member in sorted(entries, key=lambda entry: entry[0].ordinal)
        ]
        voters = sorted(  # by ordinal, whatever order the store lists its members in
            (placement.locate(m.address) for m in membership or () if m.role is not Role.LEARNER),
            key=lambda endpoint: endpoint.ordinal if endpoint else -1,
        )
        spec = self.spec
        return ClusterStatus(
            name=spec.name,
            store=spec.store.value,
            version=spec.version,
            members=members,
            desired_members=spec.members,
            phase=step.phase.value,
            quorum=membership is not None,
            connect_string=self.backend.connect_string([e for e in voters if e is not None]),
            step=StepStatus(
                kind=type(step).__name__, reason=step.reason, member=_subject(desired, step)
            ),
            alarms=[
                AlarmStatus(member=endpoint.name, alarm=alarm)
                for m in membership or ()
                if (endpoint := placement.locate(m.address))
                for alarm in m.alarms
            ],
            error=self.refused or self.last_error,
            conditions=[
                *_conditions(
                    step,
                    membership is not None,
                    members,
                    self.last_error,
                    self.refused,
                    self.refused_reason,
                ),
                self._secured_condition(),
            ],
            rollout=_rollout(desired, snapshot.observation, members, step),
        )

    def _secured_condition(self) -> Condition:
        """Secured: True when clients and members use TLS and clients authenticate; False
        names what is open (`PlainText`, `NoAuth`) or that authentication is not on yet."""
        if self.backend.tls is None:
            reason, message = "PlainText", "clients and members talk in plain text (tls: false)"
        elif not self.backend.auth:
            reason, message = "NoAuth", "any client with a certificate may act (auth: false)"
        elif not self.secured:
            reason, message = AUTH_PENDING, "authentication is turned on once a quorum answers"
        else:
            reason, message = "TlsAndAuth", "TLS for clients and members; clients authenticate"
        return Condition(
            type=ConditionType.SECURED,
            status="True" if reason == "TlsAndAuth" else "False",
            reason=reason,
            message=message,
            last_transition_time="",
        )

    def _member_status(
        self, desired: Desired, endpoint: Endpoint, member: Member | None, slot: Slot | None
    ) -> MemberStatus:
        known = slot is not None
        slot = slot or Slot(endpoint, running=False, has_data=False)
        position = slot.position
        return MemberStatus(
            name=endpoint.name,
            id=member.id if member else None,
            address=endpoint.address,
            client_url=self.backend.client_url(endpoint),
            role=member.role.value if member else "unknown",
            healthy=member.healthy if member else False,
            applied_index=member.applied_index if member else None,
            data_bytes=member.data_bytes if member else None,
            pid=slot.pid,
            starts=slot.starts,
            failed_starts=slot.failed_starts,
            restart_in_seconds=round(slot.held_back, 1) or None,
            last_error=slot.last_error,
            blocked_by=slot.blocked_by,
            blocked_reason=slot.blocked_reason,
            data_position=position.label if position else None,
            data_damage=position.damage if position else None,
            stale_leader=member.stale_leader if member else False,
            version=member.version if member else None,
            config=None
            if desired.config is None or not known
            else ("stale" if desired.stale(slot) else "updated"),
        )

    def run_once(self) -> Step:
        """Observe, plan, record, act. Returns the step taken (Wait and Done included).

        A pass that fails, observing or acting, records a status saying so (the last good one,
        with the failure as its error and the Degraded condition) before the exception goes on
        to the caller. A store's refusal of the step is no failure: it is the next status's
        error."""
        self.acted = self.deferred = False
        try:
            self.reload()
            snapshot = self.observe(judge=True)
            self.deferred = snapshot.observation.adds_refused is not None
            step = plan(self.desired, snapshot.observation)
            self._record(self.report(snapshot, step))
            try:
                self._secure(snapshot)
                self.act(step, snapshot)
                self.last_error = None
                self.acted = True
            except (NotCaughtUp, AddsRefused):
                self.deferred = True  # not an error: the next observation shows the condition
            except (StoreError, DisruptionRefused) as error:
                self.last_error = f"{type(step).__name__}: {error}"
        except Exception as error:
            self._record_failure(f"pass failed: {type(error).__name__}: {error}")
            raise
        return step

    def _record(self, status: ClusterStatus) -> None:
        before = self.last_status.conditions if self.last_status else []
        status.conditions = carry_transitions(status.conditions, before, status.updated_at)
        self.last_status = status
        try:
            self.sink.record(status)
            self.record_error = None
        except OSError as error:
            self.record_error = error

    def _record_failure(self, error: str) -> None:
        last = self.last_status
        if last is None:
            return  # nothing observed yet to show; the caller logs the failure
        degraded = Condition(
            type=ConditionType.DEGRADED,
            status="True",
            reason="PassFailed",
            message=error,
            last_transition_time="",
        )
        conditions = [c for c in last.conditions if c.type is not ConditionType.DEGRADED]
        self._record(
            last.model_copy(
                update={
                    "error": error,
                    "conditions": [*conditions, degraded],
                    "updated_at": time.time(),
                }
            )
        )

    def act(self, step: Step, snapshot: Snapshot) -> None:
        runtime = self.runtime
        self._limit_disruptions(step, snapshot.observation.membership)
        match step:
            case Bootstrap(endpoint=endpoint):
                runtime.start(endpoint, [Peer(endpoint, member_id=None)], bootstrap=True)
            case StartMember(endpoint=endpoint):
                runtime.start(endpoint, self._peers(snapshot, endpoint), bootstrap=False)
            case StopMember(endpoint=endpoint):
                runtime.stop(endpoint)
            case RestartMember(endpoint=endpoint):
                runtime.restart(endpoint, self._peers(snapshot, endpoint))
            case SetDataAside(endpoint=endpoint, reason=reason):
                self.set_aside = runtime.set_aside(endpoint, reason)
            case RefillMember(endpoint=endpoint, reason=reason):
                self.set_aside = runtime.refill(endpoint, reason)
                runtime.start(endpoint, self._peers(snapshot, endpoint), bootstrap=False)
            case DiscardData(endpoint=endpoint):
                runtime.discard(endpoint)
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

    def _secure(self, snapshot: Snapshot) -> None:
        """Once a quorum answers, have the store turn its authentication on (`secure`, which
        is idempotent, so a reconciler that restarts asks again and nothing changes). Until
        then the first member serves without it: a bootstrapping cluster is open for one pass."""
        if self.backend.auth and not self.secured and snapshot.observation.membership:
            self.store(snapshot.endpoints).secure()
            self.secured = True

    def _limit_disruptions(self, step: Step, membership: tuple[Member, ...] | None) -> None:
        """Tell the runtime how many voters there are now and after `step` (and after the
        change under way, the spec's member count) before taking it: a removal then never runs
        while a drain may take more members than leave the smaller membership a quorum, and the
        allowance rises only once a promotion shows in the membership. Without a quorum there
        is no membership to size it by, and none changes."""
        if membership is None:
            return
        voters = sum(1 for m in membership if m.role in VOTER_ROLES)
        after = voters
        if isinstance(step, RemoveMember) and step.member.role in VOTER_ROLES:
            after -= 1
        self.runtime.limit_disruptions(voters, min(after, self.spec.members))

    def _with_store(
        self, snapshot: Snapshot, operation: Callable[[CoordinationStore], object]
    ) -> None:
        operation(self.store(snapshot.endpoints))

    def _peers(self, snapshot: Snapshot, member: Endpoint) -> list[Peer]:
        """The membership a member starts with: every member that has joined, plus its own
        entry (a store restarting from its own data may ignore this)."""
        placement = self.runtime.placement
        peers: dict[Endpoint, str | None] = {
            endpoint: m.id
            for m in snapshot.observation.membership or ()
            if (m.started or m.address == member.address)
            and (endpoint := placement.locate(m.address))
        }
        peers.setdefault(member, None)
        return [Peer(e, peers[e]) for e in sorted(peers, key=lambda e: e.ordinal)]


def _subject(desired: Desired, step: Step) -> str | None:
    """The name of the member `step` acts on; for a hand-over, the leader's."""
    match step:
        case (
            Bootstrap(endpoint=endpoint)
            | StartMember(endpoint=endpoint)
            | StopMember(endpoint=endpoint)
            | RestartMember(endpoint=endpoint)
            | SetDataAside(endpoint=endpoint)
            | RefillMember(endpoint=endpoint)
            | DiscardData(endpoint=endpoint)
            | AddLearner(endpoint=endpoint)
            | Promote(endpoint=endpoint)
            | RemoveMember(endpoint=endpoint)
        ):
            return endpoint.name
        case TransferLeadership(leader=leader):
            return desired.endpoint_of(leader).name
    return None


def _rollout(
    desired: Desired, observed: Observation, members: list[MemberStatus], step: Step
) -> RolloutStatus | None:
    """Where a rolling update stands: None when every member runs the desired configuration."""
    stale = [m.name for m in members if m.config == "stale"]
    if not stale:
        return None
    candidate = restart_candidate(desired, observed)
    acting = isinstance(step, RestartMember) or (
        isinstance(step, TransferLeadership) and step.phase is Phase.UPDATING
    )
    return RolloutStatus(
        updated=[m.name for m in members if m.config == "updated"],
        stale=stale,
        next=desired.endpoint_of(candidate).name if candidate else None,
        waiting=None if acting else step.reason,
    )


def _conditions(
    step: Step,
    quorum: bool,
    members: list[MemberStatus],
    error: str | None,
    refused: str | None = None,
    refused_reason: str = "UpgradeRefused",
) -> list[Condition]:
    """Available, Progressing and Degraded for a pass whose next step is `step`, `error` the
    last step's failure and `refused` why the runtime refused the spec (Degraded's reason
    `refused_reason`); transition times are filled in by `carry_transitions`."""
    voters = [m for m in members if m.role in VOTER_ROLES]
    unhealthy = [
        m.name
        for m in members
        if not m.healthy and (m.role != Role.LEARNER or m.failed_starts or m.blocked_by)
    ]  # a learner joining is not news until it fails to start or is blocked
    progressing = not isinstance(step, Wait | Done)
    blocked = [m for m in members if m.blocked_reason and not m.healthy]
    degraded = (
        step.phase in (Phase.DEGRADED, Phase.UNAVAILABLE)
        or bool(unhealthy or blocked)
        or bool(error)
        or bool(refused)
    )
    if refused:
        degraded_reason, degraded_message = refused_reason, refused
    elif error:
        degraded_reason, degraded_message = "StepRefused", error
    elif blocked:  # the cause a person can act on, ahead of what it leads to
        degraded_reason = str(blocked[0].blocked_reason)
        degraded_message = "; ".join(f"{m.name}: {m.blocked_by}" for m in blocked)
    elif isinstance(step, Wait) and step.refusal:
        degraded_reason, degraded_message = step.refusal, step.reason
    elif step.phase in (Phase.DEGRADED, Phase.UNAVAILABLE):
        # The step may be about something else ("cluster matches its spec"): name who is down.
        down = f"unhealthy: {', '.join(unhealthy)}; " if unhealthy else ""
        degraded_reason, degraded_message = step.phase.value, f"{down}{step.reason}"
    elif unhealthy:
        degraded_reason, degraded_message = "MemberUnhealthy", f"unhealthy: {', '.join(unhealthy)}"
    else:
        degraded_reason, degraded_message = "AllHealthy", "every member is healthy"
    healthy_voters = sum(1 for m in voters if m.healthy)
    return [
        Condition(
            type=ConditionType.AVAILABLE,
            status="True" if quorum else "False",
            reason="QuorumAnswers" if quorum else "NoQuorum",
            message=f"{healthy_voters} of {len(voters)} voters healthy"
            if quorum
            else "no quorum of members answers",
            last_transition_time="",
        ),
        Condition(
            type=ConditionType.PROGRESSING,
            status="True" if progressing else "False",
            reason=type(step).__name__,
            message=step.reason,
            last_transition_time="",
        ),
        Condition(
            type=ConditionType.DEGRADED,
            status="True" if degraded else "False",
            reason=degraded_reason,
            message=degraded_message,
            last_transition_time="",
        ),
    ]
