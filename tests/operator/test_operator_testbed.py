"""The operator end to end on the real-node test bed: `kubectl scale` of an EtcdCluster and a
ZookeeperCluster while a writer runs, the store's membership equal to the pods after every step,
no existing pod restarted, and no acknowledged write lost.

The operator runs as `quorumkeeper operator` outside the pods (the test bed has no kube-proxy,
so nothing in a pod reaches the API server), in a mount namespace of its own whose
`/etc/resolv.conf` names the test bed's CoreDNS: it resolves members by their pod DNS names as it
would in a cluster. The test process itself has no cluster DNS; its store clients (the writer,
the membership checks) resolve pod DNS names through the API server instead
(`api_resolver`, a fake resolver named as such).
"""

from __future__ import annotations

import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.kubernetes.crd import crds
from quorumkeeper.runtimes.kubernetes.objects import Names
from quorumkeeper.runtimes.kubernetes.placement import ServiceDnsPlacement
from quorumkeeper.runtimes.kubernetes.render import CONFIG_ANNOTATION
from quorumkeeper.runtimes.kubernetes.resources import API_VERSION, Kind
from quorumkeeper.stores import etcd
from quorumkeeper.stores.base import CoordinationStore, StoreUnavailable
from quorumkeeper.stores.etcd.client import EtcdStore
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from quorumkeeper.stores.zookeeper.words import four_letter_word
from quorumkeeper.versions import ETCD_VERSION, ZOOKEEPER_VERSION
from testbed.cluster import Cluster
from testbed.kube import ApiError, Kube, Obj, condition_true, ns_path
from testbed.network import BRIDGE_IP
from tests.acceptance.harness import Writer
from tests.polling import wait_until

pytestmark = [pytest.mark.operator, pytest.mark.testbed]

CLUSTER_DOMAIN_SUFFIX = ".svc.cluster.local"
STEP_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def crds_installed(testbed_cluster: Cluster) -> None:
    testbed_cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(crds()))
    testbed_cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")


@pytest.fixture
def bed_namespace(
    kube: Kube, crds_installed: None, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace on the test bed, deleted afterwards."""
    name = f"op-{request.node.name[5:30].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    wait_until(
        lambda: _exists(kube, ns_path(name, "serviceaccounts", "default")), 30, "ServiceAccount"
    )
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


def _exists(kube: Kube, path: str) -> bool:
    try:
        kube.get(path)
    except ApiError:
        return False
    return True


@pytest.fixture
def api_resolver(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake resolver for this process only: `<pod>.<service>.<ns>.svc.cluster.local` is the
    pod's IP as the API server reports it (the test process is outside the cluster's DNS)."""
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

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


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
            f"operator --namespace {self.namespace}"
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


@pytest.fixture
def operator(
    testbed_cluster: Cluster, bed_namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    running = OperatorProcess(testbed_cluster, bed_namespace, tmp_path)
    running.start()
    try:
        yield running
    finally:
        running.stop()
        print(f"operator log ({running.log}):\n{running.tail(40)}")


@dataclass
class ClusterUnderTest:
    """One cluster resource on the test bed, as the writer and the checks see it."""

    kube: Kube
    cluster: Cluster
    kind: Kind
    namespace: str
    name: str
    password: Callable[[], str]

    @property
    def placement(self) -> ServiceDnsPlacement:
        return ServiceDnsPlacement(self.name, Names(self.name).peer_service, self.namespace)

    def endpoints(self, count: int = 6) -> list[Endpoint]:
        return [self.placement.endpoint(n) for n in range(count)]

    def client(self, timeout: float = 2.0) -> CoordinationStore:
        if self.kind is Kind.ETCD:
            return EtcdStore(self.endpoints(), timeout=timeout)
        return ZookeeperStore(self.endpoints(), password=self.password(), timeout=timeout)

    def resource(self) -> Obj:
        return self.kube.get(ns_path(self.namespace, self.kind.plural, self.name, API_VERSION))

    def pods(self) -> dict[str, Obj]:
        pods = self.kube.get(
            ns_path(self.namespace, "pods"), labelSelector=f"app.kubernetes.io/instance={self.name}"
        )["items"]
        return {p["metadata"]["name"]: p for p in pods if "deletionTimestamp" not in p["metadata"]}

    def membership(self) -> set[str]:
        store = self.client()
        try:
            members = store.members()
        finally:
            store.close()
        located = {m.address: self.placement.locate(m.address) for m in members}
        return {e.name for e in located.values() if e is not None}

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


def _identity(pods: dict[str, Obj]) -> dict[str, tuple[str, int]]:
    """Each pod's UID and its containers' restart count."""
    return {
        name: (
            pod["metadata"]["uid"],
            sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or []),
        )
        for name, pod in pods.items()
    }


def _create(
    kube: Kube, cluster: Cluster, kind: Kind, namespace: str, members: int, **spec: Any
) -> ClusterUnderTest:
    """Cluster `orders` (etcd) or `locks` (ZooKeeper) of `members` at the pinned version,
    `spec` overriding or adding fields of its spec."""
    name = "orders" if kind is Kind.ETCD else "locks"
    version = ETCD_VERSION if kind is Kind.ETCD else ZOOKEEPER_VERSION
    body = {
        "apiVersion": API_VERSION,
        "kind": kind.value,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "members": members,
            "version": version,
            "storage": {"size": "1Gi"},
            # Five members on three nodes: spread where possible.
            "antiAffinity": "Preferred",
            "pvcRetention": {"whenScaled": "Delete", "whenDeleted": "Delete"},
            **spec,
        },
    }
    cluster.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(body))

    def password() -> str:
        import base64

        secret = kube.get(ns_path(namespace, "secrets", Names(name).superuser_secret))
        return base64.b64decode(secret["data"]["password"]).decode()

    return ClusterUnderTest(kube, cluster, kind, namespace, name, password)


def _scale_up_and_down(
    target: ClusterUnderTest,
    operator: OperatorProcess,
    start: int,
    peak: int,
    *,
    kill_midway: bool = False,
) -> None:
    """`start` -> `peak` -> `start` by `kubectl scale`, checked after each step. With
    `kill_midway`, the operator is SIGKILLed as soon as the store's membership first changes in
    each direction, and started again."""
    timings: dict[str, float] = {}
    began = time.monotonic()
    try:
        pods = wait_until(lambda: target.settled(start), STEP_TIMEOUT, f"{start} members")
    except AssertionError:
        raise AssertionError(f"not settled at {start}; operator log:\n{operator.tail()}") from None
    timings[f"apply -> {start} settled"] = time.monotonic() - began
    before = _identity(pods)
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        for members in (peak, start):
            began = time.monotonic()
            target.scale(members)
            if kill_midway:
                wait_until(
                    functools.partial(target.membership_differs, set(pods)),
                    STEP_TIMEOUT,
                    "the first membership change",
                )
                operator.stop(signal.SIGKILL)
                print(f"operator killed after membership changed from {sorted(pods)}")
                operator.start()
            try:
                pods = wait_until(
                    functools.partial(target.settled, members), STEP_TIMEOUT, f"{members} members"
                )
            except AssertionError:
                raise AssertionError(
                    f"not settled at {members}; operator log:\n{operator.tail()}"
                ) from None
            timings[f"scale -> {members} settled"] = time.monotonic() - began
            now = _identity(pods)
            kept = {name: now.get(name) for name in before}
            assert kept == before, f"existing pods restarted or replaced: {before} -> {kept}"
    writer.assert_nothing_lost()
    assert "pass failed" not in operator.log.read_text(), operator.tail()
    events = target.kube.get(
        ns_path(target.namespace, "events"), fieldSelector=f"involvedObject.name={target.name}"
    )["items"]
    reasons = {event["reason"] for event in events}
    assert {"AddLearner", "Promote", "RemoveMember"} <= reasons, reasons
    print(
        f"{target.kind.value} {start} -> {peak} -> {start}: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
        + f"; {len(writer.acknowledged)} writes acknowledged, {writer.failed} failed, "
        f"longest gap {writer.longest_gap:.2f}s"
    )


def _deleted_with_its_volumes(target: ClusterUnderTest, operator: OperatorProcess) -> None:
    """Deleting the resource goes through the operator's finalizer, which applies
    `pvcRetention.whenDeleted: Delete`: the resource and every member PVC are gone."""
    target.kube.delete(ns_path(target.namespace, target.kind.plural, target.name, API_VERSION))

    def gone() -> bool:
        claims = target.kube.get(
            ns_path(target.namespace, "persistentvolumeclaims"),
            labelSelector=f"app.kubernetes.io/instance={target.name}",
        )["items"]
        path = ns_path(target.namespace, target.kind.plural, target.name, API_VERSION)
        return not claims and not _exists(target.kube, path)

    try:
        wait_until(gone, 120, f"{target.name} and its PVCs deleted")
    except AssertionError:
        raise AssertionError(f"not deleted; operator log:\n{operator.tail()}") from None


def test_etcd_scales_3_5_3_with_kubectl_scale(
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, Kind.ETCD, bed_namespace, 3)
    _scale_up_and_down(target, operator, 3, 5)
    _deleted_with_its_volumes(target, operator)


def test_zookeeper_scales_2_3_2_with_kubectl_scale(
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, Kind.ZOOKEEPER, bed_namespace, 2)
    _scale_up_and_down(target, operator, 2, 3)
    _deleted_with_its_volumes(target, operator)


@pytest.mark.parametrize(("kind", "start", "peak"), [(Kind.ETCD, 3, 5), (Kind.ZOOKEEPER, 2, 3)])
def test_the_operator_killed_in_the_middle_of_scaling_resumes(
    kind: Kind,
    start: int,
    peak: int,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, kind, bed_namespace, start)
    _scale_up_and_down(target, operator, start, peak, kill_midway=True)


@pytest.mark.parametrize("kind", [Kind.ETCD, Kind.ZOOKEEPER])
def test_a_member_whose_pod_and_pvc_are_deleted_rejoins_under_a_new_identity(
    kind: Kind,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, kind, bed_namespace, 3)
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    before = _identity(pods)
    store = target.client()
    try:
        old_ids = {target.placement.locate(m.address): m.id for m in store.members()}
    finally:
        store.close()
    victim = target.placement.endpoint(1)
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        began = time.monotonic()
        kube.delete(ns_path(bed_namespace, "persistentvolumeclaims", f"data-{victim.name}"))
        kube.delete(ns_path(bed_namespace, "pods", victim.name))

        def rejoined() -> dict[str, Obj] | None:
            settled = target.settled(3)
            if settled is None or settled[victim.name]["metadata"]["uid"] == before[victim.name][0]:
                return None
            return settled

        try:
            pods = wait_until(rejoined, STEP_TIMEOUT, f"{victim.name} replaced")
        except AssertionError:
            raise AssertionError(f"not replaced; operator log:\n{operator.tail()}") from None
        took = time.monotonic() - began
    writer.assert_nothing_lost()
    store = target.client()
    try:
        new_ids = {target.placement.locate(m.address): m.id for m in store.members()}
    finally:
        store.close()
    assert new_ids[victim] != old_ids[victim], "the wiped member kept its old identity"
    others = {name: ident for name, ident in _identity(pods).items() if name != victim.name}
    assert others == {name: i for name, i in before.items() if name != victim.name}
    print(
        f"{victim.name} replaced under a new identity in {took:.1f}s; "
        f"{len(writer.acknowledged)} writes acknowledged, {writer.failed} failed, "
        f"longest gap {writer.longest_gap:.2f}s"
    )


ROLLOUT_SETTINGS = {
    Kind.ETCD: ({"etcd": {"snapshot_count": 5000}}, "--snapshot-count=5000"),
    Kind.ZOOKEEPER: ({"zookeeper": {"max_client_cnxns": 100}}, "maxClientCnxns=100"),
}
"""A settings change per store, and how it reads in a running member: etcd's command line
(`/debug/vars`, Go's expvar `cmdline`), ZooKeeper's `conf` four-letter word."""


def _template_config(target: ClusterUnderTest) -> str | None:
    statefulset = target.kube.get(ns_path(target.namespace, "statefulsets", target.name, "apps/v1"))
    annotations = statefulset["spec"]["template"]["metadata"].get("annotations") or {}
    return annotations.get(CONFIG_ANNOTATION)


def _running_setting(target: ClusterUnderTest, pod: Obj) -> str:
    """What the member in `pod` runs with, as its process reports it."""
    ip = pod["status"]["podIP"]
    if target.kind is Kind.ETCD:
        answer = httpx.get(f"http://{ip}:{etcd.CLIENT_PORT}/debug/vars", timeout=5.0)
        return " ".join(answer.json()["cmdline"])
    return four_letter_word(ip, "conf", 5.0)


@dataclass
class _RolloutWatch:
    """Polled through a rollout: the order the pods were replaced in, and the most members down
    at once (a pod missing, being deleted, or replaced and not Ready yet; a ZooKeeper follower
    not Ready while its ensemble elects is not down)."""

    target: ClusterUnderTest
    before: dict[str, tuple[str, int]]
    config: str
    order: list[str] = field(default_factory=list)
    most_down: int = 0

    def finished(self) -> dict[str, Obj] | None:
        pods = self.target.pods()
        replaced = {n for n, p in pods.items() if p["metadata"]["uid"] != self.before[n][0]}
        for name in sorted(replaced - set(self.order)):
            self.order.append(name)
        down = [n for n in self.before if n not in pods]
        down += [n for n in replaced if not condition_true(pods[n], "Ready")]
        self.most_down = max(self.most_down, len(down))
        if len(self.order) < len(self.before):
            return None
        settled = self.target.settled(len(self.before))
        if settled is None or any(
            (p["metadata"].get("annotations") or {}).get(CONFIG_ANNOTATION) != self.config
            for p in settled.values()
        ):
            return None
        return settled


@pytest.mark.parametrize("kind", [Kind.ETCD, Kind.ZOOKEEPER])
def test_a_settings_change_restarts_pods_one_at_a_time_by_eviction_leader_last(
    kind: Kind,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, kind, bed_namespace, 3)
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    before = _identity(pods)
    leader = target.resource()["status"]["leader"]
    old_config = _template_config(target)
    assert old_config is not None
    assert all(p["metadata"]["annotations"][CONFIG_ANNOTATION] == old_config for p in pods.values())
    settings, live = ROLLOUT_SETTINGS[kind]
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        began = time.monotonic()
        testbed_cluster.kubectl(
            "patch",
            "-n",
            bed_namespace,
            f"{kind.short_name}/{target.name}",
            "--type=merge",
            "-p",
            json.dumps({"spec": settings}),
        )
        config = wait_until(
            lambda: (c := _template_config(target)) != old_config and c, 60, "the new template"
        )
        watch = _RolloutWatch(target, before, str(config))
        try:
            pods = wait_until(watch.finished, STEP_TIMEOUT, "every pod restarted")
        except AssertionError:
            raise AssertionError(f"rollout unfinished; operator log:\n{operator.tail()}") from None
        took = time.monotonic() - began
    writer.assert_nothing_lost()
    assert watch.most_down <= 1, f"{watch.most_down} members down at once"
    assert watch.order[-1] == leader, f"restarted {watch.order}, leader {leader} not last"
    for name, pod in pods.items():
        assert live in _running_setting(target, pod), f"{name} runs without {live}"
    status = target.resource()["status"]
    assert status.get("rollout") is None and status["phase"] == "Ready", status
    assert "pass failed" not in operator.log.read_text(), operator.tail()
    print(
        f"{kind.value} settings rollout of 3 in {took:.1f}s, order {watch.order} (leader "
        f"{leader}); {len(writer.acknowledged)} writes acknowledged, {writer.failed} failed, "
        f"longest gap {writer.longest_gap:.2f}s"
    )


def test_a_version_off_the_upgrade_path_is_refused_and_restarts_nothing(
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    """etcd 3.5.10 -> 3.6.16 passes the resource's CEL rules (one minor forward) and is refused
    by the operator: 3.6 needs every member on 3.5.26 first. The test bed holds the pinned
    release's image only, so the image tag stands in for the older release the spec names."""
    old = "3.5.10"
    target = _create(
        kube,
        testbed_cluster,
        Kind.ETCD,
        bed_namespace,
        3,
        version=old,
        image={"tag": f"v{ETCD_VERSION}"},
    )
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    before = _identity(pods)
    config = _template_config(target)
    testbed_cluster.kubectl(
        "patch",
        "-n",
        bed_namespace,
        f"etcdc/{target.name}",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"version": "3.6.16"}}),
    )

    def refused() -> Obj | None:
        status = target.resource()["status"]
        degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
        return status if degraded["reason"] == "UpgradeRefused" else None

    status = wait_until(refused, 60, "the refusal in status")
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["status"] == "True"
    assert "etcd 3.5.10 -> 3.6.16: every member must run 3.5.26" in degraded["message"]
    assert status["version"] == old
    updated = status["updatedAt"]
    wait_until(lambda: target.resource()["status"]["updatedAt"] > updated + 5, 60, "more passes")
    assert _identity(target.pods()) == before, "a pod restarted for a refused version"
    assert _template_config(target) == config

    # The stop-over the refusal names passes the resource's rules and the operator's.
    testbed_cluster.kubectl(
        "patch",
        "-n",
        bed_namespace,
        f"etcdc/{target.name}",
        "--type=merge",
        "-p",
        json.dumps({"spec": {"version": "3.5.26"}}),
    )
    wait_until(lambda: _template_config(target) != config, 60, "the stop-over taken")
    wait_until(lambda: refused() is None, 60, "the refusal cleared from status")
