"""The operator on the real-node test bed against the seed's own StatefulSets on the same bed.

    python -m benchmarks.operator --store etcd|zookeeper --out FILE
    python -m benchmarks.operator --store etcd|zookeeper --out FILE --clusters 10

The first form starts the test bed (`testbed.cluster.Cluster`), runs `quorumkeeper operator`
outside the pods as the end-to-end tests do (`tests/operator/harness.py`), and measures on a
3-member cluster resource: `kubectl apply` -> Available and -> all 3 voting; `kubectl scale`
3 -> 5 -> each new member voting, from the scale and on its own (from the member before it
voting), with when it was added to the membership, its pod made, scheduled, started
(`MILESTONES`); failed, lost and longest gap of a writer's writes (one every 20 ms) through
3 -> 5 -> 3; a member pod deleted -> voting again. The operator's log, each pass's step
timestamped, is kept beside FILE as `<stem>-operator.log`. Then the same on the seed's
StatefulSet (`seed_manifests`), changed the seed's way: `kubectl scale` and, where the seed needs
them, its manual steps (etcd: `member add` after increasing, `member remove` before decreasing;
ZooKeeper: `--servers` edited with `replicas`, a rolling restart). A figure the seed's method
cannot produce is "n/a" with the reason seen on the bed. The second form measures only the
operator's RSS while it runs N one-member clusters.

Timings are wall-clock seconds polled every ~0.1-1 s on a shared 2-core host: expect noise of a
second or two. The table shows the issue's targets (issue 14) next to the measured values.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import psutil
from rich.console import Console
from rich.table import Table

from quorumkeeper.model import Endpoint, Member
from quorumkeeper.runtimes.kubernetes.etcd_pod import ETCD_IMAGE, ETCD_UID
from quorumkeeper.runtimes.kubernetes.objects import RESTRICTED_CONTAINER, field_env
from quorumkeeper.runtimes.kubernetes.placement import ServiceDnsPlacement
from quorumkeeper.runtimes.kubernetes.resources import API_VERSION, Kind
from quorumkeeper.runtimes.kubernetes.zookeeper_pod import (
    ZOOKEEPER_CONF_DIR,
    ZOOKEEPER_IMAGE,
    ZOOKEEPER_MOUNT,
    ZOOKEEPER_UID,
)
from quorumkeeper.spec import ZookeeperSettings
from quorumkeeper.stores.base import CoordinationStore, StoreError
from quorumkeeper.stores.etcd.client import EtcdStore, client_url, peer_url
from quorumkeeper.stores.zookeeper import config as zookeeper_config
from quorumkeeper.stores.zookeeper import ensemble
from quorumkeeper.stores.zookeeper.client import ZookeeperStore
from quorumkeeper.versions import ETCD_VERSION, ZOOKEEPER_VERSION
from testbed.cluster import Cluster
from testbed.kube import ApiError, Kube, Obj, ns_path
from testbed.versions import BUSYBOX_IMAGE
from tests.acceptance.harness import Writer
from tests.operator.harness import (
    ClusterUnderTest,
    OperatorProcess,
    api_getaddrinfo,
    create_cluster,
    create_namespace,
    exists,
    install_crds,
)
from tests.polling import wait_until

START, PEAK = 3, 5
WRITE_INTERVAL = 0.02
STEP_TIMEOUT = 180.0
"""How long a step may take before its figure is given up as n/a."""
SEED_JOIN_TIMEOUT = 90.0
"""How long the seed's new etcd members get to vote: they crash at start, retried by the kubelet
with a back-off, so a longer wait only sees more of the same crash."""
MEMBER_ADD_SECONDS = 20.0
STEADY_SECONDS = 15.0
"""The fleet's RSS is sampled this long once every cluster has settled."""

TARGETS = {
    "etcd": {
        "apply_available_s": "<= 30",
        "apply_all_voting_s": "",
        "scale_up_voting_s": "",
        "scale_up_each_s": "<= 10 each",
        "scale_up_settled_s": "",
        "scale_down_settled_s": "",
        "lost_writes": "0",
        "failed_writes": "",
        "max_write_gap_s": "",
        "pod_deleted_voting_s": "",
    },
    "zookeeper": {
        "apply_available_s": "<= 45",
        "apply_all_voting_s": "",
        "scale_up_voting_s": "",
        "scale_up_each_s": "<= 15 each",
        "scale_up_settled_s": "",
        "scale_down_settled_s": "",
        "lost_writes": "0",
        "failed_writes": "",
        "max_write_gap_s": "",
        "pod_deleted_voting_s": "",
    },
}
"""Issue 14's targets; its "0 failed acknowledged writes" is `lost_writes` (a write that failed
was never acknowledged, so a client was told nothing)."""

FLEET_TARGETS = {
    "all_settled_s": "",
    "settled_clusters": "",
    "operator_rss_mb": "<= 100",
    "operator_peak_rss_mb": "<= 100",
}


@dataclass
class Figures:
    """One method's figures, in seconds unless named otherwise; None where it has none, with the
    reason in `notes` under the same key."""

    apply_available_s: float | None = None
    """Operator: the resource's Available condition True. Seed: a majority of the 3 voting."""
    apply_all_voting_s: float | None = None
    scale_up_voting_s: list[float] | None = None
    """From `kubectl scale` (the seed: its first change) to each new member first seen a
    healthy voter, in ordinal order."""
    scale_up_each_s: list[float] | None = None
    """Each new member's own time to voting, in the order they voted: from the member voting
    before it (the first: from `kubectl scale`) to it voting; the issue's per-member target."""
    scale_up_milestones: dict[str, dict[str, float]] | None = None
    """Per new member, seconds from `kubectl scale` to each of its `MILESTONES` first seen."""
    scale_up_settled_s: float | None = None
    scale_down_settled_s: float | None = None
    lost_writes: int | None = None
    """Acknowledged writes the cluster no longer holds after 3 -> 5 -> 3."""
    failed_writes: int | None = None
    """Writes refused or unanswered within the writer's 1 s per member: never acknowledged."""
    max_write_gap_s: float | None = None
    pod_deleted_voting_s: float | None = None
    """From the member pod's deletion to its replacement pod's member a healthy voter."""
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Fleet:
    clusters: int
    all_settled_s: float | None
    """From the first `kubectl apply` to every cluster settled with its one member; None if
    not all had within `2 * STEP_TIMEOUT`."""
    settled_clusters: int
    """How many had settled when the RSS was taken."""
    operator_rss_mb: float
    """The operator's RSS after `STEADY_SECONDS` with every cluster settled."""
    operator_peak_rss_mb: float
    """The highest RSS sampled (every 0.5 s) from the first apply on."""


class StoreView(Protocol):
    """What the figures need of a cluster on the bed: where its members live, a client, and
    the API server and namespace its pods are in."""

    @property
    def placement(self) -> ServiceDnsPlacement: ...

    @property
    def kube(self) -> Kube: ...

    @property
    def namespace(self) -> str: ...

    def client(self, timeout: float = 2.0) -> CoordinationStore: ...


def _members(view: StoreView) -> dict[str, Member]:
    """The store's members by pod name; empty while no quorum answers or the cluster's objects
    are not there yet."""
    try:
        store = view.client(timeout=1.0)
    except ApiError:
        return {}  # ZooKeeper's superuser Secret is not made yet
    try:
        members = store.members()
    except StoreError:
        return {}
    finally:
        store.close()
    located = ((view.placement.locate(m.address), m) for m in members)
    return {endpoint.name: m for endpoint, m in located if endpoint is not None}


def voting(view: StoreView) -> set[str]:
    """Pod names of the members the store reports as healthy voters right now."""
    return {name for name, m in _members(view).items() if m.voter and m.healthy}


MILESTONES = ("added", "pod", "scheduled", "started", "promoted", "voting")
"""What a joining member goes through, each first seen by `JoinWatch`: listed in the store's
membership (a learner or observer), its pod made, bound to a node, every container running, a
voter in the membership, a healthy voter (it answers and knows a leader: an etcd member serves
no client request before its own attributes are committed; a new member whose state came as a
snapshot taken after it proposed them waits out etcd's 7 s publish timeout first, as its log
says: "failed to publish local member to cluster through raft", then "ready to serve")."""


class JoinWatch:
    """Notes, polling every 0.1 s from `since` in a thread of its own, when each of `names`
    first reaches each of `MILESTONES` (seconds since `since`)."""

    def __init__(self, view: StoreView, names: list[str], since: float) -> None:
        self.view, self.names, self.since = view, names, since
        self.seen: dict[str, dict[str, float]] = {name: {} for name in names}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> JoinWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.all_voting():
            self._poll()
            self._stop.wait(0.1)

    def _poll(self) -> None:
        members = _members(self.view)
        now = round(time.monotonic() - self.since, 2)
        for name in self.names:
            reached = {"added": name in members}
            member = members.get(name)
            reached["promoted"] = member is not None and member.voter
            reached["voting"] = reached["promoted"] and member is not None and member.healthy
            try:
                pod = self.view.kube.get(ns_path(self.view.namespace, "pods", name))
            except ApiError:
                pod = None
            if pod is not None and "deletionTimestamp" not in pod["metadata"]:
                statuses = pod["status"].get("containerStatuses") or []
                reached["pod"] = True
                reached["scheduled"] = bool(pod["spec"].get("nodeName"))
                reached["started"] = bool(statuses) and all(
                    "running" in (s.get("state") or {}) for s in statuses
                )
            for milestone, now_reached in reached.items():
                if now_reached:
                    self.seen[name].setdefault(milestone, now)

    def all_voting(self) -> bool:
        return all("voting" in seen for seen in self.seen.values())

    def wait(self, timeout: float) -> None:
        """Until every member votes or `timeout` seconds from `since` have passed."""
        while not self.all_voting() and time.monotonic() < self.since + timeout:
            time.sleep(0.1)

    def voting_s(self) -> list[float]:
        """When each member first voted, for those that did, in the order of `names`."""
        return [seen["voting"] for seen in self.seen.values() if "voting" in seen]

    def each_s(self) -> list[float]:
        """Each member's own time to voting (`Figures.scale_up_each_s`), for those that voted."""
        each, turn = [], 0.0
        for at in sorted(self.voting_s()):
            each.append(round(at - turn, 2))
            turn = at
        return each

    def milestones(self) -> dict[str, dict[str, float]]:
        return {
            name: {m: seen[m] for m in MILESTONES if m in seen} for name, seen in self.seen.items()
        }


def timed(condition: Callable[[], object], since: float, timeout: float) -> float | None:
    """Seconds from `since` until `condition` is first truthy, or None if it was not by
    `since + timeout`. Polled every 0.1 s (each poll is an API or store call of its own)."""
    while True:
        if condition():
            return round(time.monotonic() - since, 2)
        if time.monotonic() > since + timeout:
            return None
        time.sleep(0.1)


def pod_deleted_voting(view: StoreView, kube: Kube, namespace: str, pod: str) -> float | None:
    """Delete `pod` (its volume kept) and time its replacement to a healthy voter."""
    path = ns_path(namespace, "pods", pod)
    old = kube.get(path)["metadata"]["uid"]
    began = time.monotonic()
    kube.delete(path)

    def back() -> bool:
        try:
            uid = kube.get(path)["metadata"]["uid"]
        except ApiError:
            return False
        return bool(uid != old and pod in voting(view))

    return timed(back, began, STEP_TIMEOUT)


def _scale_through(
    view: StoreView,
    new_members: list[str],
    scale_up: Callable[[], None],
    up_settled: Callable[[], object],
    scale_down: Callable[[], None],
    down_settled: Callable[[], object],
    timeout: float,
    after_up: Callable[[], None] = lambda: None,
) -> Figures:
    """The writer's figures through `scale_up`, `scale_down`, and when each new member votes;
    each step gets `timeout` seconds; `after_up` runs once the scale-up settled (or timed out)."""
    figures = Figures()
    with Writer(view, interval=WRITE_INTERVAL) as writer:  # type: ignore[arg-type]
        wait_until(lambda: len(writer.acknowledged) > 20, 60, "the writer's first writes")
        began = time.monotonic()
        with JoinWatch(view, new_members, began) as joins:
            scale_up()
            joins.wait(timeout)
        figures.scale_up_voting_s = joins.voting_s()
        figures.scale_up_each_s = joins.each_s()
        figures.scale_up_milestones = joins.milestones()
        figures.scale_up_settled_s = timed(up_settled, began, timeout)
        after_up()
        began = time.monotonic()
        scale_down()
        figures.scale_down_settled_s = timed(down_settled, began, STEP_TIMEOUT)
    figures.failed_writes = writer.failed
    figures.max_write_gap_s = round(writer.longest_gap, 3)
    figures.lost_writes = len(writer.lost())
    return figures


def _condition(resource: Obj, kind: str) -> bool:
    conditions = (resource.get("status") or {}).get("conditions") or []
    return any(c["type"] == kind and c["status"] == "True" for c in conditions)


def measure_operator(bed: Cluster, kube: Kube, kind: Kind, workdir: Path, log: Path) -> Figures:
    """The operator's figures; its log (each pass's step, timestamped) is copied to `log`."""
    namespace = f"bench-operator-{uuid.uuid4().hex[:5]}"
    create_namespace(kube, namespace)
    operator = OperatorProcess(bed, namespace, workdir)
    operator.start()
    try:
        began = time.monotonic()
        target = create_cluster(kube, bed, kind, namespace, START)
        available = timed(lambda: _condition(target.resource(), "Available"), began, STEP_TIMEOUT)
        all_voting = timed(lambda: target.settled(START), began, STEP_TIMEOUT)
        if all_voting is None:
            events = bed.kubectl("get", "events", "-n", namespace, check=False).stdout
            print(f"events in {namespace}:\n{events[-4000:]}")
            return _unsettled(available)
        names = [target.placement.endpoint(n).name for n in range(START, PEAK)]
        figures = _scale_through(
            target,
            names,
            lambda: target.scale(PEAK),
            lambda: target.settled(PEAK),
            lambda: target.scale(START),
            lambda: target.settled(START),
            STEP_TIMEOUT,
            lambda: _keep_member_logs(bed, target, log),
        )
        figures.apply_available_s, figures.apply_all_voting_s = available, all_voting
        victim = target.placement.endpoint(1).name
        figures.pod_deleted_voting_s = pod_deleted_voting(target, kube, namespace, victim)
        _delete_resource(target)
        return _noted(figures, f"not reached within {STEP_TIMEOUT:.0f} s")
    finally:
        operator.stop()
        shutil.copyfile(operator.log, log)
        print(f"operator log ({log}):\n{operator.tail(15)}")


def _keep_member_logs(bed: Cluster, target: ClusterUnderTest, log: Path) -> None:
    """Each member pod's log after the scale-up, beside the operator's `log` as
    `<stem>-<pod>.log`: the store's own account of each add, start and promotion."""
    for pod in sorted(target.pods()):
        logs = bed.kubectl("logs", "-n", target.namespace, pod, check=False).stdout
        log.with_name(f"{log.stem}-{pod}.log").write_text(logs)


def _noted(figures: Figures, reason: str) -> Figures:
    """`figures` with `reason` noted for each figure that has none and no note yet."""
    for key, value in asdict(figures).items():
        if value is None:
            figures.notes.setdefault(key, reason)
    return figures


def _unsettled(available: float | None) -> Figures:
    """The figures of a cluster that never had all its first members voting: the later steps
    are not measured (they would time the same failure again)."""
    reason = f"never {START} members voting within {STEP_TIMEOUT:.0f} s of the apply"
    return _noted(Figures(apply_available_s=available), reason)


def _delete_resource(target: ClusterUnderTest) -> None:
    """Delete the resource through the operator's finalizer, so its pods stop using the shared
    CPU before the next method is measured."""
    path = ns_path(target.namespace, target.kind.plural, target.name, API_VERSION)
    target.kube.delete(path)
    if timed(lambda: not exists(target.kube, path), time.monotonic(), 120) is None:
        print(f"{target.name} still not deleted after 120 s: the seed is measured beside it")


@dataclass
class SeedStatefulSet:
    """The seed's StatefulSet of `store` in `namespace` (`seed_manifests`), as the writer and
    the checks see it. `password` is the ZooKeeper superuser's, set only so the benchmark's
    client reads the same way it does against the operator's clusters."""

    bed: Cluster
    kube: Kube
    store: str
    namespace: str
    password: str

    @property
    def name(self) -> str:
        return "etcd" if self.store == "etcd" else "zk"

    @property
    def service(self) -> str:
        return "etcd" if self.store == "etcd" else "zk-hs"

    @property
    def placement(self) -> ServiceDnsPlacement:
        return ServiceDnsPlacement(self.name, self.service, self.namespace)

    def endpoints(self, count: int = PEAK) -> list[Endpoint]:
        return [self.placement.endpoint(n) for n in range(count)]

    def client(self, timeout: float = 2.0) -> CoordinationStore:
        if self.store == "etcd":
            return EtcdStore(self.endpoints(), timeout=timeout)
        return ZookeeperStore(self.endpoints(), password=self.password, timeout=timeout)

    def apply(self, members: int) -> None:
        body = {"apiVersion": "v1", "kind": "List", "items": seed_manifests(self, members)}
        self.bed.kubectl("apply", "-n", self.namespace, "-f", "-", stdin=json.dumps(body))

    def kubectl(self, *args: str) -> None:
        self.bed.kubectl("-n", self.namespace, *args)

    def pod_names(self) -> set[str]:
        pods = self.kube.get(ns_path(self.namespace, "pods"), labelSelector=f"app={self.name}")
        return {p["metadata"]["name"] for p in pods["items"]}

    def settled(self, members: int) -> bool:
        """Exactly the first `members` pods, each a healthy voter."""
        names = {self.placement.endpoint(n).name for n in range(members)}
        return self.pod_names() == names and voting(self) == names


def _seed_etcd(seed: SeedStatefulSet, members: int) -> list[Obj]:
    """The seed's etcd: a headless Service publishing not-ready addresses, a StatefulSet whose
    pods wait until every peer of the static list resolves and then start etcd with that list
    and `--initial-cluster-state new` (the list is `members` long, fixed in the manifest as the
    seed's CLUSTER_SIZE). Its image has no shell, so the wait is an init container (busybox)
    instead of the seed's loop before `exec etcd`; that is also why `podManagementPolicy` is
    Parallel: the seed's pods had no readiness probe and counted as Ready while they waited."""
    domain = f"{seed.service}.{seed.namespace}.svc.cluster.local"
    peers = ",".join(f"etcd-{n}=http://etcd-{n}.{domain}:2380" for n in range(members))
    wait = (
        f"for i in $(seq 0 {members - 1}); do "
        f"until nslookup etcd-$i.{domain} >/dev/null 2>&1; do "
        f'echo "Waiting for etcd-$i.{domain} to come up"; sleep 1; done; done'
    )
    labels = {"app": seed.name}
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": seed.service, "labels": labels},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": labels,
                "ports": [{"name": "client", "port": 2379}, {"name": "peer", "port": 2380}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": seed.name, "labels": labels},
            "spec": {
                "serviceName": seed.service,
                # changing replicas requires a manual `etcdctl member remove/add` (the seed's
                # own comment): remove before decreasing, add after increasing.
                "replicas": members,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {
                            "runAsUser": ETCD_UID,
                            "runAsGroup": ETCD_UID,
                            "fsGroup": ETCD_UID,
                        },
                        "initContainers": [
                            {
                                "name": "wait-for-peers",
                                "image": BUSYBOX_IMAGE,
                                "command": ["sh", "-c", wait],
                                "securityContext": RESTRICTED_CONTAINER,
                            }
                        ],
                        "containers": [
                            {
                                "name": "etcd",
                                "image": f"{ETCD_IMAGE}:v{ETCD_VERSION}",
                                "command": ["/usr/local/bin/etcd"],
                                "env": [field_env("POD_NAME", "metadata.name")],
                                "args": [
                                    "--name=$(POD_NAME)",
                                    "--listen-peer-urls=http://0.0.0.0:2380",
                                    "--listen-client-urls=http://0.0.0.0:2379",
                                    f"--advertise-client-urls=http://$(POD_NAME).{domain}:2379",
                                    "--initial-advertise-peer-urls="
                                    f"http://$(POD_NAME).{domain}:2380",
                                    "--initial-cluster-token=etcd-cluster-1",
                                    f"--initial-cluster={peers}",
                                    "--initial-cluster-state=new",
                                    "--data-dir=/var/run/etcd/default.etcd",
                                ],
                                "ports": [
                                    {"name": "client", "containerPort": 2379},
                                    {"name": "peer", "containerPort": 2380},
                                ],
                                "securityContext": RESTRICTED_CONTAINER,
                                "volumeMounts": [{"name": "data", "mountPath": "/var/run/etcd"}],
                            }
                        ],
                    },
                },
                "volumeClaimTemplates": [_claim("data")],
            },
        },
    ]


_ZOOKEEPER_START = """set -eu
ordinal="${{HOSTNAME##*-}}"
mkdir -p "$ZOO_CONF_DIR" "$ZOO_DATA_DIR" "$ZOO_DATA_LOG_DIR"
echo $((ordinal + 1)) > "$ZOO_DATA_DIR/myid"
printf '%s' "$LOGBACK_XML" > "$ZOO_CONF_DIR/logback.xml"
{{
  printf '%s' "$ZOO_CFG"
  for i in $(seq 0 $((SERVERS - 1))); do
    echo "server.$((i + 1))=zk-$i.{domain}:{quorum}:{election}"
  done
}} > "$ZOO_CONF_DIR/zoo.cfg"
exec /docker-entrypoint.sh zkServer.sh start-foreground
"""
"""What the seed's `start-zookeeper --servers=N` did at every start: `myid` from the pod's
ordinal, zoo.cfg written afresh with servers 1..N (reconfig off)."""

_RUOK = "exec 3<>/dev/tcp/127.0.0.1/2181; printf ruok >&3; grep -q imok <&3"
"""The seed's probe (`zookeeper-ready 2181`): `ruok` answers imok as soon as the server runs,
whether or not it has joined a quorum."""


def _seed_zookeeper(seed: SeedStatefulSet, members: int) -> list[Obj]:
    """The seed's ZooKeeper: headless Service `zk-hs`, StatefulSet `zk` (Parallel,
    RollingUpdate, runAsUser/fsGroup 1000, the `ruok` probes with their 10 s initial delay),
    static zoo.cfg of `members` servers. Two changes for this bed: the pod anti-affinity is
    preferred, not required (3 nodes, 5 members), and `zk-hs` publishes not-ready addresses (a
    starting server resolves its peers before any of them passed a probe). The client Service
    and the PodDisruptionBudget are left out: nothing here uses them."""
    settings = ZookeeperSettings()
    snapshots = f"{ZOOKEEPER_MOUNT}/{settings.data_dir}"
    txn_logs = f"{ZOOKEEPER_MOUNT}/{settings.data_log_dir}"
    config = {
        **zookeeper_config.server_config(settings, snapshots, txn_logs, dynamic_file=None),
        "clientPort": ensemble.CLIENT_PORT,
    }
    domain = f"{seed.service}.{seed.namespace}.svc.cluster.local"
    start = _ZOOKEEPER_START.format(
        domain=domain, quorum=ensemble.QUORUM_PORT, election=ensemble.ELECTION_PORT
    )
    labels = {"app": seed.name}
    probe = {
        "exec": {"command": ["bash", "-c", _RUOK]},
        "initialDelaySeconds": 10,
        "timeoutSeconds": 5,
    }
    env = {
        "SERVERS": str(members),
        "ZOO_CONF_DIR": ZOOKEEPER_CONF_DIR,
        "ZOOCFGDIR": ZOOKEEPER_CONF_DIR,
        "ZOO_DATA_DIR": snapshots,
        "ZOO_DATA_LOG_DIR": txn_logs,
        "ZOO_CFG": zookeeper_config.zoo_cfg(config),
        "LOGBACK_XML": zookeeper_config.logback_xml(settings),
        "SERVER_JVMFLAGS": " ".join(zookeeper_config.jvm_options(settings, seed.password)),
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": seed.service, "labels": labels},
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": labels,
                "ports": [
                    {"name": "server", "port": ensemble.QUORUM_PORT},
                    {"name": "leader-election", "port": ensemble.ELECTION_PORT},
                ],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": seed.name, "labels": labels},
            "spec": {
                "serviceName": seed.service,
                "replicas": members,
                "updateStrategy": {"type": "RollingUpdate"},
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "affinity": {
                            "podAntiAffinity": {
                                "preferredDuringSchedulingIgnoredDuringExecution": [
                                    {
                                        "weight": 100,
                                        "podAffinityTerm": {
                                            "labelSelector": {"matchLabels": labels},
                                            "topologyKey": "kubernetes.io/hostname",
                                        },
                                    }
                                ]
                            }
                        },
                        "securityContext": {
                            "runAsUser": ZOOKEEPER_UID,
                            "runAsGroup": ZOOKEEPER_UID,
                            "fsGroup": ZOOKEEPER_UID,
                        },
                        "containers": [
                            {
                                "name": "zookeeper",
                                "image": f"{ZOOKEEPER_IMAGE}:{ZOOKEEPER_VERSION}",
                                "command": ["bash", "-c", start],
                                "env": [{"name": k, "value": v} for k, v in env.items()],
                                "ports": [
                                    {"name": "client", "containerPort": ensemble.CLIENT_PORT},
                                    {"name": "server", "containerPort": ensemble.QUORUM_PORT},
                                    {
                                        "name": "leader-election",
                                        "containerPort": ensemble.ELECTION_PORT,
                                    },
                                ],
                                "readinessProbe": probe,
                                "livenessProbe": probe,
                                "securityContext": RESTRICTED_CONTAINER,
                                "volumeMounts": [{"name": "datadir", "mountPath": ZOOKEEPER_MOUNT}],
                            }
                        ],
                    },
                },
                "volumeClaimTemplates": [_claim("datadir")],
            },
        },
    ]


def _claim(name: str) -> Obj:
    """The seed's volume claim template (1Gi, ReadWriteOnce), on the bed's default class."""
    return {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def seed_manifests(seed: SeedStatefulSet, members: int) -> list[Obj]:
    """The seed's objects for a cluster of `members` (its static member list)."""
    return _seed_etcd(seed, members) if seed.store == "etcd" else _seed_zookeeper(seed, members)


def _etcd_member_add(seed: SeedStatefulSet, pod: str) -> str | None:
    """`etcdctl member add <pod> --peer-urls=...`, through etcd-0's v3 HTTP gateway (etcd's
    `/v3/cluster/member/add`, api/etcdserverpb/rpc.proto MemberAdd), tried again for up to
    `MEMBER_ADD_SECONDS` as a person would. None once etcd took it, else its last answer."""
    address = seed.placement.endpoint(0).address
    endpoint = next(e for e in seed.endpoints() if e.name == pod)

    def add() -> str | None:
        try:
            reply = httpx.post(
                f"{client_url(address)}/v3/cluster/member/add",
                json={"peerURLs": [peer_url(endpoint.address)]},
                timeout=10,
            )
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}"
        return None if reply.is_success else f"HTTP {reply.status_code}: {reply.text.strip()}"

    deadline = time.monotonic() + MEMBER_ADD_SECONDS
    answer = add()
    while answer is not None and time.monotonic() < deadline:
        time.sleep(1)
        answer = add()
    return answer


def _etcd_member_remove(seed: SeedStatefulSet, pod: str) -> None:
    """`etcdctl member remove <id>` of the member at `pod`'s address."""
    store = seed.client(timeout=5.0)
    try:
        address = next(e.address for e in seed.endpoints() if e.name == pod)
        store.remove(next(m for m in store.members() if m.address == address))
    finally:
        store.close()


def _crash_reason(seed: SeedStatefulSet, pod: str) -> str:
    """Why `pod`'s etcd is not running: the fatal line of its last run's log (etcd logs JSON:
    `msg` and `error`), else its container's waiting reason."""
    for previous in ("--previous", "--tail=50"):
        logs = seed.bed.kubectl(
            "logs", "-n", seed.namespace, pod, "-c", "etcd", previous, check=False
        ).stdout
        for line in reversed(logs.splitlines()):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("level") == "fatal":
                    said = filter(None, (entry.get("msg"), entry.get("error")))
                    return f"{pod} exits: {': '.join(said)}"
    try:
        statuses = seed.kube.get(ns_path(seed.namespace, "pods", pod))["status"]
    except ApiError:
        return f"{pod} was never created"
    waiting = [
        (s.get("state") or {}).get("waiting", {}).get("reason")
        for s in statuses.get("containerStatuses") or statuses.get("initContainerStatuses") or []
    ]
    return f"{pod} never votes (container {', '.join(filter(None, waiting)) or 'running'})"


def measure_seed(bed: Cluster, kube: Kube, store: str) -> Figures:
    namespace = f"bench-seed-{uuid.uuid4().hex[:5]}"
    create_namespace(kube, namespace)
    seed = SeedStatefulSet(bed, kube, store, namespace, password=uuid.uuid4().hex)
    began = time.monotonic()
    seed.apply(START)
    majority = START // 2 + 1
    available = timed(lambda: len(voting(seed)) >= majority, began, STEP_TIMEOUT)
    all_voting = timed(lambda: seed.settled(START), began, STEP_TIMEOUT)
    if all_voting is None:
        return _unsettled(available)
    names = [seed.placement.endpoint(n).name for n in range(START, PEAK)]
    if store == "etcd":
        figures = _seed_etcd_scaling(seed, names)
    else:

        def servers(members: int) -> Callable[[], None]:
            """The seed's manual step: `replicas` and `--servers` edited together, which the
            StatefulSet rolls out by restarting every member, highest ordinal first."""
            patch = {
                "spec": {
                    "replicas": members,
                    "template": {
                        "spec": {
                            "containers": [
                                {
                                    "name": "zookeeper",
                                    "env": [{"name": "SERVERS", "value": str(members)}],
                                }
                            ]
                        }
                    },
                }
            }
            return lambda: seed.kubectl("patch", "statefulset", seed.name, "-p", json.dumps(patch))

        figures = _scale_through(
            seed,
            names,
            servers(PEAK),
            lambda: seed.settled(PEAK),
            servers(START),
            lambda: seed.settled(START),
            STEP_TIMEOUT,
        )
        figures.notes["scale_up_voting_s"] = "with every existing member restarted"
        figures.notes["scale_up_each_s"] = "with every existing member restarted"
    figures.apply_available_s, figures.apply_all_voting_s = available, all_voting
    figures.notes["apply_available_s"] = "no Available condition: a majority of 3 voting"
    victim = seed.placement.endpoint(1).name
    figures.pod_deleted_voting_s = pod_deleted_voting(seed, kube, namespace, victim)
    seed.kubectl("delete", "statefulset", seed.name, "--wait=false")
    return _noted(figures, f"not reached within {STEP_TIMEOUT:.0f} s")


def _seed_etcd_scaling(seed: SeedStatefulSet, names: list[str]) -> Figures:
    """`kubectl scale` 3 -> 5 then `member add` (the seed's order: add after increasing); then
    `member remove` of what was added and `kubectl scale` back to 3."""
    added: list[str] = []
    refused: list[str] = []

    def scale_up() -> None:
        seed.kubectl("scale", "statefulset", seed.name, f"--replicas={PEAK}")
        for pod in names:
            answer = _etcd_member_add(seed, pod)
            if answer is None:
                added.append(pod)
            else:
                refused.append(f"member add of {pod} refused: {answer}")

    reasons: list[str] = []

    def scale_down() -> None:
        reasons.extend(_crash_reason(seed, pod) for pod in names if pod not in voting(seed))
        for pod in reversed(added):
            with contextlib.suppress(StoreError, StopIteration):
                _etcd_member_remove(seed, pod)
        seed.kubectl("scale", "statefulset", seed.name, f"--replicas={START}")

    figures = _scale_through(
        seed,
        names,
        scale_up,
        lambda: seed.settled(PEAK),
        scale_down,
        lambda: seed.settled(START),
        SEED_JOIN_TIMEOUT,
    )
    if reasons or refused:
        figures.notes["scale_up_voting_s"] = "; ".join([*reasons, *refused])
        figures.notes["scale_up_each_s"] = "never voting: scale_up_voting_s"
        figures.notes["scale_up_settled_s"] = f"never {PEAK} members voting: scale_up_voting_s"
        figures.scale_up_voting_s = figures.scale_up_voting_s or None
        figures.scale_up_each_s = figures.scale_up_each_s or None
    return figures


def measure_fleet(bed: Cluster, kube: Kube, kind: Kind, clusters: int, workdir: Path) -> Fleet:
    """`clusters` one-member clusters under one operator; its RSS sampled every 0.5 s."""
    namespace = f"bench-fleet-{uuid.uuid4().hex[:5]}"
    create_namespace(kube, namespace)
    operator = OperatorProcess(bed, namespace, workdir)
    operator.start()
    assert operator.process is not None
    process = psutil.Process(operator.process.pid)
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            with contextlib.suppress(psutil.Error):
                samples.append(process.memory_info().rss / 2**20)
            stop.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        began = time.monotonic()
        targets = [
            create_cluster(kube, bed, kind, namespace, 1, name=f"fleet-{n}")
            for n in range(clusters)
        ]
        settled = timed(
            lambda: all(target.settled(1) for target in targets), began, 2 * STEP_TIMEOUT
        )
        stop.wait(STEADY_SECONDS)  # the measurement itself: a steady period of fixed length
        steady = process.memory_info().rss / 2**20
        settled_clusters = sum(1 for target in targets if target.settled(1))
    finally:
        stop.set()
        sampler.join(timeout=5)
        operator.stop()
        print(f"operator log ({operator.log}):\n{operator.tail(15)}")
    return Fleet(
        clusters=clusters,
        all_settled_s=settled,
        settled_clusters=settled_clusters,
        operator_rss_mb=round(steady, 1),
        operator_peak_rss_mb=round(max(samples, default=steady), 1),
    )


@contextlib.contextmanager
def running_test_bed(workdir: Path) -> Iterator[tuple[Cluster, Kube]]:
    """The test bed started for this run, the operator's CRDs installed, and pod DNS names
    resolved in this process through the API server (`api_getaddrinfo`)."""
    with Cluster(workdir / "testbed") as bed:
        kube = bed.api()
        install_crds(bed)
        real = socket.getaddrinfo
        setattr(socket, "getaddrinfo", api_getaddrinfo(kube))  # noqa: B010
        try:
            yield bed, kube
        finally:
            setattr(socket, "getaddrinfo", real)  # noqa: B010


def _cell(value: object, note: str | None) -> str:
    if value is None:
        return f"n/a: {note}" if note else "n/a"
    text = ", ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    return f"{text} ({note})" if note else text


PER_MEMBER = ("scale_up_voting_s", "scale_up_each_s")
"""Figures listed per new member: a row each."""


def _timeline(figures: dict[str, Any], member: int) -> str | None:
    """The `MILESTONES` of the `member`th new member to vote (then those that never did), in
    seconds from its turn (the one voting before it; the first's: `kubectl scale`), as
    "orders-3: added 0.3, pod 0.4, ..."; None when there is none."""
    found = (figures.get("scale_up_milestones") or {}).items()
    ordered = sorted(found, key=lambda item: item[1].get("voting", float("inf")))
    if member >= len(ordered) or not ordered[member][1]:
        return None
    name, milestones = ordered[member]
    turn = ordered[member - 1][1].get("voting", 0.0) if member else 0.0
    return f"{name}: " + ", ".join(f"{m} {at - turn:.1f}" for m, at in milestones.items())


def _rows(figures: dict[str, Any], key: str) -> list[tuple[str, str]]:
    """(row label, cell) of figure `key`: one row, or one per new member for `PER_MEMBER`
    figures, followed by each member's timeline after `scale_up_each_s`."""
    note = (figures.get("notes") or {}).get(key)
    value = figures[key]
    if key not in PER_MEMBER:
        return [(key, _cell(value, note))]
    rows = []
    for member in range(PEAK - START):
        at = value[member] if value is not None and member < len(value) else None
        rows.append((f"{key}, member {member + 1}", _cell(at, note)))
        if key == "scale_up_each_s":
            timeline = _timeline(figures, member)
            rows.append((f"  member {member + 1}: s from its turn", timeline or "n/a"))
    return rows


def _report(title: str, out: Path, result: dict[str, Any], targets: dict[str, str]) -> None:
    """Write `result` as JSON to `out` and print `targets`' rows, beside the seed's if any."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    seed = result.get("seed")
    table = Table(title=title)
    columns = ["figure", "operator", *(["seed's StatefulSet"] if seed else []), "target"]
    for column in columns:
        table.add_column(column, overflow="fold")
    for key, target in targets.items():
        theirs = _rows(seed, key) if seed else []
        for n, (label, ours) in enumerate(_rows(result, key)):
            seed_cell = [theirs[n][1] if n < len(theirs) else ""] if seed else []
            table.add_row(label, ours, *seed_cell, "" if label.startswith(" ") else target)
    Console(width=160).print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["etcd", "zookeeper"], default="etcd")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--clusters", type=int, help="measure only the operator's RSS with this many clusters"
    )
    args = parser.parse_args()
    kind = Kind.ETCD if args.store == "etcd" else Kind.ZOOKEEPER
    with tempfile.TemporaryDirectory(prefix="qk-bench-operator-") as work:
        workdir = Path(work)
        with running_test_bed(workdir) as (bed, kube):
            if args.clusters:
                fleet = measure_fleet(bed, kube, kind, args.clusters, workdir)
                title = f"operator RSS: {args.clusters} one-member {args.store} clusters"
                _report(title, args.out, {"store": args.store, **asdict(fleet)}, FLEET_TARGETS)
                return
            log = args.out.with_name(f"{args.out.stem}-operator.log")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            ours = measure_operator(bed, kube, kind, workdir, log)
            seed = measure_seed(bed, kube, args.store)
    result = {"store": args.store, **asdict(ours), "seed": asdict(seed)}
    title = (
        f"operator benchmark on the test bed: {args.store}, {START} -> {PEAK} -> {START}, "
        f"writer every {WRITE_INTERVAL * 1000:.0f} ms"
    )
    _report(title, args.out, result, TARGETS[args.store])


if __name__ == "__main__":
    main()
