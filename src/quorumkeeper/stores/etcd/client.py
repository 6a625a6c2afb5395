"""etcd through its v3 JSON gateway (grpc-gateway), which covers all membership work.

The gateway is used instead of a Python etcd client because none of the maintained ones exposes
learner add and promote. IDs travel as decimal strings and keys and values as base64.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from quorumkeeper.certificates import ReloadingContext, TlsFiles
from quorumkeeper.model import Endpoint, Member, Role
from quorumkeeper.stores.base import (
    AddsRefused,
    CoordinationStore,
    NotCaughtUp,
    StoreError,
    StoreUnavailable,
)
from quorumkeeper.stores.etcd.errors import ADDS_REFUSED, COMPACTED, MEMBER_ADD, read_answer

CLIENT_PORT = 2379
PEER_PORT = 2380

_JSON_HEADERS = {"Content-Type": "application/json"}

ADDS_REFUSED_SECONDS = 0.5
"""How long etcd's refusal of an add as `etcd_errors.UNHEALTHY_CLUSTER` counts as the store's
answer before an add is tried again. etcd refuses while `--strict-reconfig-check` (the default)
finds a voter that has not been connected to the member asked for the last `HealthInterval`, 5 s
(server/etcdserver/server.go `mayAddMember`, `isConnectedFullySince`); it does not say when its
grace ends, only that it lasts at most `HealthInterval` from the refusal, so a short window keeps
the join prompt and the refused requests few."""


ROOT = "root"
"""etcd's administrator: the user `auth enable` requires, with the role of the same name."""

AUTH_NOT_ENABLED = "etcdserver: authentication is not enabled"
USER_EXISTS = "etcdserver: user name already exists"
ROLE_EXISTS = "etcdserver: role name already exists"
TOKEN_REFUSED = (
    "etcdserver: invalid auth token",
    "etcdserver: user name is empty",
    "etcdserver: revision of auth store is old",
)
"""What a member answers a request without a token it knows once authentication is on: every
gateway call the keeper makes needs one (status and move-leader: `authMaintenanceServer` in
server/etcdserver/api/v3rpc/maintenance.go checks `isPermitted`, admin only; member
add/promote/remove: `checkMembershipOperationPermission`; member list, alarms and kv: a user;
measured on etcd 3.6.16 and 3.7.3, which answer "user name is empty" without one). A simple
token lives in the memory of the members that applied the authentication's raft entry, so a
member restarted since, or one that was down then, answers "invalid"; a JWT carries the auth
store's revision when it was issued and is refused as "old" once a user or role changed
(etcd-io/etcd#13300), and as "invalid" once it expired."""


def client_url(address: str, *, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{address}:{CLIENT_PORT}"


def peer_url(address: str, *, tls: bool = False) -> str:
    return f"{'https' if tls else 'http'}://{address}:{PEER_PORT}"


def _connection(
    address: str, port: int, timeout: float, context: ssl.SSLContext | None
) -> http.client.HTTPConnection:
    if context is None:
        return http.client.HTTPConnection(address, port, timeout=timeout)
    return http.client.HTTPSConnection(address, port, timeout=timeout, context=context)


def answers(address: str, timeout: float = 0.5, context: ssl.SSLContext | None = None) -> bool:
    """Whether the member's server is up, quorum or not. A restarted member serves no client
    request until a quorum lets it publish itself (even `/health` and the status wait), but its
    peer port serves `/version` as soon as it has loaded its data and runs raft. `context`:
    the TLS client context of a cluster with peer TLS (the peer port asks for a client
    certificate of the cluster's CA), None for plain text."""
    connection = _connection(address, PEER_PORT, timeout, context)
    try:
        connection.request("GET", "/version")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


@dataclass
class Tokens:
    """An etcd user's password and the token each member gave for it.

    etcd's default tokens are "simple" ones: a member keeps them in its memory, so a token is
    good on the member that gave it only, until that member restarts or the token goes unused
    for `--auth-token-ttl` (300 s). `Connections` therefore asks each member for its own token
    on first use and again whenever a member answers `TOKEN_REFUSED`; a member that answers
    `AUTH_NOT_ENABLED` is asked without one until it asks for one."""

    user: str
    password: str
    by_address: dict[str, str] = field(default_factory=dict)
    """The token to send to each member; "" while authentication is off there."""


class Connections:
    """One kept-alive HTTP connection per member's client port, with the standard library's
    client: the keeper asks every member's status four times a second, and it spends half the
    CPU of urllib3 (0.15 against 0.30 ms a request, measured on one keep-alive connection;
    httpx 0.58 ms), which is most of an idle pass. With a TLS `context` the connections are
    HTTPS (the handshake once per connection; a `ReloadingContext` gives each new connection
    the certificate files as they are then, so a renewal or a CA rotation reaches a long-lived
    client at its next connection); with `tokens` every request carries the member's token
    (`Tokens`)."""

    def __init__(
        self,
        timeout: float,
        context: ssl.SSLContext | ReloadingContext | None = None,
        tokens: Tokens | None = None,
    ) -> None:
        self.timeout = timeout
        self.context = context
        self.tokens = tokens
        self._open: dict[str, http.client.HTTPConnection] = {}

    def post(
        self, address: str, path: str, body: bytes, timeout: float | None = None
    ) -> tuple[int, bytes]:
        """POST `body` (JSON) to `path` on the member at `address`: (HTTP status, body).

        A kept-alive connection that the member closed (it restarted) fails at once with a
        connection error: the request is then made once more on a new connection, so a member
        that is back answers at once. A timeout is not retried. A member asked for the first
        time is sent a token another member gave, which it knows too unless it restarted since
        (a simple token is applied on every member through raft; a JWT is checked by its
        signature): a client failing over then asks for no new token, a raft request and a
        bcrypt check that cost 0.15-0.5 s on a loaded machine. A member that refuses the token
        (`TOKEN_REFUSED`), or fails a request sent without one (authentication may have been
        turned on since: the gateway then answers as the user of its own certificate's common
        name, "user name not found"), is asked for a token and the request made once more.
        Raises OSError (`ssl.SSLError` included) or `http.client.HTTPException` when the
        member does not answer."""
        tokens = self.tokens
        if tokens is None:
            return self._send(address, path, body, timeout, {})
        if address not in tokens.by_address:
            held = next((token for token in tokens.by_address.values() if token), None)
            if held is None:
                self._authenticate(address, timeout)
            else:
                tokens.by_address[address] = held
        without = not tokens.by_address.get(address)
        status, answer = self._send(address, path, body, timeout, self._header(address))
        refused = any(text.encode() in answer for text in TOKEN_REFUSED)
        if status != 200 and (refused or without):
            self._authenticate(address, timeout)
            status, answer = self._send(address, path, body, timeout, self._header(address))
        return status, answer

    def _header(self, address: str) -> dict[str, str]:
        token = self.tokens.by_address.get(address, "") if self.tokens else ""
        return {"Authorization": token} if token else {}

    def _authenticate(self, address: str, timeout: float | None) -> None:
        """Ask the member for a token (`/v3/auth/authenticate`, a raft request: it needs a
        quorum). A member without authentication is remembered as such; any other refusal
        leaves no token, so the request goes without and its own answer says what failed."""
        tokens = self.tokens
        assert tokens is not None
        tokens.by_address.pop(address, None)
        credentials = json.dumps({"name": tokens.user, "password": tokens.password}).encode()
        status, answer = self._send(address, "/v3/auth/authenticate", credentials, timeout, {})
        if status == 200:
            tokens.by_address[address] = str(json.loads(answer).get("token", ""))
        elif AUTH_NOT_ENABLED.encode() in answer:
            tokens.by_address[address] = ""

    def _send(
        self,
        address: str,
        path: str,
        body: bytes,
        timeout: float | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        connection = self._open.get(address)
        if connection is None or connection.sock is None:
            # A closed connection would reconnect with the context it was made with: a new one
            # takes the certificate files as they are now.
            context = self.context
            if isinstance(context, ReloadingContext):
                context = context.get()
            connection = _connection(address, CLIENT_PORT, self.timeout, context)
            self._open[address] = connection
        reused = connection.sock is not None
        wait = self.timeout if timeout is None else timeout
        connection.timeout = wait
        if connection.sock is not None:
            connection.sock.settimeout(wait)
        try:
            connection.request("POST", path, body, {**_JSON_HEADERS, **headers})
            response = connection.getresponse()
            return response.status, response.read()
        except ConnectionError:
            connection.close()
            if reused:
                return self._send(address, path, body, timeout, headers)
            raise
        except (OSError, http.client.HTTPException):
            connection.close()  # a late answer must not be read as the next request's
            raise

    def close(self) -> None:
        for connection in self._open.values():
            connection.close()
        self._open.clear()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _current_leader(statuses: list[dict[str, Any]]) -> str | None:
    """The member ID reported as leader for the highest raft term among `statuses`."""
    known = [
        (int(s.get("raftTerm", 0)), s["leader"]) for s in statuses if s.get("leader", "0") != "0"
    ]
    return max(known)[1] if known else None


CommitMark = tuple[str, int, int]
"""(leader ID, raft term, the leader's commit index)."""


def _commit_mark(
    listed: list[dict[str, Any]], statuses: dict[str, dict[str, Any] | None]
) -> CommitMark | None:
    """Where the log stands, when every member of `listed` answered and all name the same
    leader, itself among them, in the same term (so no member knows of a newer term); None
    otherwise."""
    answers = [statuses.get(_address(entry)) for entry in listed]
    views = {(a.get("leader"), a.get("raftTerm")) for a in answers if a is not None}
    if None in answers or len(views) != 1:
        return None
    leader, term = views.pop()
    own = [a for entry, a in zip(listed, answers, strict=True) if entry["ID"] == leader]
    if not own or own[0] is None or leader is None or term is None:
        return None
    return (str(leader), int(term), int(own[0].get("raftIndex", 0)))


def _address(entry: dict[str, Any]) -> str:
    """A listed member's address, from its first peer URL (urlsplit caches its parses; httpx.URL
    parses anew, a tenth of a millisecond per idle pass)."""
    return str(urlsplit(entry["peerURLs"][0]).hostname)


@dataclass(frozen=True)
class Space:
    """One member's database, in bytes: the file (`db_bytes`), the part holding live data and
    history (`in_use_bytes`, the rest is free pages only a defragmentation returns) and the
    quota beyond which etcd raises NOSPACE; `revision` is the member's current revision."""

    revision: int
    db_bytes: int
    in_use_bytes: int
    quota_bytes: int


class EtcdStore(CoordinationStore):
    """Membership of one etcd cluster, asked of whichever member answers first."""

    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        tls: TlsFiles | None = None,
        root_password: str | None = None,
        timeout: float = 2.0,
        probe_timeout: float = 0.5,
    ) -> None:
        """`tls`: the client certificate to connect with; None for a plain-text cluster.
        `root_password`: the password of etcd's `root` user, for a cluster with authentication
        on or to be turned on (`secure`); None connects without a user. Raises OSError or
        `ssl.SSLError` for TLS files that can't be read."""
        super().__init__(endpoints)
        self._tls = tls
        self._root_password = root_password
        context = ReloadingContext(tls) if tls else None
        if context is not None:
            context.get()  # unreadable files fail here, not at the first request
        tokens = Tokens(ROOT, root_password) if root_password is not None else None
        self._http = Connections(timeout, context, tokens)
        self._probes = Connections(probe_timeout, context, tokens)
        """For `member_status` alone, so a member that does not answer costs the probe timeout
        and a status asked while a slow call is open does not wait for it."""
        self._listed: tuple[CommitMark, list[dict[str, Any]]] | None = None
        """The last member list read, with the commit mark (`_commit_mark`) seen before it."""
        self._adds_refused_until = 0.0
        """`time.monotonic()` until which the last `AddsRefused` stands."""
        self._serving: str | None = None
        """The address of the member that served the last call (`_post`), asked first."""

    def close(self) -> None:
        self._http.close()
        self._probes.close()

    def _post_to(
        self, address: str, path: str, body: dict[str, Any], *, timeout: float | None = None
    ) -> dict[str, Any]:
        """POST `body` to one member; its answer is read by `etcd_errors.read_answer`, which
        raises the `StoreError` any answer but a 200 with a JSON object stands for. `timeout`
        replaces the client's for this call."""
        url = f"{client_url(address, tls=self._tls is not None)}{path}"
        status, answer = self._http.post(address, path, json.dumps(body).encode(), timeout)
        return read_answer(url, status, answer)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST to the first member that serves the call.

        The member that served the last call is asked first, the others then in order, as
        etcd's own client stays on its connection until it fails: a member that is restarting
        accepts connections before it serves them (etcd serves its client port only once it
        has published itself through raft), so a client that went back to it at once would
        wait for it. A member that does not answer, or fails in a way trying again may cure (a
        retryable `StoreError`: a learner, no leader known, a timed-out proposal, a proxy's
        502), passes the call on to the next; when none serves it, raises `StoreUnavailable`
        listing each member's failure. A refusal, and the answers the planner waits on
        (`NotCaughtUp`, `AddsRefused`, decided for the whole cluster), are raised as they are.
        """
        failures = []
        serving = [e for e in self.endpoints if e.address == self._serving]
        for endpoint in serving + [e for e in self.endpoints if e.address != self._serving]:
            try:
                answer = self._post_to(endpoint.address, path, body)
                self._serving = endpoint.address
                return answer
            except (OSError, http.client.HTTPException) as error:
                failures.append(f"{endpoint.name}: {error.__class__.__name__}")
            except (NotCaughtUp, AddsRefused):
                raise
            except StoreError as error:
                if not error.retryable:
                    raise
                failures.append(f"{endpoint.name}: {error}")
        raise StoreUnavailable(f"no etcd member served {path}: {'; '.join(failures)}")

    def member_status(self, address: str) -> dict[str, Any] | None:
        """The member's own `/v3/maintenance/status` (served locally, no raft entry), None when
        it does not answer within the probe timeout.

        A member back from a restart answers in the same pass (`Connections.post`)."""
        try:
            code, body = self._probes.post(address, "/v3/maintenance/status", b"{}")
        except (OSError, http.client.HTTPException):
            return None
        if code != 200:
            return None
        try:
            status: dict[str, Any] = json.loads(body)
        except ValueError:
            return None
        return status if isinstance(status, dict) else None

    def _statuses(self) -> Iterator[tuple[str, dict[str, Any] | None]]:
        for endpoint in self.endpoints:
            yield endpoint.address, self.member_status(endpoint.address)

    def alarms(self) -> dict[str, tuple[str, ...]]:
        """Raised alarms by member ID, e.g. `{"8211f1d0f64f3269": ("NOSPACE",)}`.

        From `/v3/maintenance/alarm` with action GET, which etcd serves as a raft request
        (`EtcdServer.Alarm`), so it is the committed alarm list, not one member's view. Every
        member's status also lists every alarm among its `errors`, as text.
        """
        raised: dict[str, list[str]] = {}
        for entry in self._post("/v3/maintenance/alarm", {"action": "GET"}).get("alarms", []):
            alarm = entry.get("alarm", "NONE")  # proto3 JSON leaves out the zero value, NONE
            if alarm != "NONE":
                raised.setdefault(entry["memberID"], []).append(alarm)
        return {member: tuple(sorted(names)) for member, names in raised.items()}

    def members(self) -> list[Member]:
        """Members with role, health and alarms as three separate facts.

        etcd's status lists every raised alarm among its `errors` (and "no leader" when it has
        none: `maintenanceServer.Status`), so errors alone say nothing about the member. A member
        is healthy when it answers and knows a leader. The leader shown is the one reported for
        the highest raft term, which a quorum elected (raft has at most one leader per term); a
        member still claiming leadership of an older term is a stale leader, not healthy.
        `version` is the status's own (`StatusResponse.version`: the release the member runs,
        what `/version` serves as `etcdserver`), read with the status the pass asks anyway.
        """
        statuses = dict(self._statuses())
        listed = self._member_list(statuses)
        answered = [status for status in statuses.values() if status is not None]
        # The committed alarm list is a raft request, an entry in the log every time it is
        # asked: ask only when a member's status shows errors (every alarm is among them).
        quiet = answered and not any(status.get("errors") for status in answered)
        alarms = {} if quiet else self.alarms()
        leader = _current_leader([s for s in statuses.values() if s is not None])
        members = []
        for entry in listed:
            address = _address(entry)
            status = statuses.get(address)
            claims_leadership = status is not None and status.get("leader") == entry["ID"]
            stale_leader = claims_leadership and entry["ID"] != leader
            if entry.get("isLearner"):
                role = Role.LEARNER
            elif entry["ID"] == leader and status is not None:
                role = Role.LEADER
            else:
                role = Role.FOLLOWER
            members.append(
                Member(
                    id=entry["ID"],
                    address=address,
                    role=role,
                    healthy=status is not None
                    and status.get("leader", "0") != "0"
                    and not stale_leader,
                    started=bool(entry.get("name")),
                    applied_index=int(status["raftAppliedIndex"]) if status else None,
                    data_bytes=int(status["dbSize"]) if status else None,
                    alarms=alarms.get(entry["ID"], ()),
                    stale_leader=stale_leader,
                    version=status.get("version") if status else None,
                )
            )
        return members

    def _member_list(self, statuses: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
        """The committed member list: read linearizably, unless nothing was committed since the
        last read, when that read is still the answer a new one would give.

        Every change to the list (add, promote, remove, a member publishing its name) is a raft
        entry, and the leader's commit index moves with each (status `raftIndex` is
        `CommittedIndex()`: etcd server/etcdserver/api/v3rpc/maintenance.go `Status`). The
        statuses are read before the list, so a list read after a commit mark reflects every
        entry up to that mark; when the mark is the same again, no entry was committed since
        and the list is unchanged. Any write, change, election, or member not answering moves
        or voids the mark, and the list is read again.
        """
        if self._listed is not None and self._listed[0] == _commit_mark(self._listed[1], statuses):
            return self._listed[1]
        listed: list[dict[str, Any]] = self._post(
            "/v3/cluster/member/list", {"linearizable": True}
        )["members"]
        mark = _commit_mark(listed, statuses)
        self._listed = None if mark is None else (mark, listed)
        return listed

    # Maintenance: what `quorumkeeper.maintenance` needs to reclaim space.

    def space(self, member: Member) -> Space:
        """`member`'s database against its quota, from its own status."""
        status = self._post_to(member.address, "/v3/maintenance/status", {})
        return Space(
            revision=int(status["header"].get("revision", 0)),
            db_bytes=int(status.get("dbSize", 0)),
            in_use_bytes=int(status.get("dbSizeInUse", 0)),
            quota_bytes=int(status.get("dbSizeQuota", 0)),
        )

    def revision(self) -> int:
        """The cluster's current revision, read linearizably (a count-only range)."""
        header = self._post("/v3/kv/range", {"key": _b64("\0"), "count_only": True})["header"]
        return int(header["revision"])

    def compact(self, revision: int) -> bool:
        """Compact the key history up to `revision` and wait until the space is free
        (`physical`); False when it was compacted that far already."""
        try:
            self._post("/v3/kv/compaction", {"revision": revision, "physical": True})
        except StoreError as error:
            if COMPACTED in str(error):
                return False
            raise
        return True

    def defragment(self, member: Member, *, timeout: float) -> None:
        """Rewrite `member`'s database file without its free pages. The member serves nothing
        while it runs, so callers go one member at a time and the leader last."""
        self._post_to(member.address, "/v3/maintenance/defragment", {}, timeout=timeout)

    def disarm(self, member_id: str, alarm: str) -> None:
        """Clear `alarm` on `member_id` (alarm action DEACTIVATE). etcd raises NOSPACE again at
        the next write if the member's database is still over its quota."""
        self._post(
            "/v3/maintenance/alarm",
            {"action": "DEACTIVATE", "memberID": member_id, "alarm": alarm},
        )

    def adds_refused(self) -> str | None:
        """`etcd_errors.ADDS_REFUSED` for `ADDS_REFUSED_SECONDS` after etcd refused an add
        (`AddsRefused`), so the planner waits on the condition instead of retrying."""
        return ADDS_REFUSED if time.monotonic() < self._adds_refused_until else None

    def add_learner(self, endpoint: Endpoint) -> Member:
        """Raises `AddsRefused` during etcd's reconfiguration grace, which `adds_refused` then
        reports."""
        url = peer_url(endpoint.address, tls=self._tls is not None)
        body = {"peerURLs": [url], "isLearner": True}
        try:
            added = self._post(MEMBER_ADD, body)["member"]
        except AddsRefused:
            self._adds_refused_until = time.monotonic() + ADDS_REFUSED_SECONDS
            raise
        return Member(
            id=added["ID"],
            address=endpoint.address,
            role=Role.LEARNER,
            healthy=False,
            started=False,
        )

    def promote(self, member: Member) -> None:
        self._post("/v3/cluster/member/promote", {"ID": member.id})

    def remove(self, member: Member) -> None:
        self._post("/v3/cluster/member/remove", {"ID": member.id})

    def transfer_leadership(self, leader: Member, successor: Member) -> None:
        self._post_to(
            leader.address, "/v3/maintenance/transfer-leadership", {"targetID": successor.id}
        )

    def write_probe(self, key: str, value: str) -> None:
        self._post("/v3/kv/put", {"key": _b64(key), "value": _b64(value)})

    def read(self, key: str) -> str | None:
        kvs = self._post("/v3/kv/range", {"key": _b64(key)}).get("kvs", [])
        return base64.b64decode(kvs[0]["value"]).decode() if kvs else None

    # Authentication: the root user the keeper alone holds, and least-privilege users.

    def _tolerating(self, answer: str, path: str, body: dict[str, Any]) -> None:
        """POST, taking the refusal `answer` (a user or role that exists) as done."""
        try:
            self._post(path, body)
        except StoreError as error:
            if answer not in str(error):
                raise

    def secure(self) -> None:
        """Turn etcd's authentication on, with `root` (role root) holding `root_password`.

        Each step is idempotent and checked from the store, so a keeper killed between two
        goes on at the next: `/v3/auth/status` tells whether it is on; adding an existing
        user is refused (`USER_EXISTS`) and taken as done; granting a granted role and enabling
        an enabled authentication change nothing (etcd's auth store ignores both). Nothing to
        do without a root password. Raises `StoreError` when etcd refuses a step."""
        if self._root_password is None:
            return
        if self._post("/v3/auth/status", {}).get("enabled"):
            return
        self._tolerating(
            USER_EXISTS, "/v3/auth/user/add", {"name": ROOT, "password": self._root_password}
        )
        self._post("/v3/auth/user/grant", {"user": ROOT, "role": ROOT})
        self._post("/v3/auth/enable", {})

    @staticmethod
    def check_grant(user: str, prefix: str) -> None:
        """An empty prefix is every key."""
        if not prefix:
            raise ValueError(
                "prefix: ''; rule: a user is limited to a non-empty key prefix (an empty one is "
                "every key); fix: a prefix such as orders/"
            )

    def grant_prefix(self, user: str, password: str, prefix: str) -> None:
        """Give `user` (with `password`) read and write on the keys starting with `prefix`,
        and nothing else, through a role of the same name. Idempotent: an existing role or
        user is kept (the user's password set to `password`), the permission granted again."""
        self.check_grant(user, prefix)
        self._tolerating(ROLE_EXISTS, "/v3/auth/role/add", {"name": user})
        permission = {"permType": "READWRITE", "key": _b64(prefix), "range_end": _b64_end(prefix)}
        self._post("/v3/auth/role/grant", {"name": user, "perm": permission})
        try:
            self._post("/v3/auth/user/add", {"name": user, "password": password})
        except StoreError as error:
            if USER_EXISTS not in str(error):
                raise
            self._post("/v3/auth/user/changepw", {"name": user, "password": password})
        self._post("/v3/auth/user/grant", {"user": user, "role": user})


def _b64_end(prefix: str) -> str:
    """The end of the key range of `prefix`, base64: its last byte below 0xff plus one (etcd's
    `clientv3.GetPrefixRangeEnd`); "\\0" (every key) for an empty prefix or one of 0xff only."""
    key = bytearray(prefix.encode())
    while key and key[-1] == 0xFF:
        key.pop()
    if not key:
        return base64.b64encode(b"\0").decode()
    key[-1] += 1
    return base64.b64encode(bytes(key)).decode()
