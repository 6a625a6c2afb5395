"""The `quorumkeeper` command line."""

from __future__ import annotations

import logging
import sys
import traceback

from rich.console import Console

from quorumkeeper.cli.app import app
from quorumkeeper.errors import ExitCode, QuorumkeeperError

BUG_REPORT = (
    "this is a bug in quorumkeeper, not in your input: please report it with the command you ran "
    "and the lines above; nothing more was changed after the failure"
)


def main() -> None:
    """Run the command line. Every error reaches the user through here: a `QuorumkeeperError`
    as one line (with its fix) and its exit status, anything else as a traceback, a request for
    a bug report and exit status 3."""
    logging.getLogger("kazoo").setLevel(logging.ERROR)  # reconnect chatter is not news
    err = Console(stderr=True)
    try:
        app()
    except QuorumkeeperError as error:
        fix = f"; fix: {error.fix}" if error.fix and "fix:" not in str(error) else ""
        err.print(f"[bold red]error:[/] {error}{fix}", highlight=False)
        sys.exit(error.exit_code)
    except Exception:
        err.print(traceback.format_exc(), highlight=False, markup=False)
        err.print(f"[bold red]unexpected failure:[/] {BUG_REPORT}", highlight=False)
        sys.exit(ExitCode.UNEXPECTED)


__all__ = ["app", "main"]
