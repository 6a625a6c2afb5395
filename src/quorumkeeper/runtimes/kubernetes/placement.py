"""Where a Kubernetes cluster's members live: pod N of the cluster's StatefulSet."""

from __future__ import annotations

from quorumkeeper.model import Endpoint, OrdinalPlacement


class ServiceDnsPlacement(OrdinalPlacement):
    """Member N of cluster `name` is pod `<name>-N`, reached by its stable DNS name under the
    headless peer Service: `<name>-N.<service>.<namespace>.svc.<domain>` (Kubernetes DNS
    specification, "Pods": a StatefulSet pod's hostname and subdomain)."""

    def __init__(self, name: str, service: str, namespace: str, domain: str = "cluster.local"):
        self.name = name
        self.service = service
        self.namespace = namespace
        self.domain = domain

    def endpoint(self, ordinal: int) -> Endpoint:
        pod = f"{self.name}-{ordinal}"
        return Endpoint(pod, ordinal, f"{pod}.{self.service}.{self.namespace}.svc.{self.domain}")
