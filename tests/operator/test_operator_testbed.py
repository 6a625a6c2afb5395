"""The operator end to end on the real-node test bed, with a writer running throughout and no
acknowledged write lost: `kubectl scale` of an EtcdCluster and a ZookeeperCluster (3 and 5
members) with the store's membership equal to the pods after every step and no existing pod
restarted; the operator killed mid-scale; a member's pod and PVC deleted; a member's pod deleted
off a cordoned node, its data following it on a Ceph RBD volume; a member's node lost; a
member's pod that can't mount its RBD image because the lost node's client holds its lock,
reported with the fence command, which then lets it back. Clusters run with the defaults, TLS and
authentication on (the scale test also checks that a plain-text client, a client of another CA
and an unauthenticated one are refused, and that Secured is True), except the one whose
operator is killed mid-scale, which runs in plain text so that path stays exercised.

How the operator and this process reach the test bed: `tests/operator/harness.py`.
"""

from __future__ import annotations

import functools
import json
import shlex
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from kazoo.exceptions import KazooException  # type: ignore[import-untyped]
from kazoo.handlers.threading import KazooTimeoutError  # type: ignore[import-untyped]
from typer.testing import CliRunner

from quorumkeeper.certificates import KeyPair, TlsFiles, issue, new_authority
from quorumkeeper.cli.app import app
from quorumkeeper.runtimes.kubernetes.authority import (
    ROTATE_CA,
    ROTATION_REQUEST,
    InMemoryTlsFiles,
)
from quorumkeeper.runtimes.kubernetes.objects import Names
from quorumkeeper.runtimes.kubernetes.render import CONFIG_ANNOTATION
from quorumkeeper.runtimes.kubernetes.resources import API_VERSION, Kind
from quorumkeeper.runtimes.kubernetes.volume_locks import REASON
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.stores import etcd
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import EtcdStore
from quorumkeeper.stores.zookeeper.words import four_letter_word
from quorumkeeper.versions import (
    ETCD_PREVIOUS_VERSION,
    ETCD_VERSION,
    ZOOKEEPER_PREVIOUS_VERSION,
    ZOOKEEPER_VERSION,
)
from testbed.cluster import Cluster
from testbed.kube import Kube, Obj, condition_true, ns_path
from tests.acceptance.harness import Writer
from tests.ceph.fixtures import POOL, CsiStorageClass
from tests.operator.harness import (
    ClusterUnderTest,
    OperatorProcess,
    api_getaddrinfo,
    create_namespace,
    install_crds,
)
from tests.operator.harness import create_cluster as _create
from tests.operator.harness import exists as _exists
from tests.polling import wait_until
from tests.zookeeper.test_security import kazoo

pytestmark = [pytest.mark.operator, pytest.mark.testbed]

STEP_TIMEOUT = 300.0


@pytest.fixture(scope="module")
def crds_installed(testbed_cluster: Cluster) -> None:
    install_crds(testbed_cluster)


@pytest.fixture
def bed_namespace(
    kube: Kube, crds_installed: None, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh namespace on the test bed, deleted afterwards."""
    name = f"op-{request.node.name[5:30].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    create_namespace(kube, name)
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")


@pytest.fixture
def csi_namespace(bed_namespace: str) -> str:
    """The Ceph StorageClass's ConfigMap and Secret go where the cluster resource is."""
    return bed_namespace


@pytest.fixture
def api_resolver(kube: Kube, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fake resolver for this process only: `<pod>.<service>.<ns>.svc.cluster.local` is the
    pod's IP as the API server reports it (the test process is outside the cluster's DNS)."""
    monkeypatch.setattr(socket, "getaddrinfo", api_getaddrinfo(kube))


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


def _identity(pods: dict[str, Obj]) -> dict[str, tuple[str, int]]:
    """Each pod's UID and its containers' restart count."""
    return {
        name: (
            pod["metadata"]["uid"],
            sum(c.get("restartCount", 0) for c in pod["status"].get("containerStatuses") or []),
        )
        for name, pod in pods.items()
    }


@dataclass
class Stopwatch:
    """Polls `target` toward a member count, noting (in seconds since `began`) when the
    resource first reported Available and when the store first counted each member outside
    `known` as a healthy voter."""

    target: ClusterUnderTest
    known: set[str]
    began: float = field(default_factory=time.monotonic)
    available: float | None = None
    voting: dict[str, float] = field(default_factory=dict)

    def settled(self, members: int) -> dict[str, Obj] | None:
        now = time.monotonic() - self.began
        if self.available is None and self.target.condition("Available") == "True":
            self.available = now
        if self.available is not None:  # before, even the store's Secret may not exist yet
            for name in self.target.voters() - self.known - self.voting.keys():
                self.voting[name] = now
        return self.target.settled(members)

    def wait(self, members: int, operator: OperatorProcess) -> dict[str, Obj]:
        try:
            return wait_until(
                functools.partial(self.settled, members), STEP_TIMEOUT, f"{members} members"
            )
        except AssertionError:
            raise AssertionError(
                f"not settled at {members}; operator log:\n{operator.tail()}"
            ) from None

    def report(self, what: str) -> str:
        voting = ", ".join(f"{name} voting {at:.1f}s" for name, at in sorted(self.voting.items()))
        available = f"Available {self.available:.1f}s, " if self.available is not None else ""
        return f"{what}: {available}{voting + ', ' if voting else ''}settled " + (
            f"{time.monotonic() - self.began:.1f}s"
        )


def _scale_through(
    target: ClusterUnderTest,
    operator: OperatorProcess,
    sizes: tuple[int, ...],
    *,
    kill_midway: bool = False,
) -> None:
    """From the applied `sizes[0]` members through each later size by `kubectl scale`, checked
    after each step: membership equal to the pods, and the pods every step keeps (ordinals
    below the smallest size) neither restarted nor replaced. With `kill_midway`, the operator
    is SIGKILLed as soon as the store's membership first changes in each step, and started
    again."""
    timings: list[str] = []
    stopwatch = Stopwatch(target, known=set())
    pods = stopwatch.wait(sizes[0], operator)
    timings.append(stopwatch.report(f"apply -> {sizes[0]}"))
    kept_names = {target.placement.endpoint(n).name for n in range(min(sizes))}
    before = {name: ident for name, ident in _identity(pods).items() if name in kept_names}
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        for members in sizes[1:]:
            stopwatch = Stopwatch(target, known=set(pods))
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
            pods = stopwatch.wait(members, operator)
            timings.append(stopwatch.report(f"scale -> {members}"))
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
        f"{target.kind.value} {' -> '.join(map(str, sizes))}: "
        + "; ".join(timings)
        + f"; {_writes(writer)}"
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


@pytest.mark.parametrize(
    ("kind", "sizes"),
    # The seed's manual tests (etcd 3 -> 2 -> 3, ZooKeeper 2 -> 3 -> 2) and 5 members, one
    # cluster per store.
    [(Kind.ETCD, (3, 5, 3, 2, 3)), (Kind.ZOOKEEPER, (2, 3, 5, 3, 2))],
    ids=["etcd-3-5-3-2-3", "zookeeper-2-3-5-3-2"],
)
def test_scales_with_kubectl_scale(
    kind: Kind,
    sizes: tuple[int, ...],
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    target = _create(kube, testbed_cluster, kind, bed_namespace, sizes[0])
    _scale_through(target, operator, sizes)
    _assert_secured(target, sizes[-1])
    _deleted_with_its_volumes(target, operator)


def _foreign_client() -> InMemoryTlsFiles:
    """A client certificate of another CA, presented by a client that trusts nothing else."""
    now = datetime.now(UTC)
    other = new_authority("elsewhere", now=now)
    files = InMemoryTlsFiles()
    files.write(
        other.certificate,
        issue(other, common_name="", hosts=[], server=False, client=True, now=now),
    )
    return files


def _refused(write: Callable[[], object]) -> str | None:
    """Why `write` was refused, None when it went through."""
    try:
        write()
    except (StoreError, httpx.HTTPError, KazooException, KazooTimeoutError, OSError) as error:
        return f"{type(error).__name__}: {error}"
    return None


def _assert_secured(target: ClusterUnderTest, members: int) -> None:
    """With the defaults (tls and auth on): Secured is True; a plain-text client, a client with
    another CA's certificate and a client that does not authenticate are refused; the
    operator's certificate with the store's administrator credentials writes."""
    wait_until(lambda: target.condition("Secured") == "True", 60, "Secured=True")
    endpoints = target.endpoints(members)
    tls = target.tls()
    assert tls is not None
    foreign = _foreign_client()
    foreign_with_our_trust = InMemoryTlsFiles()
    foreign_with_our_trust.write(
        tls.trust.read_bytes(),
        KeyPair(foreign.files.certificate.read_bytes(), foreign.files.key.read_bytes()),
    )
    if target.kind is Kind.ETCD:
        password = target.root_password()

        def write(files: TlsFiles | None, root: str | None) -> Callable[[], object]:
            def attempt() -> None:
                store = EtcdStore(endpoints, timeout=3.0, tls=files, root_password=root)
                try:
                    store.write_probe("security/probe", "x")
                finally:
                    store.close()

            return attempt

        refusals = {
            "plain text": _refused(write(None, password)),
            "another CA's certificate": _refused(write(foreign_with_our_trust.files, password)),
            "no authentication": _refused(write(tls, None)),
        }
        written = _refused(write(tls, password))
    else:
        password = target.password()

        def session(files: TlsFiles | None, digest: str | None) -> Callable[[], object]:
            def attempt() -> None:
                with kazoo(endpoints[0], files, digest) as client:
                    client.create(f"/security-probe-{uuid.uuid4().hex[:6]}", b"x")

            return attempt

        refusals = {
            "plain text": _refused(session(None, f"super:{password}")),
            "another CA's certificate": _refused(
                session(foreign_with_our_trust.files, f"super:{password}")
            ),
            "no authentication": _refused(session(tls, None)),
        }
        written = _refused(session(tls, f"super:{password}"))
    for files in (foreign, foreign_with_our_trust):
        files.close()
    assert all(refusals.values()), f"not refused: {refusals}"
    assert written is None, f"the authenticated write failed: {written}"
    print(f"{target.kind.value} refused: {refusals}")


def _etcdctl(
    pod: Obj, files: dict[str, bytes], folder: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """etcdctl (gRPC, where etcd takes a certificate's common name as the user) through `pod`'s
    IP with the certificate in `files` (a user Secret's keys). The server's certificate names
    its DNS names, which only this process resolves (`api_resolver`), so etcdctl does not check
    it: the client certificate is what is tested."""
    folder.mkdir(exist_ok=True)
    for key in ("ca.crt", "tls.crt", "tls.key"):
        (folder / key).write_bytes(files[key])
    etcdctl = distributions.etcd_binary(ETCD_VERSION).with_name("etcdctl")
    return subprocess.run(
        [
            str(etcdctl),
            f"--endpoints=https://{pod['status']['podIP']}:{etcd.CLIENT_PORT}",
            f"--cacert={folder / 'ca.crt'}",
            f"--cert={folder / 'tls.crt'}",
            f"--key={folder / 'tls.key'}",
            "--insecure-skip-tls-verify",
            "--command-timeout=5s",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("kind", [Kind.ETCD, Kind.ZOOKEEPER])
def test_a_user_of_the_spec_reaches_its_prefix_alone_with_its_secret(
    kind: Kind,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
    tmp_path: Path,
) -> None:
    """`users: [{name: app, prefix: /app}]`: with the files of Secret `<cluster>-user-app`
    (etcd: its client certificate alone; ZooKeeper: TLS and `addauth digest app:password`) a
    write under /app is acknowledged and read back, one outside it is refused, and a client of
    the cluster's CA without the user's credentials (the operator's certificate, no password)
    is refused under /app."""
    began = time.monotonic()
    target = _create(
        kube, testbed_cluster, kind, bed_namespace, 3, users=[{"name": "app", "prefix": "/app"}]
    )
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    name = Names(target.name).user_secret("app")
    path = ns_path(bed_namespace, "secrets", name)
    wait_until(lambda: _exists(kube, path) and "prefix" in target.secret(name), 60, "the grant")
    granted = time.monotonic() - began
    secret = target.secret(name)
    assert secret["prefix"] == b"/app"
    tls = target.secret(Names(target.name).tls_secret)
    if kind is Kind.ETCD:
        operator_files = {"ca.crt": tls["ca.crt"]} | {
            f"tls.{part}": tls[f"operator.{part}"] for part in ("crt", "key")
        }
        pod = next(iter(pods.values()))
        user, anonymous = tmp_path / "app", tmp_path / "anonymous"
        put = _etcdctl(pod, secret, user, "put", "/app/orders", "x")
        assert put.returncode == 0, put.stderr
        read_back = _etcdctl(pod, secret, user, "get", "/app/orders", "--print-value-only").stdout
        attempts = {
            "outside": _etcdctl(pod, secret, user, "put", "/other", "x"),
            "anonymous": _etcdctl(pod, operator_files, anonymous, "put", "/app/anonymous", "x"),
        }
        refusals = {
            what: done.stderr.strip().splitlines()[-1] if done.returncode else None
            for what, done in attempts.items()
        }
    else:
        endpoint = target.endpoints(1)[0]
        digest = f"app:{secret['password'].decode()}"
        user_files, anonymous_files = InMemoryTlsFiles(), InMemoryTlsFiles()
        user_files.write(secret["ca.crt"], KeyPair(secret["tls.crt"], secret["tls.key"]))
        anonymous_files.write(tls["ca.crt"], KeyPair(tls["operator.crt"], tls["operator.key"]))

        def create(files: TlsFiles, auth: str | None, znode: str) -> Callable[[], str]:
            def attempt() -> str:
                with kazoo(endpoint, files, auth) as client:
                    client.create(znode, b"x")
                    return str(client.get(znode)[0].decode())

            return attempt

        read_back = create(user_files.files, digest, "/app/orders")()
        refusals = {
            "outside": _refused(create(user_files.files, digest, "/other")),
            "anonymous": _refused(create(anonymous_files.files, None, "/app/anonymous")),
        }
        user_files.close()
        anonymous_files.close()
    assert read_back.strip() == "x"
    assert all(refusals.values()), f"not refused: {refusals}"
    print(f"{kind.value} user app granted {granted:.1f}s after the apply; refused: {refusals}")


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
    """In plain text (`tls: false`, `auth: false`), so the opt-out stays exercised."""
    target = _create(kube, testbed_cluster, kind, bed_namespace, start, tls=False, auth=False)
    _scale_through(target, operator, (start, peak, start), kill_midway=True)
    conditions = target.resource()["status"]["conditions"]
    secured = next(c for c in conditions if c["type"] == "Secured")
    assert (secured["status"], secured["reason"]) == ("False", "PlainText"), secured


def _member_ids(target: ClusterUnderTest) -> dict[str, str]:
    """Each member's id in the store (etcd's member id, ZooKeeper's server id) by pod name."""
    return {name: member.id for name, member in target.members().items()}


def _wait_recreated(
    target: ClusterUnderTest, operator: OperatorProcess, name: str, old_uid: str, members: int
) -> dict[str, Obj]:
    """The pods once pod `name` is a new pod (not `old_uid`) and the cluster is settled again."""

    def recreated() -> dict[str, Obj] | None:
        settled = target.settled(members)
        if settled is None or settled[name]["metadata"]["uid"] == old_uid:
            return None
        return settled

    try:
        return wait_until(recreated, STEP_TIMEOUT, f"{name} recreated")
    except AssertionError:
        raise AssertionError(f"{name} not recreated; operator log:\n{operator.tail()}") from None


def _writes(writer: Writer) -> str:
    return (
        f"{len(writer.acknowledged)} writes acknowledged, {writer.failed} failed, "
        f"longest gap {writer.longest_gap:.2f}s"
    )


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
    old_ids = _member_ids(target)
    victim = target.placement.endpoint(1).name
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        began = time.monotonic()
        kube.delete(ns_path(bed_namespace, "persistentvolumeclaims", f"data-{victim}"))
        kube.delete(ns_path(bed_namespace, "pods", victim))
        pods = _wait_recreated(target, operator, victim, before[victim][0], 3)
        took = time.monotonic() - began
    writer.assert_nothing_lost()
    assert _member_ids(target)[victim] != old_ids[victim], "the wiped member kept its old identity"
    others = {name: ident for name, ident in _identity(pods).items() if name != victim}
    assert others == {name: i for name, i in before.items() if name != victim}
    print(f"{victim} replaced under a new identity in {took:.1f}s; {_writes(writer)}")


# The longest write gap one leader change may cause, in seconds: a member's pod deleted with
# SIGTERM hands leadership over (etcd transfers it on a graceful stop; ZooKeeper's followers see
# the leader's connections close and elect at once), so the gap is an election plus the
# writer's retry through the next member (1 s timeout each) and slack for the shared CPU.
ELECTION_GAP = {Kind.ETCD: 5.0, Kind.ZOOKEEPER: 8.0}


@pytest.mark.parametrize("kind", [Kind.ETCD, Kind.ZOOKEEPER])
def test_a_leader_pod_deleted_on_a_cordoned_node_comes_back_elsewhere_with_its_rbd_volume(
    kind: Kind,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    csi_storage_class: CsiStorageClass,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    """The leader's pod is deleted while its node is cordoned: the StatefulSet's new pod lands
    on another node, stages the same RBD image there (the old node unstaged it and released
    its lock on the graceful delete), and rejoins as the same member with its data."""
    target = _create(kube, testbed_cluster, kind, bed_namespace, 3, csi_storage_class.name)
    stopwatch = Stopwatch(target, known=set())
    pods = stopwatch.wait(3, operator)
    print(stopwatch.report(f"apply -> 3 on {csi_storage_class.name}"))
    before = _identity(pods)
    old_ids = _member_ids(target)
    victim = target.resource()["status"]["leader"]
    old_node = pods[victim]["spec"]["nodeName"]
    claim_path = ns_path(bed_namespace, "persistentvolumeclaims", f"data-{victim}")
    claim = kube.get(claim_path)
    assert claim["spec"]["storageClassName"] == csi_storage_class.name
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        written_before = list(writer.acknowledged)
        testbed_cluster.kubectl("cordon", old_node)
        try:
            began = time.monotonic()
            kube.delete(ns_path(bed_namespace, "pods", victim))
            pods = _wait_recreated(target, operator, victim, before[victim][0], 3)
            took = time.monotonic() - began
        finally:
            testbed_cluster.kubectl("uncordon", old_node)
    writer.assert_nothing_lost()
    print(f"{victim} (leader) back on another node in {took:.1f}s; {_writes(writer)}")
    assert pods[victim]["spec"]["nodeName"] != old_node
    assert kube.get(claim_path)["metadata"]["uid"] == claim["metadata"]["uid"]
    assert _member_ids(target)[victim] == old_ids[victim], "the member lost its identity"
    own = target.client(endpoints=[target.placement.endpoint(int(victim.rsplit("-", 1)[1]))])
    try:
        served = {key: own.read(key) for key in written_before}
    finally:
        own.close()
    assert served == {key: str(int(key[2:])) for key in written_before}
    others = {name: ident for name, ident in _identity(pods).items() if name != victim}
    assert others == {name: i for name, i in before.items() if name != victim}
    assert writer.longest_gap < ELECTION_GAP[kind], _writes(writer)
    _deleted_with_its_volumes(target, operator)

    def released() -> bool:  # while the StorageClass's Secret exists to delete the images with
        volumes = kube.get("/api/v1/persistentvolumes")["items"]
        return not [
            v
            for v in volumes
            if (v["spec"].get("claimRef") or {}).get("namespace") == bed_namespace
        ]

    wait_until(released, 120, "the RBD volumes deleted")


def test_losing_a_members_node_degrades_the_cluster_until_the_node_is_back(
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    """Node loss (kubelet, containerd and every process of the node killed) of the leader's
    node: the two other members keep a quorum and acknowledge writes, the resource reports the
    lost member unhealthy and Degraded, and once the node is back its member rejoins with its
    data (the test bed's volumes outlive a node) and the cluster is healthy again."""
    target = _create(kube, testbed_cluster, Kind.ETCD, bed_namespace, 3)
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    old_ids = _member_ids(target)
    victim = target.resource()["status"]["leader"]
    node = pods[victim]["spec"]["nodeName"]
    sharing = sorted(n for n, pod in pods.items() if pod["spec"]["nodeName"] == node)
    assert sharing == [victim], f"members {sharing} share {node}: losing it loses the quorum"

    def degraded() -> Obj | None:
        status = target.resource().get("status") or {}
        member = next((m for m in status.get("members") or [] if m["name"] == victim), None)
        unhealthy = member is not None and not member["healthy"]
        return status if unhealthy and target.condition("Degraded") == "True" else None

    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        testbed_cluster.stop_node(node, kill=True)
        lost_at = time.monotonic()
        try:
            acked = wait_until(
                lambda: writer.first_ack_of_write_sent_after(lost_at), 30, "a write after"
            )
            status = wait_until(degraded, 120, f"{victim} unhealthy and the cluster Degraded")
            reported = time.monotonic() - lost_at
            print(
                f"node {node} lost: writes acknowledged again after {acked - lost_at:.1f}s, "
                f"Degraded reported after {reported:.1f}s: phase {status['phase']}, "
                f"conditions {status['conditions']}, "
                f"{victim}: {next(m for m in status['members'] if m['name'] == victim)}"
            )
            assert status["phase"] == "Degraded"
            assert status["readyMembers"] == 2
            assert target.condition("Available") == "True"
        finally:
            testbed_cluster.start_node(node)
            testbed_cluster.wait_nodes_ready([node], 60)
        back_at = time.monotonic()

        def healed() -> dict[str, Obj] | None:
            settled = target.settled(3)
            return settled if settled and target.condition("Degraded") == "False" else None

        try:
            pods = wait_until(healed, STEP_TIMEOUT, "the cluster healthy again")
        except AssertionError:
            raise AssertionError(
                f"not healed: {target.resource().get('status')}\n{operator.tail()}"
            ) from None
        print(f"healed {time.monotonic() - back_at:.1f}s after {node} was back; {_writes(writer)}")
    writer.assert_nothing_lost()
    assert _member_ids(target) == old_ids, "a member was replaced instead of rejoining"
    assert pods[victim]["spec"]["nodeName"] == node


OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"


def test_a_member_whose_rbd_image_a_dead_nodes_client_holds_is_reported_with_the_fence_command(
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    csi_storage_class: CsiStorageClass,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    """A follower's node is lost while its node's Ceph client holds the lock on the member's
    RBD image; the node is marked out of service, so the StatefulSet makes the pod again on
    another node, where it can't mount the image. The resource reports it: status Degraded with
    reason VolumeLockedByDeadClient, the member's `blockedBy` and one Warning Event naming the
    exact `quorumkeeper ceph locks ... --fence` command. That command, run as printed (with
    the test bed's kubeconfig for `~/.kube/config`), fences the dead client; the pod mounts the
    image and the member is back with its identity, and no acknowledged write is lost."""
    target = _create(kube, testbed_cluster, Kind.ETCD, bed_namespace, 3, csi_storage_class.name)
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    old_ids = _member_ids(target)
    leader = target.resource()["status"]["leader"]
    nodes = [pod["spec"]["nodeName"] for pod in pods.values()]
    victim = next(
        n
        for n, pod in sorted(pods.items())
        if n != leader and nodes.count(pod["spec"]["nodeName"]) == 1
    )
    node = pods[victim]["spec"]["nodeName"]
    claim = kube.get(ns_path(bed_namespace, "persistentvolumeclaims", f"data-{victim}"))
    volume = kube.get(f"/api/v1/persistentvolumes/{claim['spec']['volumeName']}")
    image = volume["spec"]["csi"]["volumeAttributes"]["imageName"]
    command = (
        f"quorumkeeper ceph locks --kubeconfig ~/.kube/config --storage-class "
        f"{csi_storage_class.name} --pool {POOL} --image {image} --fence"
    )

    def reported() -> tuple[Obj, Obj] | None:
        status = target.resource().get("status") or {}
        member = next((m for m in status.get("members") or [] if m["name"] == victim), None)
        degraded = next(
            (c for c in status.get("conditions") or [] if c["type"] == "Degraded"), None
        )
        if member is None or degraded is None or degraded["reason"] != REASON:
            return None
        events = kube.get(
            ns_path(bed_namespace, "events"),
            fieldSelector=f"involvedObject.name={target.name},reason={REASON}",
        )["items"]
        return (member, events[0]) if events else None

    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        testbed_cluster.stop_node(node, kill=True)
        lost_at = time.monotonic()
        try:
            wait_until(lambda: not testbed_cluster.node_ready(node), 60, f"{node} NotReady")
            testbed_cluster.kubectl(
                "taint", "nodes", node, f"{OUT_OF_SERVICE}=nodeshutdown:NoExecute"
            )
            try:
                member, event = wait_until(reported, STEP_TIMEOUT, f"{victim}'s lock reported")
            except AssertionError:
                raise AssertionError(
                    f"not reported: {target.resource().get('status')}\n{operator.tail()}"
                ) from None
            print(f"node {node} lost to the lock reported: {time.monotonic() - lost_at:.1f}s")
            assert event["type"] == "Warning"
            assert command in event["message"], event["message"]
            assert f"RBD image {POOL}/{image} is locked by" in event["message"]
            assert command in member["blockedBy"] and not member["healthy"]
            assert target.condition("Available") == "True"
            events = kube.get(
                ns_path(bed_namespace, "events"),
                fieldSelector=f"involvedObject.name={target.name},reason={REASON}",
            )["items"]
            assert len(events) == 1, [e["message"] for e in events]  # once, not every pass

            argv = shlex.split(command.replace("~/.kube/config", str(testbed_cluster.kubeconfig)))
            fenced = CliRunner().invoke(app, argv[1:])
            assert fenced.exit_code == 0, fenced.output
            assert fenced.output.startswith(f"{POOL}/{image}: fenced\n"), fenced.output
            fenced_at = time.monotonic()

            def healed() -> dict[str, Obj] | None:
                settled = target.settled(3)
                return settled if settled and target.condition("Degraded") == "False" else None

            try:
                pods = wait_until(healed, STEP_TIMEOUT, f"{victim} back after the fence")
            except AssertionError:
                raise AssertionError(
                    f"not healed: {target.resource().get('status')}\n{operator.tail()}"
                ) from None
            print(f"fence to {victim} healthy again: {time.monotonic() - fenced_at:.1f}s")
        finally:
            testbed_cluster.kubectl("taint", "nodes", node, f"{OUT_OF_SERVICE}-", check=False)
            testbed_cluster.start_node(node)
            testbed_cluster.wait_nodes_ready([node], 60)
    writer.assert_nothing_lost()
    assert pods[victim]["spec"]["nodeName"] != node
    assert _member_ids(target) == old_ids, "the member was replaced instead of coming back"
    print(_writes(writer))


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
    """What the member in `pod` runs with, as its process reports it (asked by the pod's IP,
    which its certificate does not name: the chain is checked, not the name)."""
    ip = pod["status"]["podIP"]
    tls = target.tls()
    context = tls.client_context() if tls else None
    if context is not None:
        context.check_hostname = False
    if target.kind is Kind.ETCD:
        url = etcd.client_url(ip, tls=tls is not None)
        answer = httpx.get(f"{url}/debug/vars", timeout=5.0, verify=context or True)
        return " ".join(answer.json()["cmdline"])
    return four_letter_word(ip, "conf", 5.0, tls=context)


@dataclass
class _RolloutWatch:
    """Polled through a rollout: the order the pods were replaced in, and the most members down
    at once (a pod missing, being deleted, or replaced and not Ready yet; a member not Ready
    while its ensemble elects, once its pod was Ready, is not down: a ZooKeeper follower stops
    serving whenever the leader restarts)."""

    target: ClusterUnderTest
    before: dict[str, tuple[str, int]]
    config: str
    order: list[str] = field(default_factory=list)
    most_down: int = 0
    ready: set[str] = field(default_factory=set)
    """Replaced pods seen Ready since they were made."""

    def finished(self) -> dict[str, Obj] | None:
        pods = self.target.pods()
        replaced = {n for n, p in pods.items() if p["metadata"]["uid"] != self.before[n][0]}
        for name in sorted(replaced - set(self.order)):
            self.order.append(name)
        uids = {n: pods[n]["metadata"]["uid"] for n in replaced}
        self.ready |= {f"{n}/{uids[n]}" for n in replaced if condition_true(pods[n], "Ready")}
        down = [n for n in self.before if n not in pods]
        down += [n for n in replaced if f"{n}/{uids[n]}" not in self.ready]
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


def _issued_by(leaf: bytes, authority: bytes) -> bool:
    return KeyPair(leaf, b"").loaded().issuer == KeyPair(authority, b"").loaded().subject


@pytest.mark.parametrize("kind", [Kind.ETCD, Kind.ZOOKEEPER])
def test_a_ca_rotation_asked_for_by_annotation_goes_through_three_phases_failing_no_write(
    kind: Kind,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    """`kubectl annotate ... quorumkeeper.io/rotate-ca=<value>`: members trust both CAs, then
    serve certificates of the new one, then trust it alone; the operator's, the members' and a
    user's certificates end up signed by the new CA, the user's Secret trusts it alone, and a
    writer that follows the TLS Secret (as a client mounting it would) sees no write fail and
    loses nothing. etcd's pods restart for each phase, one at a time, the leader handing over
    first; ZooKeeper's take each phase's files where they run (`zookeeper_pod._TLS_SIDECAR`),
    no pod or container restarting. After it a ZooKeeper follower's pod, deleted, comes back
    trusting the new CA alone and rejoins as a voter: the others took the new trust bundle and
    serve their new certificates between servers too."""
    names = Names("orders" if kind is Kind.ETCD else "locks")
    target = _create(
        kube, testbed_cluster, kind, bed_namespace, 3, users=[{"name": "app", "prefix": "/app"}]
    )
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    wait_until(lambda: "prefix" in target.secret(names.user_secret("app")), 60, "the grant")
    old_ca = target.secret(names.ca_secret)["ca.crt"]
    before = {n: p["metadata"]["uid"] for n, p in pods.items()}
    identities = _identity(pods)
    request = uuid.uuid4().hex[:8]
    replaced: dict[str, set[str]] = {n: set() for n in before}
    phases: set[str] = set()

    def rotated() -> dict[str, Obj] | None:
        target.tls()  # the writer's files follow the TLS Secret
        for name, pod in target.pods().items():
            replaced.setdefault(name, set()).add(pod["metadata"]["uid"])
        ca = kube.get(ns_path(bed_namespace, "secrets", names.ca_secret))
        annotations = ca["metadata"].get("annotations") or {}
        status = target.resource().get("status") or {}
        phases.add(status.get("caRotation") or "")
        done = (
            annotations.get(ROTATION_REQUEST) == request
            and {"next.crt", "previous.crt"}.isdisjoint(ca["data"])
            and status.get("caRotation") is None
            and status.get("rollout") is None
        )
        settled = target.settled(3) if done else None
        config = _template_config(target)
        if settled is None or any(
            (p["metadata"].get("annotations") or {}).get(CONFIG_ANNOTATION) != config
            for p in settled.values()
        ):
            return None
        return settled

    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        began = time.monotonic()
        testbed_cluster.kubectl(
            "annotate",
            "-n",
            bed_namespace,
            f"{kind.short_name}/{target.name}",
            f"{ROTATE_CA}={request}",
        )
        try:
            pods = wait_until(rotated, 3 * STEP_TIMEOUT, "the rotation rolled out")
        except AssertionError:
            raise AssertionError(f"rotation unfinished; operator log:\n{operator.tail()}") from None
        took = time.monotonic() - began
    writer.assert_nothing_lost()
    new_ca = target.secret(names.ca_secret)["ca.crt"]
    assert new_ca != old_ca
    tls = target.secret(names.tls_secret)
    trusted = x509.load_pem_x509_certificates(tls["ca.crt"])
    assert trusted == [x509.load_pem_x509_certificate(new_ca)]
    leaves = [k for k in tls if k.endswith(".crt") and k != "ca.crt"]
    assert all(_issued_by(tls[k], new_ca) for k in leaves), leaves
    user = target.secret(names.user_secret("app"))
    assert user["ca.crt"] == new_ca and _issued_by(user["tls.crt"], new_ca)
    restarts = {n: len(uids - {before[n]}) for n, uids in replaced.items()}
    events = kube.get(ns_path(bed_namespace, "events"))["items"]
    steps = {e["message"].split(":")[1].strip() for e in events if e["reason"] == "CARotation"}
    assert steps == {"trusting-both", "new-certificates", "trusting-new", "done"}, steps
    assert {"trusting-both", "new-certificates", "trusting-new"} <= phases, "status shows each"
    assert "pass failed" not in operator.log.read_text(), operator.tail()
    print(
        f"{kind.value} CA rotation of 3 in {took:.1f}s, pods made anew {restarts}; "
        f"{_writes(writer)}"
    )
    assert writer.failed == 0, writer.failures[:5]
    if kind is Kind.ETCD:
        assert all(count >= 3 for count in restarts.values()), f"pods made anew: {restarts}"
        return
    assert _identity(pods) == identities, "a ZooKeeper pod or container restarted"
    leader = target.resource()["status"]["leader"]
    follower = next(name for name in sorted(pods) if name != leader)
    kube.delete(ns_path(bed_namespace, "pods", follower))
    _wait_recreated(target, operator, follower, before[follower], 3)
    wait_until(lambda: follower in target.voters(), STEP_TIMEOUT, f"{follower} a voter again")
    print(f"{follower}, deleted after the rotation, rejoined as a voter")


def test_a_version_off_the_upgrade_path_is_refused_and_restarts_nothing(
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    """etcd 3.5.10 -> 3.6.16 passes the resource's CEL rules (one minor forward) and is refused
    by the operator: 3.6 needs every member on 3.5.26 first. The test bed holds no 3.5 image, so
    the pods run the pinned release under an image override, and report it: the stop-over the
    refusal names is then a downgrade from what they really run, and refused as well."""
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

    def reported() -> set[str | None]:
        return {m.get("version") for m in target.resource()["status"]["members"]}

    wait_until(lambda: reported() == {ETCD_VERSION}, 60, "the members reporting their release")

    def patch(version: str) -> None:
        testbed_cluster.kubectl(
            "patch",
            "-n",
            bed_namespace,
            f"etcdc/{target.name}",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"version": version}}),
        )

    patch("3.6.16")

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

    # The stop-over passes the resource's rules; the operator judges it by what the members
    # report they run, from which it is a downgrade.
    patch("3.5.26")
    downgrade = f"etcd {ETCD_VERSION} -> 3.5.26 is a downgrade"

    def message() -> str:
        status = target.resource()["status"]
        return str(next(c for c in status["conditions"] if c["type"] == "Degraded")["message"])

    wait_until(lambda: downgrade in message(), 60, "the downgrade refused")
    assert _identity(target.pods()) == before, "a pod restarted for a refused version"
    assert _template_config(target) == config
    # The version the cluster runs under is taken back: nothing is left to refuse.
    patch(old)
    wait_until(lambda: refused() is None, 60, "the refusal cleared from status")
    assert _identity(target.pods()) == before and _template_config(target) == config


UPGRADES = {
    Kind.ETCD: (ETCD_PREVIOUS_VERSION, ETCD_VERSION),
    Kind.ZOOKEEPER: (ZOOKEEPER_PREVIOUS_VERSION, ZOOKEEPER_VERSION),
}
"""One minor forward per store, both releases' official images on every node (build-node.sh)."""


@pytest.mark.parametrize("kind", [Kind.ETCD, Kind.ZOOKEEPER])
def test_an_upgrade_by_one_minor_restarts_pods_on_the_new_release_leader_last(
    kind: Kind,
    kube: Kube,
    testbed_cluster: Cluster,
    bed_namespace: str,
    operator: OperatorProcess,
    api_resolver: None,
) -> None:
    old, new = UPGRADES[kind]
    target = _create(kube, testbed_cluster, kind, bed_namespace, 3, version=old)
    pods = wait_until(lambda: target.settled(3), STEP_TIMEOUT, "3 members")
    before = _identity(pods)

    def reported() -> set[str | None]:
        return {m.get("version") for m in target.resource()["status"]["members"]}

    wait_until(lambda: reported() == {old}, 60, f"every member reporting {old}")
    leader = target.resource()["status"]["leader"]
    old_config = _template_config(target)
    with Writer(target, interval=0.02) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        testbed_cluster.kubectl(
            "patch",
            "-n",
            bed_namespace,
            f"{kind.short_name}/{target.name}",
            "--type=merge",
            "-p",
            json.dumps({"spec": {"version": new}}),
        )
        config = wait_until(
            lambda: (c := _template_config(target)) != old_config and c, 60, "the new template"
        )
        watch = _RolloutWatch(target, before, str(config))
        try:
            pods = wait_until(watch.finished, STEP_TIMEOUT, "every pod restarted")
            wait_until(lambda: reported() == {new}, 60, f"every member reporting {new}")
        except AssertionError:
            raise AssertionError(f"upgrade unfinished; operator log:\n{operator.tail()}") from None
    writer.assert_nothing_lost()
    assert watch.most_down <= 1, f"{watch.most_down} members down at once"
    assert watch.order[-1] == leader, f"restarted {watch.order}, leader {leader} not last"
    images = {p["spec"]["containers"][0]["image"].rpartition(":")[2] for p in pods.values()}
    assert images == {f"v{new}" if kind is Kind.ETCD else new}
    status = target.resource()["status"]
    assert status["version"] == new and status["phase"] == "Ready", status
    print(
        f"{kind.value} {old} -> {new} on 3 pods, order {watch.order} (leader {leader}); "
        f"{len(writer.acknowledged)} writes acknowledged, {writer.failed} failed, longest gap "
        f"{writer.longest_gap:.2f}s"
    )
