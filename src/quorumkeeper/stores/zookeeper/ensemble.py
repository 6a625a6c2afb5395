"""A ZooKeeper ensemble's membership as its dynamic configuration states it: ports, server ids,
`server.N` lines, and the superuser that may change them.

Changes need the superuser: `/zookeeper/config` is world-readable only, and `skipACL` would turn
off every ACL of the cluster. Each cluster gets its own generated superuser password; servers
learn only its digest (`superuser_digest`).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from quorumkeeper.model import Peer
from quorumkeeper.stores.base import (
    StoreError,
)

CLIENT_PORT = 2181
QUORUM_PORT = 2888
ELECTION_PORT = 3888

MAX_SERVER_ID = 255
"""Session ids carry the server id in their top byte, so ids above 255 could collide."""
FIRST_SERVER_ID = 1
"""The bootstrap member's id (myid 0 is reserved); joiners count on from there."""
SUPERUSER = "super"


def client_address(address: str) -> str:
    """Where clients connect to the server on `address`: ZooKeeper's host:port form."""
    return f"{address}:{CLIENT_PORT}"


def server_spec(server: int, address: str) -> str:
    """The dynamic-config line of a voting server, in the form `reconfig` accepts too."""
    return (
        f"server.{server}={address}:{QUORUM_PORT}:{ELECTION_PORT}:participant;"
        f"{address}:{CLIENT_PORT}"
    )


def dynamic_config(peers: list[Peer]) -> str:
    """A dynamic config listing `peers` in server-id order; every peer needs its id."""
    lines = {}
    for peer in peers:
        if peer.member_id is None:
            raise ValueError(f"{peer.endpoint.name} has no ZooKeeper server id")
        server = int(peer.member_id)
        lines[server] = server_spec(server, peer.endpoint.address)
    return "".join(f"{lines[server]}\n" for server in sorted(lines))


def superuser_digest(password: str) -> str:
    """ZooKeeper's digest of `super:<password>`: base64 of its SHA-1."""
    digest = hashlib.sha1(f"{SUPERUSER}:{password}".encode()).digest()
    return base64.b64encode(digest).decode()


def superuser_digest_flag(password: str) -> str:
    """The JVM flag that makes `super:<password>` the superuser; it carries only the digest."""
    return (
        "-Dzookeeper.DigestAuthenticationProvider.superDigest="
        f"{SUPERUSER}:{superuser_digest(password)}"
    )


def next_server_id(last: int, taken: set[int]) -> int:
    """The first id after `last` that no server holds, wrapping within 1..MAX_SERVER_ID."""
    for step in range(1, MAX_SERVER_ID + 1):
        candidate = (last + step - 1) % MAX_SERVER_ID + 1
        if candidate not in taken:
            return candidate
    raise StoreError(f"all {MAX_SERVER_ID} ZooKeeper server ids are taken", retryable=False)


@dataclass(frozen=True)
class ConfigServer:
    id: int
    address: str
    participant: bool


@dataclass(frozen=True)
class EnsembleConfig:
    """The committed dynamic configuration; `version` is what `reconfig(from_config=)` takes."""

    servers: tuple[ConfigServer, ...]
    version: int

    def server(self, server: int) -> ConfigServer | None:
        return next((s for s in self.servers if s.id == server), None)

    def voter(self, server: int) -> bool:
        entry = self.server(server)
        return entry is not None and entry.participant


def parse_config(text: str) -> EnsembleConfig:
    """Parse `server.N=host:quorum:election[:role];client` lines and the hex `version=` line."""
    servers = []
    version = -1
    for line in text.splitlines():
        key, _, value = line.strip().partition("=")
        if key == "version":
            version = int(value, 16)
        elif key.startswith("server."):
            quorum_part = value.split(";", 1)[0].split(":")
            participant = len(quorum_part) < 4 or quorum_part[3] == "participant"
            servers.append(
                ConfigServer(id=int(key[7:]), address=quorum_part[0], participant=participant)
            )
    return EnsembleConfig(servers=tuple(sorted(servers, key=lambda s: s.id)), version=version)
