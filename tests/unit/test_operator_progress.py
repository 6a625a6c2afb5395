"""What the operator tells over time (`ProgressWatch`), pass by pass on a clock of our own."""

from __future__ import annotations

from dataclasses import dataclass

from quorumkeeper.runtimes.kubernetes.progress import ProgressWatch
from quorumkeeper.runtimes.kubernetes.resources import ResourceStatus
from quorumkeeper.status import Condition, ConditionType, StepStatus


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


def status(
    kind: str, member: str | None, *, members: int = 3, phase: str = "Scaling"
) -> ResourceStatus:
    progressing = kind not in ("Wait", "Done")
    return ResourceStatus(
        name="orders",
        store="etcd",
        version="3.7.3",
        members=[],
        desired_members=members,
        phase=phase,
        quorum=True,
        connect_string="",
        step=StepStatus(kind=kind, reason=f"{kind} {member}", member=member),
        conditions=[
            Condition(
                type=ConditionType.PROGRESSING,
                status="True" if progressing else "False",
                reason=kind,
                message=f"{kind} {member}",
                last_transition_time="",
            )
        ],
    )


def progressing(judged: ResourceStatus) -> tuple[str, str]:
    condition = next(c for c in judged.conditions if c.type is ConditionType.PROGRESSING)
    return condition.status, condition.reason


def test_the_deadline_counts_from_the_step_s_first_pass_and_warns_once() -> None:
    clock = Clock()
    watch = ProgressWatch(clock)
    judged, notices = watch.judge(status("Promote", "orders-1"), 1, 60)
    assert progressing(judged) == ("True", "Promote") and not notices
    clock.now += 60
    judged, notices = watch.judge(status("Promote", "orders-1"), 1, 60)
    assert progressing(judged) == ("True", "Promote") and not notices  # at, not past
    clock.now += 1
    judged, notices = watch.judge(status("Promote", "orders-1"), 1, 60)
    assert progressing(judged) == ("False", "ProgressDeadlineExceeded")
    assert [n.message[:50] for n in notices] == [
        "Promote of orders-1 has been in progress for 61 s,"
    ]
    clock.now += 30
    judged, notices = watch.judge(status("Promote", "orders-1"), 1, 60)
    assert progressing(judged) == ("False", "ProgressDeadlineExceeded") and not notices
    judged, notices = watch.judge(status("AddLearner", "orders-2"), 1, 60)
    assert progressing(judged) == ("True", "AddLearner") and not notices


def test_the_same_kind_on_another_member_is_another_step() -> None:
    clock = Clock()
    watch = ProgressWatch(clock)
    watch.judge(status("Promote", "orders-1"), 1, 60)
    clock.now += 61
    judged, _ = watch.judge(status("Promote", "orders-2"), 1, 60)
    assert progressing(judged) == ("True", "Promote")


def test_a_rolling_restart_has_no_deadline_and_queues_nothing() -> None:
    clock = Clock()
    watch = ProgressWatch(clock)
    watch.judge(status("RestartMember", "orders-1", phase="Updating"), 1, 60)
    clock.now += 600
    judged, notices = watch.judge(status("RestartMember", "orders-1", phase="Updating"), 2, 60)
    assert progressing(judged) == ("True", "RestartMember") and not notices
    assert judged.observed_generation == 2


def test_a_new_generation_waits_for_the_step_in_progress() -> None:
    watch = ProgressWatch(Clock())
    assert watch.judge(status("Promote", "orders-1"), 1, 60)[0].observed_generation == 1
    queued, _ = watch.judge(status("Promote", "orders-1", members=5), 2, 60)
    assert progressing(queued) == ("True", "SpecChangeQueued")
    assert queued.observed_generation == 1
    acted, _ = watch.judge(status("AddLearner", "orders-2", members=5), 2, 60)
    assert progressing(acted) == ("True", "AddLearner") and acted.observed_generation == 2
