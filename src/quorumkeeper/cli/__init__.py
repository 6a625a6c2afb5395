"""The `quorumkeeper` command line."""

from __future__ import annotations

from quorumkeeper.cli.app import app


def main() -> None:
    app()


__all__ = ["app", "main"]
