"""Who holds an RBD image's lock, whether that holder is still alive, and safe fencing.

A pod can't mount its volume on a new node while the old node's client still holds the
image's lock. Breaking the lock without first blocklisting that client lets a partitioned
node keep writing, so `fence_image` always blocklists before it unlocks, and refuses while
the holder's host still watches the image unless that node is confirmed down.

Contract of `fence_image` (what the operator relies on):
- inputs: a connected client, pool, image, and a `NodeView` (node addresses, readiness,
  out-of-service taints, nodes confirmed down by a person);
- output: a `FenceResult` whose `action` is `fenced` (every stale lock removed after its
  holder was blocklisted), `refused` (nothing changed; `reasons`
  says why and what would unblock it) or `nothing-to-do` (no lock on the image);
- it never unlocks a lock whose holder is live, and never blocklists a client on a node that
  is Ready or not confirmed down while that client still watches the image;
- it blocklists exactly the stale holder's address (ip:port/nonce), nothing else on that
  host, and never this tool's own session or a Ceph daemon;
- a client without the right to blocklist gets a CephError (field "caps") naming the missing
  capability and the `ceph auth caps` command that grants it; nothing is changed.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from enum import StrEnum

from quorumkeeper.ceph.caps import caps_command
from quorumkeeper.ceph.client import (
    CephClient,
    CephError,
    ImageInfo,
    Locker,
    Watcher,
    address_ip,
    plain_address,
)

OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"
DEFAULT_BLOCKLIST_EXPIRE_S = 3600


@dataclass(frozen=True)
class NodeState:
    """One Kubernetes node as fencing sees it."""

    name: str
    addresses: tuple[str, ...]
    ready: bool
    out_of_service: bool = False


@dataclass(frozen=True)
class NodeView:
    """What is known about the nodes; `known=False` means no node list was given at all.

    `confirmed_down` holds node names or host IPs a person vouches are powered off, the latter
    for nodes already deleted from the API.
    """

    nodes: tuple[NodeState, ...] = ()
    confirmed_down: frozenset[str] = frozenset()
    known: bool = True

    def node_of(self, ip: str) -> NodeState | None:
        return next((n for n in self.nodes if ip in n.addresses), None)

    def is_down(self, node: NodeState) -> bool:
        return node.out_of_service or node.name in self.confirmed_down


class NodeStatus(StrEnum):
    READY = "ready"
    NOT_READY = "not-ready"
    DOWN = "down"  # confirmed: out-of-service taint or named by a person
    GONE = "gone"  # not in the node list
    UNKNOWN = "unknown"  # no node list given


class Liveness(StrEnum):
    LIVE = "live"
    STALE = "stale"


class Role(StrEnum):
    """Who a lock holder or watcher is; only plain clients may ever be fenced."""

    CLIENT = "client"
    OWN_SESSION = "this tool's own session"
    DAEMON = "ceph daemon"


@dataclass(frozen=True)
class Identities:
    """Addresses ('ip:port/nonce') that are never fenced, and what could not be read."""

    own: str | None = None
    daemons: dict[str, str] = field(default_factory=dict)  # address -> e.g. "osd.0"
    unread: tuple[str, ...] = ()

    def role(self, address: str) -> tuple[Role, str | None]:
        addr = plain_address(address)
        if self.own is not None and addr == plain_address(self.own):
            return Role.OWN_SESSION, None
        if addr in self.daemons:
            return Role.DAEMON, self.daemons[addr]
        return Role.CLIENT, None


def identities(client: CephClient) -> Identities:
    """This session's address and the daemons' addresses, read from the cluster maps."""
    daemons, unread = client.daemon_addresses()
    return Identities(client.own_address(), daemons, unread)


@dataclass(frozen=True)
class WatcherStatus:
    """One watcher: live unless its host is confirmed down or gone from the node list."""

    watcher: Watcher
    role: Role
    daemon: str | None
    node: str | None
    node_status: NodeStatus
    holds_lock: bool
    liveness: Liveness


@dataclass(frozen=True)
class LockStatus:
    locker: Locker
    node: str | None
    node_status: NodeStatus
    host_watchers: tuple[Watcher, ...]  # watchers from the holder's host
    liveness: Liveness
    reasons: tuple[str, ...]
    role: Role = Role.CLIENT
    daemon: str | None = None


@dataclass(frozen=True)
class ImageLocks:
    pool: str
    image: str
    watchers: tuple[Watcher, ...]
    locks: tuple[LockStatus, ...]
    watcher_states: tuple[WatcherStatus, ...] = ()


class FenceAction(StrEnum):
    FENCED = "fenced"
    REFUSED = "refused"
    NOTHING = "nothing-to-do"


@dataclass(frozen=True)
class FenceResult:
    pool: str
    image: str
    action: FenceAction
    reasons: tuple[str, ...]
    blocklisted: tuple[str, ...] = ()
    removed: tuple[Locker, ...] = field(default=())


def _node_status(view: NodeView, ip: str) -> tuple[NodeState | None, NodeStatus]:
    node = view.node_of(ip)
    if ip in view.confirmed_down or (node is not None and view.is_down(node)):
        return node, NodeStatus.DOWN
    if node is None:
        return None, NodeStatus.GONE if view.known else NodeStatus.UNKNOWN
    return node, NodeStatus.READY if node.ready else NodeStatus.NOT_READY


def refuse_own_host(view: NodeView, ids: Identities) -> None:
    """A CephError if a node confirmed down is the host this tool runs from: it is not down,
    and fencing from there would cut off this tool's own host."""
    if ids.own is None:
        return
    ip = address_ip(ids.own)
    named = [n.name for n in view.nodes if ip in n.addresses and n.name in view.confirmed_down]
    if ip in view.confirmed_down or named:
        which = f"node {named[0]}" if named else ip
        raise CephError(
            f"--node-down {named[0] if named else ip}: {which} is the address this tool runs "
            f"from ({ids.own}), so it is not down; run the fence from another host",
            field="node-down",
        )


def classify_watchers(
    info: ImageInfo, view: NodeView, ids: Identities = Identities()
) -> tuple[WatcherStatus, ...]:
    """Live or stale, and who, for each watcher of `info`; pure."""
    holders = {plain_address(lk.address) for lk in info.lockers}
    states = []
    for w in info.watchers:
        node, status = _node_status(view, address_ip(w.address))
        role, daemon = ids.role(w.address)
        stale = status in (NodeStatus.DOWN, NodeStatus.GONE) and role == Role.CLIENT
        states.append(
            WatcherStatus(
                watcher=w,
                role=role,
                daemon=daemon,
                node=node.name if node else None,
                node_status=status,
                holds_lock=plain_address(w.address) in holders,
                liveness=Liveness.STALE if stale else Liveness.LIVE,
            )
        )
    return tuple(states)


def classify(
    info: ImageInfo, view: NodeView, ids: Identities = Identities()
) -> tuple[LockStatus, ...]:
    """Live or stale for each lock on `info`; pure, so the operator can unit-test policy."""
    statuses = []
    for locker in info.lockers:
        role, daemon = ids.role(locker.address)
        ip = address_ip(locker.address)
        node, status = _node_status(view, ip)
        host_watchers = tuple(w for w in info.watchers if address_ip(w.address) == ip)
        watching = any(w.address == locker.address for w in info.watchers)
        where = f"node {node.name}" if node else f"host {ip}"
        reasons = []
        if status in (NodeStatus.GONE, NodeStatus.NOT_READY, NodeStatus.DOWN):
            reasons.append(f"holder's {where} is {status.value}")
        if not watching:
            reasons.append(f"{locker.client} at {locker.address} no longer watches the image")
        if reasons:
            liveness = Liveness.STALE
        else:
            liveness = Liveness.LIVE
            reasons.append(
                f"{locker.client} at {locker.address} still watches the image and its {where} "
                f"is {status.value}"
            )
        statuses.append(
            LockStatus(
                locker=locker,
                node=node.name if node else None,
                node_status=status,
                host_watchers=host_watchers,
                liveness=liveness,
                reasons=tuple(reasons),
                role=role,
                daemon=daemon,
            )
        )
    return tuple(statuses)


def inspect_image(
    client: CephClient, pool: str, image: str, view: NodeView, ids: Identities | None = None
) -> ImageLocks:
    """Locks and watchers of one image, classified; `ids` defaults to a fresh read."""
    ids = ids if ids is not None else identities(client)
    info = client.image_info(pool, image)
    return ImageLocks(
        pool=pool,
        image=image,
        watchers=info.watchers,
        locks=classify(info, view, ids),
        watcher_states=classify_watchers(info, view, ids),
    )


def _refusal(lock: LockStatus) -> str | None:
    """Why this lock must not be fenced now, or None if fencing it is safe."""
    if lock.role == Role.OWN_SESSION:
        return (
            f"lock {lock.locker.cookie!r} is held by this tool's own session "
            f"({lock.locker.address}): never fenced"
        )
    if lock.role == Role.DAEMON:
        return (
            f"lock {lock.locker.cookie!r} is held by Ceph daemon {lock.daemon} "
            f"({lock.locker.address}): never fenced"
        )
    if lock.liveness == Liveness.LIVE:
        return f"lock {lock.locker.cookie!r} is live: {lock.reasons[0]}"
    if lock.host_watchers and lock.node_status != NodeStatus.DOWN:
        who = lock.node or address_ip(lock.locker.address)
        addrs = ", ".join(w.address for w in lock.host_watchers)
        return (
            f"lock {lock.locker.cookie!r}: {who} is {lock.node_status.value} but still has a "
            f"watcher on the image ({addrs}); it may be partitioned and writing. Confirm the "
            f"node is down (taint it {OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute or pass "
            f"--node-down {who}), then fence again"
        )
    return None


def fence_image(
    client: CephClient,
    pool: str,
    image: str,
    view: NodeView,
    blocklist_expire_s: int = DEFAULT_BLOCKLIST_EXPIRE_S,
    ids: Identities | None = None,
) -> FenceResult:
    """Blocklist each stale holder's exact address, then remove its lock.

    All-or-nothing on the decision: if any lock on the image must not be fenced, nothing is
    blocklisted or removed. Other watchers on the holder's host are left alone (reported).
    """
    state = inspect_image(client, pool, image, view, ids)
    if not state.locks:
        return FenceResult(pool, image, FenceAction.NOTHING, ("image has no lock",))
    refusals = [r for lock in state.locks if (r := _refusal(lock))]
    if refusals:
        return FenceResult(pool, image, FenceAction.REFUSED, tuple(refusals))

    blocklisted: list[str] = []
    for lock in state.locks:
        if lock.locker.address not in blocklisted:
            try:
                client.blocklist_add(lock.locker.address, blocklist_expire_s)
            except CephError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM):
                    raise
                raise CephError(
                    f"fencing {lock.locker.client} at {lock.locker.address} on {pool}/{image} "
                    f"needs the mon capability to run 'osd blocklist', which "
                    f"client.{client.target.user} lacks (the monitors answered: {exc}); "
                    f"nothing was changed. Grant it with: {caps_command(client.target.user, pool)}",
                    field="caps",
                    errno_=exc.errno,
                ) from exc
            blocklisted.append(lock.locker.address)
    for lock in state.locks:
        client.break_lock(pool, image, lock.locker)
    reasons = [
        f"{lock.locker.client} ({'; '.join(lock.reasons)}): {lock.locker.address} blocklisted "
        f"for {blocklist_expire_s}s, lock {lock.locker.cookie!r} removed"
        for lock in state.locks
    ]
    left = [
        w.watcher.address
        for w in state.watcher_states
        if w.watcher.address not in blocklisted and not w.holds_lock
    ]
    if left:
        reasons.append(f"other watchers left alone: {', '.join(left)}")
    return FenceResult(
        pool,
        image,
        FenceAction.FENCED,
        tuple(reasons),
        blocklisted=tuple(blocklisted),
        removed=tuple(lock.locker for lock in state.locks),
    )
