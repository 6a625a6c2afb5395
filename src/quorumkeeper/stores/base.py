"""The one interface every coordination store implements.

The planner and reconciler only ever speak to this class, so a store module's job is to map
these operations onto its own protocol while keeping the guarantees written here.
"""

from __future__ import annotations

import abc
import mmap
import re
from collections.abc import Sequence

from quorumkeeper.errors import ExitCode, QuorumkeeperError
from quorumkeeper.model import Endpoint, Member


def unusable_data_line(log_text: str, errors: Sequence[tuple[str, str]]) -> str | None:
    """The line of `log_text` that shows one of `errors` ((regular expression, upstream source)
    pairs), trying them in order: a store's list puts the specific causes before the generic
    wrapper lines that precede them in its log, so the line returned says why. None when no
    pattern matches."""
    lines = log_text.splitlines()
    for pattern, _source in errors:
        compiled = re.compile(pattern)
        for line in lines:
            if compiled.search(line):
                return line.strip()
    return None


NONZERO_LOOKAHEAD = 1 << 16


def data_after(view: mmap.mmap, offset: int, size: int) -> bool:
    """Whether anything but zeros follows `offset` within `NONZERO_LOOKAHEAD` bytes: a zero
    length there hides records (a torn write, or damage) instead of ending the written part.
    Counted in C, so the preallocated tail costs some tens of microseconds."""
    end = min(size, offset + NONZERO_LOOKAHEAD)
    return view[offset:end].count(0) != end - offset


class StoreError(QuorumkeeperError):
    """The store refused or failed an operation; `retryable` says whether trying again helps
    (exit status 1 then, else 2: the store refused and nothing changed)."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.exit_code = ExitCode.NOT_DONE if retryable else ExitCode.REFUSED


class StoreUnavailable(StoreError):
    """No member could answer with the authority of a quorum."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class NotCaughtUp(StoreError):
    """A learner is not yet in sync with the leader; promote again later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class AddsRefused(StoreError):
    """The store refuses to add a member for now (etcd's reconfiguration grace); it says so in
    `CoordinationStore.adds_refused` until it may accept again, and the planner waits on that."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class CoordinationStore(abc.ABC):
    """Membership operations on one running cluster.

    Every operation is addressed to the endpoints given at construction (the current members)
    and finds a member able to answer by itself. Mutations need a quorum and are safe to retry:
    each one either succeeds, raises `StoreError` having changed nothing, or leaves a result that
    the next `members()` call shows.
    """

    def __init__(self, endpoints: list[Endpoint]) -> None:
        self.endpoints = endpoints

    @abc.abstractmethod
    def close(self) -> None:
        """Release connections; the store object is not used afterwards."""

    @abc.abstractmethod
    def members(self) -> list[Member]:
        """The committed membership with roles and health.

        Read through the consensus protocol (linearizable), so it never shows a change that
        could still be lost. Raises `StoreUnavailable` when no quorum answers.
        """

    def adds_refused(self) -> str | None:
        """Why the store refuses to add a member right now, as learned from its own recent
        refusal; None when it has not refused one lately. Stores without such a rule never
        refuse."""
        return None

    @abc.abstractmethod
    def add_learner(self, endpoint: Endpoint) -> Member:
        """Add `endpoint` as a non-voting member with a fresh identity, before its process
        starts; it counts toward no quorum until promoted. `members()` lists it from then on,
        with `started` false until it answers.

        Not idempotent by itself: callers check `members()` first, which the planner does.
        """

    @abc.abstractmethod
    def promote(self, member: Member) -> None:
        """Make a caught-up learner a voter. Raises `NotCaughtUp` while it lags behind."""

    @abc.abstractmethod
    def remove(self, member: Member) -> None:
        """Remove `member` from the membership. Removing a member that is down is allowed."""

    @abc.abstractmethod
    def transfer_leadership(self, leader: Member, successor: Member) -> None:
        """Hand leadership from `leader` to the voter `successor`, so a removal or restart of the
        old leader costs no election timeout."""

    def secure(self) -> None:  # noqa: B027 (a default, not a stub)
        """Turn the store's client authentication on with the administrator's credentials
        this client holds, idempotently (the reconciler calls it once a quorum answers). A
        store that needs no step for it does nothing."""

    @staticmethod  # noqa: B027 (a default, not a stub)
    def check_grant(user: str, prefix: str) -> None:
        """Raise ValueError, naming the field, the rule and a fix, for a user or prefix this
        store can't grant (`grant_prefix`); asks nothing of the store (a static method, so a
        spec is checked with no cluster running), so a command refuses before it makes
        anything. The default takes every one."""

    def grant_prefix(self, user: str, password: str, prefix: str) -> None:
        """Give `user`, authenticating with `password`, read and write on `prefix` and what is
        under it, and nothing else. Idempotent: granting again keeps what the user made and sets
        its password to `password`. Raises ValueError as `check_grant` does, `StoreError` when
        the store refuses; a store without users of its own refuses every grant."""
        raise StoreError(f"{type(self).__name__} has no users to grant a prefix", retryable=False)

    @abc.abstractmethod
    def write_probe(self, key: str, value: str) -> None:
        """Write one key with a short timeout; used by health checks and benchmarks."""

    @abc.abstractmethod
    def read(self, key: str) -> str | None:
        """Read one key linearizably; None when absent."""
