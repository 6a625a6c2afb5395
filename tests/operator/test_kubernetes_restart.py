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

from dataclasses import dataclass
from typing import Any

import pytest

from quorumkeeper.model import Endpoint, Peer
from quorumkeeper.runtime import ConfigurationRefused, DisruptionRefused
from quorumkeeper.runtimes.kubernetes.objects import Membership, Names, placement
from quorumkeeper.runtimes.kubernetes.render import (
    CONFIG_ANNOTATION,
    SECURITY_ANNOTATION,
    VERSION_ANNOTATION,
    cluster_objects,
    fingerprint,
)
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, parse_resource
from quorumkeeper.runtimes.kubernetes.runtime import KubernetesRuntime
from quorumkeeper.upgrades import UpgradeRefused
from testbed.kube import MERGE_PATCH, Kube, ns_path
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
    """Cluster `c` in `namespace` on the API server, and runtimes on it whose resource is
    `current` (change it to edit the resource)."""

    kube: Kube
    namespace: str
    current: ClusterResource

    def runtime(self) -> KubernetesRuntime:
        """A fresh runtime, as an operator (re)started now makes one."""
        return KubernetesRuntime(self.kube.api_client, lambda: self.current, PASSWORD)

    def configure(self, runtime: KubernetesRuntime) -> str:
        return runtime.configure(self.current.spec.cluster_spec("c"))

    def get(self, resource: str, name: str = "c", group: str = "") -> Obj:
        return self.kube.get(ns_path(self.namespace, resource, name, group))

    def statefulset(self) -> Obj:
        return self.get("statefulsets", group="apps/v1")

    def annotations(self) -> dict[str, str]:
        """The StatefulSet's pod template's annotations."""
        return dict(self.statefulset()["spec"]["template"]["metadata"]["annotations"])

    def config_map(self) -> Obj:
        return self.get("configmaps", Names("c").config_map)

    def make_pod(self, ordinal: int, *, ready: bool) -> None:
        """Pod `c-<ordinal>` from the StatefulSet's template, as its controller would make it
        (with the `default` service account its controller would have made); `ready`: running
        and Ready, as the kubelet would report it."""
        template = self.statefulset()["spec"]["template"]
        claim = {"claimName": f"data-c-{ordinal}"}  # from the volume claim template
        spec = {
            **template["spec"],
            "volumes": [
                *template["spec"].get("volumes", []),
                {"name": "data", "persistentVolumeClaim": claim},
            ],
        }
        metadata = {**template["metadata"], "name": f"c-{ordinal}"}
        self.kube.ensure(
            ns_path(self.namespace, "serviceaccounts"), {"metadata": {"name": "default"}}
        )
        self.kube.create(ns_path(self.namespace, "pods"), {"metadata": metadata, "spec": spec})
        if ready:
            status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            path = ns_path(self.namespace, "pods", f"c-{ordinal}") + "/status"
            self.kube.patch(path, {"status": status}, MERGE_PATCH)

    def pods(self) -> set[str]:
        pods = self.get("pods", "")["items"]
        return {p["metadata"]["name"] for p in pods if "deletionTimestamp" not in p["metadata"]}


def settled(api_server: ApiServer, namespace: str, kind: str, **spec: Any) -> Bed:
    """Cluster `c` rendered as a settled 3-member cluster (`Membership.steady`)."""
    bed = Bed(api_server.kube, namespace, resource(kind, namespace, **spec))
    objects = cluster_objects(bed.current, Membership.steady(placement(bed.current), 3), PASSWORD)
    applied = api_server.apply(objects)
    assert applied.returncode == 0, applied.stderr
    return bed


def endpoint(ordinal: int) -> Endpoint:
    return Endpoint(f"c-{ordinal}", ordinal, f"c-{ordinal}")


PEERS = [Peer(endpoint(n), str(n + 1)) for n in range(3)]
"""The members that have joined, as the reconciler hands them to `restart`."""


@pytest.mark.parametrize("kind", ["EtcdCluster", "ZookeeperCluster"])
def test_configure_writes_the_new_template_and_settings_once_and_pods_read_back_theirs(
    api_server: ApiServer, namespace: str, kind: str
) -> None:
    bed = settled(api_server, namespace, kind)
    before = fingerprint(bed.current)
    assert bed.configure(bed.runtime()) == before
    assert bed.annotations()[CONFIG_ANNOTATION] == before
    bed.make_pod(0, ready=False)
    settings_keys = ("zoo.cfg", "logback.xml")
    joins = {k: v for k, v in bed.config_map()["data"].items() if k not in settings_keys}

    # The settings change: a restart-worthy configuration, written before any pod restarts.
    settings = {"etcd": {"snapshot_count": 5000}} if kind == "EtcdCluster" else {}
    settings = settings or {"zookeeper": {"max_client_cnxns": 100}}
    bed.current = resource(kind, namespace, **settings)
    runtime = bed.runtime()
    after = bed.configure(runtime)

    assert after == fingerprint(bed.current) and after != before
    statefulset = bed.statefulset()
    template = statefulset["spec"]["template"]
    assert template["metadata"]["annotations"][CONFIG_ANNOTATION] == after
    assert template["metadata"]["annotations"][VERSION_ANNOTATION] == bed.current.spec.version
    assert statefulset["spec"]["replicas"] == 3
    config_map = bed.config_map()
    if kind == "EtcdCluster":
        assert "--snapshot-count=5000" in template["spec"]["containers"][0]["args"]
    else:
        assert "maxClientCnxns=100\n" in config_map["data"]["zoo.cfg"]
    kept = {k: v for k, v in config_map["data"].items() if k not in settings_keys}
    assert kept == joins, "what the joins set stays"
    bed.make_pod(1, ready=False)
    three = [endpoint(0), endpoint(1), endpoint(2)]
    slots = runtime.observe(three, set(), quorum=True, judge=False)
    assert [s.config for s in slots] == [before, after, None]  # c-2 has no pod

    # Idempotent: the same resource again, by this runtime or a fresh one, writes nothing.
    assert bed.configure(runtime) == after
    assert bed.configure(bed.runtime()) == after
    versions = (
        statefulset["metadata"]["resourceVersion"],
        config_map["metadata"]["resourceVersion"],
    )
    now = (
        bed.statefulset()["metadata"]["resourceVersion"],
        bed.config_map()["metadata"]["resourceVersion"],
    )
    assert now == versions


def test_a_scale_changes_no_fingerprint(namespace: str) -> None:
    three = resource("EtcdCluster", namespace)
    assert fingerprint(resource("EtcdCluster", namespace, members=5)) == fingerprint(three)
    assert fingerprint(resource("EtcdCluster", namespace, version="3.7.4")) != fingerprint(three)
    resources = {"resources": {"limits": {"memory": "512Mi"}}}
    assert fingerprint(resource("EtcdCluster", namespace, **resources)) != fingerprint(three)


def test_a_version_off_the_upgrade_path_writes_nothing(
    api_server: ApiServer, namespace: str
) -> None:
    bed = settled(api_server, namespace, "EtcdCluster", version="3.5.10")
    bed.make_pod(0, ready=True)
    written = bed.statefulset()["metadata"]["resourceVersion"]
    runtime = bed.runtime()
    bed.configure(runtime)

    bed.current = resource("EtcdCluster", namespace, version="3.6.16")
    with pytest.raises(UpgradeRefused, match=r"etcd 3\.5\.10 -> 3\.6\.16: every member must run"):
        bed.configure(runtime)

    assert bed.statefulset()["metadata"]["resourceVersion"] == written
    assert bed.annotations()[VERSION_ANNOTATION] == "3.5.10"
    bed.current = resource("EtcdCluster", namespace, version="3.5.26")
    bed.configure(runtime)  # the stop-over passes
    assert bed.annotations()[VERSION_ANNOTATION] == "3.5.26"


def test_a_restart_is_an_eviction_the_disruption_budget_allows_or_refuses(
    api_server: ApiServer, namespace: str
) -> None:
    bed = settled(api_server, namespace, "EtcdCluster")
    # The last join leaves the budget sized to the 2 voters it started from: no disruption.
    budget_path = ns_path(namespace, "poddisruptionbudgets", "c", "policy/v1")
    api_server.kube.patch(budget_path, {"spec": {"maxUnavailable": 0}}, MERGE_PATCH)
    runtime = bed.runtime()
    for ordinal in range(3):
        bed.make_pod(ordinal, ready=True)
    runtime.limit_disruptions(3, 3)  # what the reconciler does before every step

    # No disruption controller has computed the budget's status: the API server refuses.
    with pytest.raises(DisruptionRefused, match="c-1: the PodDisruptionBudget c allows no"):
        runtime.restart(endpoint(1), PEERS)
    assert bed.pods() == {"c-0", "c-1", "c-2"}

    # The budget sized for 3 voters lets one be disrupted. The status a disruption controller
    # then writes for 3 healthy pods:
    budget = bed.get("poddisruptionbudgets", group="policy/v1")
    assert budget["spec"]["maxUnavailable"] == 1
    status = {
        "observedGeneration": budget["metadata"]["generation"],
        "disruptionsAllowed": 1,
        "currentHealthy": 3,
        "desiredHealthy": 2,
        "expectedPods": 3,
    }
    api_server.kube.patch(budget_path + "/status", {"status": status}, MERGE_PATCH)

    runtime.restart(endpoint(1), PEERS)

    assert bed.pods() == {"c-0", "c-2"}
    budget = bed.get("poddisruptionbudgets", group="policy/v1")
    assert budget["status"]["disruptionsAllowed"] == 0
    assert set(budget["status"]["disruptedPods"]) == {"c-1"}
    with pytest.raises(DisruptionRefused, match="c-2: the PodDisruptionBudget c allows no"):
        runtime.restart(endpoint(2), PEERS)
    assert bed.pods() == {"c-0", "c-2"}
    runtime.restart(endpoint(1), PEERS)  # already gone: nothing to do


def test_tls_or_auth_other_than_the_cluster_was_created_with_is_refused_writing_nothing(
    api_server: ApiServer, namespace: str
) -> None:
    bed = settled(api_server, namespace, "EtcdCluster", tls=False, auth=False)
    template = bed.annotations()
    assert bed.statefulset()["metadata"]["annotations"][SECURITY_ANNOTATION] == (
        "tls=false,auth=false"
    )
    bed.current = resource("EtcdCluster", namespace)  # the defaults: tls and auth on
    with pytest.raises(ConfigurationRefused) as refused:
        bed.configure(bed.runtime())
    assert str(refused.value) == (
        "spec.tls/spec.auth: tls=true, auth=true; rule: a cluster keeps the TLS and "
        "authentication it was created with (tls=false, auth=false), since its members know "
        "each other by https or http peer URLs; fix: set spec.tls: false and spec.auth: false"
    )
    assert bed.annotations() == template

    # A StatefulSet written before `tls` and `auth` existed runs in plain text: the defaults
    # that a resource stored then now reads as are refused too, so no member restarts into TLS.
    path = ns_path(namespace, "statefulsets", "c", "apps/v1")
    bed.kube.patch(path, {"metadata": {"annotations": {SECURITY_ANNOTATION: None}}}, MERGE_PATCH)
    with pytest.raises(ConfigurationRefused):
        bed.configure(bed.runtime())
    bed.current = resource("EtcdCluster", namespace, tls=False, auth=False)
    assert bed.configure(bed.runtime()) == template[CONFIG_ANNOTATION]
