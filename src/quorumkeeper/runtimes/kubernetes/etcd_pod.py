"""The etcd member's container, from the official image as it is: no shell, so every flag is an
`args` element, per-pod values expanded by the kubelet from the Downward API, per-change values
from the cluster's ConfigMap. Flags come from the store's own `member_flags`."""

from __future__ import annotations

from quorumkeeper.certificates import TlsFiles
from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.kubernetes.objects import (
    POD_NAME,
    RESTRICTED_CONTAINER,
    TLS_VOLUME_MOUNT,
    Membership,
    Names,
    Obj,
    config_env,
    container_resources,
    field_env,
    image,
    member_tls,
    placement,
)
from quorumkeeper.runtimes.kubernetes.placement import ServiceDnsPlacement
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, EtcdClusterSpec
from quorumkeeper.stores import etcd
from quorumkeeper.stores.etcd.config import member_flags

ETCD_IMAGE = "gcr.io/etcd-development/etcd"
"""etcd's official image (distroless: no shell; etcd, etcdctl and etcdutl in /usr/local/bin)."""
ETCD_METRICS_PORT = 2381
"""Where etcd serves /livez and /readyz apart from client traffic, as kubeadm's static pod."""
ETCD_MOUNT = "/var/lib/etcd"
ETCD_DATA_DIR = f"{ETCD_MOUNT}/data"
"""In a sub-directory of the volume: etcd wants its data dir 0700, a volume root is not."""
ETCD_UID = 65532
"""Any non-root uid: the distroless image has no user of its own; `fsGroup` opens the volume."""


def cluster_token(resource: ClusterResource) -> str:
    """etcd's `--initial-cluster-token`: distinct per cluster resource, so members of a deleted
    and recreated cluster of the same name never talk to each other."""
    return f"{resource.namespace}-{resource.name}-{resource.uid or 'unsaved'}"


def _template_endpoint(placement: ServiceDnsPlacement) -> Endpoint:
    """Any pod of the StatefulSet, as its container sees itself: `$(POD_NAME)`, which the
    kubelet expands in `args` from the Downward API."""
    return Endpoint(
        POD_NAME,
        0,
        f"{POD_NAME}.{placement.service}.{placement.namespace}.svc.{placement.domain}",
    )


def _tls(spec: EtcdClusterSpec) -> TlsFiles | None:
    """The member's own certificate in its container, None for a plain-text cluster."""
    return member_tls() if spec.tls else None


def _flag(flags: list[str], name: str) -> str:
    return next(f for f in flags if f.startswith(f"{name}=")).partition("=")[2]


def etcd_config_data(
    resource: ClusterResource, spec: EtcdClusterSpec, membership: Membership
) -> dict[str, str]:
    """The ConfigMap's data: the initial cluster and state a member starting now joins with."""
    first = membership.peers[0].endpoint
    flags = member_flags(
        first,
        list(membership.peers),
        spec.etcd,
        cluster_token(resource),
        bootstrap=membership.bootstrap,
        tls=_tls(spec),
    )
    return {
        "initial-cluster": _flag(flags, "--initial-cluster"),
        "initial-cluster-state": _flag(flags, "--initial-cluster-state"),
    }


SEALED_CONFIG = {
    "initial-cluster": "no-member-joins-now=http://127.0.0.1:1",
    "initial-cluster-state": "existing",
}
"""The ConfigMap's data while no member joins (`render.sealed_config`): a member with data
ignores both flags and restarts; one on an empty volume finds its name in no initial cluster
and exits ("couldn't find local name ... in the initial cluster configuration", measured with
3.7.3) instead of rejoining under its old member id with no log, or, for the first member,
starting a new cluster of its own."""


def _per_pod_flags(tls: bool) -> dict[str, str]:
    """The flags whose values the kubelet fills in per pod."""
    return {
        # etcd binds IP addresses only; the advertised URLs keep the pod's DNS name.
        "--listen-client-urls": ",".join(
            etcd.client_url(host, tls=tls) for host in ("$(POD_IP)", "127.0.0.1")
        ),
        "--listen-peer-urls": etcd.peer_url("$(POD_IP)", tls=tls),
        # What the operator sets per membership change comes from the ConfigMap, through env.
        "--initial-cluster": "$(QK_INITIAL_CLUSTER)",
        "--initial-cluster-state": "$(QK_INITIAL_CLUSTER_STATE)",
    }


def etcd_args(resource: ClusterResource, spec: EtcdClusterSpec) -> list[str]:
    """etcd's flags, each an `args` element (the image has no shell to expand anything). With
    TLS, every URL is https and the member's own files in the mounted TLS Secret are picked by
    `$(POD_NAME)`; the metrics URL, which the kubelet's probes ask, stays plain HTTP."""
    flags = member_flags(
        _template_endpoint(placement(resource)),
        [],
        spec.etcd,
        cluster_token(resource),
        bootstrap=False,
        tls=_tls(spec),
    )
    per_pod = _per_pod_flags(spec.tls)
    args = []
    for flag in flags:
        name = flag.partition("=")[0]
        args.append(f"{name}={per_pod[name]}" if name in per_pod else flag)
    return [
        *args,
        f"--data-dir={ETCD_DATA_DIR}",
        f"--listen-metrics-urls=http://$(POD_IP):{ETCD_METRICS_PORT}",
    ]


def etcd_container(resource: ClusterResource, spec: EtcdClusterSpec) -> Obj:
    config_map = Names(resource.name).config_map
    probe = {"port": "metrics", "scheme": "HTTP"}
    return {
        "name": "etcd",
        "image": image(resource, ETCD_IMAGE, f"v{spec.version}"),
        "imagePullPolicy": spec.image.pull_policy,
        "command": ["/usr/local/bin/etcd"],
        "args": etcd_args(resource, spec),
        "env": [
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_IP", "status.podIP"),
            config_env("QK_INITIAL_CLUSTER", config_map, "initial-cluster"),
            config_env("QK_INITIAL_CLUSTER_STATE", config_map, "initial-cluster-state"),
        ],
        "ports": [
            {"name": "client", "containerPort": etcd.CLIENT_PORT},
            {"name": "peer", "containerPort": etcd.PEER_PORT},
            {"name": "metrics", "containerPort": ETCD_METRICS_PORT},
        ],
        # A learner fails /readyz ("non-learner" check, etcd-io/etcd#19086), so it gets no
        # client traffic until promoted.
        "readinessProbe": {"httpGet": {**probe, "path": "/readyz"}, "periodSeconds": 2},
        "livenessProbe": {
            "httpGet": {**probe, "path": "/livez"},
            "periodSeconds": 10,
            "failureThreshold": 8,
        },
        # A member catching up from a snapshot may take a while before /livez answers.
        "startupProbe": {
            "httpGet": {**probe, "path": "/livez"},
            "periodSeconds": 5,
            "failureThreshold": 60,
        },
        "resources": container_resources(resource),
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
        "volumeMounts": [
            {"name": "data", "mountPath": ETCD_MOUNT},
            *([TLS_VOLUME_MOUNT] if spec.tls else []),
        ],
    }
