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

import hashlib
import json
from typing import Any

from quorumkeeper.runtimes.kubernetes.etcd_pod import (
    ETCD_UID,
    SEALED_CONFIG,
    etcd_config_data,
    etcd_container,
)
from quorumkeeper.runtimes.kubernetes.objects import (
    Membership,
    Names,
    Obj,
    max_unavailable,
    object_metadata,
    selector,
    store_ports,
    tls_volume,
)
from quorumkeeper.runtimes.kubernetes.resources import (
    AntiAffinity,
    ClusterResource,
    EtcdClusterSpec,
    Kind,
    ZookeeperClusterSpec,
)
from quorumkeeper.runtimes.kubernetes.zookeeper_pod import (
    ZOOKEEPER_UID,
    superuser_secret,
    zookeeper_config_data,
    zookeeper_containers,
    zookeeper_settings_data,
)

CONFIG_ANNOTATION = "quorumkeeper.io/config"
"""On the pod template, so on every pod made from it: the configuration fingerprint
(`fingerprint`) the pod's member starts with."""
SECURITY_ANNOTATION = "quorumkeeper.io/security"
"""On the StatefulSet: the `tls` and `auth` the cluster was created with (`security`); one
without it was created before they existed, in plain text."""
TLS_ANNOTATION = "quorumkeeper.io/tls"
"""On the pod template and its pods of a store whose members restart for new certificates
(not `reloads_certificates`): the certificate authority's generation the pod's member starts
with (a part of `fingerprint`)."""
VERSION_ANNOTATION = "quorumkeeper.io/version"
"""On the pod template and its pods: the store release the spec asked for when the template was
written, for the upgrade check (`upgrades.check_upgrade`) of the next version."""


def services(resource: ClusterResource) -> list[Obj]:
    ports = store_ports(resource.kind)
    names = Names(resource.name)
    peer = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": object_metadata(resource, names.peer_service),
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
        "metadata": object_metadata(resource, names.client_service),
        "spec": {
            "selector": selector(resource),
            "ports": [{"name": "client", "port": ports["client"], "targetPort": "client"}],
        },
    }
    return [peer, client]


def disruption_budget(resource: ClusterResource, voters_now: int, voters_after: int) -> Obj:
    """The PodDisruptionBudget over every member pod: a drain may evict no more at once than
    leaves a quorum of the smaller of the two memberships (`max_unavailable`)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_metadata(resource, resource.name),
        "spec": {
            "maxUnavailable": max_unavailable(voters_now, voters_after),
            "selector": {"matchLabels": selector(resource)},
            # A crash-looping member must not block node drains (KEP-3017).
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
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


def reloads_certificates(kind: Kind) -> bool:
    """Whether a running member of `kind` takes renewed certificates and a CA rotation's trust
    bundle from its files, without a restart: ZooKeeper's do (the sidecar copies them where
    the server's file watchers see them, `zookeeper_pod._TLS_SIDECAR`); etcd's restart onto
    them, which costs no write since etcd hands leadership over first."""
    return kind is Kind.ZOOKEEPER


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


def pod_template(resource: ClusterResource, generation: str = "") -> Obj:
    """The members' pod template; `generation` is the certificate authority's
    (`SecretAuthority.generation`), carried as `TLS_ANNOTATION` when TLS is on and the members
    don't `reloads_certificates`, so that renewed certificates make every member stale."""
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
    volumes = [tls_volume(resource)] if spec.tls else []
    if isinstance(spec, EtcdClusterSpec):
        pod["containers"] = [etcd_container(resource, spec)]
    else:
        assert isinstance(spec, ZookeeperClusterSpec)
        init, containers = zookeeper_containers(resource, spec)
        pod["initContainers"] = [init]
        pod["containers"] = containers
        volumes.append({"name": "config", "configMap": {"name": Names(resource.name).config_map}})
    if volumes:
        pod["volumes"] = volumes
    if spec.image_pull_secrets:
        pod["imagePullSecrets"] = [{"name": s.name} for s in spec.image_pull_secrets]
    if spec.tolerations:
        pod["tolerations"] = [
            t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations
        ]
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    metadata: Obj = {"labels": {**spec.labels, **selector(resource)}}
    restarts = spec.tls and not reloads_certificates(resource.kind)
    annotations = {**spec.annotations, **({TLS_ANNOTATION: generation} if restarts else {})}
    if annotations:
        metadata["annotations"] = annotations
    template = {"metadata": metadata, "spec": pod}
    merged: Obj = merge(template, spec.pod_template)
    merged["metadata"]["labels"].update(selector(resource))  # an override can't orphan a pod
    return merged


def settings_data(resource: ClusterResource) -> dict[str, str]:
    """The ConfigMap's keys every member starts with, whatever the membership (ZooKeeper's
    zoo.cfg and logging; none for etcd, whose settings are all flags in the pod template)."""
    spec = resource.spec
    if isinstance(spec, ZookeeperClusterSpec):
        return zookeeper_settings_data(spec)
    return {}


def fingerprint(resource: ClusterResource, generation: str = "") -> str:
    """The configuration every member of `resource` starts with, as 16 hex digits: a hash of
    the version, the pod template (image, flags, JVM options, resources, overrides, for etcd
    the certificate authority's `generation`) and the ConfigMap's settings. The membership a joiner
    starts with and the replicas are not in it, so a scale never makes a member stale."""
    template = pod_template(resource, generation)
    text = json.dumps([resource.spec.version, template, settings_data(resource)], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def security(tls: bool, auth: bool) -> str:
    """`SECURITY_ANNOTATION`'s value."""
    return f"tls={str(tls).lower()},auth={str(auth).lower()}"


def statefulset(resource: ClusterResource, replicas: int, generation: str = "") -> Obj:
    """The StatefulSet with `replicas` pods, its pod template annotated with the configuration
    `fingerprint` and the version."""
    spec = resource.spec
    template = pod_template(resource, generation)
    template["metadata"].setdefault("annotations", {}).update(
        {CONFIG_ANNOTATION: fingerprint(resource, generation), VERSION_ANNOTATION: spec.version}
    )
    claim: Obj = {
        "metadata": {"name": "data", "labels": {**spec.labels, **selector(resource)}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": spec.storage.size}},
        },
    }
    if spec.storage.class_name:
        claim["spec"]["storageClassName"] = spec.storage.class_name
    metadata = object_metadata(resource, resource.name)
    metadata.setdefault("annotations", {})[SECURITY_ANNOTATION] = security(spec.tls, spec.auth)
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata,
        "spec": {
            "serviceName": Names(resource.name).peer_service,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "updateStrategy": {"type": "OnDelete"},
            "persistentVolumeClaimRetentionPolicy": {
                "whenScaled": spec.pvc_retention.when_scaled,
                "whenDeleted": spec.pvc_retention.when_deleted,
            },
            "selector": {"matchLabels": selector(resource)},
            "template": template,
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
        "metadata": object_metadata(resource, Names(resource.name).config_map),
        "data": data,
    }


def sealed_config(kind: Kind, data: dict[str, str]) -> dict[str, str | None]:
    """The merge patch of a ConfigMap holding `data` that lets no member start on an empty
    volume, written once every started member has joined: etcd's initial cluster names no pod
    (`etcd_pod.SEALED_CONFIG`), ZooKeeper's server ids go (a member without one waits, writing
    nothing). Empty when `data` is sealed already."""
    if kind is Kind.ETCD:
        wanted: dict[str, str | None] = dict(SEALED_CONFIG)
    else:
        wanted = {key: None for key in data if key.startswith("myid.")}
    return {key: value for key, value in wanted.items() if data.get(key) != value}


def cluster_objects(
    resource: ClusterResource,
    membership: Membership,
    superuser_password: str | None = None,
    generation: str = "",
) -> list[Obj]:
    """Every object of the cluster, in an order `kubectl apply` can create them in.

    `superuser_password` is required for ZooKeeper (its Secret); raises ValueError without it.
    `generation` is the certificate authority's (`pod_template`). The TLS Secrets are not
    among them: the operator writes them (`authority.SecretAuthority`).
    """
    objects = [
        *services(resource),
        config_map(resource, membership),
        disruption_budget(resource, membership.voters_now, membership.voters_after),
    ]
    if resource.kind is Kind.ZOOKEEPER:
        if not superuser_password:
            raise ValueError("a ZooKeeper cluster needs its superuser's password")
        objects.append(superuser_secret(resource, superuser_password))
    return [*objects, statefulset(resource, membership.replicas, generation)]
