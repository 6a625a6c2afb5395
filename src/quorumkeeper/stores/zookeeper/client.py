"""ZooKeeper's membership through kazoo (data, `/zookeeper/config`, `reconfig`) and the
four-letter words.

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
0600 file; servers learn only its digest (`superuser_digest_flag`). The znodes the store creates
(`PROBE_ROOT` and below) carry an ACL of the superuser alone, so no other client reads them.

On a TLS ensemble (`tls`) the store connects with the keeper's client certificate, checks each
server's certificate against the cluster's CA and the server's address, asks the four-letter
words inside TLS too (`words`), and adds servers to the dynamic config without a plain client
port (`ensemble.server_spec`).
"""

from __future__ import annotations

import contextlib
import posixpath
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from operator import methodcaller
from typing import Any, TypeVar, cast

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
from kazoo.handlers.threading import (  # type: ignore[import-untyped]
    KazooTimeoutError,
    SequentialThreadingHandler,
)
from kazoo.retry import KazooRetry  # type: ignore[import-untyped]
from kazoo.security import make_digest_acl  # type: ignore[import-untyped]

from quorumkeeper.certificates import ReloadingContext, TlsFiles
from quorumkeeper.model import Endpoint, Member, Role
from quorumkeeper.stores.base import (
    CoordinationStore,
    NotCaughtUp,
    StoreError,
    StoreUnavailable,
)
from quorumkeeper.stores.zookeeper.ensemble import (
    SUPERUSER,
    EnsembleConfig,
    client_address,
    next_server_id,
    parse_config,
    server_spec,
)
from quorumkeeper.stores.zookeeper.words import ServerState, server_state, serving_id

CONFIG_ZNODE = "/zookeeper/config"
PROBE_ROOT = "/quorumkeeper"
JOINERS = "/quorumkeeper/joiners"
LAST_SERVER_ID = "/quorumkeeper/last-server-id"

T = TypeVar("T")


class ZookeeperStore(CoordinationStore):
    """Membership of one ZooKeeper ensemble; `endpoints` are the servers the client may use."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        password: str,
        tls: TlsFiles | None = None,
        timeout: float = 2.0,
        probe_timeout: float = 0.5,
    ) -> None:
        """`password` is the superuser's; `tls` the client certificate to connect with, None
        for a plain-text ensemble."""
        super().__init__(endpoints)
        self._tls = tls
        self._context = None if tls is None else ReloadingContext(tls)
        """For the four-letter words and kazoo's connections (`BoundedHandshakes`); made again
        when a renewal or a CA rotation replaced the files, since the keeper holds this client
        across them."""
        self._password = password
        self._acl = [make_digest_acl(SUPERUSER, password, all=True)]
        """The ACL of every znode the store creates: the superuser's alone."""
        self._timeout = timeout
        self._probe_timeout = probe_timeout
        self._client: Any = None
        self._started: Any = None
        """kazoo's event that is set while `_client` is connected, cleared while it
        reconnects."""
        self._read: tuple[tuple[str, int], EnsembleConfig, dict[int, str]] | None = None
        """The last committed config and reservations read, with the commit mark
        (`_commit_mark`) seen before them."""
        self._last_states: dict[str, ServerState | None] = {}
        """Each server's state as last asked, by address."""

    def _words_tls(self) -> ssl.SSLContext | None:
        return None if self._context is None else self._context.get()

    def close(self) -> None:
        if self._client is not None:
            self._client.stop()
            self._client.close()
            self._client = None

    # kazoo, kept at arm's length: every call goes through here and returns typed values.

    def _connected(self) -> Any:
        """The store's kazoo client, connected and authenticated as the superuser.

        Kazoo reconnects by itself after a connection loss and resumes the session on the first
        server that serves (a leader's restart: its election, then the new leader's sync), and
        a call made meanwhile waits in its queue. So a client is kept while it connects: a call
        that finds it unconnected for the start deadline raises `StoreUnavailable` and leaves it
        trying, and the next call waits for the same attempt. Abandoning it and
        starting over cost a rollout's writer seconds on a loaded machine: a new session is a
        transaction through the leader, and one given up half-made is made again from the
        handshake. A client whose session expired is thrown away instead; one whose call timed
        out while it believed itself connected has its connection dropped (`_drop_connection`).
        """
        if self._client is None:
            hosts = ",".join(client_address(e.address) for e in self.endpoints)
            session_timeout = max(4.0, self._timeout * 2)
            handshake = max(MIN_HANDSHAKE_TIMEOUT, session_timeout / max(1, len(self.endpoints)))
            self._client = KazooClient(
                hosts=hosts,
                timeout=session_timeout,
                auth_data=[("digest", f"{SUPERUSER}:{self._password}")],
                connection_retry=KazooRetry(
                    max_tries=-1, delay=0.05, max_delay=RECONNECT_DELAY_MAX
                ),
                handler=BoundedHandshakes(handshake, self._context),
                **kazoo_tls(self._tls),
            )
            self._started = self._client.start_async()
        if not self._started.wait(self._timeout * 2):
            names = ", ".join(e.name for e in self.endpoints)
            raise StoreUnavailable(f"no ZooKeeper server of {names} accepted a session")
        return self._client

    def _call(self, operation: Callable[[Any], Any], *, timeout: float) -> Any:
        """Run one kazoo call with a deadline, turning kazoo's failures into store errors."""
        try:
            return operation(self._connected()).get(timeout=timeout)
        except ConnectionLoss as error:
            raise StoreError(f"ZooKeeper call failed: {error!r}", retryable=True) from error
        except KazooTimeoutError as error:
            self._drop_connection()
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

    def _drop_connection(self) -> None:
        """Shut the socket of a client that believes itself connected, so kazoo resumes its
        session on another server. kazoo only pings an idle connection, so a hung (SIGSTOPped,
        partitioned, shutting down) server that still holds the socket goes unnoticed while
        calls keep coming (python-zk/kazoo#260); closing the client instead would end the
        session too, and a new one is a transaction through the leader. A client that knows it
        is reconnecting is left to it."""
        client = self._client
        if client is None or not client.connected:
            return
        connection = getattr(client._connection, "_socket", None)
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def committed_config(self, *, within: float | None = None) -> EnsembleConfig:
        """The committed config as the leader has it: `sync`, then read `/zookeeper/config`.

        Retries connection losses until `within` seconds (default: the store timeout) pass,
        then raises `StoreUnavailable`.
        """
        return self._answered(self._read_config, CONFIG_ZNODE, within=within)

    def _committed(self) -> tuple[EnsembleConfig, dict[int, str]]:
        """The committed config and the reservations, read as one unit: a connection loss
        between the two reads starts both over (the reservations are read after the config's
        `sync`), and `StoreUnavailable` comes only once the store timeout has passed."""

        def read() -> tuple[EnsembleConfig, dict[int, str]]:
            config = self._read_config()
            return config, self._reservations(config)

        return self._answered(read, f"{CONFIG_ZNODE} and {JOINERS}")

    def _read_config(self) -> EnsembleConfig:
        self._call(lambda c: c.sync_async(CONFIG_ZNODE), timeout=self._timeout)
        data, _ = self._call(lambda c: c.get_async(CONFIG_ZNODE), timeout=self._timeout)
        return parse_config(cast(bytes, data).decode())

    def _answered(self, read: Callable[[], T], what: str, *, within: float | None = None) -> T:
        """`read()`, asked again after each retryable failure (kazoo reconnects in its own
        thread) until `within` seconds (default: the store timeout) pass; then
        `StoreUnavailable`, the one error that means no quorum answered."""
        deadline = time.monotonic() + (within or self._timeout)
        while True:
            try:
                return read()
            except StoreError as error:
                if not error.retryable:
                    raise
                if time.monotonic() >= deadline:
                    raise StoreUnavailable(f"cannot read {what}: {error}") from error
                time.sleep(0.05)

    def _states(self, addresses: Sequence[str]) -> dict[str, ServerState | None]:
        """Each server's state, asked anew; `server_state` is given the last answer of each
        to spare what did not change."""
        states = {
            address: server_state(
                address, self._probe_timeout, self._last_states.get(address), self._words_tls()
            )
            for address in addresses
        }
        self._last_states.update(states)
        return states

    def _reservations(self, config: EnsembleConfig) -> dict[int, str]:
        """Server ids reserved by `add_learner` and not committed yet, with their addresses.

        Read after `_read_config`, whose `sync` brought the answering server up to date."""
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
        config, reserved = self._committed()
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
        config, reserved = self._committed()
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
        self._call(lambda c: c.ensure_path_async(JOINERS, acl=self._acl), timeout=self._timeout)

        def reserve(client: Any) -> Any:
            transaction = client.transaction()
            value = str(server).encode()
            if version is None:
                transaction.create(LAST_SERVER_ID, value, acl=self._acl)
            else:
                transaction.set_data(LAST_SERVER_ID, value, version=version)
            transaction.create(f"{JOINERS}/{server}", address.encode(), acl=self._acl)
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
            running_as = serving_id(member.address, self._probe_timeout, self._words_tls())
            if running_as != server:
                raise NotCaughtUp(
                    f"the server at {member.address} runs as server {running_as}, not {server}"
                )
            joining = server_spec(server, member.address, plain_client=self._tls is None)
            self._reconfig(
                config,
                config.changed(joining=joining, leaving=None),
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
                config.changed(joining=None, leaving=server),
                applied=lambda after: after.server(server) is None,
            )

    def _reconfig(
        self, config: EnsembleConfig, members: str, *, applied: Callable[[EnsembleConfig], bool]
    ) -> None:
        """One `reconfig` to the whole membership `members` (`EnsembleConfig.changed`) against
        the config version it was planned from.

        A connection loss (likely when the leader removes itself while we talk to it) says
        nothing about the outcome, so the committed config is read again, after reconnecting,
        before reporting failure: the caller retries only a change that was not applied, and the
        `from_config` check rejects the retry if something else changed meanwhile.
        """
        try:
            self._call(
                lambda c: c.reconfig_async(None, None, members, config.version),
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
                    lambda c: c.create_async(path, data, acl=self._acl, makepath=True),
                    timeout=self._timeout,
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

    def secure(self) -> None:
        """Give the root znode the superuser's ACL alone. ZooKeeper makes it open
        (`world:anyone:cdrwa`), so any authenticated session could create znodes at the top:
        a user's one place is the prefix the superuser made for it (`grant_prefix`). Idempotent:
        the ACL is set only while it differs. `/zookeeper` keeps ZooKeeper's own ACLs."""
        acl, _ = self._call(lambda c: c.get_acls_async("/"), timeout=self._timeout)
        if list(acl) != self._acl:
            self._call(lambda c: c.set_acls_async("/", self._acl), timeout=self._timeout)

    @staticmethod
    def check_grant(user: str, prefix: str) -> None:
        """A digest user name has no ":"; a prefix is an absolute znode path of its own, outside
        `/zookeeper` and `PROBE_ROOT`."""
        if not user or ":" in user:
            raise ValueError(
                f"user: {user!r} is not a ZooKeeper digest user name (not empty, no ':'); "
                "fix: a name such as 'orders'"
            )
        reserved = ("/zookeeper", PROBE_ROOT)
        normal = posixpath.normpath(prefix) == prefix and prefix.startswith("/") and prefix != "/"
        if not normal or any(prefix == r or prefix.startswith(f"{r}/") for r in reserved):
            raise ValueError(
                f"prefix: {prefix!r} is not an absolute znode path of its own (no trailing '/', "
                f"not '/', not under {' or '.join(reserved)}); fix: a znode such as /{user}"
            )

    def grant_prefix(self, user: str, password: str, prefix: str) -> None:
        """Give the digest user `user` (password `password`) every right on znode `prefix` and
        nothing else: the znode is created if missing (its missing parents with the superuser's
        ACL alone), and an existing one has its ACL replaced by the user's. The user connects
        with `addauth digest user:password` (kazoo: `auth_data=[("digest", "user:password")]`)
        and gives what it creates below `prefix` an ACL of its own (`auth`, the creator): a
        znode's ACL is not inherited, and one made with the open ACL is any session's."""
        self.check_grant(user, prefix)
        acl = [make_digest_acl(user, password, all=True)]
        parent = posixpath.dirname(prefix)
        if parent != "/":
            self._call(lambda c: c.ensure_path_async(parent, acl=self._acl), timeout=self._timeout)
        try:
            self._call(lambda c: c.create_async(prefix, b"", acl=acl), timeout=self._timeout)
        except NodeExistsError:
            self._call(lambda c: c.set_acls_async(prefix, acl), timeout=self._timeout)


RECONNECT_DELAY_MAX = 0.2
"""The longest pause, in seconds, between two rounds of kazoo's attempts to reach a server: a
round after a leader's restart costs a TLS handshake with each server still electing, and a
longer pause (kazoo's backoff to 0.5 s) left a writer waiting after the ensemble served."""

CONNECT_TIMEOUT = 0.5
"""Seconds a TCP connection to one server may take: the kernels answer a connection at once,
however busy the server's process is, so only an address where nothing is any more (a deleted
pod's, still in DNS for the records' TTL) waits that long."""

MIN_HANDSHAKE_TIMEOUT = 1.0
"""Seconds a connection (and TLS handshake) with one server may take at least; a JVM's first
handshakes after its start take a few hundred ms on a loaded machine."""


class BoundedHandshakes(SequentialThreadingHandler):  # type: ignore[misc]
    """kazoo's threading handler with each connection bounded by `CONNECT_TIMEOUT` and its TLS
    handshake by `timeout` seconds, TLS ones made with one client `context` kept for the files
    as they are on disk (None: plain connections).

    kazoo gives a connection the whole session timeout: an address where nothing answers (a
    deleted pod's, still in DNS; a stopped server's socket held by another process) held the
    client there for 4 s before it tried the next server, where its first request after
    connecting gets the session timeout divided among the servers
    (`ConnectionHandler._connect`). And kazoo builds a new SSL context for every attempt,
    loading the system's CA bundle besides the cluster's: 0.15-0.45 s per server tried on a
    loaded machine, a server that refuses the connection included, so a client going round the
    servers after a leader's restart spent seconds before it reached the one serving."""

    def __init__(self, timeout: float, context: ReloadingContext | None) -> None:
        super().__init__()
        self.handshake_timeout = timeout
        self.context = context

    def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        given = kwargs.get("timeout")
        timeout = min(given, self.handshake_timeout) if given else self.handshake_timeout
        address = kwargs.get("address") or args[0]
        connection = socket.create_connection(address, min(timeout, CONNECT_TIMEOUT))
        if self.context is None:
            return connection
        try:
            connection.settimeout(timeout)
            hostname = kwargs.get("hostname")
            return self.context.get().wrap_socket(connection, server_hostname=hostname)
        except BaseException:
            connection.close()
            raise


def kazoo_tls(tls: TlsFiles | None) -> dict[str, Any]:
    """KazooClient's arguments for a TLS ensemble: the client certificate, the cluster's CA,
    the server's certificate checked against the address connected to; none for a plain one."""
    if tls is None:
        return {}
    return {
        "use_ssl": True,
        "ca": str(tls.trust),
        "certfile": str(tls.certificate),
        "keyfile": str(tls.key),
        "verify_certs": True,
        "check_hostname": True,
    }


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
        version=state.version if state else None,
    )
