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


def server_spec(server: int, address: str, *, plain_client: bool = True) -> str:
    """The dynamic-config line of a voting server, in the form `reconfig` accepts too.

    The part after `;` is the plain-text client port, which a server binds from its dynamic
    entry (`QuorumPeerConfig`); with `plain_client` false it is left out, for servers that serve
    clients only on the TLS port of their zoo.cfg (`secureClientPort`, which the dynamic config
    has no field for)."""
    line = f"server.{server}={address}:{QUORUM_PORT}:{ELECTION_PORT}:participant"
    return f"{line};{address}:{CLIENT_PORT}" if plain_client else line


def dynamic_config(peers: list[Peer], *, plain_client: bool = True) -> str:
    """A dynamic config listing `peers` in server-id order; every peer needs its id.
    `plain_client` as in `server_spec`."""
    lines = {}
    for peer in peers:
        if peer.member_id is None:
            raise ValueError(f"{peer.endpoint.name} has no ZooKeeper server id")
        server = int(peer.member_id)
        lines[server] = server_spec(server, peer.endpoint.address, plain_client=plain_client)
    return "".join(f"{lines[server]}\n" for server in sorted(lines))


def digest(user: str, password: str) -> str:
    """ZooKeeper's digest of `<user>:<password>`: base64 of its SHA-1
    (`DigestAuthenticationProvider.generateDigest`), what a `digest` ACL and `superDigest` hold."""
    return base64.b64encode(hashlib.sha1(f"{user}:{password}".encode()).digest()).decode()


def superuser_digest(password: str) -> str:
    """ZooKeeper's digest of `super:<password>`."""
    return digest(SUPERUSER, password)


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
    """One `server.N=<spec>` line; `spec` is its value as committed."""

    id: int
    address: str
    participant: bool
    spec: str = ""

    @property
    def line(self) -> str:
        return f"server.{self.id}={self.spec}"


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

    def changed(self, *, joining: str | None, leaving: int | None) -> str:
        """The whole membership after adding the `server_spec` line `joining` and dropping
        server `leaving`, as `reconfig`'s new member list (lines joined by commas).

        The keeper changes membership with whole lists rather than incremental `reconfig`
        (joining/leaving), because an incremental join needs a plain client address in the
        joiner's line (3.8 and 3.9 answer BadArguments "each server should have 3 ports
        specified", `PrepRequestProcessor`), which a TLS-only server must not have; a whole
        list is parsed as a dynamic file is, where the client part is optional. The check
        against the version read (`from_config`) makes it as safe against concurrent changes."""
        lines = [s.line for s in self.servers if s.id != leaving]
        return ",".join([*lines, *([joining] if joining else [])])


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
            servers.append(ConfigServer(int(key[7:]), quorum_part[0], participant, value.strip()))
    return EnsembleConfig(servers=tuple(sorted(servers, key=lambda s: s.id)), version=version)
