"""A member pod that can't mount its RBD volume because a dead node's client holds the image's
lock: reported in the member's status, as the Degraded reason, and in one Warning Event on the
cluster resource carrying the `quorumkeeper ceph locks ... --fence` command, which the CLI's own
parser accepts as printed.

The FailedMount Event is written here as the kubelet writes it (core/v1, source kubelet and the
node, reason FailedMount, type Warning) on the real API server; its message is the one the test
bed's nodes produce: kubelet's `MountVolume.MountDevice failed for volume "<pv>" : rpc error:
code = Internal desc = ` around the CSI node plugin's error, which `testbed/rbd_holder.py` words
`rbd image <pool>/<image> is locked by <client> (cookie '<cookie>') at <address>` and
`tests/ceph/test_ceph_pvc.py` asserts on a real node after node loss. Nothing runs a real kubelet
or Ceph here (the real-node test bed is the end-to-end check); the store is the in-memory fake
of `tests/fakes.py`, a stand-in for the members that would answer.
"""

from __future__ import annotations

import os
import shlex
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import typer
from kubernetes import client

from quorumkeeper.cli.app import app
from quorumkeeper.model import JoinRules
from quorumkeeper.reconciler import Reconciler
from quorumkeeper.runtimes.kubernetes.objects import Membership, placement
from quorumkeeper.runtimes.kubernetes.render import cluster_objects
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource
from quorumkeeper.runtimes.kubernetes.runtime import KubernetesRuntime, kubernetes_rules
from quorumkeeper.runtimes.kubernetes.volume_locks import REASON, parse_lock
from quorumkeeper.spec import ClusterSpec
from testbed.kube import Kube, ns_path
from tests.fakes import FakeSource, FakeStore, ListSink, fake_backend
from tests.operator.conftest import ApiServer
from tests.operator.members import NAME, etcd_resource, put_member, rfc3339

pytestmark = pytest.mark.operator

POOL = "k8s"
IMAGE = "csi-vol-7f3c1a52-9b1e-4c55-a1d0-3e6f0b2c8d41"
HOLDER = "10.88.0.11:0/2947761322"
HOLDERS = f"client.4161 (cookie 'csi-node-n1') at {HOLDER}"
LOCKED = (
    'MountVolume.MountDevice failed for volume "pvc-0b83d2a6-571c-45f1-b006-1419d1dd50b2" : '
    f"rpc error: code = Internal desc = rbd image {POOL}/{IMAGE} is locked by {HOLDERS}"
)
TIMED_OUT = (
    "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[data]: "
    "timed out waiting for the condition"
)
NODE = "n2"
CONTAINER = {"name": "etcd", "restartCount": 0, "image": "etcd", "imageID": ""}
STORAGE_CLASS = "ceph-rbd"


def test_the_lock_is_read_from_the_kubelets_messages() -> None:
    assert parse_lock(LOCKED) == (POOL, IMAGE, HOLDERS, (HOLDER,))
    # Kubernetes' in-tree RBD plugin names neither pool nor holder.
    assert parse_lock("rbd: image kubernetes-dynamic-pvc-1a2b is locked by other nodes") == (
        None,
        "kubernetes-dynamic-pvc-1a2b",
        "other nodes",
        (),
    )
    assert parse_lock(TIMED_OUT) is None


def kubelet_event(kube: Kube, pod: dict[str, Any], message: str, when: datetime) -> None:
    """A FailedMount Event on `pod` as the kubelet on `NODE` posts it."""
    metadata = pod["metadata"]
    namespace = metadata["namespace"]
    kube.create(
        ns_path(namespace, "events"),
        {
            "metadata": {"generateName": f"{metadata['name']}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": metadata["name"],
                "namespace": namespace,
                "uid": metadata["uid"],
                "resourceVersion": metadata["resourceVersion"],
            },
            "reason": "FailedMount",
            "message": message,
            "type": "Warning",
            "source": {"component": "kubelet", "host": NODE},
            "reportingComponent": "kubelet",
            "reportingInstance": NODE,
            "firstTimestamp": rfc3339(when),
            "lastTimestamp": rfc3339(when),
            "count": 1,
        },
    )


def resource_events(kube: Kube, resource: ClusterResource) -> list[dict[str, Any]]:
    selector = f"involvedObject.uid={resource.uid},reason={REASON}"
    found: list[dict[str, Any]] = kube.get(
        ns_path(resource.namespace, "events"), fieldSelector=selector
    )["items"]
    return found


def cli_parameters(command: str) -> tuple[list[str], dict[str, Any]]:
    """The command's words as a shell splits and expands them, and the parameters the CLI's own
    parser gives `ceph locks` for them (a UsageError if it refuses them)."""
    argv = [os.path.expanduser(word) for word in shlex.split(command)]
    root = typer.main.get_command(app)
    ceph = root.get_command(typer.Context(root), argv[1])  # type: ignore[attr-defined]
    locks = ceph.get_command(typer.Context(ceph), argv[2])
    return argv, locks.make_context(" ".join(argv[:3]), argv[3:]).params


@pytest.fixture
def locked_cluster(
    api_server: ApiServer, api: client.ApiClient, namespace: str
) -> tuple[ClusterResource, KubernetesRuntime, FakeStore, Reconciler]:
    """Three members: c-0 and c-1 run, c-2's pod waits on node n2 for its volume, which a dead
    node's client holds locked; the kubelet has said so (after an unrelated mount time-out)."""
    kube = api_server.kube
    kube.create(ns_path(namespace, "serviceaccounts"), {"metadata": {"name": "default"}})
    resource = etcd_resource(namespace, 3)
    objects = cluster_objects(resource, Membership.steady(placement(resource), 3))
    result = api_server.apply(objects)
    assert result.returncode == 0, result.stderr
    runtime = KubernetesRuntime(api, lambda: resource)
    store = FakeStore()
    for ordinal in range(3):
        pod = put_member(
            kube,
            resource,
            ordinal,
            running=ordinal < 2,
            node=NODE if ordinal == 2 else None,
            storage_class=STORAGE_CLASS,
        )
        address = runtime.placement.endpoint(ordinal).address
        store.enlist(address, voter=True, started=True)
        if ordinal < 2:
            store.process_started(address, bootstrap=False)
    now = datetime.now(UTC)
    kubelet_event(kube, pod, TIMED_OUT, now - timedelta(seconds=30))
    kubelet_event(kube, pod, LOCKED, now - timedelta(seconds=60))
    spec = ClusterSpec.model_validate({"name": NAME, "store": "etcd", "members": 3})
    backend = fake_backend(store, kubernetes_rules(JoinRules()))
    reconciler = Reconciler(FakeSource(spec), backend, runtime, ListSink(), hold_store=True)
    return resource, runtime, store, reconciler


def test_a_volume_locked_by_a_dead_client_is_reported_with_the_fence_command(
    api_server: ApiServer,
    locked_cluster: tuple[ClusterResource, KubernetesRuntime, FakeStore, Reconciler],
) -> None:
    resource, _, store, reconciler = locked_cluster

    reconciler.run_once()
    reconciler.run_once()  # a second pass finds the Event made and adds none

    status = reconciler.last_status
    assert status is not None
    member = next(m for m in status.members if m.name == f"{NAME}-2")
    assert member.blocked_reason == REASON
    command = (
        f"quorumkeeper ceph locks --kubeconfig ~/.kube/config --storage-class {STORAGE_CLASS} "
        f"--pool {POOL} --image {IMAGE} --fence"
    )
    assert member.blocked_by == (
        f"pod {NAME}-2 can't mount its volume on node {NODE}: RBD image {POOL}/{IMAGE} is "
        f"locked by {HOLDERS}; once the holder's node is down, fence it with: {command}"
    )
    degraded = next(c for c in status.conditions if c.type.value == "Degraded")
    assert (degraded.status, degraded.reason) == ("True", REASON)
    assert degraded.message == f"{NAME}-2: {member.blocked_by}"
    assert not [c for c in store.changes if c[0] == "remove"]  # blocked, not data lost

    (event,) = resource_events(api_server.kube, resource)
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "EtcdCluster"
    assert event["involvedObject"]["name"] == NAME
    assert event["message"] == member.blocked_by

    printed = event["message"].split("fence it with: ", 1)[1]
    argv, parameters = cli_parameters(printed)  # the command as the Event prints it
    assert argv[:3] == ["quorumkeeper", "ceph", "locks"]
    assert parameters["kubeconfig"] == Path.home() / ".kube" / "config"
    assert parameters["storage_class"] == STORAGE_CLASS
    assert parameters["pool"] == POOL
    assert parameters["image"] == [IMAGE]
    assert parameters["fence"] is True


@pytest.mark.parametrize(
    "container",
    [
        {"state": {"running": {"startedAt": "2026-12-01T05:00:00Z"}}, "ready": True},
        {
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {
                "terminated": {
                    "exitCode": 1,
                    "startedAt": "2026-12-01T05:00:00Z",
                    "finishedAt": "2026-12-01T05:00:01Z",
                }
            },
            "ready": False,
        },
    ],
    ids=["running", "crash-looping"],
)
def test_a_pod_that_has_mounted_its_volume_reports_no_lock(
    api_server: ApiServer,
    locked_cluster: tuple[ClusterResource, KubernetesRuntime, FakeStore, Reconciler],
    container: dict[str, Any],
) -> None:
    """The lock Event stays after the volume was mounted; a container that has started shows
    the volume is mounted, so it is no longer reported."""
    resource, runtime, _, _ = locked_cluster
    pod = ns_path(resource.namespace, "pods", f"{NAME}-2")
    statuses = [{**CONTAINER, **container}]
    api_server.kube.patch(pod + "/status", {"status": {"containerStatuses": statuses}})
    endpoints = [runtime.placement.endpoint(n) for n in range(3)]

    slots = runtime.observe(endpoints, set(endpoints[:2]), quorum=True, judge=True)

    assert [s.blocked_by for s in slots] == [None, None, None]
    assert resource_events(api_server.kube, resource) == []
