"""The one root of every error quorumkeeper raises on purpose, typed by what the caller does next.

Each error carries the exit status a command ends with when it reaches the user, and may name the
input at fault (`field`) and a change that fixes it (`fix`). The CLI has one handler for the root;
anything else that escapes is a bug, reported with exit status 3 and a request for a report.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum


class ExitCode(IntEnum):
    """What a command's exit status means (the README's CLI section)."""

    DONE = 0
    NOT_DONE = 1
    """Not finished in time, or overtaken by a newer target: what was stored stands and the
    keeper goes on with it; running the command again (or `status`) shows where it is."""
    REFUSED = 2
    """Bad input, an unsafe request, or a race lost to another command: nothing was changed."""
    UNEXPECTED = 3
    """A failure quorumkeeper did not foresee: a bug, to be reported."""


class QuorumkeeperError(Exception):
    """Root of quorumkeeper's errors. `field` names the input at fault, `fix` says what to change
    so that the request passes (in words, or as the field values to set); both may be None when
    no input is at fault."""

    exit_code: ExitCode = ExitCode.UNEXPECTED

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        fix: str | Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.fix = fix


class Refused(QuorumkeeperError):
    """Bad input, or a request that would be unsafe or can't be met now: nothing was changed."""

    exit_code = ExitCode.REFUSED


class NotDone(QuorumkeeperError):
    """A stored change did not finish while the command waited; the keeper goes on with it."""

    exit_code = ExitCode.NOT_DONE


class Retryable(QuorumkeeperError):
    """A failure that trying again later may cure (a store without a quorum, a busy lock)."""

    exit_code = ExitCode.NOT_DONE
