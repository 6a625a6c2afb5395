"""What the operator tells: status conditions, Events and Prometheus metrics, written to the real
API server and scraped over HTTP from the real exposition.

The daemon's pass (`ClusterDaemon.pass_once`) runs the shared reconciler on the in-memory fake
store and fake runtime of `tests/fakes.py` (stand-ins, not end-to-end proofs: no store or pod
runs here); the resource, its status and its Events are the API server's. The same behaviour on
real members is the test bed's to prove (`tests/operator/test_operator_testbed.py`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import kopf
import pytest
from prometheus_client.parser import text_string_to_metric_families

from quorumkeeper.model import JoinRules, Slot
from quorumkeeper.reconciler import Reconciler
from quorumkeeper.runtimes.kubernetes.metrics import OperatorMetrics
from quorumkeeper.runtimes.kubernetes.objects import placement
from quorumkeeper.runtimes.kubernetes.operator import (
    BUSY_INTERVAL,
    QUICK_RETRIES,
    RETRY_INTERVAL,
    ClusterDaemon,
)
from quorumkeeper.runtimes.kubernetes.resources import API_VERSION, Kind, parse_resource
from quorumkeeper.runtimes.kubernetes.runtime import kubernetes_rules
from testbed.kube import ApiError, ns_path
from tests.fakes import FakeRuntime, FakeStore, fake_backend
from tests.operator.conftest import ApiServer
from tests.polling import loopback_subnet, wait_until

pytestmark = pytest.mark.operator

Obj = dict[str, Any]


@dataclass
class Driven:
    """One cluster resource on the API server, its daemon, and the fakes under it."""

    api_server: ApiServer
    namespace: str
    name: str
    daemon: ClusterDaemon
    store: FakeStore
    runtime: FakeRuntime

    @property
    def path(self) -> str:
        return ns_path(self.namespace, Kind.ETCD.plural, self.name, group=API_VERSION)

    def resource(self) -> Obj:
        return self.api_server.kube.get(self.path)

    def condition(self, kind: str) -> Obj:
        conditions = self.resource()["status"]["conditions"]
        return next(c for c in conditions if c["type"] == kind)

    def scale(self, members: int) -> None:
        self.api_server.kube.patch(
            self.path, {"spec": {"members": members}}, "application/merge-patch+json"
        )

    def settle(self, passes: int = 30) -> list[str]:
        """Run passes until the step is Done, every learner caught up at once; returns the
        step kinds taken."""
        kinds = []
        for _ in range(passes):
            for address in self.store.entries:
                self.store.mark_caught_up(address)
            self.daemon.pass_once()
            kinds.append(self.resource()["status"]["step"]["kind"])
            if kinds[-1] == "Done":
                return kinds
        raise AssertionError(f"not settled after {passes} passes: {kinds}")

    def events(self) -> list[Obj]:
        listed = self.api_server.kube.get(
            ns_path(self.namespace, "events"),
            fieldSelector=f"involvedObject.name={self.name}",
        )
        return cast(list[Obj], listed["items"])


@pytest.fixture
def metrics() -> OperatorMetrics:
    return OperatorMetrics()


@pytest.fixture
def scrape(metrics: OperatorMetrics) -> Iterator[str]:
    """The URL of `metrics` served over HTTP on the suite's own loopback address."""
    address = f"{loopback_subnet(251)}.1"
    server = metrics.serve(0, address)
    try:
        yield f"http://{address}:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of the exposition at `url`, by name and labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def create(api_server: ApiServer, namespace: str, name: str, members: int, **spec: Any) -> Obj:
    body = {
        "apiVersion": API_VERSION,
        "kind": Kind.ETCD.value,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"members": members, "version": "3.7.3", "storage": {"size": "1Gi"}, **spec},
    }
    return api_server.kube.create(ns_path(namespace, Kind.ETCD.plural, group=API_VERSION), body)


def drive(
    api_server: ApiServer, namespace: str, metrics: OperatorMetrics, members: int, **spec: Any
) -> Driven:
    """An etcd cluster resource of `members`, with no member yet, and its daemon on fakes."""
    name = "orders"
    resource = parse_resource(create(api_server, namespace, name, members, **spec))
    daemon = ClusterDaemon(api_server.kube.api_client, Kind.ETCD, namespace, name, metrics)
    store = FakeStore()
    runtime = FakeRuntime(placement(resource), store)
    backend = fake_backend(store, kubernetes_rules(JoinRules()))
    daemon.reconciler = Reconciler(daemon.source, backend, runtime, daemon.sink, hold_store=True)
    return Driven(api_server, namespace, name, daemon, store, runtime)


@pytest.fixture
def driven(installed: ApiServer, namespace: str, metrics: OperatorMetrics) -> Driven:
    return drive(installed, namespace, metrics, 3)


def labels(driven: Driven, **extra: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        {
            "namespace": driven.namespace,
            "cluster": driven.name,
            "kind": "EtcdCluster",
            **extra,
        }.items()
    )


def test_metrics_count_passes_changes_and_health_and_go_with_the_resource(
    driven: Driven, scrape: str
) -> None:
    driven.settle()
    seen = samples(scrape)
    # 1 -> 3 members: two learners added and promoted, each an Event too.
    for step in ("AddLearner", "Promote"):
        key = ("quorumkeeper_membership_changes_total", labels(driven, step=step))
        assert seen[key] == 2
    reasons = sorted(e["reason"] for e in driven.events())
    assert reasons == ["AddLearner", "AddLearner", "Promote", "Promote"]
    assert seen[("quorumkeeper_reconcile_passes_total", labels(driven, outcome="settled"))] == 1
    assert seen[("quorumkeeper_reconcile_passes_total", labels(driven, outcome="acted"))] >= 5
    for ordinal in range(3):
        key = ("quorumkeeper_member_healthy", labels(driven, member=f"orders-{ordinal}"))
        assert seen[key] == 1
    ready = seen[("quorumkeeper_phase_seconds", labels(driven, phase="Ready"))]
    assert 0 <= ready < 60

    driven.runtime.crash(driven.runtime.placement.endpoint(2))
    driven.daemon.pass_once()
    seen = samples(scrape)
    assert seen[("quorumkeeper_member_healthy", labels(driven, member="orders-2"))] == 0
    assert ("quorumkeeper_phase_seconds", labels(driven, phase="Ready")) not in seen
    assert ("quorumkeeper_phase_seconds", labels(driven, phase="Healing")) in seen

    driven.runtime.failures["observe"] = OSError("the API server went away")
    driven.daemon.pass_once()
    seen = samples(scrape)
    assert seen[("quorumkeeper_reconcile_failures_total", labels(driven, error="OSError"))] == 1
    assert seen[("quorumkeeper_reconcile_passes_total", labels(driven, outcome="failed"))] == 1

    driven.api_server.kube.delete(driven.path)
    # The deleted resource ends the daemon's loop at its next pass (404).
    driven.daemon.run(cast(kopf.DaemonStopped, False))
    assert not [key for key in samples(scrape) if ("cluster", driven.name) in key[1]]


def test_a_membership_step_stuck_past_its_deadline_is_reported_once_and_recovers(
    installed: ApiServer, namespace: str, metrics: OperatorMetrics
) -> None:
    driven = drive(installed, namespace, metrics, 3, progressDeadlineSeconds=1)

    def stuck() -> Obj | None:
        driven.daemon.pass_once()  # the learner orders-1 never catches up: Promote again
        progressing = driven.condition("Progressing")
        return progressing if progressing["status"] == "False" else None

    progressing = wait_until(stuck, 30, "Progressing False past the deadline")
    assert progressing["reason"] == "ProgressDeadlineExceeded"
    assert progressing["message"].startswith("Promote of orders-1 has been in progress for ")
    assert "longer than progressDeadlineSeconds (1 s)" in progressing["message"]
    for _ in range(3):
        driven.daemon.pass_once()
    again = driven.condition("Progressing")
    fields = ("status", "reason", "lastTransitionTime")
    assert [again[f] for f in fields] == [progressing[f] for f in fields]
    warnings = [e for e in driven.events() if e["type"] == "Warning"]
    assert [(e["reason"], e["message"][:33]) for e in warnings] == [
        ("ProgressDeadlineExceeded", "Promote of orders-1 has been in p")
    ]

    driven.store.mark_caught_up(driven.runtime.placement.endpoint(1).address)
    driven.daemon.pass_once()  # promoted
    driven.daemon.pass_once()  # the next step: adding orders-2
    recovered = driven.condition("Progressing")
    assert (recovered["status"], recovered["reason"]) == ("True", "AddLearner")
    assert recovered["lastTransitionTime"] >= progressing["lastTransitionTime"]
    assert len([e for e in driven.events() if e["type"] == "Warning"]) == 1


def test_a_promotion_the_store_refuses_is_retried_quickly_for_a_while_then_every_second(
    installed: ApiServer, namespace: str, metrics: OperatorMetrics
) -> None:
    """A learner not caught up is tried again after `RETRY_INTERVAL` for `QUICK_RETRIES`
    passes, then after `BUSY_INTERVAL`; the promotion that goes through is followed by the next
    step at once."""
    driven = drive(installed, namespace, metrics, 3)
    kinds: list[str] = []
    while not kinds or kinds[-1] != "Promote":  # bootstrap, add and start orders-1
        assert len(kinds) < 10, kinds
        driven.daemon.pass_once()
        kinds.append(driven.resource()["status"]["step"]["kind"])
    # The learner orders-1 never catches up: the pass above was the first refusal.
    intervals = [driven.daemon.pass_once() for _ in range(QUICK_RETRIES)]
    assert intervals[: QUICK_RETRIES - 1] == [RETRY_INTERVAL] * (QUICK_RETRIES - 1), intervals
    assert intervals[-1] == BUSY_INTERVAL, intervals
    assert driven.resource()["status"]["step"]["kind"] == "Promote"
    driven.store.mark_caught_up(driven.runtime.placement.endpoint(1).address)
    assert driven.daemon.pass_once() == 0.0  # promoted: the next add at once


def test_a_progress_deadline_below_one_second_is_refused_naming_the_field(
    installed: ApiServer, namespace: str
) -> None:
    with pytest.raises(ApiError) as refused:
        create(installed, namespace, "orders", 3, progressDeadlineSeconds=0)
    assert refused.value.status == 422
    assert "spec.progressDeadlineSeconds" in str(refused.value)


def test_a_spec_change_during_a_membership_step_is_queued_until_the_step_is_done(
    installed: ApiServer, namespace: str, metrics: OperatorMetrics
) -> None:
    driven = drive(installed, namespace, metrics, 3)
    for _ in range(4):  # Bootstrap, AddLearner orders-1, StartMember, Promote (not caught up)
        driven.daemon.pass_once()
    assert driven.resource()["status"]["step"] == {
        "kind": "Promote",
        "member": "orders-1",
        "reason": "orders-1 runs as a learner and is promoted once it has caught up",
    }
    assert driven.resource()["status"]["observedGeneration"] == 1

    driven.scale(5)
    driven.daemon.pass_once()
    resource = driven.resource()
    assert resource["metadata"]["generation"] == 2
    assert resource["status"]["observedGeneration"] == 1
    progressing = driven.condition("Progressing")
    assert (progressing["status"], progressing["reason"]) == ("True", "SpecChangeQueued")
    assert progressing["message"].startswith(
        "generation 2 (5 members, version 3.7.3) is queued: Promote of orders-1 finishes first"
    )

    driven.store.mark_caught_up(driven.runtime.placement.endpoint(1).address)
    driven.daemon.pass_once()  # promoted
    driven.daemon.pass_once()  # the next step, toward 5 members
    resource = driven.resource()
    assert resource["status"]["observedGeneration"] == 2
    assert resource["status"]["step"]["kind"] == "AddLearner"
    assert driven.condition("Progressing")["reason"] == "AddLearner"


def test_a_spec_change_with_no_membership_step_in_progress_is_acted_on_at_once(
    driven: Driven,
) -> None:
    driven.settle()
    driven.scale(4)
    driven.daemon.pass_once()
    resource = driven.resource()
    assert resource["status"]["observedGeneration"] == resource["metadata"]["generation"] == 2
    assert driven.condition("Progressing")["reason"] == "AddLearner"


def test_a_scale_down_that_would_break_quorum_is_refused_as_degraded(driven: Driven) -> None:
    driven.settle()
    changes, actions = list(driven.store.changes), list(driven.runtime.actions)
    down = driven.runtime.placement.endpoint(1)
    unschedulable = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules"
    driven.runtime.seed(Slot(down, running=False, has_data=True, blocked_by=unschedulable))
    driven.scale(1)
    driven.daemon.pass_once()
    degraded = driven.condition("Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ScaleDownRefused")
    assert degraded["message"].endswith(
        "scale-down from 3 to 1 members refused: removing orders-2 would leave 1 healthy of 2 "
        "voters, below the quorum of 2 (2 of 3 voters healthy: orders-0, orders-2; unhealthy: "
        "orders-1); possible once orders-1 is healthy again"
    )
    assert unschedulable in degraded["message"]  # why orders-1 is down comes first
    assert (driven.store.changes, driven.runtime.actions) == (changes, actions)  # nothing done

    driven.runtime.seed(Slot(down, running=True, has_data=True, config=driven.runtime.config))
    kinds = driven.settle()
    assert "RemoveMember" in kinds and len(driven.store.entries) == 1
    assert driven.condition("Degraded")["status"] == "False"


@contextlib.contextmanager
def operator_command(installed: ApiServer, namespace: str, log: Path) -> Iterator[str]:
    """`quorumkeeper operator` for `namespace` against the API server, its metrics on a free
    port of the suite's own address; yields the metrics URL, stops the process by its PID."""
    address = f"{loopback_subnet(252)}.1"
    with socket.socket() as probe:  # a free port on our own address
        probe.bind((address, 0))
        port = probe.getsockname()[1]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "quorumkeeper",
                "operator",
                "--namespace",
                namespace,
                "--metrics-port",
                str(port),
                "--metrics-address",
                address,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(installed.control_plane.kubeconfig)},
        )
    try:
        yield f"http://{address}:{port}/metrics"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def passes_by_cluster(url: str, namespace: str) -> dict[str, float]:
    """Reconcile passes counted per cluster of `namespace`; empty while nothing listens yet."""
    try:
        seen = samples(url)
    except OSError:
        return {}
    counted: dict[str, float] = {}
    for (name, labels), value in seen.items():
        if name == "quorumkeeper_reconcile_passes_total" and ("namespace", namespace) in labels:
            cluster = dict(labels)["cluster"]
            counted[cluster] = counted.get(cluster, 0.0) + value
    return counted


def test_the_operator_command_serves_metrics_until_the_resource_is_deleted(
    installed: ApiServer, namespace: str, tmp_path: Path
) -> None:
    """`quorumkeeper operator --metrics-port` end to end on the API server: no node runs a pod
    here, so the cluster never gets past its first member, but every pass is counted."""
    create(installed, namespace, "orders", 1)
    log = tmp_path / "operator.log"
    with operator_command(installed, namespace, log) as url:
        counted = wait_until(
            lambda: passes_by_cluster(url, namespace).get("orders"),
            60,
            f"passes counted; log:\n{log.read_text()}",
        )
        assert counted >= 1
        installed.kube.delete(ns_path(namespace, Kind.ETCD.plural, "orders", group=API_VERSION))
        wait_until(
            lambda: not any(("cluster", "orders") in labels for _, labels in samples(url)),
            60,
            f"the deleted cluster's series gone; log:\n{log.read_text()}",
        )


def test_one_operator_reconciles_more_clusters_than_kopfs_default_thread_pool(
    installed: ApiServer, namespace: str, tmp_path: Path
) -> None:
    """Each cluster's daemon holds a thread for its life: with kopf's default pool (6 threads
    on 2 cores) a 7th cluster was never reconciled."""
    names = [f"fleet-{n}" for n in range(10)]
    for name in names:
        create(installed, namespace, name, 1)
    log = tmp_path / "operator.log"
    with operator_command(installed, namespace, log) as url:
        wait_until(
            lambda: set(passes_by_cluster(url, namespace)) >= set(names) or None,
            90,
            f"every cluster reconciled; log:\n{log.read_text()}",
        )
