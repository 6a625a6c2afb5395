"""A member pod that can't mount its volume because another Ceph client still holds the RBD
image's lock (a dead node's, most often), found in the kubelet's FailedMount events, and the
`quorumkeeper ceph locks ... --fence` command line that fences the holder.

The operator reports, it does not fence: fencing is safe only once the holder's node is known to
be down, and `ceph locks --fence` itself refuses while that node may still write (`ceph.locks`).

What the message looks like: the kubelet posts a Warning Event, reason `FailedMount`, on the pod,
its message `MountVolume.MountDevice failed for volume "<pv>" : rpc error: code = Internal desc =
<the CSI node plugin's error>` (kubelet's `operationexecutor` wrapping a CSI error). The node
plugin's error names the image and, where it can, who holds its lock:
`rbd image <pool>/<image> is locked by <client> (cookie '<cookie>') at <ip:port/nonce>` (the test
bed's ceph-csi stand-in, `testbed/rbd_holder.py`, as `tests/ceph/test_ceph_pvc.py` asserts on a
real node) or, from Kubernetes' in-tree RBD plugin, `rbd: image <image> is locked by other nodes`.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from quorumkeeper.runtimes.kubernetes.api import KubeApi
from quorumkeeper.runtimes.kubernetes.resources import GROUP, VERSION, ClusterResource

REASON = "VolumeLockedByDeadClient"
"""The condition and Event reason of a member whose volume another client holds locked."""
FAILED_MOUNT = "FailedMount"
"""The kubelet's Event reason for a volume it could not mount (`events.FailedMountVolume`)."""
KUBECONFIG = "~/.kube/config"
"""The kubeconfig the printed command reads nodes and the StorageClass through: kubectl's
default place, which the shell expands; the operator can't know the reader's own."""

_LOCKED = re.compile(
    r"rbd:? image (?:(?P<pool>[^\s/]+)/)?(?P<image>[^\s/]+) is locked by (?P<holders>[^\n]+)"
)
_ADDRESS = re.compile(r"\bat (?P<address>[^\s,]+)")


@dataclass(frozen=True)
class VolumeLock:
    """Pod `pod` (uid `pod_uid`), waiting on node `node`, can't mount RBD image `pool`/`image`:
    `holders` is the lock holder as the message names it, `addresses` their Ceph client
    addresses (`ip:port/nonce`; empty when the message names none), `storage_class` the
    member's PVC's StorageClass (None when it has none). `pool` is None when the message
    names none; the StorageClass's pool is then the image's."""

    pod: str
    pod_uid: str
    node: str | None
    pool: str | None
    image: str
    holders: str
    addresses: tuple[str, ...]
    storage_class: str | None

    @property
    def image_path(self) -> str:
        return f"{self.pool}/{self.image}" if self.pool else self.image

    def fence_argv(self) -> list[str]:
        """`quorumkeeper ceph locks` fencing exactly this image, its Ceph target and node view
        read through the kubeconfig (the StorageClass's Secret and monitors, the node list)."""
        argv = ["quorumkeeper", "ceph", "locks", "--kubeconfig", KUBECONFIG]
        if self.storage_class:
            argv += ["--storage-class", self.storage_class]
        if self.pool:
            argv += ["--pool", self.pool]
        return [*argv, "--image", self.image, "--fence"]

    @property
    def fence_command(self) -> str:
        """`fence_argv` as a shell line; the kubeconfig's `~` is left for the shell to expand."""
        return " ".join(a if a == KUBECONFIG else shlex.quote(a) for a in self.fence_argv())

    def describe(self) -> str:
        """What a person reads in status and in the Event: pod, node, image, holder, and the
        command that fences the holder once its node is known to be down."""
        where = f" on node {self.node}" if self.node else ""
        fence = (
            f"once the holder's node is down, fence it with: {self.fence_command}"
            if self.storage_class
            else "its PVC names no StorageClass: fence it with `quorumkeeper ceph locks --fence` "
            "and that Ceph cluster's --monitors, --user and --key"
        )
        return (
            f"pod {self.pod} can't mount its volume{where}: RBD image {self.image_path} is "
            f"locked by {self.holders}; {fence}"
        )


def parse_lock(message: str) -> tuple[str | None, str, str, tuple[str, ...]] | None:
    """(pool, image, holders, addresses) of a FailedMount message saying the image is locked by
    another client, None for any other message. Pure."""
    found = _LOCKED.search(message)
    if found is None:
        return None
    holders = found["holders"].strip()
    addresses = tuple(m["address"] for m in _ADDRESS.finditer(holders))
    return found["pool"], found["image"], holders, addresses


def _when(event: Any) -> datetime:
    """When the kubelet last saw it: a counted event's last timestamp, else when it was made."""
    for moment in (event.last_timestamp, event.event_time, event.metadata.creation_timestamp):
        if moment is not None:
            return moment  # type: ignore[no-any-return]
    return datetime.min.replace(tzinfo=UTC)


def _never_started(pod: Any) -> bool:
    """No container of `pod` has started yet, init containers included: its volumes are mounted
    before the first one starts, so a pod that ran one has mounted them."""
    status = pod.status
    statuses = [*(status.init_container_statuses or []), *(status.container_statuses or [])]
    return all(
        s.state.running is None
        and s.state.terminated is None
        and (s.last_state is None or s.last_state.terminated is None)
        for s in statuses
    )


def volume_lock(core: KubeApi, pod: Any, claim: Any | None) -> VolumeLock | None:
    """The lock keeping `pod` from mounting its volume, from the newest FailedMount Event on it
    that names one; None if none does, and without asking when the pod is not waiting for its
    volumes (not bound to a node, being deleted, or a container of it has started). One API
    request per pod that waits; raises `ApiException` if the API server refuses it."""
    waiting = pod.metadata.deletion_timestamp is None and pod.spec.node_name
    if not waiting or pod.status is None or not _never_started(pod):
        return None
    events: Any = core.list_namespaced_event(
        pod.metadata.namespace,
        field_selector=f"involvedObject.uid={pod.metadata.uid},reason={FAILED_MOUNT}",
    )
    found = [(parsed, e) for e in events.items if (parsed := parse_lock(e.message or ""))]
    if not found:
        return None
    (pool, image, holders, addresses), event = max(found, key=lambda pair: _when(pair[1]))
    source = event.source.host if event.source is not None else None
    return VolumeLock(
        pod=pod.metadata.name,
        pod_uid=pod.metadata.uid,
        node=source or pod.spec.node_name,
        pool=pool,
        image=image,
        holders=holders,
        addresses=addresses,
        storage_class=claim.spec.storage_class_name if claim is not None else None,
    )


def announce(core: KubeApi, resource: ClusterResource, lock: VolumeLock) -> None:
    """One Warning Event on the cluster resource per lock and pod: its name is derived from
    both, so a second call (the next pass, a restarted operator) finds it made and adds none."""
    key = f"{lock.pod_uid} {lock.image_path} {lock.holders}"
    name = f"{resource.name}.{REASON.lower()}.{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    now = datetime.now(UTC)
    event = {
        "metadata": {"name": name, "namespace": resource.namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": resource.kind.value,
            "name": resource.name,
            "namespace": resource.namespace,
            "uid": resource.uid,
        },
        "reason": REASON,
        "message": lock.describe(),
        "type": "Warning",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
        "source": {"component": "quorumkeeper-operator"},
    }
    try:
        core.create_namespaced_event(resource.namespace, event)
    except ApiException as error:
        if error.status != 409:
            raise
