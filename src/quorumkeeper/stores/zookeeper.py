"""ZooKeeper through kazoo (data, `/zookeeper/config`, `reconfig`) and the four-letter words.

Membership is the committed dynamic configuration, read from `/zookeeper/config` after a `sync`
so that it is the leader's and not a lagging server's. Roles and health come from each server's
`srvr` and `mntr` answers, because the config says who votes but not who leads or who serves.

Joining follows etcd's order (add, start, promote) although ZooKeeper has no learner entry: a
`reconfig` adding a server succeeds only once that server runs and follows the leader. So
`add_learner` reserves a fresh server id in the ensemble itself (a znode under `JOINERS` naming
the joiner's address, created in one transaction with the id counter `LAST_SERVER_ID`); the
joiner starts with a dynamic config listing the committed members plus itself, the leader
accepts it as a non-voting follower, and `promote` is the `reconfig` that makes it a voter.
`members()` reports reserved, uncommitted ids as learners. Ids are never reused while the counter
has fresh ones, so a wiped member rejoins under a new identity, as in etcd, and nothing a former
incarnation voted or wrote is mistaken for the new one.

Changes need the superuser: `/zookeeper/config` is world-readable only, and `skipACL` would turn
off every ACL of the cluster. Each cluster gets its own generated superuser password, kept in a
0600 file; servers learn only its digest (`superuser_digest_flag`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import methodcaller
from pathlib import Path
from typing import Any, cast

from kazoo.client import KazooClient  # type: ignore[import-untyped]
from kazoo.exceptions import (  # type: ignore[import-untyped]
    BadArgumentsError,
    BadVersionError,
    ConnectionLoss,
    NewConfigNoQuorumError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    ReconfigDisabledError,
    ReconfigInProcessError,
    SessionExpiredError,
)
from kazoo.handlers.threading import KazooTimeoutError  # type: ignore[import-untyped]
from kazoo.retry import KazooRetry  # type: ignore[import-untyped]
from kazoo.security import READ_ACL_UNSAFE  # type: ignore[import-untyped]

from quorumkeeper.spec import ZookeeperSettings
from quorumkeeper.state import write_atomically
from quorumkeeper.stores import zookeeper_files
from quorumkeeper.stores.base import (
    CoordinationStore,
    DataPosition,
    Endpoint,
    Member,
    MemberLauncher,
    NotCaughtUp,
    Peer,
    Role,
    StoreError,
    StoreUnavailable,
    unusable_data_line,
)

CLIENT_PORT = 2181
QUORUM_PORT = 2888
ELECTION_PORT = 3888

FOUR_LETTER_WORDS = ("srvr", "mntr", "conf", "ruok")
"""The only four-letter words a server answers: what the store reads, plus `ruok` for probes."""

CONFIG_ZNODE = "/zookeeper/config"
PROBE_ROOT = "/quorumkeeper"
JOINERS = "/quorumkeeper/joiners"
LAST_SERVER_ID = "/quorumkeeper/last-server-id"
MAX_SERVER_ID = 255
"""Session ids carry the server id in their top byte, so ids above 255 could collide."""
FIRST_SERVER_ID = 1
"""The bootstrap member's id (myid 0 is reserved); joiners count on from there."""
SUPERUSER = "super"
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

_SERVING_MODES = {"leader", "follower", "observer"}


def client_address(address: str) -> str:
    """Where clients connect to the server on `address`: ZooKeeper's host:port form."""
    return f"{address}:{CLIENT_PORT}"


def server_spec(server: int, address: str) -> str:
    """The dynamic-config line of a voting server, in the form `reconfig` accepts too."""
    return (
        f"server.{server}={address}:{QUORUM_PORT}:{ELECTION_PORT}:participant;"
        f"{address}:{CLIENT_PORT}"
    )


# Superuser ---------------------------------------------------------------------------------------


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


# Four-letter words -------------------------------------------------------------------------------


def four_letter_word(address: str, word: str, timeout: float) -> str:
    """Send one four-letter word to a server's client port and return its whole answer."""
    with socket.create_connection((address, CLIENT_PORT), timeout=timeout) as connection:
        connection.sendall(word.encode())
        chunks = []
        while chunk := connection.recv(65536):  # mntr answers tens of KiB
            chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


@dataclass(frozen=True)
class ServerState:
    """One server's own account of itself. `mode` is None while it is not serving (electing,
    syncing, or cut off from a quorum): ZooKeeper only reports a mode while it serves.
    `synced_voters` is, on a server in leader mode, how many voting followers are in sync with
    it (itself not counted)."""

    mode: str | None
    zxid: int | None
    data_bytes: int | None
    synced_voters: int | None = None

    @property
    def serving(self) -> bool:
        return self.mode in _SERVING_MODES

    @property
    def epoch(self) -> int | None:
        return None if self.zxid is None else self.zxid >> 32


_MNTR_KEYS = (
    "zk_synced_followers\t",
    "zk_synced_non_voting_followers\t",
    "zk_approximate_data_size\t",
)


def _count(metrics: dict[str, str], key: str) -> int | None:
    value = metrics.get(key)
    return int(value) if value is not None and value.isdigit() else None


def server_state(
    address: str, timeout: float, previous: ServerState | None = None
) -> ServerState | None:
    """`srvr` and `mntr` of one server; None when it does not answer at all.

    On a leader, `mntr`'s `zk_synced_followers` counts every follower in sync, non-voting ones
    (joiners) included, and `zk_synced_non_voting_followers` those alone
    (`LeaderZooKeeperServer.registerMetrics`): the difference is the voters following it.

    `previous`, this server's state as last asked, spares the `mntr` (some 19 KiB to read and
    split) of a server that does not lead and whose mode and zxid are unchanged: all it adds
    for a non-leader is the data size, which only an applied transaction changes (ZooKeeper's
    `DataTree` adjusts `nodeDataSize` in `createNode`, `deleteNode` and `setData`), and every
    applied transaction moves the zxid. A leader's count of synced followers changes without
    a transaction, so a leader's `mntr` is always read.
    """
    try:
        srvr = four_letter_word(address, "srvr", timeout)
    except OSError:
        return None
    fields = dict(line.split(": ", 1) for line in srvr.splitlines() if ": " in line)
    mode = fields.get("Mode")
    zxid = int(fields["Zxid"], 16) if "Zxid" in fields else None
    if (
        previous is not None
        and previous.data_bytes is not None  # its last `mntr` was read
        and mode != "leader"
        and (previous.mode, previous.zxid) == (mode, zxid)
    ):
        return previous
    metrics: dict[str, str] = {}
    if mode is not None:
        try:
            mntr = four_letter_word(address, "mntr", timeout)
        except OSError:
            mntr = ""
        # mntr answers some 500 lines (3.9: every metric); parse only the three read here
        metrics = dict(
            line.split("\t", 1) for line in mntr.splitlines() if line.startswith(_MNTR_KEYS)
        )
    synced = _count(metrics, "zk_synced_followers")
    non_voting = _count(metrics, "zk_synced_non_voting_followers")
    return ServerState(
        mode=mode,
        zxid=zxid,
        data_bytes=_count(metrics, "zk_approximate_data_size"),
        synced_voters=None if synced is None else synced - (non_voting or 0),
    )


def serving_id(address: str, timeout: float) -> int | None:
    """The server id the server on `address` runs as (`conf`), while it serves."""
    try:
        conf = four_letter_word(address, "conf", timeout)
    except OSError:
        return None
    fields = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line)
    value = fields.get("serverId", "")
    return int(value) if value.isdigit() else None


def next_server_id(last: int, taken: set[int]) -> int:
    """The first id after `last` that no server holds, wrapping within 1..MAX_SERVER_ID."""
    for step in range(1, MAX_SERVER_ID + 1):
        candidate = (last + step - 1) % MAX_SERVER_ID + 1
        if candidate not in taken:
            return candidate
    raise StoreError(f"all {MAX_SERVER_ID} ZooKeeper server ids are taken", retryable=False)


# Committed configuration -------------------------------------------------------------------------


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


# The store ---------------------------------------------------------------------------------------


class ZookeeperStore(CoordinationStore):
    """Membership of one ZooKeeper ensemble; `endpoints` are the servers the client may use."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        password: str,
        timeout: float = 2.0,
        probe_timeout: float = 0.5,
    ) -> None:
        super().__init__(endpoints)
        self._password = password
        self._timeout = timeout
        self._probe_timeout = probe_timeout
        self._client: Any = None
        self._read: tuple[tuple[str, int], EnsembleConfig, dict[int, str]] | None = None
        """The last committed config and reservations read, with the commit mark
        (`_commit_mark`) seen before them."""
        self._last_states: dict[str, ServerState | None] = {}
        """Each server's state as last asked, by address."""

    def close(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client.close()
            self._client = None

    # kazoo, kept at arm's length: every call goes through here and returns typed values.

    def _connected(self) -> Any:
        """The store's kazoo client, connected and authenticated as the superuser.

        Kazoo reconnects by itself after a connection loss. A client that never connected, timed
        out or lost its session is thrown away instead, so the next call starts over with a new
        session on whichever server answers first.
        """
        if self._client is None:
            hosts = ",".join(client_address(e.address) for e in self.endpoints)
            client = KazooClient(
                hosts=hosts,
                timeout=max(4.0, self._timeout * 2),
                auth_data=[("digest", f"{SUPERUSER}:{self._password}")],
                connection_retry=KazooRetry(max_tries=-1, delay=0.05, max_delay=0.5),
            )
            try:
                client.start(timeout=self._timeout * 2)
            except KazooTimeoutError:
                client.stop()
                client.close()
                names = ", ".join(e.name for e in self.endpoints)
                raise StoreUnavailable(
                    f"no ZooKeeper server of {names} accepted a session"
                ) from None
            self._client = client
        return self._client

    def _call(self, operation: Callable[[Any], Any], *, timeout: float) -> Any:
        """Run one kazoo call with a deadline, turning kazoo's failures into store errors."""
        try:
            return operation(self._connected()).get(timeout=timeout)
        except ConnectionLoss as error:
            raise StoreError(f"ZooKeeper call failed: {error!r}", retryable=True) from error
        except KazooTimeoutError as error:
            # kazoo only pings an idle connection, so a hung (SIGSTOPped, partitioned) server
            # that still holds the socket goes unnoticed while calls keep coming
            # (python-zk/kazoo#260): drop the session and let the next call pick a server.
            self.close()
            raise StoreError(
                f"ZooKeeper call timed out after {timeout} s", retryable=True
            ) from error
        except SessionExpiredError as error:
            self.close()
            raise StoreError("the ZooKeeper session expired", retryable=True) from error
        except NoAuthError as error:
            raise StoreError(
                "ZooKeeper refused the superuser: the password does not match the servers' "
                "superDigest",
                retryable=False,
            ) from error

    def committed_config(self, *, within: float | None = None) -> EnsembleConfig:
        """The committed config as the leader has it: `sync`, then read `/zookeeper/config`.

        Retries connection losses until `within` seconds (default: the store timeout) pass,
        then raises `StoreUnavailable`.
        """
        deadline = time.monotonic() + (within or self._timeout)
        while True:
            try:
                self._call(lambda c: c.sync_async(CONFIG_ZNODE), timeout=self._timeout)
                data, _ = self._call(lambda c: c.get_async(CONFIG_ZNODE), timeout=self._timeout)
                return parse_config(cast(bytes, data).decode())
            except StoreError as error:
                if not error.retryable:
                    raise
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(f"cannot read {CONFIG_ZNODE}: {error}") from error
                time.sleep(0.05)  # kazoo is reconnecting in its own thread; ask again shortly

    def _states(self, addresses: Sequence[str]) -> dict[str, ServerState | None]:
        """Each server's state, asked anew; `server_state` is given the last answer of each
        to spare what did not change."""
        states = {
            address: server_state(address, self._probe_timeout, self._last_states.get(address))
            for address in addresses
        }
        self._last_states.update(states)
        return states

    def _reservations(self, config: EnsembleConfig) -> dict[int, str]:
        """Server ids reserved by `add_learner` and not committed yet, with their addresses.

        Read after `committed_config`, whose `sync` brought the answering server up to date."""
        try:
            names = self._call(lambda c: c.get_children_async(JOINERS), timeout=self._timeout)
        except NoNodeError:
            return {}
        reserved = {}
        for name in cast(list[str], names):
            if name.isdigit() and config.server(int(name)) is None:
                read = methodcaller("get_async", f"{JOINERS}/{name}")
                try:
                    data, _ = self._call(read, timeout=self._timeout)
                except NoNodeError:
                    continue  # promoted or removed meanwhile
                reserved[int(name)] = cast(bytes, data).decode()
        return reserved

    def members(self) -> list[Member]:
        """The committed servers, then reserved joiners as learners.

        The leader shown is the server in leader mode that a quorum of the committed voters
        follows (`_quorum_leader`). A leader cut off from its followers keeps answering "Mode:
        leader" until it notices, up to syncLimit x tickTime after it runs again (measured
        0.27 s after a SIGSTOP longer than that was lifted, next to the new leader): it is shown
        as a stale leader, a follower that is not healthy, so status never shows two leaders.
        """
        config, reserved, states = self._membership()
        leader = _quorum_leader(config, states)
        leader_state = states.get(leader) if leader else None
        members = []
        for server in config.servers:
            state = states.get(server.address)
            stale_leader = state is not None and state.mode == "leader" and server.address != leader
            if not server.participant:
                role = Role.OBSERVER
            elif server.address == leader:
                role = Role.LEADER
            else:
                role = Role.FOLLOWER
            healthy = state is not None and state.serving and not stale_leader
            members.append(
                _member(str(server.id), server.address, role, healthy, state, stale=stale_leader)
            )
        for joiner, address in sorted(reserved.items()):
            state = states[address]
            synced = state is not None and _synced(state, leader_state)
            members.append(
                _member(
                    str(joiner), address, Role.LEARNER, synced, state, started=state is not None
                )
            )
        return members

    def _membership(
        self,
    ) -> tuple[EnsembleConfig, dict[int, str], dict[str, ServerState | None]]:
        """The committed config, the reservations and every server's state, the first two read
        again only when a transaction was committed since the last read.

        Changing either is a transaction, and the leader's zxid (`srvr`: the last transaction it
        applied) moves with each. The states are read before the config, so a config read after
        a mark holds every transaction up to it; when the mark is the same again, the leader
        applied nothing since (one it committed in the same instant is seen a pass later). Any
        write, session, change or election moves or voids the mark, and the config is read
        again (`sync`, then `/zookeeper/config`).
        """
        if self._read is not None:
            seen, config, reserved = self._read
            states = self._states(_addresses(config, reserved))
            if seen == _commit_mark(config, states):
                return config, reserved, states
        else:  # the servers of the config are not known yet: those we were given
            states = self._states([endpoint.address for endpoint in self.endpoints])
        config = self.committed_config()
        reserved = self._reservations(config)
        addresses = _addresses(config, reserved)
        known = all(address in states for address in addresses)
        mark = _commit_mark(config, states) if known else None
        self._read = None if mark is None else (mark, config, reserved)
        fresh = self._states([a for a in addresses if a not in states])
        return config, reserved, {**states, **fresh}

    def add_learner(self, endpoint: Endpoint) -> Member:
        """Reserve the next fresh server id for `endpoint`; the committed config is untouched.

        The reservation and the counter change in one transaction, so two callers never get the
        same id; the loser of a race gets a retryable error. An address that already holds a
        reservation gets that one back.
        """
        config = self.committed_config()
        reserved = self._reservations(config)
        server = next((sid for sid, a in reserved.items() if a == endpoint.address), None)
        if server is None:
            server = self._reserve(endpoint.address, config, reserved)
        return Member(
            id=str(server),
            address=endpoint.address,
            role=Role.LEARNER,
            healthy=False,
            started=False,
        )

    def _reserve(self, address: str, config: EnsembleConfig, reserved: dict[int, str]) -> int:
        taken = {s.id for s in config.servers} | set(reserved)
        try:
            data, stat = self._call(lambda c: c.get_async(LAST_SERVER_ID), timeout=self._timeout)
            last, version = int(cast(bytes, data)), stat.version
        except NoNodeError:
            last, version = max(taken, default=0), None
        server = next_server_id(last, taken)
        self._call(
            lambda c: c.ensure_path_async(JOINERS, acl=READ_ACL_UNSAFE), timeout=self._timeout
        )

        def reserve(client: Any) -> Any:
            transaction = client.transaction()
            value = str(server).encode()
            if version is None:
                transaction.create(LAST_SERVER_ID, value, acl=READ_ACL_UNSAFE)
            else:
                transaction.set_data(LAST_SERVER_ID, value, version=version)
            transaction.create(f"{JOINERS}/{server}", address.encode(), acl=READ_ACL_UNSAFE)
            return transaction.commit_async()

        results = self._call(reserve, timeout=self._timeout)
        if any(isinstance(result, Exception) for result in results):
            raise StoreError(
                f"server id {server} was taken meanwhile ({results!r}); observe again",
                retryable=True,
            )
        return server

    def _forget(self, server: int) -> None:
        with contextlib.suppress(NoNodeError):
            self._call(lambda c: c.delete_async(f"{JOINERS}/{server}"), timeout=self._timeout)

    def promote(self, member: Member) -> None:
        """`reconfig` the reserved joiner in as a voter, once the server on its address follows
        the current leader under the reserved id."""
        config = self.committed_config()
        server = int(member.id)
        if not config.voter(server):
            states = self._states([s.address for s in config.servers] + [member.address])
            state = states[member.address]
            leader = _quorum_leader(config, states)
            if state is None or not _synced(state, states.get(leader) if leader else None):
                raise NotCaughtUp(
                    f"server {server} at {member.address} is not following the leader yet "
                    f"(mode {state.mode if state else 'unreachable'})"
                )
            running_as = serving_id(member.address, self._probe_timeout)
            if running_as != server:
                raise NotCaughtUp(
                    f"the server at {member.address} runs as server {running_as}, not {server}"
                )
            self._reconfig(
                config,
                joining=server_spec(server, member.address),
                leaving=None,
                applied=lambda after: after.voter(server),
            )
        self._forget(server)

    def remove(self, member: Member) -> None:
        """Drop the member's reservation, if any, and `reconfig` it out if it is committed.

        The removed server keeps running and serving clients afterwards: stop its process.
        Removing the leader works too; it commits the change, steps down and the rest elect a
        new leader within about a second.
        """
        config = self.committed_config()
        server = int(member.id)
        # The reservation goes first: a leader removing itself drops our connection after.
        self._forget(server)
        if config.server(server) is not None:
            self._reconfig(
                config,
                joining=None,
                leaving=str(server),
                applied=lambda after: after.server(server) is None,
            )

    def _reconfig(
        self,
        config: EnsembleConfig,
        *,
        joining: str | None,
        leaving: str | None,
        applied: Callable[[EnsembleConfig], bool],
    ) -> None:
        """One incremental `reconfig` against the config version it was planned from.

        A connection loss (likely when the leader removes itself while we talk to it) says
        nothing about the outcome, so the committed config is read again, after reconnecting,
        before reporting failure: the caller retries only a change that was not applied, and the
        `from_config` check rejects the retry if something else changed meanwhile.
        """
        try:
            self._call(
                lambda c: c.reconfig_async(joining, leaving, None, config.version),
                timeout=self._timeout * 5,
            )
        except BadVersionError as error:
            raise StoreError(
                f"the membership changed since version {config.version:x} was read; observe again",
                retryable=True,
            ) from error
        except NewConfigNoQuorumError as error:
            raise NotCaughtUp(
                "the new configuration has no quorum of servers in sync with the leader"
            ) from error
        except ReconfigInProcessError as error:
            raise StoreError("another reconfig is in progress", retryable=True) from error
        except (ReconfigDisabledError, BadArgumentsError) as error:
            raise StoreError(
                f"ZooKeeper refused the reconfig: {error!r}", retryable=False
            ) from error
        except StoreError as error:
            if not error.retryable:
                raise
            if applied(self.committed_config(within=self._timeout * 5)):
                return
            raise StoreError(
                f"reconfig was interrupted ({error}) and is not in the committed config; retry",
                retryable=True,
            ) from error

    def transfer_leadership(self, leader: Member, successor: Member) -> None:
        """ZooKeeper cannot hand leadership over: refuse, so no caller believes it happened.

        The way to move a leader off a server is to `remove` it (or restart it) last: its
        followers elect a new leader at once; a writer saw gaps of 0.13-0.72 s on loopback when
        the leader was removed. A no-op here would make a planner waiting for the handover loop.
        """
        raise StoreError(
            "ZooKeeper has no leadership transfer; remove or restart the leader directly (an "
            "election of about a second follows)",
            retryable=False,
        )

    def write_probe(self, key: str, value: str) -> None:
        path = _probe_path(key)
        data = value.encode()
        try:
            self._call(lambda c: c.set_async(path, data), timeout=self._timeout)
        except NoNodeError:
            try:
                self._call(
                    lambda c: c.create_async(path, data, makepath=True), timeout=self._timeout
                )
            except NodeExistsError:
                self._call(lambda c: c.set_async(path, data), timeout=self._timeout)

    def read(self, key: str) -> str | None:
        """`sync` then read: the answering server has caught up with the leader first."""
        path = _probe_path(key)
        try:
            self._call(lambda c: c.sync_async(path), timeout=self._timeout)
            data, _ = self._call(lambda c: c.get_async(path), timeout=self._timeout)
        except NoNodeError:
            return None
        return cast(bytes, data).decode()


def _probe_path(key: str) -> str:
    return f"{PROBE_ROOT}/{key.strip('/')}"


def _quorum_leader(config: EnsembleConfig, states: dict[str, ServerState | None]) -> str | None:
    """The address of the leader a quorum of the committed voters follows, if any.

    A server in leader mode qualifies when it and the voters in sync with it make a majority of
    the voters; should two qualify (one's count not yet updated), the newer epoch wins.
    """
    voters = [server.address for server in config.servers if server.participant]
    majority = len(voters) // 2 + 1
    qualified = [
        (state.epoch or 0, address)
        for address in voters
        if (state := states.get(address)) is not None
        and state.mode == "leader"
        and state.synced_voters is not None
        and state.synced_voters + 1 >= majority
    ]
    return max(qualified)[1] if qualified else None


def _addresses(config: EnsembleConfig, reserved: dict[int, str]) -> list[str]:
    return [server.address for server in config.servers] + list(reserved.values())


def _commit_mark(
    config: EnsembleConfig, states: dict[str, ServerState | None]
) -> tuple[str, int] | None:
    """(address, zxid) of the leader a quorum of `config`'s voters follows, when every server
    of `config` answered; None otherwise."""
    if any(states.get(server.address) is None for server in config.servers):
        return None
    leader = _quorum_leader(config, states)
    state = states.get(leader) if leader else None
    if leader is None or state is None or state.zxid is None:
        return None
    return (leader, state.zxid)


def _synced(state: ServerState, leader: ServerState | None) -> bool:
    """A joiner is in sync once it serves as a follower of the current leader's epoch."""
    return (
        state.mode == "follower"
        and leader is not None
        and leader.epoch is not None
        and state.epoch == leader.epoch
    )


def _member(
    member_id: str,
    address: str,
    role: Role,
    healthy: bool,
    state: ServerState | None,
    *,
    started: bool = True,
    stale: bool = False,
) -> Member:
    """A committed server has started by definition; a reserved joiner once it answers."""
    return Member(
        id=member_id,
        address=address,
        role=role,
        healthy=healthy,
        started=started,
        applied_index=state.zxid if state else None,
        data_bytes=state.data_bytes if state else None,
        stale_leader=stale,
    )


# The launcher ------------------------------------------------------------------------------------


_LOGBACK = """<configuration>
  <appender name="CONSOLE" class="ch.qos.logback.core.ConsoleAppender">
    <encoder>
      <pattern>%d{{ISO8601}} [myid:%X{{myid}}] %-5p [%t:%C{{1}}@%L] - %m%n</pattern>
    </encoder>
  </appender>
  <logger name="org.apache.zookeeper.server.NIOServerCnxn" level="{four_letter_words}"/>
  <root level="{level}"><appender-ref ref="CONSOLE"/></root>
</configuration>
"""
"""At INFO, the keeper's four-letter words (`srvr`, `mntr` every pass) would be most of a member's
log: their connection class logs from WARN up unless a more verbose level is asked for."""


UNUSABLE_DATA_ERRORS: tuple[tuple[str, str], ...] = (
    # (regular expression, upstream source in ZooKeeper 3.9.5), causes before the wrapper line
    (
        r"No snapshot found, but there are log entries",
        "server/persistence/FileTxnSnapLog.restore",
    ),
    (r"CRC check failed", "server/persistence/FileTxnLog.FileTxnIterator.next"),
    (r"Unreasonable length", "jute BinaryInputArchive.checkLength (txn log record length)"),
    (r"has invalid magic number", "server/persistence/FileTxnLog.FileTxnIterator.inStreamCreated"),
    (r"Not able to find valid snapshots in", "server/persistence/FileSnap.deserialize"),
    (r"mismatching magic headers", "server/persistence/FileSnap.deserialize"),
    (r"The current epoch, .* is older than the last zxid", "server/quorum/QuorumPeer.loadDataBase"),
    (
        r"The accepted epoch, .* is less than the current epoch",
        "server/quorum/QuorumPeer.loadDataBase",
    ),
    (r"Found .* in .*Epoch", "server/quorum/QuorumPeer.readLongFromFile (an epoch file)"),
    (
        r"Failed to process transaction type",
        "server/persistence/FileTxnSnapLog.fastForwardFromEdits",
    ),
    (r"Unable to load database on disk", "server/quorum/QuorumPeer.loadDataBase"),
)
"""ZooKeeper's errors for data it can't load: restarting never helps. Not here: a port in use
("Address already in use") and config errors, which moving data can't fix."""


class ZookeeperLauncher(MemberLauncher):
    """The java command line and the files of one member of the local runtime.

    Files live under the member's data directory: `conf/` (zoo.cfg, its dynamic file, logback),
    and the snapshot and transaction-log directories of the settings (with `myid`).
    """

    def __init__(self, classpath: list[str], settings: ZookeeperSettings, password: str) -> None:
        self.classpath = classpath
        self.settings = settings
        self.password = password

    @staticmethod
    def conf_dir(data_dir: Path) -> Path:
        return data_dir / "conf"

    def process_marker(self, data_dir: Path) -> str:
        """A system property naming the data dir: the JVM's argv has no other unique element."""
        return f"-Dquorumkeeper.dataDir={data_dir}"

    def argv(
        self,
        endpoint: Endpoint,
        data_dir: Path,
        peers: list[Peer],
        *,
        bootstrap: bool,
    ) -> list[str]:
        """Write the member's files unless it has data, then return its java command.

        A member with data keeps its zoo.cfg and `myid`: ZooKeeper rewrites zoo.cfg on every
        reconfig to point at the committed `zoo.cfg.dynamic.<version>`, and regenerating it
        would restart the member with a stale membership. One exception is repaired: a joiner
        stopped after it acked the reconfig that added it but before it wrote the new file still
        points at a config without itself, and ZooKeeper refuses to start ("My id N not in the
        peer list"). Then, if `peers` (the committed membership) list its id, only its dynamic
        file is rewritten from them; the leader hands it the versioned config when it syncs.
        `bootstrap` needs no flag of its own: a one-server dynamic config with
        `standaloneEnabled=false` starts a one-voter ensemble as server `FIRST_SERVER_ID`.
        """
        own = next((peer for peer in peers if peer.endpoint == endpoint), None)
        if own is None:
            raise ValueError(f"{endpoint.name} must be one of its own peers")
        if bootstrap and len(peers) != 1:
            raise ValueError(f"a bootstrap starts {endpoint.name} alone, not with {peers}")
        if bootstrap:
            own = Peer(endpoint, own.member_id or str(FIRST_SERVER_ID))
            peers = [own]
        conf = self.conf_dir(data_dir)
        conf.mkdir(parents=True, exist_ok=True)
        zoo_cfg = conf / "zoo.cfg"
        if not (self.has_data(data_dir) and zoo_cfg.is_file()):
            self._write_config(data_dir, peers, own)
        elif not self.lists_itself(zoo_cfg, data_dir) and self._listed(data_dir, peers):
            self._repoint_dynamic_config(data_dir, peers)
        return self.command(data_dir)

    def command(self, data_dir: Path) -> list[str]:
        """The java command of a member whose zoo.cfg is in place; writes its logging config."""
        settings = self.settings
        conf = self.conf_dir(data_dir)
        (conf / "logback.xml").write_text(
            _LOGBACK.format(
                level=settings.log_level,
                four_letter_words="WARN" if settings.log_level == "INFO" else settings.log_level,
            )
        )
        return [
            "java",
            f"-Xmx{settings.heap}",
            "-XX:+UseSerialGC",  # small heaps on shared cores: one GC thread, least overhead
            "-XX:+ExitOnOutOfMemoryError",  # a dead member gets restarted, a wedged one does not
            self.process_marker(data_dir),
            superuser_digest_flag(self.password),
            f"-Dlogback.configurationFile={conf / 'logback.xml'}",
            f"-Dorg.slf4j.simpleLogger.defaultLogLevel={settings.log_level.lower()}",
            "-cp",
            ":".join(self.classpath),
            MAIN_CLASS,
            str(conf / "zoo.cfg"),
        ]

    @staticmethod
    def dynamic_config_path(zoo_cfg: Path) -> Path | None:
        """The dynamic file zoo.cfg points at, as ZooKeeper last wrote it."""
        for line in zoo_cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "dynamicConfigFile":
                return Path(value.strip())
        return None

    def myid(self, data_dir: Path) -> int | None:
        """The server id this member's data belongs to."""
        try:
            return int((data_dir / self.settings.data_dir / "myid").read_text())
        except (OSError, ValueError):
            return None

    def _listed(self, data_dir: Path, peers: list[Peer]) -> bool:
        """Whether `peers` name this member's data under its own id; data of another identity
        (a former incarnation) is not made to look like a member's."""
        own = self.myid(data_dir)
        return own is not None and any(p.member_id == str(own) for p in peers)

    def lists_itself(self, zoo_cfg: Path, data_dir: Path) -> bool:
        dynamic = self.dynamic_config_path(zoo_cfg)
        server = self.myid(data_dir)
        if dynamic is None or not dynamic.is_file() or server is None:
            return False
        return parse_config(dynamic.read_text()).server(server) is not None

    def _write_dynamic_config(self, data_dir: Path, peers: list[Peer]) -> Path:
        """Our dynamic file, listing `peers` by id; ZooKeeper writes versioned ones later."""
        dynamic = self.conf_dir(data_dir) / "zoo.cfg.dynamic"
        write_atomically(dynamic, _dynamic_config(peers))
        return dynamic

    def _repoint_dynamic_config(self, data_dir: Path, peers: list[Peer]) -> None:
        zoo_cfg = self.conf_dir(data_dir) / "zoo.cfg"
        dynamic = self._write_dynamic_config(data_dir, peers)
        kept = [
            line
            for line in zoo_cfg.read_text().splitlines()
            if line.partition("=")[0].strip() != "dynamicConfigFile"
        ]
        write_atomically(zoo_cfg, "\n".join([*kept, f"dynamicConfigFile={dynamic}"]) + "\n")

    def _write_config(self, data_dir: Path, peers: list[Peer], own: Peer) -> None:
        if own.member_id is None:
            raise ValueError(f"{own.endpoint.name} joins without a ZooKeeper server id")
        dynamic = self._write_dynamic_config(data_dir, peers)
        self.write_zoo_cfg(
            data_dir,
            {
                **self.common_config(data_dir, int(own.member_id)),
                "reconfigEnabled": "true",
                "dynamicConfigFile": dynamic,
            },
        )

    def common_config(self, data_dir: Path, server: int) -> dict[str, object]:
        """The zoo.cfg settings of the spec; creates the data directories and `myid`."""
        settings = self.settings
        snapshots = data_dir / settings.data_dir
        txn_logs = data_dir / settings.data_log_dir
        snapshots.mkdir(parents=True, exist_ok=True)
        txn_logs.mkdir(parents=True, exist_ok=True)
        (snapshots / "myid").write_text(f"{server}\n")
        return {
            "tickTime": settings.tick_time_ms,
            "initLimit": settings.init_limit,
            "syncLimit": settings.sync_limit,
            "dataDir": snapshots,
            "dataLogDir": txn_logs,
            "maxClientCnxns": settings.max_client_cnxns,
            "autopurge.snapRetainCount": settings.snap_retain_count,
            "autopurge.purgeInterval": settings.purge_interval_hours,
            "standaloneEnabled": "false",
            "4lw.commands.whitelist": ",".join(FOUR_LETTER_WORDS),
            "admin.enableServer": "false",  # it would bind 0.0.0.0:8080; 4lw covers our needs
            **{
                key: value
                for key, value in (
                    ("minSessionTimeout", settings.min_session_timeout_ms),
                    ("maxSessionTimeout", settings.max_session_timeout_ms),
                )
                if value is not None  # unset: ZooKeeper derives them from tickTime
            },
        }

    def write_zoo_cfg(self, data_dir: Path, config: dict[str, object]) -> None:
        conf = self.conf_dir(data_dir)
        conf.mkdir(parents=True, exist_ok=True)
        body = "".join(f"{key}={value}\n" for key, value in config.items())
        write_atomically(
            conf / "zoo.cfg",
            "# Written by quorumkeeper at this member's first start; ZooKeeper rewrites it.\n"
            + body,
        )

    def has_data(self, data_dir: Path) -> bool:
        return (data_dir / self.settings.data_dir / "version-2").is_dir() and (
            data_dir / self.settings.data_log_dir / "version-2"
        ).is_dir()

    def data_position(self, data_dir: Path) -> DataPosition | None:
        """The zxid the member would load (`zookeeper_files.read_position`) from the snapshot
        and log folders of the settings; folders that can't be read count as data ZooKeeper
        can't load."""
        if not self.has_data(data_dir):
            return None
        snapshots = data_dir / self.settings.data_dir / "version-2"
        logs = data_dir / self.settings.data_log_dir / "version-2"
        try:
            return zookeeper_files.read_position(snapshots, logs)
        except OSError as error:
            return DataPosition(0, 0, "unreadable", damage=str(error), loads=False)

    def unusable_data(self, log_text: str) -> str | None:
        return unusable_data_line(log_text, UNUSABLE_DATA_ERRORS)


def _dynamic_config(peers: list[Peer]) -> str:
    """A dynamic config listing `peers` in server-id order; every peer needs its id."""
    lines = {}
    for peer in peers:
        if peer.member_id is None:
            raise ValueError(f"{peer.endpoint.name} has no ZooKeeper server id")
        server = int(peer.member_id)
        lines[server] = server_spec(server, peer.endpoint.address)
    return "".join(f"{lines[server]}\n" for server in sorted(lines))
