"""Property tests: for any spec and observation, the planner's step keeps the rules."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quorumkeeper.model import (
    MAX_FAILED_STARTS,
    DataPosition,
    Endpoint,
    JoinRules,
    Member,
    Placement,
    Role,
    Slot,
)
from quorumkeeper.planner import (
    SCALE_DOWN_REFUSED,
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
    caught_up,
    plan,
    quorum,
    scale_down_blocker,
)
from quorumkeeper.runtimes.kubernetes.placement import ServiceDnsPlacement
from quorumkeeper.runtimes.local.placement import LoopbackPlacement

PLACEMENT = LoopbackPlacement("c", "127.0.7")


ETCD_RULES = JoinRules(transfers_leadership=True)
ZOOKEEPER_RULES = JoinRules(transfers_leadership=False)


PLACEMENTS: tuple[Placement, ...] = (
    PLACEMENT,
    ServiceDnsPlacement("c", "c-peers", "stores", "cluster.example"),
)
"""Both runtimes' placements: loopback addresses, and pod DNS names under a headless Service."""


def _desired(
    members: int,
    rules: JoinRules = ETCD_RULES,
    placement: Placement = PLACEMENT,
    config: str | None = None,
) -> Desired:
    return Desired(members=members, placement=placement, rules=rules, config=config)


CONFIGS = ("new", "old", None)
"""A slot's configuration: the desired one, another, or unknown."""


@st.composite
def positions(draw: st.DrawFn) -> DataPosition:
    term, index = draw(st.integers(1, 3)), draw(st.integers(0, 40))
    damage = draw(st.sampled_from([None, None, "log.100000001 at byte 4096: CRC mismatch"]))
    loads = damage is None or draw(st.booleans())
    return DataPosition(term, index, f"term {term}, index {index}", damage, loads)


@st.composite
def slots_at(draw: st.DrawFn, endpoint: Endpoint, *, running: bool, has_data: bool) -> Slot:
    """A member's process and data, with what the runtime knows of its recent starts."""
    position = draw(st.none() | positions()) if has_data else None
    config = draw(st.sampled_from(CONFIGS))
    if running:
        return Slot(
            endpoint, running, has_data, position, booting=draw(st.booleans()), config=config
        )
    failed = draw(st.integers(0, 6))
    return Slot(
        endpoint,
        running,
        has_data,
        position,
        failed_starts=failed,
        held_back=draw(st.sampled_from([0.0, 4.0])) if failed else 0.0,
        last_error="exits at start" if failed else None,
        unusable_data=draw(st.sampled_from([None, "walpb: crc mismatch"])) if failed else None,
        blocked_by=draw(st.sampled_from([None, None, f"{endpoint.address}:2380 is held by pid 9"])),
        config=config,
    )


@st.composite
def observations(draw: st.DrawFn) -> tuple[Desired, Observation]:
    desired = _desired(
        draw(st.integers(1, 9)),
        draw(st.sampled_from([ETCD_RULES, ZOOKEEPER_RULES])),
        draw(st.sampled_from(PLACEMENTS)),
        draw(st.sampled_from(["new", None])),
    )
    ordinals = draw(st.sets(st.integers(0, 8), max_size=9))
    has_quorum = draw(st.booleans())
    members = []
    slots = []
    leader_drawn = False
    learners = 0
    for ordinal in sorted(ordinals):
        endpoint = desired.endpoint(ordinal)
        in_membership = has_quorum and draw(st.booleans())
        running = draw(st.booleans())
        has_data = draw(st.booleans())
        slots.append(draw(slots_at(endpoint, running=running, has_data=has_data)))
        if not in_membership:
            continue
        role = draw(st.sampled_from([Role.FOLLOWER, Role.LEADER, Role.LEARNER]))
        if role is Role.LEADER and (leader_drawn or not running):
            role = Role.FOLLOWER
        if role is Role.LEARNER:
            if learners:
                role = Role.FOLLOWER
            learners += 1
        leader_drawn |= role is Role.LEADER
        healthy = running and (role is Role.LEADER or draw(st.booleans()))
        members.append(
            Member(
                id=str(1000 + ordinal),
                address=endpoint.address,
                role=role,
                healthy=healthy,
                started=draw(st.booleans()) if role is Role.LEARNER else True,
                applied_index=draw(st.sampled_from([None, 5000, 4500, 3000])),
            )
        )
    voters = [m for m in members if m.voter]
    if has_quorum and members and sum(m.healthy for m in voters) < quorum(len(voters)):
        has_quorum = False  # a store without a healthy quorum can't answer a member list
    membership = tuple(members) if has_quorum and voters else None
    return desired, Observation(membership, tuple(slots))


def _member_at(observation: Observation, address: str) -> Member | None:
    return next((m for m in observation.membership or () if m.address == address), None)


@settings(max_examples=3000, deadline=None)
@given(observations())
def test_every_step_keeps_the_rules(case: tuple[Desired, Observation]) -> None:
    desired, observed = case
    step = plan(desired, observed)
    membership = observed.membership
    assert isinstance(step, Step)
    if membership is None:
        assert not step.changes_membership, "no membership change without a quorum"
        if isinstance(step, Bootstrap):
            assert not any(s.has_data or s.running for s in observed.slots)
            first = observed.slot(step.endpoint.address)
            assert first is None or first.may_start, "backoff holds a bootstrap"
        if isinstance(step, StartMember):
            _check_cold_start(observed, step.endpoint)
        if isinstance(step, RefillMember):
            _check_refill(desired, observed, step.endpoint)
        return
    voters = [m for m in membership if m.voter]
    healthy = [m for m in voters if m.healthy]
    learners = [m for m in membership if m.role is Role.LEARNER]
    match step:
        case StopMember(endpoint=endpoint) | DiscardData(endpoint=endpoint):
            assert _member_at(observed, endpoint.address) is None, "remove before stop"
        case StartMember(endpoint=endpoint):
            member = _member_at(observed, endpoint.address)
            slot = observed.slot(endpoint.address)
            assert member is not None, "members are added, then started"
            assert slot is None or slot.may_start, "backoff and held ports hold a start back"
            if member.started:
                assert slot is not None and slot.has_data, "a wiped member is never restarted"
        case SetDataAside(endpoint=endpoint):
            member = _member_at(observed, endpoint.address)
            slot = observed.slot(endpoint.address)
            assert member is not None and member.started and slot is not None
            assert slot.data_lost and not slot.running and slot.blocked_by is None
            others = [m for m in healthy if m is not member]
            assert len(others) >= quorum(len(voters)), "data is set aside only with a quorum"
        case AddLearner(endpoint=endpoint):
            assert not learners, "one learner at a time"
            assert len(healthy) == len(voters), "no add while a voter is unhealthy"
            assert _member_at(observed, endpoint.address) is None
            assert len(membership) < desired.members
        case Promote(member=member):
            assert member.role is Role.LEARNER
            slot = observed.slot(member.address)
            assert slot is None or slot.running or slot.may_start, "a held learner can't catch up"
            assert len(healthy) + 1 >= quorum(len(voters) + 1)
        case RemoveMember(member=member, replacing=replacing):
            assert member.role is not Role.LEADER, "a leader hands over first, or stays"
            if member.voter:
                left = len(healthy) - (1 if member.healthy else 0)
                assert left >= quorum(len(voters) - 1), "never below quorum"
            if not replacing:
                assert len(membership) > desired.members
        case TransferLeadership(leader=leader, successor=successor):
            assert desired.rules.transfers_leadership
            assert leader.role is Role.LEADER and successor.voter and successor.healthy
            assert successor is not leader
            if step.phase is Phase.UPDATING:
                _check_restart(desired, observed, leader)
        case RestartMember(member=member):
            _check_restart(desired, observed, member)
        case Done():
            assert len(membership) == desired.members and not learners
            for member in membership:
                slot = observed.slot(member.address)
                assert slot is not None and slot.running, "Done while a member is down"
                assert not desired.stale(slot), "Done while a member runs a stale configuration"
        case Wait():
            pass
        case _:
            raise AssertionError(f"unexpected step {step!r} with a quorum")


def _check_restart(desired: Desired, observed: Observation, member: Member) -> None:
    """A restart for a new configuration (or the leadership transfer before one): only once the
    membership matches the spec, one member at a time, never below quorum, the leader last."""
    membership = observed.membership
    assert membership is not None
    voters = [m for m in membership if m.voter]
    healthy = [m for m in voters if m.healthy]
    assert len(membership) == desired.members, "no restart while the membership changes"
    assert not any(m.role is Role.LEARNER for m in membership), "no restart beside a learner"
    slots = {m.address: observed.slot(m.address) for m in membership}
    assert all(s is not None and s.running for s in slots.values()), "no restart while one is down"
    assert desired.stale(slots[member.address]), "only a stale member restarts"
    leader = next((m for m in membership if m.role is Role.LEADER), None)
    for other in membership:
        if not desired.stale(slots[other.address]):
            assert caught_up(other, leader), "the last restarted member caught up before the next"
    left = len(healthy) - (member.voter and member.healthy)
    assert left >= quorum(len(voters)) or len(voters) == 1, "never below quorum"
    if member.role is Role.LEADER:
        others = [m for m in membership if m is not member]
        assert not any(desired.stale(slots[m.address]) for m in others), "the leader restarts last"


def _check_cold_start(observed: Observation, endpoint: Endpoint) -> None:
    """Without a quorum: one start at a time, the most up-to-date first, and never a start
    that lets damaged members form a quorum without the member holding the most data."""
    slot = observed.slot(endpoint.address)
    assert slot is not None and slot.has_data and not slot.running and slot.may_start
    assert not any(s.booting for s in observed.slots), "the next start waits for the last one"
    assert not slot.data_unloadable, "a member whose data does not load is not started again"
    stopped = [s for s in observed.slots if s.has_data and not s.running]
    loadable = [s for s in stopped if not s.data_unloadable]
    startable = [s for s in loadable if s.may_start and s.position is not None]
    if slot.position is not None:
        assert all(s.position <= slot.position for s in startable if s.position), "longest first"
    else:
        assert not startable, "a member whose position is known starts before one unknown"
    present = [s for s in observed.slots if s.running or (s in loadable and s.may_start)]
    damaged = any(s.position and s.position.damage for s in present)
    known = [s.position for s in present if s.position]
    for held in (s for s in stopped if s not in present and s.position):
        assert not (damaged and held.position and known and held.position > max(known)), (
            "damaged members never form a quorum without a member holding more"
        )


def _check_refill(desired: Desired, observed: Observation, endpoint: Endpoint) -> None:
    """Without a quorum, a member's database is moved aside for the leader to refill only
    where the store allows it, once nothing else can start, one at a time, and while a running
    member holds at least as much as every member's data reaches: nothing acknowledged is lost."""
    assert desired.rules.refills_emptied_voter
    slot = observed.slot(endpoint.address)
    assert slot is not None and slot.has_data and not slot.running and slot.data_unloadable
    assert not any(s.booting for s in observed.slots), "one refill or start at a time"
    with_data = [s for s in observed.slots if s.has_data]
    assert not any(s.may_start and not s.running and not s.data_unloadable for s in with_data), (
        "members that can start go first"
    )
    positions = [s.position for s in with_data]
    assert all(positions), "every member's reach is known"
    holders = [s.position for s in with_data if s.running and s.position]
    assert holders and max(holders) >= max(p for p in positions if p), "a runner holds the most"


def _member(ordinal: int, role: Role = Role.FOLLOWER, *, healthy: bool = True) -> Member:
    return Member(
        id=str(ordinal),
        address=PLACEMENT.endpoint(ordinal).address,
        role=role,
        healthy=healthy,
        started=True,
    )


def _running(*ordinals: int) -> tuple[Slot, ...]:
    desired = _desired(9)
    return tuple(Slot(desired.endpoint(n), running=True, has_data=True) for n in ordinals)


def test_an_empty_cluster_bootstraps_from_its_first_member() -> None:
    step = plan(_desired(3), Observation(None, ()))
    assert isinstance(step, Bootstrap) and step.endpoint.name == "c-0"


def test_scale_down_removes_the_leader_only_after_handing_leadership_over() -> None:
    membership = (_member(0), _member(1, Role.LEADER))
    step = plan(_desired(1), Observation(membership, _running(0, 1)))
    assert isinstance(step, TransferLeadership) and step.successor.id == "0"


def test_scale_down_prefers_an_unhealthy_member() -> None:
    membership = (_member(0, Role.LEADER), _member(1, healthy=False), _member(2))
    step = plan(_desired(2), Observation(membership, _running(0, 1, 2)))
    assert isinstance(step, RemoveMember) and step.member.id == "1"


def test_a_down_member_with_data_restarts_and_a_wiped_one_is_replaced() -> None:
    desired = _desired(3)
    membership = (_member(0, Role.LEADER), _member(1), _member(2, healthy=False))
    down = Slot(desired.endpoint(2), running=False, has_data=True)
    restart = plan(desired, Observation(membership, (*_running(0, 1), down)))
    assert isinstance(restart, StartMember) and not restart.joining
    wiped = Slot(desired.endpoint(2), running=False, has_data=False)
    replace = plan(desired, Observation(membership, (*_running(0, 1), wiped)))
    assert isinstance(replace, RemoveMember) and replace.replacing


@pytest.mark.parametrize("rules", [ETCD_RULES, ZOOKEEPER_RULES])
def test_a_joiner_is_added_then_started_then_promoted(rules: JoinRules) -> None:
    desired = _desired(2, rules)
    leader = _member(0, Role.LEADER)
    add = plan(desired, Observation((leader,), _running(0)))
    assert isinstance(add, AddLearner) and add.endpoint.name == "c-1"
    added = replace(_member(1, Role.LEARNER, healthy=False), started=False)
    start = plan(desired, Observation((leader, added), _running(0)))
    assert isinstance(start, StartMember) and start.joining and start.endpoint.name == "c-1"
    syncing = replace(added, started=True)
    promote = plan(desired, Observation((leader, syncing), _running(0, 1)))
    assert isinstance(promote, Promote) and promote.member == syncing


def test_zookeeper_leader_is_removed_last_without_a_transfer() -> None:
    desired = _desired(1, ZOOKEEPER_RULES)
    first = plan(desired, Observation((_member(0), _member(1, Role.LEADER)), _running(0, 1)))
    assert isinstance(first, RemoveMember) and first.member.id == "0"
    last = plan(desired, Observation((_member(1, Role.LEADER), _member(2)), _running(1, 2)))
    assert isinstance(last, RemoveMember) and last.member.id == "2"


HIGHEST_ONLY = (
    JoinRules(transfers_leadership=True, removes_highest_ordinal_only=True),
    JoinRules(transfers_leadership=False, removes_highest_ordinal_only=True),
)


@settings(max_examples=2000, deadline=None)
@given(observations(), st.sampled_from(HIGHEST_ONLY))
def test_a_runtime_that_removes_only_its_highest_ordinal_loses_nothing_else(
    case: tuple[Desired, Observation], rules: JoinRules
) -> None:
    """A StatefulSet shrinks from the top: every scale-down removal (and the leadership handover
    before it) concerns the highest-ordinal member, while the quorum rule still holds."""
    desired, observed = case
    desired = replace(desired, rules=rules)
    step = plan(desired, observed)
    membership = observed.membership or ()
    top = max((desired.endpoint_of(m).ordinal for m in membership), default=None)
    if isinstance(step, RemoveMember) and not step.replacing:
        assert step.endpoint.ordinal == top
        voters = [m for m in membership if m.voter]
        if step.member.voter:
            left = sum(m.healthy for m in voters if m is not step.member)
            assert left >= quorum(len(voters) - 1)
    if isinstance(step, TransferLeadership):
        assert desired.endpoint_of(step.leader).ordinal == top


def test_a_statefulset_scale_down_removes_the_top_ordinal_even_when_another_is_unhealthy() -> None:
    rules = HIGHEST_ONLY[1]
    membership = (_member(0, Role.LEADER), _member(1, healthy=False), _member(2), _member(3))
    step = plan(_desired(3, rules), Observation(membership, _running(0, 1, 2, 3)))
    assert isinstance(step, RemoveMember) and step.member.id == "3"


def test_scale_down_blocker_reports_a_loss_of_quorum() -> None:
    membership = (_member(0, Role.LEADER), _member(1, healthy=False), _member(2, healthy=False))
    assert scale_down_blocker(_desired(1), membership) is not None
    healthy = (_member(0, Role.LEADER), _member(1), _member(2))
    assert scale_down_blocker(_desired(1), healthy) is None


def _stopped(ordinal: int, position: DataPosition | None, **start: Any) -> Slot:
    endpoint = _desired(9).endpoint(ordinal)
    return Slot(endpoint, running=False, has_data=True, position=position, **start)


INTACT = DataPosition(2, 1642, "zxid 0x200000672")
TRUNCATED = DataPosition(2, 780, "zxid 0x20000030c", damage="log.200000001 at 61440: CRC")


def test_a_cold_start_begins_with_the_most_up_to_date_member_and_waits_for_it() -> None:
    """Issue input: two of three members' newest logs damaged, the intact one must lead."""
    desired = _desired(3, ZOOKEEPER_RULES)
    stopped = (_stopped(0, TRUNCATED), _stopped(1, TRUNCATED), _stopped(2, INTACT))
    first = plan(desired, Observation(None, stopped))
    assert isinstance(first, StartMember) and first.endpoint.name == "c-2"
    assert "zxid 0x200000672" in first.reason
    loading = replace(stopped[2], running=True, booting=True)
    wait = plan(desired, Observation(None, (*stopped[:2], loading)))
    assert isinstance(wait, Wait) and "c-2" in wait.reason
    answering = replace(loading, booting=False)
    second = plan(desired, Observation(None, (*stopped[:2], answering)))
    assert isinstance(second, StartMember) and second.endpoint.name == "c-0"


def test_damaged_members_wait_for_a_person_rather_than_outvote_the_longest_log() -> None:
    desired = _desired(3, ZOOKEEPER_RULES)
    held = _stopped(2, INTACT, failed_starts=3, blocked_by="127.0.7.3:2888 is held by pid 9 (nc)")
    step = plan(desired, Observation(None, (_stopped(0, TRUNCATED), _stopped(1, TRUNCATED), held)))
    assert isinstance(step, Wait) and step.phase is Phase.UNAVAILABLE
    for words in ("waiting for a person", "c-2", "zxid 0x200000672", "c-0", "zxid 0x20000030c"):
        assert words in step.reason

    # CI input: random bytes left one damaged member's log reading clean, yet behind: the
    # reason names it too, as one of the members that would form the quorum.
    behind = DataPosition(2, 771, "zxid 0x200000303")
    step = plan(desired, Observation(None, (_stopped(0, behind), _stopped(1, TRUNCATED), held)))
    assert isinstance(step, Wait) and "waiting for a person" in step.reason
    assert "c-0 at zxid 0x200000303, c-1 at zxid 0x20000030c (damaged: " in step.reason

    # CI input: random bytes made one damaged member's data fail to load: it is named too.
    step = plan(desired, Observation(None, (_stopped(0, TRUNCATED), _stopped(1, UNLOADABLE), held)))
    assert isinstance(step, Wait) and "waiting for a person" in step.reason
    assert "c-0 at zxid 0x20000030c (damaged: " in step.reason
    assert "c-1 at zxid 0x200000643 can't start either (its data does not load: " in step.reason
    # ...and when the other damaged member reads clean but behind, nothing starts either.
    behind = DataPosition(2, 771, "zxid 0x200000303")
    step = plan(desired, Observation(None, (_stopped(0, behind), _stopped(1, UNLOADABLE), held)))
    assert isinstance(step, Wait) and "c-0 at zxid 0x200000303 would form" in step.reason


UNLOADABLE = DataPosition(2, 1603, "zxid 0x200000643", "log.200000001: CRC check failed", False)


@pytest.mark.parametrize("rules", [ZOOKEEPER_RULES, ETCD_RULES])
def test_members_whose_data_does_not_load_are_refilled_from_the_one_holding_the_most(
    rules: JoinRules,
) -> None:
    """Issue input as seen in CI: the damage of two of three ZooKeeper members' logs makes
    their data fail to load ("Unreasonable length"), the intact member runs alone. Starting
    them again can't help: ZooKeeper empties one at a time for the leader to refill; etcd, whose
    emptied member can't keep its ID, waits for a person, naming who holds what."""
    desired = _desired(3, rules)
    intact = replace(_stopped(2, INTACT), running=True)
    broken = (_stopped(0, UNLOADABLE), _stopped(1, UNLOADABLE, failed_starts=2, held_back=4.0))
    step = plan(desired, Observation(None, (*broken, intact)))
    if rules.refills_emptied_voter:
        assert isinstance(step, RefillMember) and step.endpoint.name == "c-0"
        assert "c-2" in step.reason and "zxid 0x200000672" in step.reason
    else:
        assert isinstance(step, Wait) and "waiting for a person" in step.reason
        assert "c-2" in step.reason and "c-0" in step.reason and "zxid 0x200000643" in step.reason
    first = plan(desired, Observation(None, (*broken, replace(intact, running=False))))
    assert isinstance(first, StartMember) and first.endpoint.name == "c-2", "never started again"


def test_unloadable_members_wait_for_a_person_when_the_one_holding_most_cant_start() -> None:
    """CI input: the damage made both damaged members' data fail to load, and another program
    holds the intact member's port: nothing can start, the intact member is what a person must
    free; the others are refilled from it afterwards."""
    desired = _desired(3, ZOOKEEPER_RULES)
    held = _stopped(2, INTACT, blocked_by="127.0.7.3:2181 is held by pid 9 (nc)")
    step = plan(
        desired, Observation(None, (_stopped(0, UNLOADABLE), _stopped(1, UNLOADABLE), held))
    )
    assert isinstance(step, Wait) and step.reason.startswith("waiting for a person: c-2")
    for words in ("zxid 0x200000672", "held by pid 9", "c-0 (zxid 0x200000643", "c-1"):
        assert words in step.reason, step.reason
    backing_off = replace(held, blocked_by=None, failed_starts=1, held_back=2.0)
    step = plan(desired, Observation(None, (_stopped(0, UNLOADABLE), backing_off)))
    assert isinstance(step, Wait) and "waiting for a person" not in step.reason
    assert "c-2 restarts after a backoff" in step.reason


def test_a_member_whose_data_does_not_load_is_not_emptied_while_it_may_hold_more() -> None:
    desired = _desired(3, ZOOKEEPER_RULES)
    behind = replace(_stopped(2, TRUNCATED), running=True)
    ahead = _stopped(0, replace(UNLOADABLE, damage="snapshot.0: CRC check failed"))
    step = plan(desired, Observation(None, (ahead, _stopped(1, UNLOADABLE), behind)))
    assert isinstance(step, Wait) and not isinstance(step, RefillMember)
    assert "does not load" in step.reason and "c-0" in step.reason
    unknown = replace(behind, position=None)
    step = plan(desired, Observation(None, (_stopped(0, UNLOADABLE), unknown)))
    assert isinstance(step, Wait) and "no running member is known" in step.reason


def test_a_member_that_cant_start_blocks_no_one_when_nothing_is_damaged() -> None:
    """Issue input: member 0's peer port held by another program after a kill of all three."""
    desired = _desired(3)
    same = DataPosition(4, 900, "term 4, index 900")
    held = _stopped(0, same, blocked_by="127.0.7.1:2380 is held by pid 9 (nc)")
    step = plan(desired, Observation(None, (held, _stopped(1, same), _stopped(2, same))))
    assert isinstance(step, StartMember) and step.endpoint.name == "c-1"


def test_a_member_whose_data_is_unusable_is_set_aside_only_while_a_quorum_stays_healthy() -> None:
    desired = _desired(3)
    membership = (_member(0, Role.LEADER), _member(1), _member(2, healthy=False))
    broken = _stopped(2, None, failed_starts=1, unusable_data="walpb: crc mismatch")
    step = plan(desired, Observation(membership, (*_running(0, 1), broken)))
    assert isinstance(step, SetDataAside) and step.endpoint.name == "c-2"
    weak = (_member(0, Role.LEADER), _member(1, healthy=False), _member(2, healthy=False))
    backing_off = replace(broken, held_back=8.0)
    kept = plan(desired, Observation(weak, (*_running(0, 1), backing_off)))
    assert isinstance(kept, Wait) and "not replaced" in kept.reason


def test_a_member_that_keeps_failing_backs_off_without_holding_the_others() -> None:
    desired = _desired(3)
    membership = (_member(0, Role.LEADER), _member(1), _member(2, healthy=False))
    failing = _stopped(2, None, failed_starts=2, held_back=3.0, last_error="bind: address in use")
    step = plan(desired, Observation(membership, (*_running(0, 1), failing)))
    assert isinstance(step, Wait) and step.phase is Phase.DEGRADED
    assert "c-2 restarts after a backoff" in step.reason and "bind: address in use" in step.reason
    due = replace(failing, held_back=0.0)
    assert isinstance(plan(desired, Observation(membership, (*_running(0, 1), due))), StartMember)
    too_many = replace(due, failed_starts=MAX_FAILED_STARTS)
    replaced = plan(desired, Observation(membership, (*_running(0, 1), too_many)))
    assert isinstance(replaced, SetDataAside)


@settings(max_examples=1000, deadline=None)
@given(observations(), st.data())
def test_an_alarm_never_reads_ready_and_changes_no_step(
    case: tuple[Desired, Observation], data: st.DataObject
) -> None:
    """An alarm (etcd NOSPACE, CORRUPT) is not a membership fact: the planner takes the step it
    would take without it, and a cluster that matches its spec is Degraded, naming the alarm."""
    desired, observed = case
    if not observed.membership:
        return
    alarmed = data.draw(st.sampled_from(observed.membership))
    alarm = data.draw(st.sampled_from(["NOSPACE", "CORRUPT"]))
    membership = tuple(
        replace(m, alarms=(alarm,)) if m is alarmed else m for m in observed.membership
    )
    without = plan(desired, observed)
    step = plan(desired, Observation(membership, observed.slots))
    assert step.phase is not Phase.READY
    named = f"{alarm} on {desired.endpoint_of(alarmed).name}"
    if isinstance(without, Done):
        assert isinstance(step, Done) and step.phase is Phase.DEGRADED
        assert named in step.reason
    elif step.reason != without.reason:  # a wait that names what would follow it: the Done above
        assert type(step) is type(without) is Wait, (step, without)
        matches = "cluster matches its spec"
        assert without.reason.endswith(matches), without.reason
        assert step.reason.startswith(without.reason.removesuffix(matches)) and named in step.reason
    else:
        assert type(step) is type(without)


GRACE = "etcd refuses member adds until every voter has been connected for 5 s"


@settings(max_examples=2000, deadline=None)
@given(observations())
def test_a_store_that_refuses_adds_makes_the_planner_wait_on_it_and_changes_nothing_else(
    case: tuple[Desired, Observation],
) -> None:
    """The store's refusal to add (etcd's reconfiguration grace) is data: where the planner
    would add a learner it waits, naming the refusal and the member; every other step is the
    one it takes without the refusal."""
    desired, observed = case
    without = plan(desired, observed)
    step = plan(desired, replace(observed, adds_refused=GRACE))
    if isinstance(without, AddLearner):
        assert isinstance(step, Wait) and not step.changes_membership
        assert GRACE in step.reason and without.endpoint.name in step.reason
        assert step.phase is without.phase
    else:
        assert step == without


def test_a_joiner_waits_out_the_reconfiguration_grace_then_is_added() -> None:
    desired = _desired(2)
    leader = _member(0, Role.LEADER)
    refused = plan(desired, Observation((leader,), _running(0), adds_refused=GRACE))
    assert isinstance(refused, Wait) and refused.reason == f"adding c-1 waits: {GRACE}"
    added = plan(desired, Observation((leader,), _running(0)))
    assert isinstance(added, AddLearner) and added.endpoint.name == "c-1"


def test_a_placement_maps_every_address_back_without_parsing_it() -> None:
    for placement in PLACEMENTS:
        for ordinal in (0, 4, 8):
            endpoint = placement.endpoint(ordinal)
            assert endpoint.ordinal == ordinal
            assert placement.locate(endpoint.address) == endpoint
            assert placement.named(endpoint.name) == endpoint
        assert placement.locate("10.0.0.1") is None


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_a_member_this_cluster_did_not_place_is_never_acted_on(placement: Placement) -> None:
    desired = _desired(3, placement=placement)
    ours = tuple(replace(_member(n), address=placement.endpoint(n).address) for n in range(3))
    stranger = Member("99", "10.9.9.9", Role.FOLLOWER, healthy=True, started=True)
    slots = tuple(Slot(placement.endpoint(n), running=True, has_data=True) for n in range(3))
    step = plan(desired, Observation((*ours, stranger), slots))
    assert isinstance(step, Wait) and step.phase is Phase.DEGRADED
    assert "99 at 10.9.9.9" in step.reason and "did not place" in step.reason


@st.composite
def rollouts(draw: st.DrawFn) -> tuple[Desired, Observation]:
    """A membership that matches its spec, every member running, some on a stale configuration,
    some unhealthy or behind the leader: the observations a rolling update meets."""
    size = draw(st.integers(1, 9))
    desired = _desired(size, draw(st.sampled_from([ETCD_RULES, ZOOKEEPER_RULES])), config="new")
    leader = draw(st.integers(0, size - 1))
    members, slots = [], []
    for ordinal in range(size):
        endpoint = desired.endpoint(ordinal)
        healthy = ordinal == leader or draw(st.booleans())
        role = Role.LEADER if ordinal == leader else Role.FOLLOWER
        behind = draw(st.sampled_from([0, 0, 10, 5000]))
        members.append(Member(str(ordinal), endpoint.address, role, healthy, True, 10_000 - behind))
        slots.append(Slot(endpoint, True, True, config=draw(st.sampled_from(CONFIGS))))
    # a store without a healthy quorum can't answer a member list
    assume(sum(m.healthy for m in members) >= quorum(len(members)))
    return desired, Observation(tuple(members), tuple(slots))


@settings(max_examples=1000, deadline=None)
@given(rollouts())
def test_a_rolling_update_restarts_one_member_at_a_time_never_below_quorum_the_leader_last(
    case: tuple[Desired, Observation],
) -> None:
    desired, observed = case
    step = plan(desired, observed)
    assert observed.membership is not None
    stale = [m for m in observed.membership if desired.stale(observed.slot(m.address))]
    match step:
        case RestartMember(member=member):
            _check_restart(desired, observed, member)
            if member.role is Role.LEADER and len(observed.membership) > 1:
                assert not desired.rules.transfers_leadership, "etcd hands leadership over first"
        case TransferLeadership(leader=leader):
            assert step.phase is Phase.UPDATING
            _check_restart(desired, observed, leader)
        case Done():
            assert not stale
        case Wait():
            assert stale, "nothing to wait for"
        case _:
            raise AssertionError(f"unexpected step {step!r} in a rolling update")


def _rollout_step(
    rules: JoinRules, configs: tuple[str, ...], *, leader: int = 0, lag: int = 0
) -> Step:
    desired = _desired(len(configs), rules, config="new")
    members = tuple(
        replace(
            _member(n, Role.LEADER if n == leader else Role.FOLLOWER),
            applied_index=100_000 - (0 if n == leader else lag),
        )
        for n in range(len(configs))
    )
    slots = tuple(
        Slot(desired.endpoint(n), running=True, has_data=True, config=config)
        for n, config in enumerate(configs)
    )
    return plan(desired, Observation(members, slots))


@pytest.mark.parametrize("rules", [ETCD_RULES, ZOOKEEPER_RULES])
def test_followers_restart_in_order_then_the_leader(rules: JoinRules) -> None:
    first = _rollout_step(rules, ("old", "old", "old"))
    assert isinstance(first, RestartMember) and first.endpoint.ordinal == 1
    second = _rollout_step(rules, ("old", "new", "old"))
    assert isinstance(second, RestartMember) and second.endpoint.ordinal == 2
    last = _rollout_step(rules, ("old", "new", "new"))
    if rules.transfers_leadership:
        assert isinstance(last, TransferLeadership) and last.phase is Phase.UPDATING
        assert last.leader.address == PLACEMENT.endpoint(0).address
    else:
        assert isinstance(last, RestartMember) and last.endpoint.ordinal == 0
    assert isinstance(_rollout_step(rules, ("new", "new", "new")), Done)


def test_the_next_restart_waits_for_the_last_one_to_catch_up() -> None:
    step = _rollout_step(ETCD_RULES, ("old", "new", "old"), lag=5000)
    assert isinstance(step, Wait) and step.phase is Phase.UPDATING
    assert "c-1 is healthy and caught up" in step.reason


def test_a_single_member_restarts_in_place() -> None:
    step = _rollout_step(ETCD_RULES, ("old",))
    assert isinstance(step, RestartMember) and step.endpoint.ordinal == 0


def test_a_scale_down_that_would_break_quorum_is_refused_naming_members_and_the_way_out() -> None:
    """3 -> 1 on a StatefulSet while c-1 runs unhealthy: removing c-2 first would leave one healthy
    voter of two."""
    rules = HIGHEST_ONLY[0]
    membership = (_member(0, Role.LEADER), _member(1, healthy=False), _member(2))
    step = plan(_desired(1, rules), Observation(membership, _running(0, 1, 2)))
    assert isinstance(step, Wait) and step.refusal == SCALE_DOWN_REFUSED
    assert step.phase is Phase.DEGRADED and not step.changes_membership
    assert step.reason == (
        "scale-down from 3 to 1 members refused: removing c-2 would leave 1 healthy of 2 "
        "voters, below the quorum of 2 (2 of 3 voters healthy: c-0, c-2; unhealthy: c-1); "
        "possible once c-1 is healthy again"
    )
    healed = (_member(0, Role.LEADER), _member(1), _member(2))
    removal = plan(_desired(1, rules), Observation(healed, _running(0, 1, 2)))
    assert isinstance(removal, RemoveMember) and removal.endpoint.name == "c-2"


def test_a_scale_down_is_refused_as_a_whole_before_its_first_removal() -> None:
    """5 -> 1 while c-1 runs unhealthy: the first two removals would keep a quorum, the third
    not; nothing is removed, and the size the message offers is accepted."""
    rules = HIGHEST_ONLY[1]
    membership = (_member(0, Role.LEADER), _member(1, healthy=False), *map(_member, (2, 3, 4)))
    observed = Observation(membership, _running(0, 1, 2, 3, 4))
    step = plan(_desired(1, rules), observed)
    assert isinstance(step, Wait) and step.refusal == SCALE_DOWN_REFUSED
    assert step.reason.endswith("possible once c-1 is healthy again, or now with members: 3")
    offered = plan(_desired(3, rules), observed)
    assert isinstance(offered, RemoveMember) and offered.endpoint.name == "c-4"


@settings(max_examples=2000, deadline=None)
@given(observations(), st.sampled_from([ETCD_RULES, ZOOKEEPER_RULES, *HIGHEST_ONLY]))
def test_a_voter_leaves_only_when_the_whole_scale_down_keeps_a_quorum(
    case: tuple[Desired, Observation], rules: JoinRules
) -> None:
    """A scale-down starts (a voter removed, or leadership handed over to remove it) only when
    every removal down to the spec keeps a quorum with today's health; otherwise it is refused
    as ScaleDownRefused, and the size it offers instead is one that is not refused."""
    desired, observed = case
    desired = replace(desired, rules=rules)
    step = plan(desired, observed)
    membership = observed.membership or ()
    scaling_down = (
        isinstance(step, RemoveMember) and not step.replacing and step.member.voter
    ) or (isinstance(step, TransferLeadership) and step.phase is Phase.SCALING)
    if scaling_down:
        assert scale_down_blocker(desired, membership) is None
    if isinstance(step, Wait) and step.refusal == SCALE_DOWN_REFUSED:
        assert len(membership) > desired.members
        blocker = scale_down_blocker(desired, membership)
        assert blocker is not None and step.reason.endswith(blocker)  # after members held
        if "now with members: " in step.reason:
            offered = int(step.reason.rsplit("now with members: ", 1)[1])
            assert desired.members < offered < len(membership)
            assert scale_down_blocker(replace(desired, members=offered), membership) is None
