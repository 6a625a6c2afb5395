"""Property tests: for any spec and observation, the planner's step keeps the rules."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quorumkeeper.planner import (
    AddLearner,
    Bootstrap,
    Desired,
    DiscardData,
    Done,
    Observation,
    Phase,
    Promote,
    RemoveMember,
    Slot,
    StartMember,
    Step,
    StopMember,
    TransferLeadership,
    Wait,
    plan,
    quorum,
    scale_down_blocker,
)
from quorumkeeper.stores.base import JoinRules, Member, Role

NAME = "c"
SUBNET = "127.0.7"


ETCD_RULES = JoinRules(transfers_leadership=True)
ZOOKEEPER_RULES = JoinRules(transfers_leadership=False)


def _desired(members: int, rules: JoinRules = ETCD_RULES) -> Desired:
    return Desired(members=members, name=NAME, subnet=SUBNET, rules=rules)


@st.composite
def observations(draw: st.DrawFn) -> tuple[Desired, Observation]:
    desired = _desired(
        draw(st.integers(1, 9)), draw(st.sampled_from([ETCD_RULES, ZOOKEEPER_RULES]))
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
        slots.append(Slot(endpoint, running=running, has_data=has_data))
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
            if member.started:
                assert slot is not None and slot.has_data, "a wiped member is never restarted"
        case AddLearner(endpoint=endpoint):
            assert not learners, "one learner at a time"
            assert len(healthy) == len(voters), "no add while a voter is unhealthy"
            assert _member_at(observed, endpoint.address) is None
            assert len(membership) < desired.members
        case Promote(member=member):
            assert member.role is Role.LEARNER
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
        case Done():
            assert len(membership) == desired.members and not learners
        case Wait():
            pass
        case _:
            raise AssertionError(f"unexpected step {step!r} with a quorum")


def _member(ordinal: int, role: Role = Role.FOLLOWER, *, healthy: bool = True) -> Member:
    return Member(
        id=str(ordinal),
        address=f"{SUBNET}.{ordinal + 1}",
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


def test_scale_down_blocker_reports_a_loss_of_quorum() -> None:
    membership = (_member(0, Role.LEADER), _member(1, healthy=False), _member(2, healthy=False))
    assert scale_down_blocker(_desired(1), membership) is not None
    healthy = (_member(0, Role.LEADER), _member(1), _member(2))
    assert scale_down_blocker(_desired(1), healthy) is None


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
    if isinstance(without, Done):
        assert isinstance(step, Done) and step.phase is Phase.DEGRADED
        assert f"{alarm} on {desired.endpoint_at(alarmed.address).name}" in step.reason
    else:
        assert type(step) is type(without) and step.reason == without.reason
