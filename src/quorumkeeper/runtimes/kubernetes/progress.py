"""What the operator tells about a membership change over time, on top of each pass's status.

The planner and the reconciler see one pass at a time and remember nothing; how long a step has
been in progress is the operator's to remember, per cluster resource, as a Deployment's
controller does for its `progressDeadlineSeconds` ("Deployments", Kubernetes docs: "Failed
Deployment": the condition `Progressing` turns False with reason `ProgressDeadlineExceeded`).
The memory is the daemon's: an operator that restarts starts the clock again.

The same memory tells a spec change made during a membership change: the reconciler reads the
spec every pass and the planner finishes one step at a time (each step is one store call, planned
afresh), so a change of `metadata.generation` while a membership step is in progress is taken up
once that step is done. Until then `Progressing` says so (reason `SpecChangeQueued`) and
`observedGeneration` stays at the generation the operator last acted on, as Kubernetes API
conventions define it ("the most recent generation observed by the controller").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from quorumkeeper.planner import Phase
from quorumkeeper.runtimes.kubernetes.resources import ResourceStatus
from quorumkeeper.status import Condition, ConditionType, carry_transitions

MEMBERSHIP_STEPS = frozenset({"AddLearner", "Promote", "RemoveMember"})
"""Steps that change the membership in any phase (a replacement's removal heals)."""

DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
SPEC_CHANGE_QUEUED = "SpecChangeQueued"


@dataclass(frozen=True)
class Notice:
    """A Warning Event to post on the resource."""

    reason: str
    message: str


def membership_step(status: ResourceStatus) -> tuple[str, str | None] | None:
    """The membership step in progress in `status` (kind, member), None when there is none:
    Progressing is True and the step changes the membership or scales."""
    progressing = next((c for c in status.conditions if c.type is ConditionType.PROGRESSING), None)
    if progressing is None or progressing.status != "True":
        return None
    if status.phase != Phase.SCALING and status.step.kind not in MEMBERSHIP_STEPS:
        return None
    return status.step.kind, status.step.member


@dataclass
class ProgressWatch:
    """One cluster's membership step in progress, pass after pass: since when it is the same
    (kind and member), by `clock` (seconds), the generation it acts on, and the conditions
    last written, against which transition times are carried (the reconciler carries them
    against its own, which never held what this adds)."""

    clock: Callable[[], float] = time.monotonic
    generation: int | None = None
    """The generation acted on: observed at the first pass, then each time a new step starts."""
    step: tuple[str, str | None] | None = None
    since: float = 0.0
    warned: bool = False
    written: list[Condition] = field(default_factory=list)

    def judge(
        self, status: ResourceStatus, generation: int | None, deadline_seconds: int
    ) -> tuple[ResourceStatus, list[Notice]]:
        """`status` of a resource at `generation`, told over time, and the Warnings to post.

        While the membership step of the last pass is still in progress and `generation`
        moved, `Progressing` has reason SpecChangeQueued and `observedGeneration` stays at the
        generation acted on. Once the step has been in progress longer than `deadline_seconds`,
        `Progressing` is False, reason ProgressDeadlineExceeded, with one Warning per stuck
        step. A new step starts the clock again and acts on `generation`."""
        now = self.clock()
        step = membership_step(status)
        conditions = list(status.conditions)
        moved = self.generation is not None and generation != self.generation
        if moved and step is not None and step == self.step:
            kind, member = step
            message = (
                f"generation {generation} ({status.desired_members} members, version "
                f"{status.version}) is queued: {kind} of {member} finishes first "
                f"({status.step.reason})"
            )
            conditions = _replaced(conditions, "True", SPEC_CHANGE_QUEUED, message)
        if step is None or step != self.step or self.generation is None:
            self.generation = generation  # a new step (or none) acts on the spec as it is now
        if step != self.step:
            self.step, self.since, self.warned = step, now, False
        notices = []
        elapsed = now - self.since
        if step is not None and elapsed > deadline_seconds:
            kind, member = step
            message = (
                f"{kind} of {member} has been in progress for {elapsed:.0f} s, longer than "
                f"progressDeadlineSeconds ({deadline_seconds} s): {status.step.reason}"
            )
            conditions = _replaced(conditions, "False", DEADLINE_EXCEEDED, message)
            if not self.warned:
                self.warned = True
                notices.append(Notice(DEADLINE_EXCEEDED, message))
        self.written = carry_transitions(conditions, self.written, status.updated_at)
        update = {"conditions": self.written, "observed_generation": self.generation}
        return status.model_copy(update=update), notices


def _replaced(
    conditions: list[Condition], status: str, reason: str, message: str
) -> list[Condition]:
    """`conditions` with Progressing's status, reason and message replaced."""
    return [
        c.model_copy(update={"status": status, "reason": reason, "message": message})
        if c.type is ConditionType.PROGRESSING
        else c
        for c in conditions
    ]
