"""What the reconciler needs of a runtime: the seam every runtime (local processes, Kubernetes
pods) plugs into, so planner, reconciler and store clients stay the same for all of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence, Set
from typing import Protocol

from quorumkeeper.errors import Refused
from quorumkeeper.model import Endpoint, Peer, Placement, Slot
from quorumkeeper.spec import ClusterSpec


class ConfigurationRefused(Refused):
    """A spec the runtime can't start its members with (on Kubernetes: `tls` or `auth` other
    than the cluster was created with); the reconciler keeps the spec it had, as for
    `upgrades.UpgradeRefused`. The message names the field, the value, the rule and the fix."""


class DisruptionRefused(Exception):
    """The runtime may not take `endpoint`'s member down now (Kubernetes: its
    PodDisruptionBudget allows no disruption); retryable: nothing changed, the reconciler
    reports it and the next pass plans the restart again."""


class Runtime(Protocol):
    """Where a cluster's members run and keep their data.

    Every operation is safe to repeat: the reconciler may crash after any of them and ask again
    from a fresh observation. None deletes data a person could still need.
    """

    placement: Placement

    def endpoints(self) -> Iterable[Endpoint]:
        """Every member this runtime holds anything of (a process, a data folder or volume),
        wanted or not."""
        ...

    def observe(
        self, endpoints: Sequence[Endpoint], answered: Set[Endpoint], *, quorum: bool, judge: bool
    ) -> tuple[Slot, ...]:
        """Each endpoint's slot: its process and data. `answered` are the members the store saw
        healthy, `quorum` whether a quorum answered at all. With `judge` (the reconciler's own
        passes, not a one-shot look) the runtime settles whether each member's last start went
        well, which its backoff and failed-start count follow."""
        ...

    def configure(self, spec: ClusterSpec, reported: Set[str] = frozenset()) -> str | None:
        """Start members from now on with `spec`'s version and store settings; returns their
        configuration fingerprint: a stable hash of what reaches a member's process, the same
        for the same version and settings whatever the member's place. `observe` reports in
        `Slot.config` the fingerprint each member was last started with, so a member whose
        fingerprint differs is restarted (`planner.RestartMember`: `restart`).
        None from a runtime that does not restart members for a new configuration: then no
        member counts as stale. Touches no running member. Raises `upgrades.UpgradeRefused`
        (`upgrades.check_upgrade`) for a version the members may not move to, judged from the
        releases they `reported` running at the last observation ("3.6.16") as well as from
        what the runtime wrote, and then changes nothing; a runtime whose caller checks the
        path first raises nothing for a valid spec. Raises `ConfigurationRefused` for a spec
        its members can't run with, changing nothing either."""
        ...

    def limit_disruptions(self, voters_now: int, voters_after: int) -> None:
        """Called before every step taken with a quorum, a removal above all: from now on let
        whatever else stops members (a node drain through Kubernetes' Eviction API) stop no
        more at once than leaves a quorum of the smaller of `voters_now` (the store's voters)
        and `voters_after` (its voters once this step and the change under way are done). A
        runtime nothing else stops members of does nothing. Raises when the limit can't be
        put in force: the step is not taken."""
        ...

    def start(self, endpoint: Endpoint, peers: list[Peer], *, bootstrap: bool) -> None:
        """Start `endpoint`'s member with `peers` (itself included) as its membership and the
        configuration `configure` last gave; `bootstrap` starts a new one-member cluster. A
        member already running is left alone."""
        ...

    def stop(self, endpoint: Endpoint) -> None:
        """Stop `endpoint`'s member; its data stays."""
        ...

    def restart(self, endpoint: Endpoint, peers: list[Peer]) -> None:
        """Restart `endpoint`'s running member with the configuration `configure` last gave,
        `peers` as `start` takes them. A crash between the stop and the start leaves the member
        down, which the next pass starts. Raises `DisruptionRefused` when the member may not go
        down now (nothing changed then)."""
        ...

    def set_aside(self, endpoint: Endpoint, why: str) -> str:
        """Move `endpoint`'s data where no start finds it, with `why`; returns where. Never
        deletes it: a person decides."""
        ...

    def refill(self, endpoint: Endpoint, why: str) -> str:
        """Move `endpoint`'s database where no start finds it, with `why`, keeping the member's
        identity and configuration, so its next start loads an empty database; returns where.
        Never deletes it. Asked only where `JoinRules.refills_emptied_voter` holds."""
        ...

    def discard(self, endpoint: Endpoint) -> None:
        """Apply the removed-data policy to a member that left the membership and is stopped."""
        ...
