"""The PodDisruptionBudget on the real API server around membership changes: lowered before each
removal, raised only once a promotion shows in the membership.

The reconciler drives a real `KubernetesRuntime` against the real API server; the store is the
in-memory fake of `tests/fakes.py` (a stand-in, not an end-to-end proof: the API server alone runs
no members), which reads the budget from the API server at the moment `remove` or `promote` is
called. With no kubelet and no controller manager here, the test writes what they would: member
pods with a running container in their status, and a StatefulSet controller's one duty the
runtime relies on (a pod above the replicas goes away).
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from quorumkeeper.model import JoinRules, Member
from quorumkeeper.reconciler import Reconciler
from quorumkeeper.runtimes.kubernetes.objects import Membership, placement
from quorumkeeper.runtimes.kubernetes.render import cluster_objects
from quorumkeeper.runtimes.kubernetes.runtime import (
    KubernetesRuntime,
    kubernetes_rules,
)
from quorumkeeper.spec import ClusterSpec
from testbed.kube import Kube, ns_path
from tests.fakes import FakeSource, FakeStore, ListSink, fake_backend
from tests.operator.conftest import ApiServer
from tests.operator.members import NAME, etcd_resource, put_member

pytestmark = pytest.mark.operator

PASSES = 20
"""Far more passes than a two-step change needs; a loop that never settles fails the test."""


class BudgetReadingStore(FakeStore):
    """The fake store, reading the PodDisruptionBudget's `maxUnavailable` from the API server
    each time a member is removed or promoted, before the change."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        super().__init__()
        self.kube = kube
        self.path = ns_path(namespace, "poddisruptionbudgets", NAME, group="policy/v1")
        self.at_remove: list[int] = []
        self.at_promote: list[int] = []

    def budget(self) -> int:
        return int(self.kube.get(self.path)["spec"]["maxUnavailable"])

    def remove(self, member: Member) -> None:
        self.at_remove.append(self.budget())
        super().remove(member)

    def promote(self, member: Member) -> None:
        self.at_promote.append(self.budget())
        super().promote(member)


def remove_pods_above_replicas(kube: Kube, namespace: str) -> None:
    """What the StatefulSet controller does when its replicas are lowered."""
    replicas = kube.get(ns_path(namespace, "statefulsets", NAME, group="apps/v1"))["spec"][
        "replicas"
    ]
    for pod in kube.get(ns_path(namespace, "pods"))["items"]:
        name = pod["metadata"]["name"]
        if int(name.rsplit("-", 1)[1]) >= replicas:
            kube.delete(ns_path(namespace, "pods", name))


def cluster(
    api_server: ApiServer,
    api: client.ApiClient,
    namespace: str,
    *,
    voters: int,
    learners: int,
    desired: int,
) -> tuple[BudgetReadingStore, Reconciler]:
    """A cluster rendered as settled at `voters + learners` members (so its budget starts
    sized for all of them), every member running, and a reconciler that wants `desired`."""
    kube = api_server.kube
    kube.create(ns_path(namespace, "serviceaccounts"), {"metadata": {"name": "default"}})
    resource = etcd_resource(namespace, desired)
    members = voters + learners
    result = api_server.apply(
        cluster_objects(resource, Membership.steady(placement(resource), members))
    )
    assert result.returncode == 0, result.stderr
    store = BudgetReadingStore(kube, namespace)
    runtime = KubernetesRuntime(api, lambda: resource)
    for ordinal in range(members):
        put_member(kube, resource, ordinal)
        address = runtime.placement.endpoint(ordinal).address
        store.enlist(address, voter=ordinal < voters, started=True)
        store.process_started(address, bootstrap=False)
        store.mark_caught_up(address)
    assert store.budget() == (members - 1) // 2
    spec = ClusterSpec.model_validate({"name": NAME, "store": "etcd", "members": desired})
    backend = fake_backend(store, kubernetes_rules(JoinRules()))
    return store, Reconciler(FakeSource(spec), backend, runtime, ListSink(), hold_store=True)


def settle(reconciler: Reconciler, kube: Kube, namespace: str, done: Any) -> None:
    for _ in range(PASSES):
        if done():
            return
        reconciler.run_once()
        remove_pods_above_replicas(kube, namespace)
    raise AssertionError(f"not settled after {PASSES} passes: {reconciler.last_status}")


def test_the_budget_is_lowered_before_each_removal(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    store, reconciler = cluster(api_server, api, namespace, voters=5, learners=0, desired=3)
    assert store.budget() == 2  # five voters may lose two

    settle(reconciler, api_server.kube, namespace, lambda: len(store.entries) == 3)

    # 5 -> 4 and 4 -> 3 voters: each removal ran with floor((min(now, after) - 1) / 2) = 1 in
    # force, never the 2 that five voters allow.
    assert [c for c, _ in store.changes if c == "remove"] == ["remove", "remove"]
    assert store.at_remove == [1, 1]
    assert store.budget() == 1


def test_a_removal_that_leaves_two_voters_runs_with_no_disruption_allowed(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    store, reconciler = cluster(api_server, api, namespace, voters=3, learners=0, desired=2)
    assert store.budget() == 1

    settle(reconciler, api_server.kube, namespace, lambda: len(store.entries) == 2)

    assert store.at_remove == [0]
    assert store.budget() == 0


def test_the_budget_is_raised_only_once_the_promotion_shows(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    store, reconciler = cluster(api_server, api, namespace, voters=2, learners=1, desired=3)
    assert store.budget() == 1  # rendered for three: too many while only two vote

    settle(reconciler, api_server.kube, namespace, lambda: bool(store.at_promote))
    assert store.at_promote == [0]  # two voters: the promotion ran with no disruption allowed
    assert store.budget() == 0  # and nothing raised it in the pass that promoted

    reconciler.run_once()
    assert store.budget() == 1  # three voters seen: one may go
