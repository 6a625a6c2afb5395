"""Member pods and PVCs on an API server without nodes or controllers: the pods' status as the
kubelet would write it and the PVCs as the StatefulSet controller and the runtime would leave
them, written by the test, so a real `KubernetesRuntime` reads them as it reads a real
cluster's."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from quorumkeeper.runtimes.kubernetes.objects import placement, selector
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, parse_resource
from quorumkeeper.runtimes.kubernetes.runtime import IDENTITY, claim_name
from testbed.kube import Kube, ns_path

NAME = "c"
IMAGE = "registry.k8s.io/etcd:3.6.0-0"


def etcd_resource(namespace: str, members: int) -> ClusterResource:
    """An `EtcdCluster` named `NAME` as the operator parses it, with a uid of its own."""
    return parse_resource(
        {
            "apiVersion": "quorumkeeper.io/v1alpha1",
            "kind": "EtcdCluster",
            "metadata": {"name": NAME, "namespace": namespace, "uid": str(uuid.uuid4())},
            "spec": {"members": members, "version": "3.7.3", "storage": {"size": "1Gi"}},
        }
    )


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def put_member(
    kube: Kube,
    resource: ClusterResource,
    ordinal: int,
    *,
    running: bool = True,
    node: str | None = None,
    storage_class: str | None = None,
) -> dict[str, Any]:
    """Member `ordinal`'s pod (bound to `node` if given), its container running or, without
    `running`, still being created as the kubelet reports while a volume does not mount, and
    its PVC carrying the identity the runtime writes once the member has joined. Returns the
    pod as the API server stores it."""
    pod = f"{NAME}-{ordinal}"
    namespace = resource.namespace
    labels = selector(resource)
    spec: dict[str, Any] = {"containers": [{"name": "etcd", "image": IMAGE}]}
    if node:
        spec["nodeName"] = node
    metadata = {"name": pod, "labels": labels}
    kube.create(ns_path(namespace, "pods"), {"metadata": metadata, "spec": spec})
    state = (
        {"running": {"startedAt": rfc3339(datetime.now(UTC))}}
        if running
        else {"waiting": {"reason": "ContainerCreating"}}
    )
    status = {
        "phase": "Running" if running else "Pending",
        "containerStatuses": [
            {
                "name": "etcd",
                "ready": running,
                "restartCount": 0,
                "image": IMAGE,
                "imageID": "",
                "state": state,
            }
        ],
    }
    stored = kube.patch(ns_path(namespace, "pods", pod) + "/status", {"status": status})
    claim: dict[str, Any] = {
        "metadata": {
            "name": claim_name(placement(resource).endpoint(ordinal)),
            "labels": labels,
            "annotations": {IDENTITY: f"{resource.uid}/{pod}"},
        },
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    if storage_class:
        claim["spec"]["storageClassName"] = storage_class
    kube.create(ns_path(namespace, "persistentvolumeclaims"), claim)
    return stored
