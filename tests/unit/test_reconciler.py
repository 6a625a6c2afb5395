"""The reconciler on fakes: for every step the planner can return, the action one pass takes on
the store or the runtime and the status it records; refusals, failed passes and a sink that
can't write; and scaling driven pass by pass.

The store, runtime, source and sink are the in-memory fakes of `tests.fakes`, not end-to-end
proofs: the real stores and runtimes run in the acceptance and store suites.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

import pytest
import time_machine

from quorumkeeper.certificates import TlsFiles
from quorumkeeper.errors import Refused
from quorumkeeper.model import JoinRules, Peer, Placement, Role, Slot
from quorumkeeper.planner import (
    AddLearner,
    Bootstrap,
    DiscardData,
    Done,
    Promote,
    RemoveMember,
    RestartMember,
    SetDataAside,
    StartMember,
    Step,
    StopMember,
    TransferLeadership,
    Wait,
)
from quorumkeeper.runtime import ConfigurationRefused, DisruptionRefused
from quorumkeeper.runtimes.kubernetes.placement import ServiceDnsPlacement
from quorumkeeper.runtimes.local.placement import LoopbackPlacement
from quorumkeeper.spec import Store
from quorumkeeper.status import ClusterStatus, rfc3339
from quorumkeeper.stores.base import StoreError
from quorumkeeper.upgrades import UpgradeRefused
from tests.fakes import Action, Fakes, fakes

ADDS_REFUSED = "etcd refuses member adds until every voter has been connected for 5 s"


@pytest.fixture(
    params=[
        LoopbackPlacement("c", "127.0.9"),
        ServiceDnsPlacement("c", "c-peers", "stores", "cluster.example"),
    ],
    ids=["loopback", "service-dns"],
)
def placement(request: pytest.FixtureRequest) -> Placement:
    """Both runtimes' placements: nothing here depends on what an address looks like."""
    chosen: Placement = request.param
    return chosen


def conditions(status: ClusterStatus) -> dict[str, tuple[str, str]]:
    """Each condition's (status, reason) by type, but Secured (`test_secured_...` below)."""
    return {c.type.value: (c.status, c.reason) for c in status.conditions if c.type != "Secured"}


def message(status: ClusterStatus, kind: str) -> str:
    return next(c.message for c in status.conditions if c.type.value == kind)


def members(status: ClusterStatus) -> list[tuple[str, str, bool]]:
    """Each member's (name, role, healthy)."""
    return [(m.name, m.role, m.healthy) for m in status.members]


def peers(fx: Fakes, *ordinals: int) -> tuple[Peer, ...]:
    """The peers a member starts with: these members, with their ids in the store."""
    return tuple(Peer(fx.endpoint(n), fx.store.id_of(fx.address(n))) for n in ordinals)


def assert_recorded(fx: Fakes, step: Step, phase: str) -> ClusterStatus:
    """The last status recorded names `step` as the step in progress, in `phase`."""
    status = fx.sink.last
    assert status.step.kind == type(step).__name__
    assert status.step.reason == step.reason
    assert status.phase == phase
    assert status.desired_members == fx.source.spec.members
    return status


HEALTHY_THREE = [("c-0", "leader", True), ("c-1", "follower", True), ("c-2", "follower", True)]


def test_bootstrap_starts_member_zero_as_a_new_one_member_cluster(placement: Placement) -> None:
    fx = fakes(placement, desired=3)

    step = fx.reconciler.run_once()

    assert step == Bootstrap("a new cluster starts from c-0", fx.endpoint(0))
    assert fx.runtime.actions == [
        Action("start", "c-0", (Peer(fx.endpoint(0), None),), bootstrap=True)
    ]
    assert [(m.address, m.role) for m in fx.store.members()] == [(fx.address(0), Role.LEADER)]
    status = assert_recorded(fx, step, "Bootstrapping")
    assert not status.quorum and status.members == [] and status.error is None
    assert conditions(status) == {
        "Available": ("False", "NoQuorum"),
        "Progressing": ("True", "Bootstrap"),
        "Degraded": ("False", "AllHealthy"),
    }


def test_start_member_restarts_a_member_that_is_down(placement: Placement) -> None:
    fx = fakes(placement, running=3)
    fx.runtime.crash(fx.endpoint(2))

    step = fx.reconciler.run_once()

    assert step == StartMember("c-2 is down and restarts", fx.endpoint(2), joining=False)
    assert fx.runtime.actions == [Action("start", "c-2", peers(fx, 0, 1, 2))]
    assert fx.member(2).healthy
    status = assert_recorded(fx, step, "Healing")
    assert members(status) == [*HEALTHY_THREE[:2], ("c-2", "follower", False)]
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "StartMember"),
        "Degraded": ("True", "MemberUnhealthy"),
    }
    assert message(status, "Available") == "2 of 3 voters healthy"
    assert message(status, "Degraded") == "unhealthy: c-2"
    assert fx.store.changes == []


def test_start_member_starts_an_added_learner_with_the_membership_and_itself(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3, desired=4)
    fx.store.enlist(fx.address(3), voter=False, started=False)

    step = fx.reconciler.run_once()

    assert step == StartMember("c-3 was added and starts", fx.endpoint(3), joining=True)
    assert fx.runtime.actions == [Action("start", "c-3", peers(fx, 0, 1, 2, 3))]
    status = assert_recorded(fx, step, "Scaling")
    assert members(status) == [*HEALTHY_THREE, ("c-3", "learner", False)]
    assert conditions(status)["Progressing"] == ("True", "StartMember")
    assert conditions(status)["Available"] == ("True", "QuorumAnswers")
    assert message(status, "Available") == "3 of 3 voters healthy"
    assert conditions(status)["Degraded"] == ("False", "AllHealthy"), "joining is not degraded"


def test_stop_member_stops_a_process_that_is_no_longer_a_member(placement: Placement) -> None:
    fx = fakes(placement, running=3)
    fx.runtime.seed(Slot(fx.endpoint(3), running=True, has_data=True))

    step = fx.reconciler.run_once()

    assert step == StopMember("c-3 is no longer a member", fx.endpoint(3))
    assert fx.runtime.actions == [Action("stop", "c-3")]
    assert not fx.runtime.slot(fx.endpoint(3)).running
    assert fx.runtime.slot(fx.endpoint(3)).has_data  # stopping keeps the data
    status = assert_recorded(fx, step, "Scaling")
    assert members(status) == HEALTHY_THREE
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "StopMember"),
        "Degraded": ("False", "AllHealthy"),
    }


def test_discard_data_applies_the_removed_data_policy_to_a_former_member(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    fx.runtime.seed(Slot(fx.endpoint(3), running=False, has_data=True))

    step = fx.reconciler.run_once()

    assert step == DiscardData("c-3 left the membership", fx.endpoint(3))
    assert fx.runtime.actions == [Action("discard", "c-3")]
    assert fx.endpoint(3) not in fx.runtime.slots
    status = assert_recorded(fx, step, "Healing")
    assert members(status) == HEALTHY_THREE
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "DiscardData"),
        "Degraded": ("False", "AllHealthy"),
    }


def test_set_data_aside_moves_unusable_data_away_and_keeps_it(placement: Placement) -> None:
    fx = fakes(placement, running=3)
    unusable = "panic: wal: crc mismatch"
    fx.runtime.seed(
        Slot(
            fx.endpoint(2),
            running=False,
            has_data=True,
            starts=2,
            failed_starts=1,
            last_error=unusable,
            unusable_data=unusable,
        )
    )

    step = fx.reconciler.run_once()

    assert isinstance(step, SetDataAside) and step.endpoint == fx.endpoint(2)
    assert unusable in step.reason
    assert fx.runtime.actions == [Action("set_aside", "c-2")]
    assert fx.runtime.set_aside_data == {"c-2": step.reason}
    assert fx.reconciler.set_aside == "set-aside/c-2"
    assert not fx.runtime.slot(fx.endpoint(2)).has_data
    assert fx.store.changes == []  # its identity goes in a later pass
    status = assert_recorded(fx, step, "Healing")
    assert members(status) == [*HEALTHY_THREE[:2], ("c-2", "follower", False)]
    assert status.members[2].last_error == unusable
    assert status.members[2].failed_starts == 1
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "SetDataAside"),
        "Degraded": ("True", "MemberUnhealthy"),
    }


def test_add_learner_adds_the_lowest_free_ordinal_before_it_starts(placement: Placement) -> None:
    fx = fakes(placement, running=3, desired=4)

    step = fx.reconciler.run_once()

    assert step == AddLearner("3 of 4 members: adding c-3", fx.endpoint(3))
    assert fx.store.changes == [("add_learner", fx.address(3))]
    assert fx.member(3).role is Role.LEARNER and not fx.member(3).started
    assert fx.runtime.actions == []  # the process starts in the next pass
    status = assert_recorded(fx, step, "Scaling")
    assert members(status) == HEALTHY_THREE
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "AddLearner"),
        "Degraded": ("False", "AllHealthy"),
    }


def test_promote_waits_for_the_learner_to_catch_up_without_an_error(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3, desired=4)
    fx.join(3, voter=False)

    first = fx.reconciler.run_once()

    assert isinstance(first, Promote) and first.endpoint == fx.endpoint(3)
    assert fx.store.changes == []  # NotCaughtUp: nothing changed
    assert fx.reconciler.last_error is None
    assert fx.reconciler.deferred and not fx.reconciler.acted
    status = assert_recorded(fx, first, "Scaling")
    assert members(status) == [*HEALTHY_THREE, ("c-3", "learner", True)]
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "Promote"),
        "Degraded": ("False", "AllHealthy"),
    }

    again = fx.reconciler.run_once()
    assert again == first
    assert fx.sink.last.error is None  # a learner catching up is not a refusal

    fx.store.mark_caught_up(fx.address(3))
    fx.reconciler.run_once()
    assert fx.store.changes == [("promote", fx.address(3))]
    assert fx.member(3).role is Role.FOLLOWER

    done = fx.reconciler.run_once()
    assert isinstance(done, Done)
    assert members(fx.sink.last) == [*HEALTHY_THREE, ("c-3", "follower", True)]
    assert fx.runtime.actions == []


def test_remove_member_on_scale_down_removes_before_it_stops(placement: Placement) -> None:
    fx = fakes(placement, running=4, desired=3)

    step = fx.reconciler.run_once()

    assert isinstance(step, RemoveMember)
    assert step == RemoveMember(
        "4 members, 3 wanted: removing c-3", step.member, fx.endpoint(3), replacing=False
    )
    assert step.member.address == fx.address(3)
    assert fx.store.changes == [("remove", fx.address(3))]
    assert fx.runtime.actions == []  # still running: it stops once it is out
    status = assert_recorded(fx, step, "Scaling")
    assert members(status) == [*HEALTHY_THREE, ("c-3", "follower", True)]
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "RemoveMember"),
        "Degraded": ("False", "AllHealthy"),
    }

    assert fx.reconciler.run_once() == StopMember("c-3 is no longer a member", fx.endpoint(3))
    assert fx.runtime.actions == [Action("stop", "c-3")]
    # Sized for 3 voters before the removal (4 -> 3), and again once it showed.
    assert fx.runtime.disruption_limits == [(4, 3), (3, 3)]


def test_remove_member_replaces_a_member_whose_data_is_gone(placement: Placement) -> None:
    fx = fakes(placement, running=3)
    fx.runtime.seed(Slot(fx.endpoint(2), running=False, has_data=False))

    step = fx.reconciler.run_once()

    assert isinstance(step, RemoveMember) and step.replacing
    assert step.endpoint == fx.endpoint(2) and "lost its data" in step.reason
    assert fx.store.changes == [("remove", fx.address(2))]
    status = assert_recorded(fx, step, "Healing")
    assert members(status) == [*HEALTHY_THREE[:2], ("c-2", "follower", False)]
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "RemoveMember"),
        "Degraded": ("True", "MemberUnhealthy"),
    }

    # The new identity joins by the scale-up path, at the same place.
    assert fx.reconciler.run_once() == AddLearner("2 of 3 members: adding c-2", fx.endpoint(2))
    assert fx.member(2).id != status.members[2].id
    # The removal left two voters: it ran, and the learner is added, with none to spare.
    assert fx.runtime.disruption_limits == [(3, 2), (2, 2)]


def test_no_disruption_limit_is_set_without_a_quorum(placement: Placement) -> None:
    fx = fakes(placement, desired=3)

    assert isinstance(fx.reconciler.run_once(), Bootstrap)

    assert fx.runtime.disruption_limits == []  # no membership answered to size it by


def test_transfer_leadership_before_the_leader_is_removed(placement: Placement) -> None:
    fx = fakes(placement, running=4, desired=3)
    fx.store.leader = fx.address(3)

    step = fx.reconciler.run_once()

    assert isinstance(step, TransferLeadership)
    assert step.leader.address == fx.address(3) and step.successor.address == fx.address(0)
    assert fx.store.changes == [("transfer_leadership", fx.address(0))]
    assert fx.member(0).role is Role.LEADER
    status = assert_recorded(fx, step, "Scaling")
    assert members(status) == [
        ("c-0", "follower", True),
        ("c-1", "follower", True),
        ("c-2", "follower", True),
        ("c-3", "leader", True),
    ]
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("True", "TransferLeadership"),
        "Degraded": ("False", "AllHealthy"),
    }

    assert isinstance(fx.reconciler.run_once(), RemoveMember)
    assert fx.store.changes[-1] == ("remove", fx.address(3))


def test_a_store_that_cant_hand_leadership_over_loses_its_leader_last(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=4, desired=3, store=Store.ZOOKEEPER, rules=JoinRules(False))
    fx.store.leader = fx.address(3)

    step = fx.reconciler.run_once()

    assert isinstance(step, RemoveMember) and step.endpoint == fx.endpoint(2)
    assert fx.store.changes == [("remove", fx.address(2))]


def test_wait_names_the_stores_refusal_of_adds_which_is_not_an_error(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3, desired=4)
    fx.store.refusing_adds = ADDS_REFUSED

    refused = fx.reconciler.run_once()
    assert isinstance(refused, AddLearner)
    assert fx.store.changes == [] and fx.reconciler.last_error is None
    assert fx.reconciler.deferred  # refused for now: the operator tries again soon

    step = fx.reconciler.run_once()

    assert isinstance(step, Wait) and step.reason == f"adding c-3 waits: {ADDS_REFUSED}"
    assert fx.reconciler.deferred
    status = assert_recorded(fx, step, "Scaling")
    assert status.error is None
    assert members(status) == HEALTHY_THREE
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("False", "Wait"),
        "Degraded": ("False", "AllHealthy"),
    }
    assert message(status, "Progressing") == step.reason
    assert fx.store.changes == [] and fx.runtime.actions == []

    fx.store.refusing_adds = None
    assert isinstance(fx.reconciler.run_once(), AddLearner)
    assert fx.store.changes == [("add_learner", fx.address(3))]
    assert fx.reconciler.acted and not fx.reconciler.deferred


def test_wait_while_a_member_is_held_back_reports_degraded(placement: Placement) -> None:
    fx = fakes(placement, running=3, desired=4)
    fx.runtime.seed(
        Slot(fx.endpoint(2), running=False, has_data=True, failed_starts=2, held_back=8.0)
    )

    step = fx.reconciler.run_once()

    assert isinstance(step, Wait)
    assert "c-2 restarts after a backoff" in step.reason
    assert "adding a member waits until c-2 is healthy" in step.reason
    status = assert_recorded(fx, step, "Degraded")
    assert status.members[2].restart_in_seconds == 8.0
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("False", "Wait"),
        "Degraded": ("True", "Degraded"),
    }
    assert message(status, "Degraded").startswith("unhealthy: c-2; "), "names who is down"
    assert fx.store.changes == [] and fx.runtime.actions == []


def test_wait_without_a_quorum_shows_the_members_with_data(placement: Placement) -> None:
    fx = fakes(placement, running=3)
    for ordinal in (1, 2):
        fx.runtime.seed(
            Slot(fx.endpoint(ordinal), running=False, has_data=True, held_back=4.0, starts=3)
        )

    step = fx.reconciler.run_once()

    assert isinstance(step, Wait) and "waiting for a quorum" in step.reason
    status = assert_recorded(fx, step, "Unavailable")
    assert not status.quorum
    assert members(status) == [
        ("c-0", "unknown", False),
        ("c-1", "unknown", False),
        ("c-2", "unknown", False),
    ]
    assert conditions(status) == {
        "Available": ("False", "NoQuorum"),
        "Progressing": ("False", "Wait"),
        "Degraded": ("True", "Unavailable"),
    }
    assert fx.runtime.actions == []


def test_the_connect_string_lists_members_by_ordinal_whatever_the_store_order(
    placement: Placement,
) -> None:
    """ZooKeeper lists its members in the order of its dynamic config, which can be reversed
    after replacements: the connect string a user copies stays in ordinal order."""
    fx = fakes(placement, running=3)
    fx.store.entries = dict(reversed(fx.store.entries.items()))

    fx.reconciler.run_once()

    assert fx.sink.last.connect_string == ",".join(f"fake://{fx.address(n)}" for n in range(3))


def test_done_changes_nothing(placement: Placement) -> None:
    fx = fakes(placement, running=3)

    step = fx.reconciler.run_once()

    assert step == Done("cluster matches its spec", degraded=False)
    assert fx.runtime.actions == [] and fx.store.changes == []
    status = assert_recorded(fx, step, "Ready")
    assert members(status) == HEALTHY_THREE
    assert status.connect_string == ",".join(f"fake://{fx.address(n)}" for n in range(3))
    assert status.members[0].client_url == f"fake://{fx.address(0)}"
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("False", "Done"),
        "Degraded": ("False", "AllHealthy"),
    }


def test_done_with_an_alarm_is_degraded(placement: Placement) -> None:
    fx = fakes(placement, running=3)
    fx.store.raise_alarm(fx.address(1), "NOSPACE")

    step = fx.reconciler.run_once()

    assert step == Done("alarm raised: NOSPACE on c-1", degraded=True)
    status = assert_recorded(fx, step, "Degraded")
    assert [(a.member, a.alarm) for a in status.alarms] == [("c-1", "NOSPACE")]
    assert members(status) == HEALTHY_THREE  # an alarm is not ill health
    assert conditions(status) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("False", "Done"),
        "Degraded": ("True", "Degraded"),
    }
    assert fx.runtime.actions == [] and fx.store.changes == []


def test_a_store_without_quorum_is_no_membership_and_its_client_is_dropped(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3, hold_store=True)
    for _ in range(3):
        assert isinstance(fx.reconciler.run_once(), Done)
    assert (fx.store.connects, fx.store.closes) == (1, 0)  # one client held while idle

    fx.store.available = False
    step = fx.reconciler.run_once()

    assert isinstance(step, Wait) and step.reason == "waiting for a quorum of members to answer"
    assert fx.store.closes == 1  # the next pass starts over on whichever member answers
    status = assert_recorded(fx, step, "Unavailable")
    assert not status.quorum
    assert members(status) == [(f"c-{n}", "unknown", False) for n in range(3)]
    assert conditions(status) == {
        "Available": ("False", "NoQuorum"),
        "Progressing": ("False", "Wait"),
        "Degraded": ("True", "Unavailable"),
    }
    assert fx.runtime.actions == []  # every member runs: nothing to start, nothing bootstraps

    fx.store.available = True
    assert isinstance(fx.reconciler.run_once(), Done)
    assert fx.store.connects == 2
    assert conditions(fx.sink.last)["Available"] == ("True", "QuorumAnswers")


def test_a_store_refusal_is_the_next_status_error_until_a_step_goes_through(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3, desired=4)
    fx.store.refuse_next = StoreError("etcdserver: too many requests", retryable=True)

    fx.reconciler.run_once()

    assert fx.store.changes == []
    assert fx.reconciler.last_error == "AddLearner: etcdserver: too many requests"
    assert fx.sink.last.error is None  # recorded before the step was taken

    retried = fx.reconciler.run_once()

    assert isinstance(retried, AddLearner)
    refused = fx.sink.last
    assert refused.error == "AddLearner: etcdserver: too many requests"
    assert conditions(refused)["Degraded"] == ("True", "StepRefused")
    assert message(refused, "Degraded") == refused.error
    assert fx.store.changes == [("add_learner", fx.address(3))]
    assert fx.reconciler.last_error is None

    fx.reconciler.run_once()
    assert fx.sink.last.error is None
    assert conditions(fx.sink.last)["Degraded"][1] != "StepRefused"


def test_a_failing_pass_records_its_failure_and_raises(placement: Placement) -> None:
    fx = fakes(placement, running=3)
    fx.reconciler.run_once()
    good = fx.sink.last
    fx.runtime.failures["observe"] = RuntimeError("process table unreadable")

    with pytest.raises(RuntimeError, match="process table unreadable"):
        fx.reconciler.run_once()

    failed = fx.sink.last
    assert len(fx.sink.statuses) == 2
    assert failed.error == "pass failed: RuntimeError: process table unreadable"
    assert conditions(failed) == {
        "Available": ("True", "QuorumAnswers"),
        "Progressing": ("False", "Done"),
        "Degraded": ("True", "PassFailed"),
    }
    assert message(failed, "Degraded") == failed.error
    assert failed.members == good.members and failed.phase == good.phase

    del fx.runtime.failures["observe"]
    fx.reconciler.run_once()
    assert fx.sink.last.error is None
    assert conditions(fx.sink.last)["Degraded"] == ("False", "AllHealthy")


def test_a_pass_that_fails_acting_records_its_failure_and_raises(placement: Placement) -> None:
    fx = fakes(placement, running=3)
    fx.runtime.crash(fx.endpoint(2))
    fx.runtime.failures["start"] = OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        fx.reconciler.run_once()

    assert [s.step.kind for s in fx.sink.statuses] == ["StartMember", "StartMember"]
    failed = fx.sink.last
    assert failed.error == "pass failed: OSError: [Errno 28] No space left on device"
    assert conditions(failed)["Degraded"] == ("True", "PassFailed")


def test_a_pass_that_fails_before_anything_was_observed_records_nothing(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    fx.runtime.failures["observe"] = RuntimeError("process table unreadable")

    with pytest.raises(RuntimeError):
        fx.reconciler.run_once()

    assert fx.sink.statuses == [] and fx.reconciler.last_status is None


def test_a_sink_that_cant_record_is_reported_and_the_pass_still_acts(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    fx.runtime.crash(fx.endpoint(2))
    full = OSError(28, "No space left on device")
    fx.sink.fail_with = full

    step = fx.reconciler.run_once()

    assert isinstance(step, StartMember)
    assert fx.runtime.actions == [Action("start", "c-2", peers(fx, 0, 1, 2))]
    assert fx.reconciler.record_error is full
    assert fx.sink.statuses == []
    assert fx.reconciler.last_status is not None
    assert fx.reconciler.last_status.step.kind == "StartMember"

    fx.sink.fail_with = None
    fx.reconciler.run_once()
    assert fx.reconciler.record_error is None
    assert fx.sink.last.step.kind == "Done"


def test_last_transition_time_moves_only_when_a_condition_changes(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def times(status: ClusterStatus) -> dict[str, str]:
        return {
            c.type.value: c.last_transition_time for c in status.conditions if c.type != "Secured"
        }

    with time_machine.travel(start, tick=False) as traveller:
        fx.reconciler.run_once()
        first = rfc3339(start.timestamp())
        assert times(fx.sink.last) == {"Available": first, "Progressing": first, "Degraded": first}

        traveller.shift(60)
        fx.reconciler.run_once()  # nothing changed: every time stays
        assert times(fx.sink.last) == {"Available": first, "Progressing": first, "Degraded": first}

        traveller.shift(60)
        fx.runtime.crash(fx.endpoint(2))
        fx.reconciler.run_once()  # Progressing and Degraded turn True, Available stays True
        crashed = rfc3339(start.timestamp() + 120)
        assert times(fx.sink.last) == {
            "Available": first,
            "Progressing": crashed,
            "Degraded": crashed,
        }

        traveller.shift(60)
        fx.reconciler.run_once()  # healed: both turn back to False
        healed = rfc3339(start.timestamp() + 180)
        assert conditions(fx.sink.last)["Degraded"] == ("False", "AllHealthy")
        assert times(fx.sink.last) == {
            "Available": first,
            "Progressing": healed,
            "Degraded": healed,
        }


def drive(fx: Fakes, limit: int = 40) -> list[Step]:
    """Run passes until one is Done, letting each learner catch up once a promotion found it
    behind; fails if a pass changes the membership twice or `limit` passes don't finish."""
    steps: list[Step] = []
    for _ in range(limit):
        changes = len(fx.store.changes)
        step = fx.reconciler.run_once()
        steps.append(step)
        assert len(fx.store.changes) - changes <= 1, steps
        assert fx.sink.last.step.kind == type(step).__name__
        if isinstance(step, Promote) and len(fx.store.changes) == changes:
            fx.store.mark_caught_up(step.member.address)
        if isinstance(step, Done):
            return steps
    raise AssertionError(f"not done after {limit} passes: {steps}")


def kinds(steps: list[Step]) -> list[str]:
    return [type(step).__name__ for step in steps]


@pytest.mark.parametrize(
    ("store", "rules"),
    [(Store.ETCD, JoinRules(True)), (Store.ZOOKEEPER, JoinRules(False))],
    ids=["etcd", "zookeeper"],
)
def test_scale_three_to_five_and_back_one_change_per_pass(
    placement: Placement, store: Store, rules: JoinRules
) -> None:
    fx = fakes(placement, running=3, store=store, rules=rules)
    assert isinstance(fx.reconciler.run_once(), Done)

    fx.source.scale(5)
    up = drive(fx)

    joining = ["AddLearner", "StartMember", "Promote", "Promote"]
    assert kinds(up) == [*joining, *joining, "Done"]
    listed = fx.store.members()
    assert sorted(m.address for m in listed) == sorted(fx.address(n) for n in range(5))
    assert all(m.voter and m.healthy for m in listed)
    assert [m.address for m in listed if m.role is Role.LEADER] == [fx.address(0)]
    assert [e.name for e, s in fx.runtime.slots.items() if s.running] == [
        f"c-{n}" for n in range(5)
    ]
    assert members(fx.sink.last)[3:] == [("c-3", "follower", True), ("c-4", "follower", True)]
    assert fx.sink.last.phase == "Ready"

    fx.source.scale(3)
    down = drive(fx)

    leaving = ["RemoveMember", "StopMember", "DiscardData"]
    assert kinds(down) == [*leaving, *leaving, "Done"]
    assert fx.store.changes[-2:] == [("remove", fx.address(4)), ("remove", fx.address(3))]
    assert sorted(m.address for m in fx.store.members()) == sorted(fx.address(n) for n in range(3))
    assert sorted(e.name for e in fx.runtime.slots) == ["c-0", "c-1", "c-2"]
    assert fx.runtime.actions[-4:] == [
        Action("stop", "c-4"),
        Action("discard", "c-4"),
        Action("stop", "c-3"),
        Action("discard", "c-3"),
    ]
    assert members(fx.sink.last) == HEALTHY_THREE
    assert fx.sink.last.phase == "Ready" and fx.sink.last.desired_members == 3


def test_a_joiner_that_keeps_failing_to_start_makes_the_cluster_degraded(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3, desired=4)
    fx.store.enlist(fx.address(3), voter=False, started=False)
    fx.runtime.seed(
        Slot(fx.endpoint(3), running=False, has_data=False, failed_starts=2, held_back=4.0)
    )

    fx.reconciler.run_once()

    status = fx.sink.statuses[-1]
    assert conditions(status)["Degraded"][0] == "True"
    assert "c-3" in message(status, "Degraded")


def settings_change(store: Store) -> dict[str, object]:
    """A change of one setting that reaches every member's process."""
    if store is Store.ETCD:
        return {"etcd": {"snapshot_count": 5000}}
    return {"zookeeper": {"max_client_cnxns": 100}}


def configs(fx: Fakes) -> list[str | None]:
    return [m.config for m in fx.sink.last.members]


@pytest.mark.parametrize(
    ("store", "rules"),
    [(Store.ETCD, JoinRules(True)), (Store.ZOOKEEPER, JoinRules(False))],
    ids=["etcd", "zookeeper"],
)
def test_a_settings_change_restarts_followers_one_at_a_time_then_the_leader(
    placement: Placement, store: Store, rules: JoinRules
) -> None:
    fx = fakes(placement, running=3, store=store, rules=rules)
    assert isinstance(fx.reconciler.run_once(), Done)
    assert configs(fx) == ["updated"] * 3 and fx.sink.last.rollout is None

    fx.source.change(**settings_change(store))
    first = fx.reconciler.run_once()

    assert isinstance(first, RestartMember) and first.endpoint.name == "c-1"
    status = assert_recorded(fx, first, "Updating")
    assert configs(fx) == ["stale"] * 3  # recorded before the restart
    assert status.rollout is not None
    assert (status.rollout.next, status.rollout.waiting) == ("c-1", None)
    assert status.rollout.stale == ["c-0", "c-1", "c-2"]
    assert fx.runtime.actions == [Action("stop", "c-1"), Action("start", "c-1", peers(fx, 0, 1, 2))]

    rest = drive(fx)

    handover = ["TransferLeadership"] if rules.transfers_leadership else []
    assert kinds(rest) == ["RestartMember", *handover, "RestartMember", "Done"]
    assert [a.member for a in fx.runtime.actions if a.kind == "stop"] == ["c-1", "c-2", "c-0"]
    assert all(s.config == fx.reconciler.config for s in fx.runtime.slots.values())
    assert configs(fx) == ["updated"] * 3 and fx.sink.last.rollout is None
    assert fx.sink.last.phase == "Ready"
    assert sorted(m.address for m in fx.store.members()) == [fx.address(n) for n in range(3)]
    if rules.transfers_leadership:
        assert fx.store.changes == [("transfer_leadership", fx.address(1))]


def test_the_next_restart_waits_until_the_restarted_member_caught_up(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    fx.source.change(**settings_change(Store.ETCD))
    assert isinstance(fx.reconciler.run_once(), RestartMember)
    fx.store.applied = 10_000
    fx.store.lag[fx.address(1)] = 5_000

    step = fx.reconciler.run_once()

    assert isinstance(step, Wait)
    status = assert_recorded(fx, step, "Updating")
    assert status.rollout is not None
    assert status.rollout.next == "c-2"
    assert status.rollout.waiting == (
        "updating: c-2 restarts once c-1 is healthy and caught up with the leader"
    )
    assert status.rollout.updated == ["c-1"]
    assert [a.kind for a in fx.runtime.actions] == ["stop", "start"]

    fx.store.lag.clear()
    step = fx.reconciler.run_once()
    assert isinstance(step, RestartMember) and step.endpoint.name == "c-2"


def test_a_restart_cut_short_after_the_stop_resumes_as_a_start_with_the_new_settings(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    fx.source.change(**settings_change(Store.ETCD))
    fx.runtime.failures["start"] = OSError("the keeper was killed here")
    with pytest.raises(OSError):
        fx.reconciler.run_once()
    assert not fx.runtime.slot(fx.endpoint(1)).running
    del fx.runtime.failures["start"]

    step = fx.reconciler.run_once()

    assert isinstance(step, StartMember) and step.endpoint.name == "c-1"
    assert fx.runtime.slot(fx.endpoint(1)).config == fx.reconciler.config
    after = drive(fx)
    assert kinds(after) == ["RestartMember", "TransferLeadership", "RestartMember", "Done"]


@pytest.mark.parametrize("refused", [UpgradeRefused, ConfigurationRefused])
def test_a_version_the_runtime_refuses_restarts_nothing_and_degrades_with_the_reason(
    placement: Placement, refused: type[Refused]
) -> None:
    fx = fakes(placement, running=3)
    assert isinstance(fx.reconciler.run_once(), Done)
    accepted, config = fx.reconciler.spec, fx.reconciler.config
    refusal = "version: etcd 3.7.3 -> 3.6.16 is a downgrade; fix: keep version 3.7.3"
    fx.runtime.failures["configure"] = refused(refusal)
    fx.source.change(version="3.6.16", **settings_change(Store.ETCD))

    step = fx.reconciler.run_once()

    assert isinstance(step, Done) and fx.runtime.actions == []
    assert (fx.reconciler.spec, fx.reconciler.config) == (accepted, config)
    status = fx.sink.last
    assert conditions(status)["Degraded"] == ("True", refused.__name__)
    assert message(status, "Degraded") == refusal and status.error == refusal
    assert configs(fx) == ["updated"] * 3

    del fx.runtime.failures["configure"]
    fx.reconciler.run_once()
    assert conditions(fx.sink.last)["Degraded"][0] == "False"
    assert fx.reconciler.spec.version == "3.6.16"


def test_the_runtime_judges_a_new_version_by_what_the_members_report_they_run(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    fx.store.releases = {fx.endpoint(0).address: "3.6.16", fx.endpoint(1).address: "3.7.3"}
    assert isinstance(fx.reconciler.run_once(), Done)
    assert fx.runtime.reported == frozenset()  # nothing observed when it was first configured

    fx.source.change(**settings_change(Store.ETCD))
    fx.reconciler.run_once()

    assert fx.runtime.reported == {"3.6.16", "3.7.3"}


def test_a_restart_the_runtime_may_not_make_now_is_reported_and_planned_again(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    fx.source.change(**settings_change(Store.ETCD))
    refusal = "c-1: the PodDisruptionBudget allows no disruption now (429); retried"
    fx.runtime.failures["restart"] = DisruptionRefused(refusal)

    step = fx.reconciler.run_once()

    assert isinstance(step, RestartMember) and fx.runtime.actions == []
    assert fx.reconciler.last_error == f"RestartMember: {refusal}"
    fx.reconciler.run_once()
    assert conditions(fx.sink.last)["Degraded"] == ("True", "StepRefused")
    del fx.runtime.failures["restart"]
    again = fx.reconciler.run_once()
    assert isinstance(again, RestartMember) and again.endpoint.name == "c-1"
    assert [a.kind for a in fx.runtime.actions] == ["stop", "start"]
    assert fx.reconciler.last_error is None


def test_no_restart_while_the_membership_changes_and_a_joiner_starts_updated(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    fx.source.change(members=4, **settings_change(Store.ETCD))

    steps = drive(fx)

    joining = ["AddLearner", "StartMember", "Promote", "Promote"]
    restarts = ["RestartMember", "RestartMember", "TransferLeadership", "RestartMember"]
    assert kinds(steps) == [*joining, *restarts, "Done"]
    restarted = [a.member for a in fx.runtime.actions if a.kind == "stop"]
    assert restarted == ["c-1", "c-2", "c-0"], "a member that joined after the change is not"


def test_a_member_blocked_for_a_named_reason_makes_that_the_degraded_reason(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=3)
    why = "pod c-2 can't mount its volume: RBD image k8s/v is locked by other nodes"
    fx.runtime.seed(
        Slot(
            fx.endpoint(2),
            running=False,
            has_data=True,
            blocked_by=why,
            blocked_reason="VolumeLockedByDeadClient",
        )
    )

    fx.reconciler.run_once()

    status = fx.sink.last
    assert conditions(status)["Degraded"] == ("True", "VolumeLockedByDeadClient")
    assert message(status, "Degraded") == f"c-2: {why}"
    assert status.members[2].blocked_reason == "VolumeLockedByDeadClient"
    assert fx.store.changes == []  # blocked is not data lost: nothing is replaced


def test_secured_says_what_is_open_and_authentication_is_turned_on_once(
    placement: Placement,
) -> None:
    fx = fakes(placement, running=0, desired=1)
    fx.reconciler.run_once()
    secured = {c.type.value: (c.status, c.reason) for c in fx.sink.last.conditions}["Secured"]
    assert secured == ("False", "PlainText")

    files = TlsFiles(Path("trust.pem"), Path("keeper.crt"), Path("keeper.key"))
    fx = fakes(placement, running=0, desired=1)
    fx.reconciler.backend = dataclasses.replace(fx.reconciler.backend, tls=files, auth=True)
    fx.reconciler.run_once()  # bootstraps: no quorum answered yet
    assert fx.store.secured == 0
    first = {c.type.value: (c.status, c.reason) for c in fx.sink.last.conditions}["Secured"]
    assert first == ("False", "AuthPending")
    for _ in range(3):
        fx.reconciler.run_once()
    assert fx.store.secured == 1, "asked once per reconciler, as soon as a quorum answers"
    last = {c.type.value: (c.status, c.reason) for c in fx.sink.last.conditions}["Secured"]
    assert last == ("True", "TlsAndAuth")
