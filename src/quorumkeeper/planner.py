"""The next safe step, as a pure function of the desired spec and what was observed.

Nothing here remembers anything: a reconciler that crashed and came back asks the same question
of a fresh observation and gets the step that continues where it stopped. The rules (DESIGN.md):
one membership change at a time, never below quorum, remove before stop, learner before voter,
replace members whose data is gone, move leadership away before removing the leader.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from quorumkeeper.stores.base import Endpoint, JoinRules, Member, Role


def quorum(voters: int) -> int:
    return voters // 2 + 1


@dataclass(frozen=True)
class Slot:
    """A member's place in the runtime: its process and its data, whatever the store says."""

    endpoint: Endpoint
    running: bool
    has_data: bool


@dataclass(frozen=True)
class Observation:
    """What one pass saw. `membership` is None when no quorum answered."""

    membership: tuple[Member, ...] | None
    slots: tuple[Slot, ...]

    def slot(self, address: str) -> Slot | None:
        return next((s for s in self.slots if s.endpoint.address == address), None)


@dataclass(frozen=True)
class Desired:
    """The part of the spec the planner needs: how many members, where member N lives, and
    the store's rules for joining and leaving."""

    members: int
    name: str
    subnet: str
    rules: JoinRules = field(default_factory=JoinRules)

    def endpoint(self, ordinal: int) -> Endpoint:
        return Endpoint(name=f"{self.name}-{ordinal}", address=f"{self.subnet}.{ordinal + 1}")

    def endpoint_at(self, address: str) -> Endpoint:
        return self.endpoint(int(address.rsplit(".", 1)[1]) - 1)


class Phase(StrEnum):
    READY = "Ready"
    BOOTSTRAPPING = "Bootstrapping"
    SCALING = "Scaling"
    HEALING = "Healing"
    DEGRADED = "Degraded"
    UNAVAILABLE = "Unavailable"


@dataclass(frozen=True)
class Step:
    """Base of every step; `phase` is what the cluster is doing while this step is next."""

    reason: str

    @property
    def phase(self) -> Phase:
        return Phase.HEALING

    @property
    def changes_membership(self) -> bool:
        return False


@dataclass(frozen=True)
class Bootstrap(Step):
    """Start the first member as a new one-member cluster."""

    endpoint: Endpoint

    @property
    def phase(self) -> Phase:
        return Phase.BOOTSTRAPPING


@dataclass(frozen=True)
class StartMember(Step):
    """Start the process of a member the membership already lists."""

    endpoint: Endpoint
    joining: bool

    @property
    def phase(self) -> Phase:
        return Phase.SCALING if self.joining else Phase.HEALING


@dataclass(frozen=True)
class StopMember(Step):
    """Stop a process that is no longer a member."""

    endpoint: Endpoint

    @property
    def phase(self) -> Phase:
        return Phase.SCALING


@dataclass(frozen=True)
class DiscardData(Step):
    """Apply the removed-data policy to a slot that is neither a member nor running."""

    endpoint: Endpoint


@dataclass(frozen=True)
class AddLearner(Step):
    endpoint: Endpoint

    @property
    def phase(self) -> Phase:
        return Phase.SCALING

    @property
    def changes_membership(self) -> bool:
        return True


@dataclass(frozen=True)
class Promote(Step):
    member: Member
    endpoint: Endpoint

    @property
    def phase(self) -> Phase:
        return Phase.SCALING

    @property
    def changes_membership(self) -> bool:
        return True


@dataclass(frozen=True)
class RemoveMember(Step):
    member: Member
    endpoint: Endpoint
    replacing: bool

    @property
    def phase(self) -> Phase:
        return Phase.HEALING if self.replacing else Phase.SCALING

    @property
    def changes_membership(self) -> bool:
        return True


@dataclass(frozen=True)
class TransferLeadership(Step):
    leader: Member
    successor: Member

    @property
    def phase(self) -> Phase:
        return Phase.SCALING


@dataclass(frozen=True)
class Wait(Step):
    """Nothing is safe to do now; `reason` says what the planner waits for."""

    blocked_phase: Phase

    @property
    def phase(self) -> Phase:
        return self.blocked_phase


@dataclass(frozen=True)
class Done(Step):
    """The cluster matches the spec."""

    degraded: bool

    @property
    def phase(self) -> Phase:
        return Phase.DEGRADED if self.degraded else Phase.READY


def plan(desired: Desired, observed: Observation) -> Step:
    """The one next step that moves `observed` toward `desired` without breaking a rule."""
    if observed.membership is None:
        return _plan_without_quorum(desired, observed)
    membership = observed.membership
    members_at = {member.address: member for member in membership}

    for slot in observed.slots:
        if slot.endpoint.address not in members_at:
            if slot.running:
                return StopMember(f"{slot.endpoint.name} is no longer a member", slot.endpoint)
            if slot.has_data and not slot.running:
                return DiscardData(f"{slot.endpoint.name} left the membership", slot.endpoint)

    for member in membership:
        endpoint = desired.endpoint_at(member.address)
        seen = observed.slot(member.address)
        running = seen is not None and seen.running
        has_data = seen is not None and seen.has_data
        if running:
            continue
        if member.role is Role.LEARNER and len(membership) > desired.members:
            continue  # a joiner no longer wanted is removed, not started (it may never start)
        if not member.started:
            return StartMember(f"{endpoint.name} was added and joins now", endpoint, joining=True)
        if not has_data:
            return RemoveMember(
                f"{endpoint.name} lost its data: its old identity goes before a new one joins",
                member,
                endpoint,
                replacing=True,
            )
        return StartMember(f"{endpoint.name} is down and restarts", endpoint, joining=False)

    voters = [member for member in membership if member.voter]
    healthy_voters = [member for member in voters if member.healthy]
    learners = [member for member in membership if member.role is Role.LEARNER]

    if len(membership) > desired.members:
        return _plan_removal(desired, voters, healthy_voters, membership)

    if learners:
        learner = learners[0]
        endpoint = desired.endpoint_at(learner.address)
        if len(healthy_voters) + 1 < quorum(len(voters) + 1):
            return Wait(
                f"{endpoint.name} waits for promotion until enough voters are healthy",
                Phase.DEGRADED,
            )
        return Promote(f"{endpoint.name} has joined as learner", learner, endpoint)

    joiner = _next_joiner(desired, membership)
    if joiner is not None:
        unhealthy = [desired.endpoint_at(m.address).name for m in voters if not m.healthy]
        if unhealthy:
            return Wait(
                f"adding a member waits until {', '.join(unhealthy)} is healthy", Phase.DEGRADED
            )
        return AddLearner(
            f"{len(membership)} of {desired.members} members: adding {joiner.name}", joiner
        )

    return Done("cluster matches its spec", degraded=len(healthy_voters) < len(voters))


def _next_joiner(desired: Desired, membership: Sequence[Member]) -> Endpoint | None:
    """The member to add next while the membership is short of the spec: the lowest free
    ordinal, and only once no learner is in flight."""
    if len(membership) >= desired.members or any(m.role is Role.LEARNER for m in membership):
        return None
    taken = {m.address for m in membership}
    return next(
        desired.endpoint(n)
        for n in range(len(membership) + 1)
        if desired.endpoint(n).address not in taken
    )


def _plan_without_quorum(desired: Desired, observed: Observation) -> Step:
    with_data = [slot for slot in observed.slots if slot.has_data]
    if not with_data and not any(slot.running for slot in observed.slots):
        first = desired.endpoint(0)
        return Bootstrap(f"a new cluster starts from {first.name}", first)
    for slot in with_data:
        if not slot.running:
            return StartMember(
                f"no quorum answers; {slot.endpoint.name} has data and restarts",
                slot.endpoint,
                joining=False,
            )
    return Wait("waiting for a quorum of members to answer", Phase.UNAVAILABLE)


def removal_candidate(desired: Desired, membership: Sequence[Member]) -> Member:
    """Which member goes first on scale-down: a learner, then an unhealthy member, then the
    highest ordinal, so that healthy low ordinals (and the data they hold) stay. A store that
    can't hand leadership over loses its leader last."""
    return max(
        membership,
        key=lambda m: (
            m.role is Role.LEARNER,
            not m.healthy,
            desired.rules.transfers_leadership or m.role is not Role.LEADER,
            desired.endpoint_at(m.address).ordinal,
        ),
    )


def _plan_removal(
    desired: Desired,
    voters: list[Member],
    healthy_voters: list[Member],
    membership: Sequence[Member],
) -> Step:
    victim = removal_candidate(desired, membership)
    endpoint = desired.endpoint_at(victim.address)
    reason = f"{len(membership)} members, {desired.members} wanted: removing {endpoint.name}"
    if victim.role is Role.LEARNER:
        return RemoveMember(reason, victim, endpoint, replacing=False)
    remaining_healthy = len(healthy_voters) - (1 if victim.healthy else 0)
    if remaining_healthy < quorum(len(voters) - 1):
        return Wait(
            f"removing {endpoint.name} would leave {remaining_healthy} healthy of "
            f"{len(voters) - 1} voters, below quorum",
            Phase.DEGRADED,
        )
    if victim.role is Role.LEADER and desired.rules.transfers_leadership:
        successor = min(
            (m for m in healthy_voters if m is not victim),
            key=lambda m: desired.endpoint_at(m.address).ordinal,
        )
        return TransferLeadership(
            f"{endpoint.name} leads: handing leadership over before removing it",
            victim,
            successor,
        )
    return RemoveMember(reason, victim, endpoint, replacing=False)


def scale_down_blocker(desired: Desired, membership: Sequence[Member]) -> str | None:
    """Why shrinking `membership` to `desired.members` would pass below quorum, or None.

    Replays the removals the planner would make, one at a time, against today's health.
    """
    remaining = list(membership)
    while len(remaining) > desired.members:
        voters = [m for m in remaining if m.voter]
        step = _plan_removal(desired, voters, [m for m in voters if m.healthy], remaining)
        if isinstance(step, Wait):
            return step.reason
        victim = removal_candidate(desired, remaining)
        remaining.remove(victim)
    return None
