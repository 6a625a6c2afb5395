"""The operator on the real-node test bed, as its tests and `benchmarks.operator` drive it:
`quorumkeeper operator` outside the pods with the test bed's CoreDNS, a cluster resource applied
with `kubectl`, and the store's membership as seen from this process.

The operator runs as `quorumkeeper operator` outside the pods (the test bed has no kube-proxy,
so nothing in a pod reaches the API server), in a mount namespace of its own whose
`/etc/resolv.conf` names the test bed's CoreDNS: it resolves members by their pod DNS names as it
would in a cluster. The calling process itself has no cluster DNS; its store clients (the
writer, the membership checks) resolve pod DNS names through the API server instead
(`api_getaddrinfo`, a fake resolver named as such).
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from quorumkeeper.certificates import KeyPair, TlsFiles
from quorumkeeper.model import Endpoint, Member
from quorumkeeper.runtimes.kubernetes.authority import InMemoryTlsFiles
from quorumkeeper.runtimes.kubernetes.crd import crds
from quorumkeeper.runtimes.kubernetes.objects import OPERATOR_CLIENT, TRUST_KEY, Names
from quorumkeeper.runtimes.kubernetes.placement import ServiceDnsPlacement
from quorumkeeper.runtimes.kubernetes.resources import API_VERSION, Kind
from quorumkeeper.stores.base import CoordinationStore, StoreUnavailable
from quorumkeeper.stores.etcd.client import EtcdStore
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from quorumkeeper.versions import ETCD_VERSION, ZOOKEEPER_VERSION
from testbed.cluster import Cluster
from testbed.kube import ApiError, Kube, Obj, ns_path
from testbed.network import BRIDGE_IP
from tests.polling import wait_until

CLUSTER_DOMAIN_SUFFIX = ".svc.cluster.local"


def install_crds(cluster: Cluster) -> None:
    """The operator's CustomResourceDefinitions, applied and Established."""
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(crds()))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


def create_namespace(kube: Kube, name: str) -> None:
    """Namespace `name`, returned once its default ServiceAccount exists (pods need it)."""
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    wait_until(
        lambda: exists(kube, ns_path(name, "serviceaccounts", "default")), 30, "ServiceAccount"
    )


def exists(kube: Kube, path: str) -> bool:
    try:
        kube.get(path)
    except ApiError:
        return False
    return True


def api_getaddrinfo(kube: Kube) -> Callable[..., Any]:
    """A fake resolver for this process only, to put in place of `socket.getaddrinfo`:
    `<pod>.<service>.<ns>.svc.cluster.local` is the pod's IP as the API server reports it (the
    calling process is outside the cluster's DNS); any other name goes to the real resolver."""
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(CLUSTER_DOMAIN_SUFFIX):
            pod, _, rest = host.partition(".")
            namespace = rest.split(".")[1]
            try:
                ip = kube.get(ns_path(namespace, "pods", pod))["status"].get("podIP")
            except ApiError:
                ip = None
            if not ip:
                raise socket.gaierror(socket.EAI_NONAME, f"no pod IP for {host}")
            host = ip
        return real(host, port, *args, **kwargs)

    return getaddrinfo


@dataclass
class OperatorProcess:
    """`quorumkeeper operator` for one namespace, with the test bed's CoreDNS as its resolver."""

    cluster: Cluster
    namespace: str
    folder: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "operator.log"

    def start(self) -> None:
        resolv = self.folder / "resolv.conf"
        resolv.write_text(f"nameserver {BRIDGE_IP}\noptions ndots:1 timeout:1\n")
        command = (
            f"mount --bind {resolv} /etc/resolv.conf && exec {sys.executable} -m quorumkeeper "
            f"operator --namespace {self.namespace} --metrics-port 0"  # scraped elsewhere
            # The test bed's kubelets sync every 5 s (testbed/node.py): Secrets reach pods soon.
            " --secret-refresh-seconds 15"
        )
        env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it by its PID (the `sh` execs the operator, so the PID is the operator's)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ClusterUnderTest:
    """One cluster resource on the test bed, as the writer and the checks see it: with TLS
    (the default) its clients hold the operator's client certificate from the cluster's TLS
    Secret, kept in this process's memory, and etcd's authenticate as its root user."""

    kube: Kube
    cluster: Cluster
    kind: Kind
    namespace: str
    name: str
    password: Callable[[], str]
    _tls: InMemoryTlsFiles | None = field(default=None, repr=False)

    def secret(self, name: str) -> dict[str, bytes]:
        """Secret `name` of the cluster's namespace, decoded."""
        data = self.kube.get(ns_path(self.namespace, "secrets", name))["data"]
        return {key: base64.b64decode(value) for key, value in data.items()}

    @property
    def secured(self) -> tuple[bool, bool]:
        """The resource's (tls, auth), both true when unset."""
        spec = self.resource()["spec"]
        return bool(spec.get("tls", True)), bool(spec.get("auth", True))

    def tls(self) -> TlsFiles | None:
        """The operator's client certificate (None for a plain-text cluster), as the TLS Secret
        holds it now."""
        if not self.secured[0]:
            return None
        data = self.secret(Names(self.name).tls_secret)
        if self._tls is None:
            self._tls = InMemoryTlsFiles()
        self._tls.write(
            data[TRUST_KEY], KeyPair(data[f"{OPERATOR_CLIENT}.crt"], data[f"{OPERATOR_CLIENT}.key"])
        )
        return self._tls.files

    def root_password(self) -> str | None:
        """etcd's root password, None without authentication."""
        if not self.secured[1]:
            return None
        return self.secret(Names(self.name).root_secret)["password"].decode()

    @property
    def placement(self) -> ServiceDnsPlacement:
        return ServiceDnsPlacement(self.name, Names(self.name).peer_service, self.namespace)

    def endpoints(self, count: int = 6) -> list[Endpoint]:
        return [self.placement.endpoint(n) for n in range(count)]

    def client(
        self, timeout: float = 2.0, endpoints: list[Endpoint] | None = None
    ) -> CoordinationStore:
        """A store client for `endpoints` (by default every ordinal the tests may create)."""
        endpoints = endpoints or self.endpoints()
        if self.kind is Kind.ETCD:
            return EtcdStore(
                endpoints, timeout=timeout, tls=self.tls(), root_password=self.root_password()
            )
        return ZookeeperStore(endpoints, password=self.password(), timeout=timeout, tls=self.tls())

    def resource(self) -> Obj:
        return self.kube.get(ns_path(self.namespace, self.kind.plural, self.name, API_VERSION))

    def pods(self) -> dict[str, Obj]:
        pods = self.kube.get(
            ns_path(self.namespace, "pods"), labelSelector=f"app.kubernetes.io/instance={self.name}"
        )["items"]
        return {p["metadata"]["name"]: p for p in pods if "deletionTimestamp" not in p["metadata"]}

    def members(self) -> dict[str, Member]:
        """The store's members by pod name; raises `StoreUnavailable` while no quorum answers."""
        store = self.client()
        try:
            members = store.members()
        finally:
            store.close()
        located = [(self.placement.locate(m.address), m) for m in members]
        return {e.name: m for e, m in located if e is not None}

    def membership(self) -> set[str]:
        return set(self.members())

    def voters(self) -> set[str]:
        """Members the store counts as healthy voters; empty while no quorum answers."""
        try:
            members = self.members()
        except StoreUnavailable:
            return set()
        return {name for name, m in members.items() if m.voter and m.healthy}

    def condition(self, kind: str) -> str | None:
        """The status ("True", "False", "Unknown") of the resource's condition `kind`."""
        conditions = (self.resource().get("status") or {}).get("conditions") or []
        return next((c["status"] for c in conditions if c["type"] == kind), None)

    def membership_differs(self, before: set[str]) -> bool:
        """Whether the store's membership is no longer `before`; false while no quorum answers
        (a ZooKeeper ensemble elects after its leader leaves: polled again, not a failure)."""
        try:
            return self.membership() != before
        except StoreUnavailable:
            return False

    def settled(self, members: int) -> dict[str, Obj] | None:
        """The pods once the resource reports `members` ready voters, its step Done, and the
        pods and the store's membership agree; None until then."""
        status = self.resource().get("status") or {}
        if (
            status.get("readyMembers") != members
            or (status.get("step") or {}).get("kind") != "Done"
        ):
            return None
        pods = self.pods()
        ready = {
            name
            for name, pod in pods.items()
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in pod["status"].get("conditions") or []
            )
        }
        if len(pods) != members or ready != set(pods):
            return None
        try:
            membership = self.membership()
        except StoreUnavailable:
            return None  # Ready lags an election by a probe period: asked again next poll
        return pods if membership == set(pods) else None

    def scale(self, members: int) -> None:
        self.cluster.kubectl(
            "scale",
            "-n",
            self.namespace,
            f"{self.kind.short_name}/{self.name}",
            f"--replicas={members}",
        )


TEST_JVM_FLAGS = ("-XX:TieredStopAtLevel=1",)
"""The test bed's ZooKeeper servers live minutes and restart often: the JVM's optimising
compiler (C2) would spend CPU on code they never run long enough to use."""


def create_cluster(
    kube: Kube,
    cluster: Cluster,
    kind: Kind,
    namespace: str,
    members: int,
    storage_class: str | None = None,
    *,
    name: str | None = None,
    **spec: Any,
) -> ClusterUnderTest:
    """`kubectl apply` of a cluster resource of `members` members at the pinned version, named
    `name` (by default "orders" for etcd, "locks" for ZooKeeper), on `storage_class` (the test
    bed's default, node-independent local volumes, when None), `spec` overriding or adding
    fields of its spec; returned at once (nothing is waited for)."""
    name = name or ("orders" if kind is Kind.ETCD else "locks")
    version = ETCD_VERSION if kind is Kind.ETCD else ZOOKEEPER_VERSION
    if kind is Kind.ZOOKEEPER:
        spec["zookeeper"] = {"jvm_flags": list(TEST_JVM_FLAGS), **spec.get("zookeeper", {})}
    storage: dict[str, str] = {"size": "1Gi"}
    if storage_class is not None:
        storage["className"] = storage_class
    body = {
        "apiVersion": API_VERSION,
        "kind": kind.value,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "members": members,
            "version": version,
            "storage": storage,
            # Five members on three nodes: spread where possible.
            "antiAffinity": "Preferred",
            "pvcRetention": {"whenScaled": "Delete", "whenDeleted": "Delete"},
            **spec,
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))

    def password() -> str:
        secret = kube.get(ns_path(namespace, "secrets", Names(name).superuser_secret))
        return base64.b64decode(secret["data"]["password"]).decode()

    return ClusterUnderTest(kube, cluster, kind, namespace, name, password)
