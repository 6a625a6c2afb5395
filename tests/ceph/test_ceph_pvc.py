"""An etcd member's data on a ceph-csi RBD PVC follows its pod to another node after node loss.

The Kubernetes version of test_ceph_data_path: the test bed's ceph-csi stand-in provisions the
image, and its CSI node plugin stand-in stages it, when node A's kubelet asks, as that node's own
Ceph client (lock, rbd-fuse, loop device, ext4; see testbed/cephcsi.py and testbed/csinode.py).
Killing node A kills the member and node A's Ceph clients but leaves their lock on the image, so
the StatefulSet's replacement pod can't mount on node B until `quorumkeeper ceph locks
--kubeconfig ... --fence` blocklists node A's clients and breaks the lock.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quorumkeeper.cli.ceph import ceph_app
from quorumkeeper.model import Endpoint
from quorumkeeper.stores.base import StoreError, StoreUnavailable
from quorumkeeper.stores.etcd.client import EtcdStore
from testbed.cluster import Cluster
from testbed.kube import Kube, Obj, condition_true, ns_path
from testbed.network import node_ip
from testbed.procs import wait_for
from tests.ceph.fixtures import POOL, CsiStorageClass
from tests.ceph.minicluster import MiniCluster
from tests.testbed.test_testbed import apply, ready_pods

pytestmark = [
    pytest.mark.ceph,
    pytest.mark.testbed,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for losetup and mount"),
    pytest.mark.skipif(shutil.which("rbd-fuse") is None, reason="rbd-fuse not installed"),
]

DATA = "/var/lib/etcd"
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
runner = CliRunner()


def etcd_statefulset(storage_class: str) -> list[Obj]:
    """A one-member etcd StatefulSet whose data directory is on a PVC of `storage_class`."""
    labels = {"app": "etcd"}
    env = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    container = {
        "name": "etcd",
        "image": "quay.io/coreos/etcd:v3.7.3",
        "command": ["etcd"],
        "args": [
            "--name=$(POD_NAME)",
            f"--data-dir={DATA}/member-data",  # etcd creates it private, as it insists
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://$(POD_IP):2379",
            "--listen-peer-urls=http://0.0.0.0:2380",
            "--initial-advertise-peer-urls=http://$(POD_IP):2380",
            "--initial-cluster=$(POD_NAME)=http://$(POD_IP):2380",
        ],
        "env": env,
        "readinessProbe": {"httpGet": {"path": "/health", "port": 2379}, "periodSeconds": 1},
        "volumeMounts": [{"name": "data", "mountPath": DATA}],
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "etcd"},
        "spec": {"clusterIP": "None", "selector": labels, "ports": [{"port": 2379}]},
    }
    sts = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "etcd"},
        "spec": {
            "serviceName": "etcd",
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"terminationGracePeriodSeconds": 10, "containers": [container]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "storageClassName": storage_class,
                        "resources": {"requests": {"storage": "256Mi"}},
                    },
                }
            ],
        },
    }
    return [service, sts]


class Writer(threading.Thread):
    """Puts keys one after another and remembers those etcd acknowledged."""

    def __init__(self, store: EtcdStore) -> None:
        super().__init__(daemon=True)
        self.store, self.stopping = store, threading.Event()
        self.acknowledged: dict[str, str] = {}

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            key, value = f"pvc-test/{n:05d}", uuid.uuid4().hex
            try:
                self.store.write_probe(key, value)
            except StoreError:
                continue
            self.acknowledged[key] = value
            n += 1


def lock_holders(ceph_cluster: MiniCluster, image: str) -> list[str]:
    return [lk["address"] for lk in ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}")]


def volume_mounts(cluster: Cluster) -> list[str]:
    """Mount points of RBD volumes (ext4 on a loop device, rbd-fuse) on any node."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        fs_type, source = fields[fields.index("-") + 1 : fields.index("-") + 3]
        rbd = source.startswith("/dev/loop") or fs_type == "fuse.rbd-fuse"
        if rbd and fields[4].startswith(f"{cluster.state_dir}/"):
            found.append(fields[4])
    return found


def loop_backing_files() -> str:
    return subprocess.run(
        ["losetup", "--list", "--noheadings", "--output", "BACK-FILE"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout


def test_member_data_follows_its_pvc_to_another_node_after_fencing(
    ceph_cluster: MiniCluster,
    testbed_cluster: Cluster,
    kube: Kube,
    namespace: str,
    csi_storage_class: CsiStorageClass,
) -> None:
    apply(testbed_cluster, namespace, etcd_statefulset(csi_storage_class.name))
    (pod,) = wait_for(lambda: ready_pods(kube, namespace, "etcd", 1), 120, "etcd-0 Ready")
    node_a = pod["spec"]["nodeName"]
    ip_a = node_ip(testbed_cluster.nodes.index(node_a) + 1)

    # The stand-in provisioned the image the ceph-csi way and node A's client holds its lock.
    pvc = kube.get(ns_path(namespace, "persistentvolumeclaims", "data-etcd-0"))
    csi = kube.get(f"/api/v1/persistentvolumes/{pvc['spec']['volumeName']}")["spec"]["csi"]
    image = csi["volumeAttributes"]["imageName"]
    assert image == f"csi-vol-{pvc['metadata']['uid']}"
    assert csi["volumeHandle"].startswith(f"0001-0024-{ceph_cluster.fsid}-")
    assert csi["volumeHandle"].endswith(pvc["metadata"]["uid"])
    (holder_a,) = lock_holders(ceph_cluster, image)
    assert holder_a.startswith(f"{ip_a}:")

    # Write through the member, and keep writing while node A dies.
    store = EtcdStore([Endpoint(name="etcd-0", ordinal=0, address=pod["status"]["podIP"])])
    writer = Writer(store)
    writer.start()
    try:
        wait_for(lambda: len(writer.acknowledged) >= 50, 60, "50 acknowledged writes")
        testbed_cluster.stop_node(node_a, kill=True)
        lost_at = time.monotonic()
    finally:
        writer.stopping.set()
        writer.join()
        store.close()
    assert len(writer.acknowledged) >= 50

    try:
        wait_for(lambda: not testbed_cluster.node_ready(node_a), 60, f"{node_a} NotReady")
        assert lock_holders(ceph_cluster, image) == [holder_a]  # the dead node's lock stays
        testbed_cluster.kubectl(
            "taint", "nodes", node_a, f"{OUT_OF_SERVICE}=nodeshutdown:NoExecute"
        )

        # The controllers evict and force-delete the pod; its replacement can't mount on node B.
        def replacement() -> Obj | None:
            pods = kube.get(ns_path(namespace, "pods"), labelSelector="app=etcd")["items"]
            return next(
                (
                    p
                    for p in pods
                    if p["metadata"]["uid"] != pod["metadata"]["uid"] and p["spec"].get("nodeName")
                ),
                None,
            )

        new = wait_for(replacement, 120, "the replacement pod to be scheduled")
        node_b = new["spec"]["nodeName"]
        assert node_b != node_a
        path = ns_path(namespace, "pods", new["metadata"]["name"])

        def failed_mount() -> Obj | None:
            events = kube.get(
                ns_path(namespace, "events"),
                fieldSelector=f"involvedObject.uid={new['metadata']['uid']},reason=FailedMount",
            )["items"]
            return events[0] if events else None

        event = wait_for(failed_mount, 60, "a FailedMount event on the replacement pod")
        print(f"node loss to FailedMount on {node_b}: {time.monotonic() - lost_at:.1f}s")
        assert f"rbd image {POOL}/{image} is locked by" in event["message"]
        assert f"at {holder_a}" in event["message"]
        assert event["source"]["host"] == node_b
        assert kube.get(path)["status"]["phase"] == "Pending"

        fenced = runner.invoke(
            ceph_app,
            [
                "locks",
                "--kubeconfig",
                str(testbed_cluster.kubeconfig),
                "--storage-class",
                csi_storage_class.name,
                "--namespace",
                namespace,
                "--selector",
                "app=etcd",
                "--fence",
            ],
        )
        assert fenced.exit_code == 0, fenced.output
        assert fenced.output.startswith(f"{POOL}/{image}: fenced\n"), fenced.output
        assert f"{node_a} is down" in fenced.output
        blocklist = ceph_cluster.mon_command({"prefix": "osd blocklist ls", "format": "json"})
        assert holder_a in blocklist
        fenced_at = time.monotonic()

        def moved() -> Obj | None:
            pod = kube.get(path)
            return pod if condition_true(pod, "Ready") else None

        moved_pod = wait_for(moved, 120, f"etcd-0 Ready on {node_b}")
        print(f"fence to Ready on {node_b}: {time.monotonic() - fenced_at:.1f}s")
        assert moved_pod["metadata"]["uid"] == new["metadata"]["uid"]
        (holder_b,) = lock_holders(ceph_cluster, image)
        ip_b = node_ip(testbed_cluster.nodes.index(node_b) + 1)
        assert holder_b.startswith(f"{ip_b}:")

        store = EtcdStore(
            [Endpoint(name="etcd-0", ordinal=0, address=moved_pod["status"]["podIP"])]
        )

        def read_back() -> dict[str, str | None] | None:
            """Every acknowledged key as the moved member serves it; None while a read times
            out (Ready comes from the probe before a loaded member answers every read)."""
            try:
                return {key: store.read(key) for key in writer.acknowledged}
            except StoreUnavailable:
                return None

        try:
            found = wait_for(read_back, 60, "the moved member to serve its data")
        finally:
            store.close()
        assert found == writer.acknowledged
    finally:
        testbed_cluster.kubectl("taint", "nodes", node_a, f"{OUT_OF_SERVICE}-", check=False)
        testbed_cluster.start_node(node_a)
        testbed_cluster.wait_nodes_ready([node_a], 60)

    # Deleting the pod unstages the volume on node B: unmounted, detached and unlocked; node A's
    # leftovers were cleared when it came back.
    deleted_at = time.monotonic()
    testbed_cluster.kubectl("delete", "-n", namespace, "statefulset", "etcd", "--wait=false")
    wait_for(lambda: not kube.get(ns_path(namespace, "pods"))["items"], 60, "etcd-0 to be deleted")
    # The kubelet lets a pod go once its volumes are unpublished; unstaging (the unmount of the
    # device and the unlock) follows from its volume manager's next pass, so it is polled.
    wait_for(lambda: lock_holders(ceph_cluster, image) == [], 60, f"no lock on {image}")
    print(f"delete to unstaged and unlocked: {time.monotonic() - deleted_at:.1f}s")
    wait_for(lambda: volume_mounts(testbed_cluster) == [], 30, "no volume mounted on any node")
    wait_for(lambda: image not in loop_backing_files(), 30, f"no loop device on {image}")

    # Reclaim policy Delete: the stand-in removes the image with the PV.
    kube.delete(ns_path(namespace, "persistentvolumeclaims", "data-etcd-0"))
    wait_for(lambda: image not in ceph_cluster.rbd_json("ls", POOL), 60, f"{image} removed")
