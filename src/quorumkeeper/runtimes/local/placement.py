"""Where the local runtime's members live: member N of a cluster on its own loopback address."""

from __future__ import annotations

from quorumkeeper.model import Endpoint, OrdinalPlacement


class LoopbackPlacement(OrdinalPlacement):
    """Member N of cluster `name` is `<name>-N` on `<subnet>.(N+1)` (`subnet`: three octets of
    127.0.0.0/8), with the store's standard ports."""

    def __init__(self, name: str, subnet: str) -> None:
        self.name = name
        self.subnet = subnet

    def endpoint(self, ordinal: int) -> Endpoint:
        return Endpoint(f"{self.name}-{ordinal}", ordinal, f"{self.subnet}.{ordinal + 1}")
