"""What every object of a cluster shares: names, labels, ownership, the membership the operator
sets, and the pieces both stores' pods are built from. Pure values."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quorumkeeper.certificates import TlsFiles
from quorumkeeper.model import Peer
from quorumkeeper.runtimes.kubernetes.placement import ServiceDnsPlacement
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, Kind
from quorumkeeper.stores import etcd
from quorumkeeper.stores.zookeeper import ensemble

Obj = dict[str, Any]


LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "quorumkeeper"


@dataclass(frozen=True)
class Membership:
    """What the operator sets for the membership change in progress, never the user.

    `peers` is the membership a starting member joins (itself included; ZooKeeper's with their
    server ids), `bootstrap` that the first member starts a new cluster alone (the only "new"
    start ever), `replicas` the StatefulSet's pods, and the PodDisruptionBudget is sized to the
    smaller of `voters_now` and `voters_after`.
    """

    peers: tuple[Peer, ...]
    replicas: int
    voters_now: int
    voters_after: int
    bootstrap: bool = False

    @classmethod
    def steady(cls, placement: ServiceDnsPlacement, members: int) -> Membership:
        """`members` voters in place, server ids 1..members: a settled cluster as it renders
        (for inspection and for the server-side dry-runs)."""
        peers = tuple(
            Peer(placement.endpoint(ordinal), str(ordinal + ensemble.FIRST_SERVER_ID))
            for ordinal in range(members)
        )
        return cls(peers, replicas=members, voters_now=members, voters_after=members)


def max_unavailable(voters_now: int, voters_after: int) -> int:
    """Members a disruption may take at once and leave a quorum of the smaller membership:
    floor((min(now, after) - 1) / 2)."""
    return (min(voters_now, voters_after) - 1) // 2


@dataclass(frozen=True)
class Names:
    """The names of a cluster's objects."""

    cluster: str

    @property
    def peer_service(self) -> str:
        return f"{self.cluster}-peers"

    @property
    def client_service(self) -> str:
        return self.cluster

    @property
    def config_map(self) -> str:
        return f"{self.cluster}-config"

    @property
    def superuser_secret(self) -> str:
        return f"{self.cluster}-superuser"

    @property
    def ca_secret(self) -> str:
        return f"{self.cluster}-ca"

    @property
    def tls_secret(self) -> str:
        return f"{self.cluster}-tls"

    @property
    def root_secret(self) -> str:
        return f"{self.cluster}-root"

    def user_secret(self, user: str) -> str:
        return f"{self.cluster}-user-{user}"


TLS_MOUNT = Path("/etc/quorumkeeper-tls")
"""Where a member's container finds the cluster's TLS Secret (`Names.tls_secret`), read-only."""
SECRET_REFRESH_SECONDS = 120.0
"""How long a kubelet may take to bring a changed Secret into a pod that mounts it: its
periodic sync (`syncFrequency`, 1 min by default) after its cache saw the change (Kubernetes'
"Secrets" concept page: "kubelet sync period + cache propagation delay"). A CA rotation gives
users' pods this long between phases; `operator --secret-refresh-seconds` sets it."""
TRUST_KEY = "ca.crt"
"""The TLS Secret's key holding the CA certificates members and clients trust."""
OPERATOR_CLIENT = "operator"
"""The TLS Secret's keys `operator.crt`/`operator.key`: the operator's client certificate, as
the keeper's locally (no common name: etcd's gateway refuses a client certificate with one)."""
POD_NAME = "$(POD_NAME)"
"""The pod's own name in a container's `args`, which the kubelet expands from the Downward API."""


def member_tls(pod: str = POD_NAME) -> TlsFiles:
    """Where member `pod`'s container finds its certificate, key and the trust bundle: the TLS
    Secret holds one `<pod>.crt`/`<pod>.key` per member, so `args` pick their own with
    `$(POD_NAME)`."""
    return TlsFiles(TLS_MOUNT / TRUST_KEY, TLS_MOUNT / f"{pod}.crt", TLS_MOUNT / f"{pod}.key")


def keystore(pod: str = POD_NAME) -> str:
    """Member `pod`'s PEM keystore in its container (key and certificate in one file, as
    ZooKeeper reads them)."""
    return str(TLS_MOUNT / f"{pod}.pem")


def tls_volume(resource: ClusterResource) -> Obj:
    """The TLS Secret as a volume: read by the member's user through `fsGroup`, by no one else."""
    secret = {"secretName": Names(resource.name).tls_secret, "defaultMode": 0o440}
    return {"name": "tls", "secret": secret}


TLS_VOLUME_MOUNT: Obj = {"name": "tls", "mountPath": str(TLS_MOUNT), "readOnly": True}


def placement(resource: ClusterResource) -> ServiceDnsPlacement:
    return ServiceDnsPlacement(resource.name, Names(resource.name).peer_service, resource.namespace)


def selector(resource: ClusterResource) -> dict[str, str]:
    """The labels that pick this cluster's pods; never changes over the cluster's life."""
    store = resource.spec.store.value
    return {LABEL_NAME: store, LABEL_INSTANCE: resource.name}


def object_metadata(resource: ClusterResource, name: str) -> Obj:
    spec = resource.spec
    labels = {**spec.labels, **selector(resource), LABEL_MANAGED_BY: MANAGER}
    metadata: Obj = {"name": name, "namespace": resource.namespace, "labels": labels}
    if spec.annotations:
        metadata["annotations"] = dict(spec.annotations)
    if resource.uid:
        metadata["ownerReferences"] = [
            {
                "apiVersion": "quorumkeeper.io/v1alpha1",
                "kind": resource.kind.value,
                "name": resource.name,
                "uid": resource.uid,
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
    return metadata


def store_ports(kind: Kind) -> dict[str, int]:
    if kind is Kind.ETCD:
        return {"client": etcd.CLIENT_PORT, "peer": etcd.PEER_PORT}
    return {
        "client": ensemble.CLIENT_PORT,
        "quorum": ensemble.QUORUM_PORT,
        "election": ensemble.ELECTION_PORT,
    }


def field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def config_env(name: str, config_map: str, key: str) -> Obj:
    return {"name": name, "valueFrom": {"configMapKeyRef": {"name": config_map, "key": key}}}


RESTRICTED_CONTAINER: Obj = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def image(resource: ClusterResource, repository: str, tag: str) -> str:
    """The image of the spec, `repository` and `tag` standing in for what it leaves unset."""
    wanted = resource.spec.image
    return f"{wanted.repository or repository}:{wanted.tag or tag}"


def container_resources(resource: ClusterResource) -> Obj:
    wanted = resource.spec.resources
    return {
        key: dict(value)
        for key, value in (("requests", wanted.requests), ("limits", wanted.limits))
        if value
    }
