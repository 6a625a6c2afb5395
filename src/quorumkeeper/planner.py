"""The next safe step, as a pure function of the desired spec and what was observed.

Nothing here remembers anything: a reconciler that crashed and came back asks the same question
of a fresh observation and gets the step that continues where it stopped. The rules:
one membership change at a time, never below quorum, remove before stop, learner before voter,
replace members whose data is gone, move leadership away before removing the leader, and restart
members started with another configuration one at a time, the leader last.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from quorumkeeper.model import DataPosition, Endpoint, JoinRules, Member, Placement, Role, Slot


def quorum(voters: int) -> int:
    return voters // 2 + 1


@dataclass(frozen=True)
class Observation:
    """What one pass saw. `membership` is None when no quorum answered. `adds_refused` is the
    store's own word that it refuses to add a member for now, and why (etcd's reconfiguration
    grace, `CoordinationStore.adds_refused`); None when it has not said so."""

    membership: tuple[Member, ...] | None
    slots: tuple[Slot, ...]
    adds_refused: str | None = None

    def slot(self, address: str) -> Slot | None:
        return next((s for s in self.slots if s.endpoint.address == address), None)


@dataclass(frozen=True)
class Desired:
    """The part of the spec the planner needs: how many members, where member N lives (the
    runtime's placement), the store's rules for joining and leaving, and `config`, the
    fingerprint of the configuration members should run with (`Runtime.configure`); None when
    the runtime gives none, and then no member is restarted for its configuration."""

    members: int
    placement: Placement
    rules: JoinRules = field(default_factory=JoinRules)
    config: str | None = None

    def stale(self, slot: Slot | None) -> bool:
        """Whether the member in `slot` runs with another configuration than the desired one (a
        member whose configuration is unknown counts as stale: only a restart tells)."""
        return self.config is not None and (slot is None or slot.config != self.config)

    def endpoint(self, ordinal: int) -> Endpoint:
        return self.placement.endpoint(ordinal)

    def endpoint_of(self, member: Member) -> Endpoint:
        """Where `member` lives. Raises `LookupError` for a member this cluster did not place,
        which `plan` refuses to act on before it asks this."""
        endpoint = self.placement.locate(member.address)
        if endpoint is None:
            raise LookupError(f"no member of this cluster is placed at {member.address}")
        return endpoint


class Phase(StrEnum):
    READY = "Ready"
    BOOTSTRAPPING = "Bootstrapping"
    SCALING = "Scaling"
    UPDATING = "Updating"
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
class SetDataAside(Step):
    """Move a member's unusable data aside (never deleted), so its old identity is removed and a
    new one joins with an empty folder."""

    endpoint: Endpoint


@dataclass(frozen=True)
class RefillMember(Step):
    """Move a member's database aside (never deleted), keeping its identity and configuration,
    and start it: it loads an empty database and the leader sends it a snapshot. Taken only
    without a quorum, for a member whose data does not load while a running member holds the
    most data (`JoinRules.refills_emptied_voter`)."""

    endpoint: Endpoint

    @property
    def phase(self) -> Phase:
        return Phase.UNAVAILABLE


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
class RestartMember(Step):
    """Stop a running member and start it again from its own data and identity, so that it runs
    with the desired configuration."""

    member: Member
    endpoint: Endpoint

    @property
    def phase(self) -> Phase:
        return Phase.UPDATING


@dataclass(frozen=True)
class TransferLeadership(Step):
    """Hand leadership over before the leader leaves (`during` a scale-down) or restarts
    (`during` an update)."""

    leader: Member
    successor: Member
    during: Phase = Phase.SCALING

    @property
    def phase(self) -> Phase:
        return self.during


SCALE_DOWN_REFUSED = "ScaleDownRefused"


@dataclass(frozen=True)
class Wait(Step):
    """Nothing is safe to do now; `reason` says what the planner waits for. `refusal` names,
    as a condition reason (`SCALE_DOWN_REFUSED`), a change the spec asks for that is refused
    as it stands; None for any other wait."""

    blocked_phase: Phase
    refusal: str | None = None

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
    strangers = [m for m in membership if desired.placement.locate(m.address) is None]
    if strangers:
        return Wait(_strangers_reason(strangers), Phase.DEGRADED)
    members_at = {member.address: member for member in membership}

    for slot in observed.slots:
        if slot.endpoint.address not in members_at:
            if slot.running:
                return StopMember(f"{slot.endpoint.name} is no longer a member", slot.endpoint)
            if slot.has_data and not slot.running:
                return DiscardData(f"{slot.endpoint.name} left the membership", slot.endpoint)

    voters = [member for member in membership if member.voter]
    healthy_voters = [member for member in voters if member.healthy]
    learners = [member for member in membership if member.role is Role.LEARNER]

    held: list[str] = []
    """Why members that are down may not start yet; nothing else waits for them."""
    held_at: set[str] = set()
    for member in membership:
        endpoint = desired.endpoint_of(member)
        seen = observed.slot(member.address) or Slot(endpoint, running=False, has_data=False)
        if seen.running:
            continue
        if member.role is Role.LEARNER and len(membership) > desired.members:
            continue  # a joiner no longer wanted is removed, not started (it may never start)
        if member.started and not seen.has_data:
            return RemoveMember(
                f"{endpoint.name} lost its data: its old identity goes before a new one joins",
                member,
                endpoint,
                replacing=True,
            )
        unreplaced = ""
        if member.started and seen.data_lost:
            others = [m for m in healthy_voters if m.address != member.address]
            if len(others) >= quorum(len(voters)):
                return SetDataAside(
                    f"{endpoint.name} can't start on its data ({seen.why_down()}): it is moved "
                    "aside and the member rejoins under a new identity",
                    endpoint,
                )
            unreplaced = f"; not replaced while only {len(others)} other voter(s) are healthy"
        if not seen.may_start:
            held.append(_held_reason(seen, unreplaced))
            held_at.add(member.address)
            continue
        again = f" again after {seen.why_down()}" if seen.failed_starts else ""
        if not member.started:
            return StartMember(
                f"{endpoint.name} was added and starts{again}", endpoint, joining=True
            )
        return StartMember(f"{endpoint.name} is down and restarts{again}", endpoint, joining=False)

    step = _plan_membership(desired, membership, voters, healthy_voters, learners)
    if isinstance(step, Promote) and step.member.address in held_at:
        return Wait("; ".join(held), Phase.SCALING)  # a learner that can't run can't catch up
    if isinstance(step, AddLearner) and observed.adds_refused:
        return Wait(f"adding {step.endpoint.name} waits: {observed.adds_refused}", step.phase)
    if held and isinstance(step, Done | Wait):
        refusal = step.refusal if isinstance(step, Wait) else None
        return Wait("; ".join([*held, step.reason]), Phase.DEGRADED, refusal)
    if isinstance(step, Done):
        return _plan_restart(desired, observed, membership, voters, healthy_voters) or step
    return step


def _plan_membership(
    desired: Desired,
    membership: tuple[Member, ...],
    voters: list[Member],
    healthy_voters: list[Member],
    learners: list[Member],
) -> Step:
    """Promote, remove or add, once every member that can run does."""

    if len(membership) > desired.members:
        return _plan_removal(desired, healthy_voters, membership)

    if learners:
        learner = learners[0]
        endpoint = desired.endpoint_of(learner)
        if len(healthy_voters) + 1 < quorum(len(voters) + 1):
            return Wait(
                f"{endpoint.name} waits for promotion until enough voters are healthy",
                Phase.DEGRADED,
            )
        return Promote(
            f"{endpoint.name} runs as a learner and is promoted once it has caught up",
            learner,
            endpoint,
        )

    joiner = _next_joiner(desired, membership)
    if joiner is not None:
        unhealthy = [desired.endpoint_of(m).name for m in voters if not m.healthy]
        if unhealthy:
            return Wait(
                f"adding a member waits until {', '.join(unhealthy)} is healthy", Phase.DEGRADED
            )
        return AddLearner(
            f"{len(membership)} of {desired.members} members: adding {joiner.name}", joiner
        )

    raised = [f"{alarm} on {desired.endpoint_of(m).name}" for m in membership for alarm in m.alarms]
    if raised:  # the store's alarm, not membership: nothing to restart or replace
        return Done(f"alarm raised: {', '.join(raised)}", degraded=True)
    return Done("cluster matches its spec", degraded=len(healthy_voters) < len(voters))


CAUGHT_UP_ENTRIES = 1000
"""How far behind the leader's applied index a restarted member may be and count as caught up.
Well within the entries a leader keeps for a lagging follower after a snapshot (etcd's
`--experimental-snapshot-catchup-entries`, 5000 by default), so the member replays the gap from
the log in well under a second; observing members one after the other under a steady writer
shows gaps of a few hundred entries between members that are in step."""


def caught_up(member: Member, leader: Member | None) -> bool:
    """Healthy, and its applied index within `CAUGHT_UP_ENTRIES` of the leader's (a member
    whose index or leader's index is unknown has not shown that it caught up)."""
    if not member.healthy or leader is None:
        return False
    if member is leader:
        return True
    if member.applied_index is None or leader.applied_index is None:
        return False
    return leader.applied_index - member.applied_index <= CAUGHT_UP_ENTRIES


def restart_candidate(desired: Desired, observed: Observation) -> Member | None:
    """The stale member (`Desired.stale`) that restarts next, None when none is stale: an
    unhealthy one first (its restart costs nothing), then the lowest ordinal, the leader last."""
    if observed.membership is None:
        return None
    stale = [m for m in observed.membership if desired.stale(observed.slot(m.address))]
    return min(
        stale,
        key=lambda m: (m.role is Role.LEADER, m.healthy, desired.endpoint_of(m).ordinal),
        default=None,
    )


def _plan_restart(
    desired: Desired,
    observed: Observation,
    membership: tuple[Member, ...],
    voters: list[Member],
    healthy_voters: list[Member],
) -> Step | None:
    """The next restart of a rolling update, once the membership matches the spec; None when
    every member runs the desired configuration.

    One member at a time: every member already updated must be healthy and caught up with the
    leader before the next restarts. A restart that would leave fewer healthy voters than a
    quorum waits, except in a one-voter cluster, which has no other way to take a change. The
    leader restarts last: etcd hands leadership to an updated, caught-up follower first; a
    ZooKeeper leader restarts as it is, and its followers elect a new one.
    """
    target = restart_candidate(desired, observed)
    if target is None:
        return None
    endpoint = desired.endpoint_of(target)
    leader = next((m for m in membership if m.role is Role.LEADER), None)
    updated = [m for m in membership if not desired.stale(observed.slot(m.address))]
    lagging = [desired.endpoint_of(m).name for m in updated if not caught_up(m, leader)]
    if lagging:
        return Wait(
            f"updating: {endpoint.name} restarts once {', '.join(lagging)} is healthy and "
            "caught up with the leader",
            Phase.UPDATING,
        )
    stops_a_voter = target.voter and target.healthy
    remaining = len(healthy_voters) - stops_a_voter
    if remaining < quorum(len(voters)) and len(voters) > 1:
        return Wait(
            f"updating: restarting {endpoint.name} would leave {remaining} healthy of "
            f"{len(voters)} voters, below quorum",
            Phase.DEGRADED,
        )
    if target.role is Role.LEADER and desired.rules.transfers_leadership and len(voters) > 1:
        return TransferLeadership(
            f"updating: {endpoint.name} leads and restarts last, after handing leadership over",
            target,
            _successor(desired, healthy_voters, target),
            during=Phase.UPDATING,
        )
    return RestartMember(
        f"updating: {endpoint.name} restarts with the new configuration", target, endpoint
    )


def _strangers_reason(strangers: Sequence[Member]) -> str:
    listed = ", ".join(f"{m.id} at {m.address}" for m in strangers)
    return (
        f"the membership lists {listed}, which this cluster did not place: nothing changes "
        "until a person removes it (quorumkeeper never removes what it can't prove its own)"
    )


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
    """Start every member that has data, the most up-to-date first, one at a time, each once
    the one before answers: both stores elect the member whose log reaches furthest among those
    present, so the longest log must be present before the shorter ones can form a quorum. A
    member that can't start blocks no one, unless the members left hold damaged, shorter data:
    a quorum of those would lose what only it holds, so that waits for a person."""
    with_data = [slot for slot in observed.slots if slot.has_data]
    if not with_data and not any(slot.running for slot in observed.slots):
        first = observed.slot(desired.endpoint(0).address)
        if first is not None and not first.may_start:
            return Wait(_held_reason(first), Phase.UNAVAILABLE)
        return Bootstrap(
            f"a new cluster starts from {desired.endpoint(0).name}", desired.endpoint(0)
        )
    booting = [slot.name for slot in observed.slots if slot.booting]
    if booting:
        return Wait(
            f"no quorum answers; {', '.join(booting)} loads its data before the next member starts",
            Phase.UNAVAILABLE,
        )
    stopped = [slot for slot in with_data if not slot.running]
    unloadable = [slot for slot in stopped if slot.data_unloadable]
    held = [slot for slot in stopped if not slot.may_start and slot not in unloadable]
    startable = sorted(
        (slot for slot in stopped if slot not in held and slot not in unloadable),
        key=lambda slot: (slot.position is None, _descending(slot.position), slot.endpoint.ordinal),
    )
    present = [slot for slot in with_data if slot.running or slot in startable]
    stranded = _stranded_by_damage([*held, *unloadable], present)
    if stranded:
        return Wait(stranded, Phase.UNAVAILABLE)
    if startable:
        first = startable[0]
        where = f" at {first.position.label}" if first.position else ""
        return StartMember(
            f"no quorum answers; {first.name} has data{where} and starts, the most "
            "up-to-date first",
            first.endpoint,
            joining=False,
        )
    reasons = [_held_reason(slot) for slot in held]
    if unloadable:
        return _refill_or_wait(desired, unloadable, with_data, held)
    return Wait(
        "; ".join([*reasons, "waiting for a quorum of members to answer"]), Phase.UNAVAILABLE
    )


def _refill_or_wait(
    desired: Desired, unloadable: Sequence[Slot], with_data: Sequence[Slot], held: Sequence[Slot]
) -> Step:
    """Without a quorum, every startable member started, and members whose data does not load:
    starting those again can't help. When a running member holds at least as much as every
    member's data reaches (an unloadable member's counts up to its first bad record), emptying
    one and letting the leader refill it loses nothing acknowledged, one at a time. Until then
    the members held back (`held`) are waited for; one that holds the most but can't start for
    a cause outside its data (`Slot.blocked_by`) waits for a person. Where the store or runtime
    can't refill (`JoinRules.refills_emptied_voter`), a person decides, told who holds what."""
    refused = ", ".join(
        f"{slot.name} ({slot.position.label if slot.position else 'position unknown'}: "
        f"{slot.unusable_data or (slot.position.damage if slot.position else None)})"
        for slot in unloadable
    )
    positions = [slot.position for slot in with_data]
    known = [position for position in positions if position is not None]
    holder = max(
        (slot for slot in with_data if slot.running and slot.position is not None),
        key=lambda slot: (slot.position, -slot.endpoint.ordinal),
        default=None,
    )
    if (
        holder is None
        or holder.position is None
        or len(known) < len(positions)
        or holder.position < max(known)
    ):
        furthest = max(
            (slot for slot in held if slot.position is not None),
            key=lambda slot: (slot.position, -slot.endpoint.ordinal),
            default=None,
        )
        if furthest is not None and furthest.blocked_by and furthest.position == max(known):
            return Wait(
                f"waiting for a person: {furthest.name} holds the most data "
                f"({furthest.position.label}) but can't start ({furthest.blocked_by}); the data "
                f"of {refused} does not load, so no quorum forms without it. Fix what stops "
                f"{furthest.name}: the others are then refilled from it",
                Phase.UNAVAILABLE,
            )
        return Wait(
            "; ".join(
                [
                    *map(_held_reason, held),
                    f"the data of {refused} does not load, and no running member is known to "
                    "hold as much as every member's data reaches: waiting for a quorum of "
                    "members to answer, or for a person to repair or restore that data",
                ]
            ),
            Phase.UNAVAILABLE,
        )
    if not desired.rules.refills_emptied_voter:
        return Wait(
            f"waiting for a person: the data of {refused} does not load and no quorum answers "
            f"without it; {holder.name} runs and holds the most ({holder.position.label}). "
            f"Repair or restore that data, or start a new cluster from {holder.name}'s data",
            Phase.UNAVAILABLE,
        )
    first = min(unloadable, key=lambda slot: slot.endpoint.ordinal)
    return RefillMember(
        f"no quorum answers and the data of {refused} does not load; {holder.name} runs and "
        f"holds the most ({holder.position.label}), so {first.name}'s data is moved aside and it "
        "starts empty under its own identity, for the leader to send it a snapshot",
        first.endpoint,
    )


def _held_reason(slot: Slot, note: str = "") -> str:
    """Why a member that is down does not start this pass; `note` is appended. The seconds
    left are in status, not here: a reason that changes every pass would be logged every pass."""
    if slot.blocked_by:
        return f"{slot.name} can't start: {slot.blocked_by}{note}"
    return f"{slot.name} restarts after a backoff ({slot.why_down()}){note}"


def _descending(position: DataPosition | None) -> tuple[int, int]:
    return (0, 0) if position is None else (-position.term, -position.index)


def _stranded_by_damage(held: Sequence[Slot], present: Sequence[Slot]) -> str | None:
    """Why the members able to run must not form a quorum without a held one, or None.

    They must not when a member lost data to damage (one able to run, or one whose data does
    not load) and a member that can't start reaches further than all the others: acknowledged
    writes may then exist only on that member.
    """
    ahead = [(s, s.position) for s in held if s.position is not None]
    if not ahead or not present:  # nothing can start: `_refill_or_wait` names who holds what
        return None
    furthest, reach = max(ahead, key=lambda pair: pair[1])
    if not any(
        s.position is not None and s.position.damage for s in (*present, *held) if s is not furthest
    ):
        return None
    best_present = max((s.position for s in present if s.position is not None), default=None)
    if best_present is not None and reach <= best_present:
        return None
    shorter = ", ".join(  # every member that would form it: one may read clean, yet be behind
        f"{slot.name} at an unknown position"
        if slot.position is None
        else f"{slot.name} at {slot.position.label}"
        + (f" (damaged: {slot.position.damage})" if slot.position.damage else "")
        for slot in present
    )
    also_down = "".join(  # CI input: one damaged member's data did not load at all
        f"; {slot.name} at {slot.position.label} can't start either ({slot.why_down()})"
        for slot in held
        if slot is not furthest and slot.position is not None
    )
    return (
        f"waiting for a person: {furthest.name} holds the most data ({reach.label}) but can't "
        f"start ({furthest.why_down()}); {shorter} would form a quorum without it and lose what "
        f"only it holds{also_down}. Fix what stops {furthest.name}; to accept the loss instead, "
        "move its data folder away"
    )


def _successor(desired: Desired, healthy_voters: Sequence[Member], leader: Member) -> Member:
    """Who takes leadership over from `leader`: the healthy voter with the lowest ordinal."""
    return min(
        (m for m in healthy_voters if m is not leader),
        key=lambda m: desired.endpoint_of(m).ordinal,
    )


def removal_candidate(desired: Desired, membership: Sequence[Member]) -> Member:
    """Which member goes first on scale-down: a learner, then an unhealthy member, then the
    highest ordinal, so that healthy low ordinals (and the data they hold) stay. A store that
    can't hand leadership over loses its leader last. A runtime that removes only its highest
    ordinal (`JoinRules.removes_highest_ordinal_only`) loses the highest-ordinal member, and the
    quorum rule alone decides whether that may happen now."""
    if desired.rules.removes_highest_ordinal_only:
        return max(membership, key=lambda m: desired.endpoint_of(m).ordinal)
    return max(
        membership,
        key=lambda m: (
            m.role is Role.LEARNER,
            not m.healthy,
            desired.rules.transfers_leadership or m.role is not Role.LEADER,
            desired.endpoint_of(m).ordinal,
        ),
    )


def _plan_removal(
    desired: Desired, healthy_voters: list[Member], membership: Sequence[Member]
) -> Step:
    victim = removal_candidate(desired, membership)
    endpoint = desired.endpoint_of(victim)
    reason = f"{len(membership)} members, {desired.members} wanted: removing {endpoint.name}"
    if victim.role is Role.LEARNER:
        return RemoveMember(reason, victim, endpoint, replacing=False)
    refused = scale_down_blocker(desired, membership)
    if refused is not None:
        return Wait(refused, Phase.DEGRADED, refusal=SCALE_DOWN_REFUSED)
    if victim.role is Role.LEADER and desired.rules.transfers_leadership:
        return TransferLeadership(
            f"{endpoint.name} leads: handing leadership over before removing it",
            victim,
            _successor(desired, healthy_voters, victim),
        )
    return RemoveMember(reason, victim, endpoint, replacing=False)


def scale_down_blocker(desired: Desired, membership: Sequence[Member]) -> str | None:
    """Why shrinking `membership` to `desired.members` would pass below quorum, or None.

    Replays the removals the planner would make, one at a time, against today's health: a
    scale-down is refused as a whole before its first removal, so that it never stops halfway
    with fewer members and the same unhealthy ones (less room for one more failure). The reason
    names the members, how many are healthy and what would let it through.
    """
    remaining = list(membership)
    while len(remaining) > desired.members:
        victim = removal_candidate(desired, remaining)
        voters = [m for m in remaining if m.voter]
        left = sum(m.healthy for m in voters if m is not victim)
        if victim.voter and left < quorum(len(voters) - 1):
            return _scale_down_refusal(desired, membership, remaining, victim, left)
        remaining.remove(victim)
    return None


def _scale_down_refusal(
    desired: Desired,
    membership: Sequence[Member],
    remaining: Sequence[Member],
    victim: Member,
    left: int,
) -> str:
    """The reason `scale_down_blocker` gives: removing `victim` from `remaining` would leave
    `left` healthy voters, below quorum."""

    def names(members: Sequence[Member]) -> str:
        return ", ".join(desired.endpoint_of(m).name for m in members) or "none"

    voters = [m for m in membership if m.voter]
    healthy = [m for m in voters if m.healthy]
    unhealthy = [m for m in voters if not m.healthy]
    after = sum(m.voter for m in remaining) - 1
    verb = "are" if len(unhealthy) > 1 else "is"
    fixes = [
        f"once {names(unhealthy)} {verb} healthy again"
        if unhealthy
        else "once more voters are healthy"
    ]
    if len(remaining) < len(membership):
        fixes.append(f"now with members: {len(remaining)}")
    return (
        f"scale-down from {len(membership)} to {desired.members} members refused: removing "
        f"{desired.endpoint_of(victim).name} would leave {left} healthy of {after} voters, "
        f"below the quorum of {quorum(after)} ({len(healthy)} of {len(voters)} voters healthy: "
        f"{names(healthy)}; unhealthy: {names(unhealthy)}); possible {', or '.join(fixes)}"
    )
