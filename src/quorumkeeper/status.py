"""The status of a cluster as the reconciler writes it every pass, failed passes included.

One typed model for every runtime: the local keeper writes it to `status.json` (and `status
--output json` prints it, with what the CLI adds), the Kubernetes operator to the custom
resource's status, whose schema is generated from it. Conditions have the Kubernetes condition
shape (type, status, reason, message, lastTransitionTime).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class ConditionType(StrEnum):
    AVAILABLE = "Available"
    """A quorum of voters answers: clients can read and write."""
    PROGRESSING = "Progressing"
    """The reconciler is taking steps toward the spec."""
    DEGRADED = "Degraded"
    """Something needs attention: a member down, an alarm, a change that can't go on."""
    SECURED = "Secured"
    """Clients and members use TLS and clients authenticate; False says what is open."""


AUTH_PENDING = "AuthPending"
"""The Secured condition's reason while authentication waits for a quorum to turn it on: a
command that hands a cluster over waits it out."""


class Condition(BaseModel):
    """One condition, as Kubernetes shows them: `status` is "True", "False" or "Unknown";
    `lastTransitionTime` (RFC 3339, UTC) is when `status` last changed."""

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True, frozen=True)

    type: ConditionType
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str
    last_transition_time: str = Field(alias="lastTransitionTime")


class _StatusModel(BaseModel):
    """Fields read by either name; dumped snake_case by default (`status.json`), camelCase with
    `by_alias=True` (a custom resource's status, as Kubernetes API conventions name fields)."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True)


class MemberStatus(_StatusModel):
    """One member: the store's view (id, role, health, log position) and the runtime's (process,
    starts, last error, data on disk). `role` is "unknown" while no quorum answers."""

    name: str
    id: str | None
    address: str
    client_url: str
    role: str
    healthy: bool
    applied_index: int | None = None
    data_bytes: int | None = None
    pid: int | None = None
    starts: int = 0
    failed_starts: int = 0
    restart_in_seconds: float | None = None
    last_error: str | None = None
    blocked_by: str | None = None
    blocked_reason: str | None = None
    """`blocked_by` as one CamelCase word (`VolumeLockedByDeadClient`), the Degraded reason."""
    data_position: str | None = None
    data_damage: str | None = None
    stale_leader: bool = False
    config: Literal["updated", "stale"] | None = None
    """Whether its process runs with the spec's configuration; None when the runtime does not
    fingerprint configurations or has no process or data of it."""
    version: str | None = None
    """The store release the member reports it runs ("3.7.3"), beside the cluster's `version`
    (the spec's); None while it does not answer."""


class RolloutStatus(BaseModel):
    """A rolling update in progress: members already running the spec's configuration
    (`updated`) and those still to restart (`stale`), the member that restarts `next`, and
    `waiting`, why it does not restart now (None while its restart is under way)."""

    updated: list[str]
    stale: list[str]
    next: str | None
    waiting: str | None


class StepStatus(_StatusModel):
    """The step planned next: its kind (the planner's class name), why, and the member it acts
    on (for a hand-over, the leader); unset for a Wait or Done."""

    kind: str
    reason: str
    member: str | None = None


class AlarmStatus(_StatusModel):
    member: str
    alarm: str


class CertificateExpiry(_StatusModel):
    """A certificate within `certificates.RENEW_BEFORE` of its end, until it is reissued:
    `file` where it is (a file of the cluster's `tls/` folder locally, `<Secret>/<key>` on
    Kubernetes), `not_after` its end (ISO 8601, UTC)."""

    file: str
    not_after: str


class ClusterStatus(_StatusModel):
    """The whole status. `error` is the reconciler's last refusal or failure (a store that
    refused a step, a pass that failed), None once a step went through; `updated_at` is in
    seconds since the epoch. `certificates_expiring` and `ca_rotation` (the phase of a CA
    rotation under way) are filled by the runtime's certificate check, not by the
    reconciler."""

    name: str
    store: str
    version: str
    members: list[MemberStatus]
    desired_members: int
    phase: str
    quorum: bool
    connect_string: str
    step: StepStatus
    alarms: list[AlarmStatus] = []
    error: str | None = None
    conditions: list[Condition] = []
    rollout: RolloutStatus | None = None
    certificates_expiring: list[CertificateExpiry] = []
    ca_rotation: str | None = None
    updated_at: float = Field(default_factory=time.time)

    def rolled_out(self) -> bool:
        """Whether this pass saw the cluster Ready with every wanted member running the
        current configuration: when a CA rotation may move to its next phase."""
        return (
            self.phase == "Ready"
            and self.rollout is None
            and len(self.members) == self.desired_members
            and all(member.config == "updated" for member in self.members)
        )


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def carry_transitions(
    conditions: Sequence[Condition], before: Sequence[Condition], now: float
) -> list[Condition]:
    """`conditions` with each `lastTransitionTime` kept from `before` where the status did not
    change, and set to `now` where it did (or is new)."""
    previous = {condition.type: condition for condition in before}
    carried = []
    for condition in conditions:
        old = previous.get(condition.type)
        since = old.last_transition_time if old and old.status == condition.status else rfc3339(now)
        carried.append(condition.model_copy(update={"last_transition_time": since}))
    return carried
