"""The operator's install manifests: its namespace, the CRDs, a ServiceAccount with the least
privilege its reconciler needs, and a one-replica Deployment.

One replica with `Recreate`: kopf's peering is not leader election (equal-priority instances all
pause), so two operators must never overlap, not even during a rollout.
"""

from __future__ import annotations

from importlib import metadata
from typing import Any

from quorumkeeper.runtimes.kubernetes.crd import crds
from quorumkeeper.runtimes.kubernetes.metrics import DEFAULT_PORT as METRICS_PORT
from quorumkeeper.runtimes.kubernetes.resources import GROUP, Kind

Obj = dict[str, Any]

NAME = "quorumkeeper-operator"
DEFAULT_NAMESPACE = "quorumkeeper-system"


def default_image() -> str:
    return f"ghcr.io/quorumkeeper/quorumkeeper:{metadata.version('quorumkeeper')}"


_ALL = ["get", "list", "watch", "create", "update", "patch", "delete"]


def _rule(group: str, resources: list[str], verbs: list[str]) -> Obj:
    return {"apiGroups": [group], "resources": resources, "verbs": verbs}


def cluster_role() -> Obj:
    """What the reconciler does, and nothing more: it owns the objects it renders, reads and
    writes its resources' status, restarts members through the Eviction API, marks and removes
    member PVCs, and records Events. No pods/exec: it talks to the stores over the network."""
    plurals = [kind.plural for kind in Kind]
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": NAME},
        "rules": [
            _rule(GROUP, plurals, ["get", "list", "watch", "patch", "update"]),
            _rule(GROUP, [f"{p}/status" for p in plurals], ["get", "patch", "update"]),
            _rule(GROUP, [f"{p}/finalizers" for p in plurals], ["update"]),
            _rule("apps", ["statefulsets"], _ALL),
            _rule("policy", ["poddisruptionbudgets"], _ALL),
            _rule("", ["services", "configmaps"], _ALL),
            # The ZooKeeper superuser and etcd's root: created once, read, never rewritten; the
            # CA and the TLS Secret: certificates added for new members and renewed (patch).
            _rule("", ["secrets"], ["get", "list", "watch", "create", "patch"]),
            _rule("", ["pods"], ["get", "list", "watch", "delete"]),
            _rule("", ["pods/eviction"], ["create"]),
            _rule("", ["persistentvolumeclaims"], ["get", "list", "watch", "patch", "delete"]),
            # A member's data set aside: its volume is kept (reclaim policy Retain) when the
            # PVC is released.
            _rule("", ["persistentvolumes"], ["get", "patch"]),
            # Created for membership changes; listed for the kubelet's FailedMount on a pod.
            _rule("", ["events"], ["create", "patch", "list"]),
            _rule("events.k8s.io", ["events"], ["create", "patch"]),
            # kopf discovers its resources and watches them in every namespace.
            _rule("apiextensions.k8s.io", ["customresourcedefinitions"], ["list", "watch"]),
            _rule("", ["namespaces"], ["list", "watch"]),
        ],
    }


def operator_objects(namespace: str = DEFAULT_NAMESPACE, image: str | None = None) -> list[Obj]:
    """Everything `kubectl apply` needs to install the operator, in creation order."""
    labels = {"app.kubernetes.io/name": NAME}
    restricted = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": NAME,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [
                        {
                            "name": "operator",
                            "image": image or default_image(),
                            "args": ["operator"],
                            "ports": [
                                {
                                    "name": "metrics",
                                    "containerPort": METRICS_PORT,
                                    "protocol": "TCP",
                                }
                            ],
                            "resources": {
                                "requests": {"cpu": "50m", "memory": "64Mi"},
                                "limits": {"memory": "256Mi"},
                            },
                            "securityContext": restricted,
                        }
                    ],
                },
            },
        },
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": namespace,
                "labels": {"pod-security.kubernetes.io/enforce": "restricted"},
            },
        },
        *crds(),
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": NAME, "namespace": namespace, "labels": labels},
        },
        cluster_role(),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": NAME,
            },
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
        },
        deployment,
    ]
