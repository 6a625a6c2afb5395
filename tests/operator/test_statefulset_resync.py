"""The StatefulSet controller woken again when it has seen the replicas that cover a member but
made no pod for it (on the test bed its sync once stopped for minutes after a failed stale-cache
check). On the real API server with no controller manager: the test writes the StatefulSet's
status as its controller would."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from kubernetes import client

from quorumkeeper.model import Peer
from quorumkeeper.runtimes.kubernetes.objects import Membership, placement
from quorumkeeper.runtimes.kubernetes.render import cluster_objects
from quorumkeeper.runtimes.kubernetes.runtime import RESYNC, RESYNC_SECONDS, KubernetesRuntime
from testbed.kube import ns_path
from tests.operator.conftest import ApiServer
from tests.operator.members import NAME, etcd_resource, put_member

pytestmark = pytest.mark.operator


def test_a_covered_member_without_a_pod_wakes_the_controller_at_most_every_few_seconds(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> None:
    kube = api_server.kube
    kube.create(ns_path(namespace, "serviceaccounts"), {"metadata": {"name": "default"}})
    resource = etcd_resource(namespace, 3)
    result = api_server.apply(cluster_objects(resource, Membership.steady(placement(resource), 3)))
    assert result.returncode == 0, result.stderr
    for ordinal in (0, 1):
        put_member(kube, resource, ordinal)
    path = ns_path(namespace, "statefulsets", NAME, group="apps/v1")
    apps = client.AppsV1Api(api)

    def controller_made(pods: int) -> None:
        generation = kube.get(path)["metadata"]["generation"]
        status = {"observedGeneration": generation, "replicas": pods, "availableReplicas": 0}
        apps.patch_namespaced_stateful_set_status(NAME, namespace, {"status": status})

    runtime = KubernetesRuntime(api, lambda: resource)
    peers = [Peer(runtime.placement.endpoint(n), f"{n + 1:x}") for n in range(3)]

    def start_third() -> str | None:
        runtime.start(runtime.placement.endpoint(2), peers, bootstrap=False)
        annotations: dict[str, str] = kube.get(path)["metadata"].get("annotations") or {}
        return annotations.get(RESYNC)

    assert start_third() is None, "the controller has not seen the replicas yet: no wake-up"
    controller_made(2)
    woken = start_third()
    assert woken is not None
    assert (datetime.now(UTC) - datetime.fromisoformat(woken)).total_seconds() < RESYNC_SECONDS
    assert start_third() == woken, "woken again within RESYNC_SECONDS"

    put_member(kube, resource, 2)  # the pod exists: nothing to wake
    kube.patch(path, {"metadata": {"annotations": {RESYNC: None}}})
    assert start_third() is None
