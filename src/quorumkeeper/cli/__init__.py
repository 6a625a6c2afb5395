"""The `quorumkeeper` command line."""

from __future__ import annotations

import logging

from quorumkeeper.cli.app import app


def main() -> None:
    logging.getLogger("kazoo").setLevel(logging.ERROR)  # reconnect chatter is not news
    app()


__all__ = ["app", "main"]
