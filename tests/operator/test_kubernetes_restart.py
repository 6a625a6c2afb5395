"""The Kubernetes runtime's side of a rolling restart, against a real API server: the
configuration fingerprint written to the StatefulSet's pod template and read back from pods,
`configure` idempotent, a refused version writing nothing, and a restart as an eviction that the
PodDisruptionBudget allows or refuses.

The API server runs without a controller manager (`conftest.api_server`): no StatefulSet
controller makes pods, so the tests create a pod from the template as it would, and no
disruption controller computes a budget's status, so where a test needs a budget that allows a
disruption it writes that status itself, as the disruption controller would (what the API server
answers to an eviction is then its own, real answer).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client, config

from quorumkeeper.model import Endpoint
from quorumkeeper.runtime import DisruptionRefused
from quorumkeeper.runtimes.kubernetes.objects import Membership, Names, placement
from quorumkeeper.runtimes.kubernetes.render import (
    CONFIG_ANNOTATION,
    VERSION_ANNOTATION,
    cluster_objects,
    fingerprint,
)
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, parse_resource
from quorumkeeper.runtimes.kubernetes.runtime import KubernetesRuntime
from quorumkeeper.upgrades import UpgradeRefused
from tests.operator.conftest import ApiServer

pytestmark = pytest.mark.operator

Obj = dict[str, Any]
PASSWORD = "test-superuser-password"


def resource(kind: str, namespace: str, **spec: Any) -> ClusterResource:
    """Cluster `c` of `kind` in `namespace`: 3 members unless `spec` says otherwise."""
    return parse_resource(
        {
            "apiVersion": "quorumkeeper.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": "c", "namespace": namespace},
            "spec": {
                "members": 3,
                "version": "3.7.3" if kind == "EtcdCluster" else "3.9.5",
                "storage": {"size": "1Gi"},
                **spec,
            },
        }
    )


@dataclass
class Bed:
    """A rendered, settled 3-member cluster on the API server, and a runtime on it whose
    resource is `current` (change it to edit the resource)."""

    api: client.ApiClient
    namespace: str
    current: ClusterResource

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    def runtime(self) -> KubernetesRuntime:
        """A fresh runtime, as an operator (re)started now makes one."""
        return KubernetesRuntime(self.api, lambda: self.current, PASSWORD)

    def statefulset(self) -> Any:
        return client.AppsV1Api(self.api).read_namespaced_stateful_set("c", self.namespace)

    def config_map(self) -> dict[str, str]:
        name = Names("c").config_map
        return dict(self.core.read_namespaced_config_map(name, self.namespace).data or {})

    def config_map_version(self) -> str:
        config_map = self.core.read_namespaced_config_map(Names("c").config_map, self.namespace)
        return str(config_map.metadata.resource_version)

    def make_pod(self, ordinal: int, *, ready: bool) -> None:
        """Pod `c-<ordinal>` from the StatefulSet's template, as its controller would make it;
        `ready`: running and Ready, as the kubelet would report it."""
        template = self.api.sanitize_for_serialization(self.statefulset().spec.template)
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {**copy.deepcopy(template["metadata"]), "name": f"c-{ordinal}"},
            "spec": template["spec"],
        }
        claim = {"claimName": f"data-c-{ordinal}"}  # the controller's volume claim template
        pod["spec"].setdefault("volumes", []).append(
            {"name": "data", "persistentVolumeClaim": claim}
        )
        accounts = self.core.list_namespaced_service_account(self.namespace).items
        if not accounts:  # what the service account controller would have made
            account = {"metadata": {"name": "default"}}
            self.core.create_namespaced_service_account(self.namespace, account)
        self.core.create_namespaced_pod(self.namespace, pod)
        if ready:
            status = {
                "status": {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            }
            self.core.patch_namespaced_pod_status(f"c-{ordinal}", self.namespace, status)

    def pods(self) -> set[str]:
        pods = self.core.list_namespaced_pod(self.namespace)
        return {p.metadata.name for p in pods.items if p.metadata.deletion_timestamp is None}


@pytest.fixture
def api(api_server: ApiServer) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(config_file=str(api_server.control_plane.kubeconfig))
    try:
        yield api
    finally:
        api.close()


def settled(api_server: ApiServer, api: client.ApiClient, namespace: str, kind: str) -> Bed:
    """Cluster `c` rendered as a settled 3-member cluster (`Membership.steady`)."""
    bed = Bed(api, namespace, resource(kind, namespace))
    objects = cluster_objects(bed.current, Membership.steady(placement(bed.current), 3), PASSWORD)
    applied = api_server.apply(objects)
    assert applied.returncode == 0, applied.stderr
    return bed


def endpoint(ordinal: int) -> Endpoint:
    return Endpoint(f"c-{ordinal}", ordinal, f"c-{ordinal}")


@pytest.mark.parametrize("kind", ["EtcdCluster", "ZookeeperCluster"])
def test_configure_writes_the_new_template_and_settings_once_and_pods_read_back_theirs(
    api_server: ApiServer, api: client.ApiClient, namespace: str, kind: str
) -> None:
    bed = settled(api_server, api, namespace, kind)
    before = fingerprint(bed.current)
    assert bed.runtime().configure(bed.current.spec.cluster_spec("c")) == before
    written = bed.statefulset()
    assert written.spec.template.metadata.annotations[CONFIG_ANNOTATION] == before
    bed.make_pod(0, ready=False)
    membership = {k: v for k, v in bed.config_map().items() if k not in ("zoo.cfg", "logback.xml")}

    # The settings change: a restart-worthy configuration, written before any pod restarts.
    settings = {"etcd": {"snapshot_count": 5000}} if kind == "EtcdCluster" else {}
    settings = settings or {"zookeeper": {"max_client_cnxns": 100}}
    bed.current = resource(kind, namespace, **settings)
    runtime = bed.runtime()
    after = runtime.configure(bed.current.spec.cluster_spec("c"))

    assert after == fingerprint(bed.current) and after != before
    statefulset = bed.statefulset()
    template = statefulset.spec.template
    assert template.metadata.annotations[CONFIG_ANNOTATION] == after
    assert template.metadata.annotations[VERSION_ANNOTATION] == bed.current.spec.version
    assert statefulset.spec.replicas == 3
    data = bed.config_map()
    if kind == "EtcdCluster":
        assert "--snapshot-count=5000" in template.spec.containers[0].args
    else:
        assert "maxClientCnxns=100\n" in data["zoo.cfg"]
    assert {k: v for k, v in data.items() if k in membership} == membership, "joins' keys kept"
    bed.make_pod(1, ready=False)
    slots = runtime.observe(
        [endpoint(0), endpoint(1), endpoint(2)], set(), quorum=True, judge=False
    )
    assert [s.config for s in slots] == [before, after, None]  # c-2 has no pod

    # Idempotent: the same resource again, by this runtime or a fresh one, writes nothing.
    version = statefulset.metadata.resource_version
    config_map_version = bed.config_map_version()
    assert runtime.configure(bed.current.spec.cluster_spec("c")) == after
    assert bed.runtime().configure(bed.current.spec.cluster_spec("c")) == after
    assert bed.statefulset().metadata.resource_version == version
    assert bed.config_map_version() == config_map_version


def test_a_scale_changes_no_fingerprint(namespace: str) -> None:
    three = resource("EtcdCluster", namespace)
    assert fingerprint(resource("EtcdCluster", namespace, members=5)) == fingerprint(three)
    assert fingerprint(resource("EtcdCluster", namespace, version="3.7.4")) != fingerprint(three)
    resources = {"resources": {"limits": {"memory": "512Mi"}}}
    assert fingerprint(resource("EtcdCluster", namespace, **resources)) != fingerprint(three)


def test_a_version_off_the_upgrade_path_writes_nothing(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    bed = Bed(api, namespace, resource("EtcdCluster", namespace, version="3.5.10"))
    objects = cluster_objects(bed.current, Membership.steady(placement(bed.current), 3))
    assert api_server.apply(objects).returncode == 0
    bed.make_pod(0, ready=True)
    version = bed.statefulset().metadata.resource_version
    runtime = bed.runtime()
    runtime.configure(bed.current.spec.cluster_spec("c"))

    bed.current = resource("EtcdCluster", namespace, version="3.6.16")
    with pytest.raises(UpgradeRefused, match=r"etcd 3\.5\.10 -> 3\.6\.16: every member must run"):
        runtime.configure(bed.current.spec.cluster_spec("c"))

    assert bed.statefulset().metadata.resource_version == version
    assert bed.statefulset().spec.template.metadata.annotations[VERSION_ANNOTATION] == "3.5.10"
    bed.current = resource("EtcdCluster", namespace, version="3.5.26")
    runtime.configure(bed.current.spec.cluster_spec("c"))  # the stop-over passes
    assert bed.statefulset().spec.template.metadata.annotations[VERSION_ANNOTATION] == "3.5.26"


def test_a_restart_is_an_eviction_the_disruption_budget_allows_or_refuses(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    bed = settled(api_server, api, namespace, "EtcdCluster")
    runtime = bed.runtime()
    for ordinal in range(3):
        bed.make_pod(ordinal, ready=True)

    # No disruption controller has computed the budget's status: the API server refuses.
    with pytest.raises(DisruptionRefused, match="c-1: the PodDisruptionBudget c allows no"):
        runtime.restart(endpoint(1), [])
    assert bed.pods() == {"c-0", "c-1", "c-2"}

    # The status a disruption controller writes for 3 healthy pods and maxUnavailable 1.
    policy = client.PolicyV1Api(api)
    budget = policy.read_namespaced_pod_disruption_budget("c", namespace)
    assert budget.spec.max_unavailable == 1
    status = {
        "status": {
            "observedGeneration": budget.metadata.generation,
            "disruptionsAllowed": 1,
            "currentHealthy": 3,
            "desiredHealthy": 2,
            "expectedPods": 3,
        }
    }
    policy.patch_namespaced_pod_disruption_budget_status("c", namespace, status)

    runtime.restart(endpoint(1), [])

    assert bed.pods() == {"c-0", "c-2"}
    budget = policy.read_namespaced_pod_disruption_budget("c", namespace)
    assert budget.status.disruptions_allowed == 0
    assert set(budget.status.disrupted_pods or {}) == {"c-1"}
    with pytest.raises(DisruptionRefused, match="c-2: the PodDisruptionBudget c allows no"):
        runtime.restart(endpoint(2), [])
    assert bed.pods() == {"c-0", "c-2"}
    runtime.restart(endpoint(1), [])  # already gone: nothing to do
