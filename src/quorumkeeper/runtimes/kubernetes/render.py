"""The Kubernetes objects of one cluster resource, rendered with the stores' own pure functions
(`member_flags`, `server_config`, `dynamic_config`, `jvm_options`, `logback_xml`).

Per cluster: a headless peer Service (`publishNotReadyAddresses`, so a joining member resolves
before it is Ready), a client Service, a PodDisruptionBudget sized to the voters, a StatefulSet
(`Parallel`, `OnDelete`: the operator, never the StatefulSet controller, decides when a member
restarts), a ConfigMap with what the operator sets per membership change, and for ZooKeeper the
Secret of its superuser. Pods run the official images unchanged under the restricted Pod Security
Standard. Pure functions: nothing here talks to the API server.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from quorumkeeper.model import Endpoint, Peer
from quorumkeeper.runtimes.kubernetes.placement import ServiceDnsPlacement
from quorumkeeper.runtimes.kubernetes.resources import (
    AntiAffinity,
    ClusterResource,
    EtcdClusterSpec,
    Kind,
    ZookeeperClusterSpec,
)
from quorumkeeper.stores import etcd
from quorumkeeper.stores.etcd_config import member_flags
from quorumkeeper.stores.zookeeper import config as zookeeper_config
from quorumkeeper.stores.zookeeper import ensemble

Obj = dict[str, Any]

ETCD_IMAGE = "gcr.io/etcd-development/etcd"
"""etcd's official image (distroless: no shell; etcd, etcdctl and etcdutl in /usr/local/bin)."""
ZOOKEEPER_IMAGE = "docker.io/library/zookeeper"
"""ZooKeeper's Docker official image (docker-library `zookeeper`, 3.9.5/Dockerfile): user and
group `zookeeper` (uid/gid 1000), `ZOOCFGDIR` set from `ZOO_CONF_DIR` at build time, an
entrypoint writing zoo.cfg and myid only where absent, then `zkServer.sh start-foreground`."""

ETCD_METRICS_PORT = 2381
"""Where etcd serves /livez and /readyz apart from client traffic, as kubeadm's static pod."""
ETCD_MOUNT = "/var/lib/etcd"
ETCD_DATA_DIR = f"{ETCD_MOUNT}/data"
"""In a sub-directory of the volume: etcd wants its data dir 0700, a volume root is not."""
ETCD_UID = 65532
"""Any non-root uid: the distroless image has no user of its own; `fsGroup` opens the volume."""

ZOOKEEPER_MOUNT = "/var/lib/zookeeper"
ZOOKEEPER_CONF_DIR = f"{ZOOKEEPER_MOUNT}/conf"
"""On the volume: ZooKeeper rewrites zoo.cfg and its dynamic file on every reconfig."""
ZOOKEEPER_UID = 1000
ZOOKEEPER_CONFIG_MOUNT = "/etc/quorumkeeper"

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


def placement(resource: ClusterResource) -> ServiceDnsPlacement:
    return ServiceDnsPlacement(resource.name, Names(resource.name).peer_service, resource.namespace)


def selector(resource: ClusterResource) -> dict[str, str]:
    """The labels that pick this cluster's pods; never changes over the cluster's life."""
    store = resource.spec.store.value
    return {LABEL_NAME: store, LABEL_INSTANCE: resource.name}


def _metadata(resource: ClusterResource, name: str) -> Obj:
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


def _ports(kind: Kind) -> dict[str, int]:
    if kind is Kind.ETCD:
        return {"client": etcd.CLIENT_PORT, "peer": etcd.PEER_PORT}
    return {
        "client": ensemble.CLIENT_PORT,
        "quorum": ensemble.QUORUM_PORT,
        "election": ensemble.ELECTION_PORT,
    }


def services(resource: ClusterResource) -> list[Obj]:
    ports = _ports(resource.kind)
    names = Names(resource.name)
    peer = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(resource, names.peer_service),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": selector(resource),
            "ports": [{"name": n, "port": p, "targetPort": n} for n, p in ports.items()],
        },
    }
    client = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(resource, names.client_service),
        "spec": {
            "selector": selector(resource),
            "ports": [{"name": "client", "port": ports["client"], "targetPort": "client"}],
        },
    }
    return [peer, client]


def disruption_budget(resource: ClusterResource, membership: Membership) -> Obj:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(resource, resource.name),
        "spec": {
            "maxUnavailable": max_unavailable(membership.voters_now, membership.voters_after),
            "selector": {"matchLabels": selector(resource)},
            # A crash-looping member must not block node drains (KEP-3017).
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def cluster_token(resource: ClusterResource) -> str:
    """etcd's `--initial-cluster-token`: distinct per cluster resource, so members of a deleted
    and recreated cluster of the same name never talk to each other."""
    return f"{resource.namespace}-{resource.name}-{resource.uid or 'unsaved'}"


def _template_endpoint(placement: ServiceDnsPlacement) -> Endpoint:
    """Any pod of the StatefulSet, as its container sees itself: `$(POD_NAME)`, which the
    kubelet expands in `args` from the Downward API."""
    pod = "$(POD_NAME)"
    return Endpoint(
        pod, 0, f"{pod}.{placement.service}.{placement.namespace}.svc.{placement.domain}"
    )


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
    )
    return {
        "initial-cluster": _flag(flags, "--initial-cluster"),
        "initial-cluster-state": _flag(flags, "--initial-cluster-state"),
    }


_PER_POD_FLAGS = {
    # etcd binds IP addresses only; the advertised URLs keep the pod's DNS name.
    "--listen-client-urls": f"http://$(POD_IP):{etcd.CLIENT_PORT},http://127.0.0.1:{etcd.CLIENT_PORT}",
    "--listen-peer-urls": f"http://$(POD_IP):{etcd.PEER_PORT}",
    # What the operator sets per membership change comes from the ConfigMap, through env.
    "--initial-cluster": "$(QK_INITIAL_CLUSTER)",
    "--initial-cluster-state": "$(QK_INITIAL_CLUSTER_STATE)",
}


def etcd_args(resource: ClusterResource, spec: EtcdClusterSpec) -> list[str]:
    """etcd's flags, each an `args` element (the image has no shell to expand anything)."""
    flags = member_flags(
        _template_endpoint(placement(resource)),
        [],
        spec.etcd,
        cluster_token(resource),
        bootstrap=False,
    )
    args = []
    for flag in flags:
        name = flag.partition("=")[0]
        args.append(f"{name}={_PER_POD_FLAGS[name]}" if name in _PER_POD_FLAGS else flag)
    return [
        *args,
        f"--data-dir={ETCD_DATA_DIR}",
        f"--listen-metrics-urls=http://$(POD_IP):{ETCD_METRICS_PORT}",
    ]


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _config_env(name: str, config_map: str, key: str) -> Obj:
    return {"name": name, "valueFrom": {"configMapKeyRef": {"name": config_map, "key": key}}}


_RESTRICTED_CONTAINER: Obj = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _image(resource: ClusterResource) -> str:
    spec = resource.spec
    if resource.kind is Kind.ETCD:
        repository, tag = spec.image.repository or ETCD_IMAGE, spec.image.tag or f"v{spec.version}"
    else:
        repository, tag = spec.image.repository or ZOOKEEPER_IMAGE, spec.image.tag or spec.version
    return f"{repository}:{tag}"


def _resources(resource: ClusterResource) -> Obj:
    wanted = resource.spec.resources
    return {
        key: dict(value)
        for key, value in (("requests", wanted.requests), ("limits", wanted.limits))
        if value
    }


def etcd_container(resource: ClusterResource, spec: EtcdClusterSpec) -> Obj:
    config_map = Names(resource.name).config_map
    probe = {"port": "metrics", "scheme": "HTTP"}
    return {
        "name": "etcd",
        "image": _image(resource),
        "imagePullPolicy": spec.image.pull_policy,
        "command": ["/usr/local/bin/etcd"],
        "args": etcd_args(resource, spec),
        "env": [
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_IP", "status.podIP"),
            _config_env("QK_INITIAL_CLUSTER", config_map, "initial-cluster"),
            _config_env("QK_INITIAL_CLUSTER_STATE", config_map, "initial-cluster-state"),
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
        "resources": _resources(resource),
        "securityContext": {**_RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
        "volumeMounts": [{"name": "data", "mountPath": ETCD_MOUNT}],
    }


def zookeeper_paths(spec: ZookeeperClusterSpec) -> tuple[str, str]:
    """(snapshots, transaction logs) of a member: the settings' folders under its volume."""
    settings = spec.zookeeper
    return f"{ZOOKEEPER_MOUNT}/{settings.data_dir}", f"{ZOOKEEPER_MOUNT}/{settings.data_log_dir}"


def zookeeper_config_data(spec: ZookeeperClusterSpec, membership: Membership) -> dict[str, str]:
    """The ConfigMap's data: zoo.cfg and the dynamic file a member's first start copies, each
    member's server id (`myid.<pod>`), and the logging configuration."""
    snapshots, txn_logs = zookeeper_paths(spec)
    dynamic_file = f"{ZOOKEEPER_CONF_DIR}/zoo.cfg.dynamic"
    settings = zookeeper_config.server_config(spec.zookeeper, snapshots, txn_logs, dynamic_file)
    return {
        "zoo.cfg": zookeeper_config.zoo_cfg(settings),
        "zoo.cfg.dynamic": ensemble.dynamic_config(list(membership.peers)),
        "logback.xml": zookeeper_config.logback_xml(spec.zookeeper),
        **{
            f"myid.{peer.endpoint.name}": f"{peer.member_id}\n"
            for peer in membership.peers
            if peer.member_id is not None
        },
    }


_ZOOKEEPER_INIT = """set -eu
mkdir -p "$ZOO_CONF_DIR" "$ZOO_DATA_DIR" "$ZOO_DATA_LOG_DIR"
if [ ! -f "$ZOO_DATA_DIR/myid" ]; then
  if [ ! -f "{config}/myid.$POD_NAME" ]; then
    echo "no ZooKeeper server id for $POD_NAME in ConfigMap {config_map} yet" >&2
    exit 1
  fi
  cp {config}/zoo.cfg.dynamic "$ZOO_CONF_DIR/zoo.cfg.dynamic"
  cp {config}/zoo.cfg "$ZOO_CONF_DIR/zoo.cfg"
  cp "{config}/myid.$POD_NAME" "$ZOO_DATA_DIR/myid"
fi
cp {config}/logback.xml "$ZOO_CONF_DIR/logback.xml"
"""
"""Our zoo.cfg, its dynamic file and myid in place before the image's entrypoint runs (which
writes its own only where they are absent). A member without `myid` has never started on this
volume: it gets the membership and server id the operator set for its join, `myid` written last
so an interrupted copy is redone. Once `myid` exists, zoo.cfg belongs to ZooKeeper (reconfig
rewrites it) and is never touched again."""

_FOUR_LETTER_WORD = (
    'exec 3<>"/dev/tcp/$POD_IP/{port}"; printf {word} >&3; grep -q{flags} "{match}" <&3'
)


def _four_letter_probe(word: str, match: str, flags: str = "") -> Obj:
    """A probe asking the server's client port one four-letter word through bash's /dev/tcp:
    bash is in the official image (and in the test bed's), no JVM starts for a probe. It asks
    the pod's IP: the dynamic file's `;<pod DNS name>:2181` binds the client port there only."""
    script = _FOUR_LETTER_WORD.format(
        port=ensemble.CLIENT_PORT, word=word, match=match, flags=flags
    )
    return {"exec": {"command": ["bash", "-c", script]}}


def _zookeeper_env(spec: ZookeeperClusterSpec) -> list[Obj]:
    snapshots, txn_logs = zookeeper_paths(spec)
    return [
        _field_env("POD_NAME", "metadata.name"),
        _field_env("POD_IP", "status.podIP"),
        # ZOOCFGDIR is what zkServer.sh reads; the image sets it from ZOO_CONF_DIR at build.
        {"name": "ZOO_CONF_DIR", "value": ZOOKEEPER_CONF_DIR},
        {"name": "ZOOCFGDIR", "value": ZOOKEEPER_CONF_DIR},
        {"name": "ZOO_DATA_DIR", "value": snapshots},
        {"name": "ZOO_DATA_LOG_DIR", "value": txn_logs},
    ]


def zookeeper_containers(resource: ClusterResource, spec: ZookeeperClusterSpec) -> tuple[Obj, Obj]:
    """(init container writing zoo.cfg and myid when absent, server container)."""
    names = Names(resource.name)
    env = _zookeeper_env(spec)
    mounts = [
        {"name": "data", "mountPath": ZOOKEEPER_MOUNT},
        {"name": "config", "mountPath": ZOOKEEPER_CONFIG_MOUNT, "readOnly": True},
    ]
    init = {
        "name": "config",
        "image": _image(resource),
        "imagePullPolicy": spec.image.pull_policy,
        "command": [
            "bash",
            "-c",
            _ZOOKEEPER_INIT.format(config=ZOOKEEPER_CONFIG_MOUNT, config_map=names.config_map),
        ],
        "env": env,
        "securityContext": _RESTRICTED_CONTAINER,
        "volumeMounts": mounts,
    }
    # The digest in the JVM options comes from the Secret: only the Secret changes with it.
    digest_flag = ensemble.superuser_digest_flag("")
    options = [
        "$(QK_SUPERUSER_DIGEST_FLAG)" if option == digest_flag else option
        for option in zookeeper_config.jvm_options(spec.zookeeper, "")
    ]
    server = {
        "name": "zookeeper",
        "image": _image(resource),
        "imagePullPolicy": spec.image.pull_policy,
        "env": [
            *env,
            {
                "name": "QK_SUPERUSER_DIGEST_FLAG",
                "valueFrom": {
                    "secretKeyRef": {"name": names.superuser_secret, "key": "digest-flag"}
                },
            },
            {"name": "SERVER_JVMFLAGS", "value": " ".join(options)},
        ],
        "ports": [
            {"name": name, "containerPort": port} for name, port in _ports(resource.kind).items()
        ],
        "readinessProbe": {
            **_four_letter_probe("srvr", "^Mode: (leader|follower|observer)", flags="E"),
            "periodSeconds": 2,
            "timeoutSeconds": 2,
        },
        "livenessProbe": {
            **_four_letter_probe("ruok", "imok"),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "resources": _resources(resource),
        "securityContext": _RESTRICTED_CONTAINER,
        "volumeMounts": mounts,
    }
    return init, server


def superuser_secret(resource: ClusterResource, password: str) -> Obj:
    """The ZooKeeper superuser: its password (for the operator's reconfigs) and the JVM flag
    carrying its digest (for the servers). The operator creates it once and never rewrites it."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _metadata(resource, Names(resource.name).superuser_secret),
        "type": "Opaque",
        "stringData": {
            "username": ensemble.SUPERUSER,
            "password": password,
            "digest-flag": ensemble.superuser_digest_flag(password),
        },
    }


def _affinity(resource: ClusterResource) -> Obj:
    term = {
        "labelSelector": {"matchLabels": selector(resource)},
        "topologyKey": "kubernetes.io/hostname",
    }
    if resource.spec.anti_affinity is AntiAffinity.REQUIRED:
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    weighted = {"weight": 100, "podAffinityTerm": term}
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [weighted]}}


def merge(base: Any, override: Any) -> Any:
    """`override` merged into `base`: mappings recursively, lists of named items by name (the
    way a strategic merge treats containers, volumes and env), anything else replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {k: merge(base[k], v) if k in base else v for k, v in {**base, **override}.items()}
    named = (
        isinstance(base, list)
        and isinstance(override, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *override])
    )
    if named:
        by_name = {item["name"]: item for item in base}
        for item in override:
            by_name[item["name"]] = merge(by_name.get(item["name"], {}), item)
        return list(by_name.values())
    return override


def pod_template(resource: ClusterResource) -> Obj:
    spec = resource.spec
    uid = ETCD_UID if resource.kind is Kind.ETCD else ZOOKEEPER_UID
    pod: Obj = {
        "affinity": _affinity(resource),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": uid,
            "runAsGroup": uid,
            "fsGroup": uid,
            "fsGroupChangePolicy": "OnRootMismatch",
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "enableServiceLinks": False,
    }
    if isinstance(spec, EtcdClusterSpec):
        pod["containers"] = [etcd_container(resource, spec)]
    else:
        assert isinstance(spec, ZookeeperClusterSpec)
        init, server = zookeeper_containers(resource, spec)
        pod["initContainers"] = [init]
        pod["containers"] = [server]
        pod["volumes"] = [
            {"name": "config", "configMap": {"name": Names(resource.name).config_map}}
        ]
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in spec.image_pull_secrets]
    if spec.tolerations:
        pod["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    metadata: Obj = {"labels": {**spec.labels, **selector(resource)}}
    if spec.annotations:
        metadata["annotations"] = dict(spec.annotations)
    template = {"metadata": metadata, "spec": pod}
    merged: Obj = merge(template, spec.pod_template)
    merged["metadata"]["labels"].update(selector(resource))  # an override can't orphan a pod
    return merged


def statefulset(resource: ClusterResource, membership: Membership) -> Obj:
    spec = resource.spec
    claim: Obj = {
        "metadata": {"name": "data", "labels": {**spec.labels, **selector(resource)}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage.size}},
        },
    }
    if spec.storage.class_name:
        claim["spec"]["storageClassName"] = spec.storage.class_name
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(resource, resource.name),
        "spec": {
            "serviceName": Names(resource.name).peer_service,
            "replicas": membership.replicas,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenScaled": spec.pvc_retention.when_scaled,
                "whenDeleted": spec.pvc_retention.when_deleted,
            },
            "selector": {"matchLabels": selector(resource)},
            "template": pod_template(resource),
            "volumeClaimTemplates": [claim],
        },
    }


def config_map(resource: ClusterResource, membership: Membership) -> Obj:
    spec = resource.spec
    if isinstance(spec, EtcdClusterSpec):
        data = etcd_config_data(resource, spec, membership)
    else:
        assert isinstance(spec, ZookeeperClusterSpec)
        data = zookeeper_config_data(spec, membership)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(resource, Names(resource.name).config_map),
        "data": data,
    }


def cluster_objects(
    resource: ClusterResource, membership: Membership, superuser_password: str | None = None
) -> list[Obj]:
    """Every object of the cluster, in an order `kubectl apply` can create them in.

    `superuser_password` is required for ZooKeeper (its Secret); raises ValueError without it.
    """
    objects = [
        *services(resource),
        config_map(resource, membership),
        disruption_budget(resource, membership),
    ]
    if resource.kind is Kind.ZOOKEEPER:
        if not superuser_password:
            raise ValueError("a ZooKeeper cluster needs its superuser's password")
        objects.append(superuser_secret(resource, superuser_password))
    return [*objects, statefulset(resource, membership)]
