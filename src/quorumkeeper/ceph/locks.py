"""Who holds an RBD image's lock, whether that holder is still alive, and safe fencing.

A pod can't mount its volume on a new node while the old node's client still holds the
image's lock. Breaking the lock without first blocklisting that client lets a partitioned
node keep writing, so `fence_image` always blocklists before it unlocks, and refuses while
the holder's host still watches the image unless that node is confirmed down.

Contract of `fence_image` (what the operator relies on):
- inputs: a connected client, pool, image, and a `NodeView` (node addresses, readiness,
  out-of-service taints, nodes confirmed down by a person);
- output: a `FenceResult` whose `action` is `fenced` (every stale lock removed after its
  holder and that host's watchers were blocklisted), `refused` (nothing changed; `reasons`
  says why and what would unblock it) or `nothing-to-do` (no lock on the image);
- it never unlocks a lock whose holder is live, and never blocklists a client on a node that
  is Ready or not confirmed down while that client still watches the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from quorumkeeper.ceph.client import CephClient, ImageInfo, Locker, Watcher, address_ip

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


@dataclass(frozen=True)
class LockStatus:
    locker: Locker
    node: str | None
    node_status: NodeStatus
    host_watchers: tuple[Watcher, ...]  # watchers from the holder's host
    liveness: Liveness
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class ImageLocks:
    pool: str
    image: str
    watchers: tuple[Watcher, ...]
    locks: tuple[LockStatus, ...]


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


def classify(info: ImageInfo, view: NodeView) -> tuple[LockStatus, ...]:
    """Live or stale for each lock on `info`; pure, so the operator can unit-test policy."""
    statuses = []
    for locker in info.lockers:
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
            )
        )
    return tuple(statuses)


def inspect_image(client: CephClient, pool: str, image: str, view: NodeView) -> ImageLocks:
    info = client.image_info(pool, image)
    return ImageLocks(pool=pool, image=image, watchers=info.watchers, locks=classify(info, view))


def _refusal(lock: LockStatus) -> str | None:
    """Why this lock must not be fenced now, or None if fencing it is safe."""
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
) -> FenceResult:
    """Blocklist each stale holder (and its host's watchers), then remove its lock.

    All-or-nothing on the decision: if any lock on the image must not be fenced, nothing is
    blocklisted or removed.
    """
    state = inspect_image(client, pool, image, view)
    if not state.locks:
        return FenceResult(pool, image, FenceAction.NOTHING, ("image has no lock",))
    refusals = [r for lock in state.locks if (r := _refusal(lock))]
    if refusals:
        return FenceResult(pool, image, FenceAction.REFUSED, tuple(refusals))

    blocklisted: list[str] = []
    for lock in state.locks:
        for addr in [lock.locker.address, *(w.address for w in lock.host_watchers)]:
            if addr not in blocklisted:
                client.blocklist_add(addr, blocklist_expire_s)
                blocklisted.append(addr)
    for lock in state.locks:
        client.break_lock(pool, image, lock.locker)
    reasons = tuple(
        f"{lock.locker.client} ({'; '.join(lock.reasons)}): blocklisted for "
        f"{blocklist_expire_s}s, lock {lock.locker.cookie!r} removed"
        for lock in state.locks
    )
    return FenceResult(
        pool,
        image,
        FenceAction.FENCED,
        reasons,
        blocklisted=tuple(blocklisted),
        removed=tuple(lock.locker for lock in state.locks),
    )
