"""The --kubeconfig paths against the test bed's real API server and the real Ceph mini cluster.

The objects are created in the API server as ceph-csi and a cluster operator would leave them:
the rendered StorageClass, Secret and csi ConfigMap, statically provisioned PVs with ceph-csi
volume handles bound to PVCs, and a Node whose kubelet is gone, tainted out-of-service.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from quorumkeeper.cli.ceph import ceph_app
from testbed.cluster import Cluster
from testbed.kube import ApiError, Kube, ns_path
from testbed.procs import wait_for
from tests.ceph.conftest import POOL, CsiStorageClass
from tests.ceph.minicluster import MiniCluster

pytestmark = [pytest.mark.ceph, pytest.mark.testbed]

runner = CliRunner()


def csi_pv(name: str, cluster_id: str, image_uuid: str, claim: dict[str, str]) -> dict[str, Any]:
    """A PV as ceph-csi's provisioner writes it, pre-bound to `claim`."""
    return {
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "4Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "csi": {
                "driver": "rbd.csi.ceph.com",
                "volumeHandle": f"0001-0024-{cluster_id}-0000000000000001-{image_uuid}",
                "fsType": "ext4",
                "volumeAttributes": {
                    "clusterID": cluster_id,
                    "pool": POOL,
                    "imageName": f"csi-vol-{image_uuid}",
                },
            },
            "claimRef": {"namespace": claim["namespace"], "name": claim["name"]},
        },
    }


@pytest.fixture
def created(kube: Kube) -> Iterator[list[str]]:
    """API paths of cluster-scoped objects a test creates; deleted afterwards."""
    paths: list[str] = []
    yield paths
    for path in reversed(paths):
        try:
            kube.delete(path)
        except ApiError as exc:
            if exc.status != 404:
                raise


def test_kubeconfig_paths(
    ceph_cluster: MiniCluster,
    testbed_cluster: Cluster,
    kube: Kube,
    namespace: str,
    created: list[str],
    unique: str,
    csi_storage_class: CsiStorageClass,
) -> None:
    user = csi_storage_class.user

    live, gone = str(uuid.uuid4()), str(uuid.uuid4())
    for u in (live, gone):
        ceph_cluster.rbd(
            "create", "--size", "4M", "--image-feature", "layering", f"{POOL}/csi-vol-{u}"
        )
    ceph_cluster.rbd("lock", "add", f"{POOL}/csi-vol-{live}", "node-a-mount", user=user)

    # Images other tests left in the shared pool get PVs too: only `gone` is an orphan here.
    referenced = {
        pv["spec"]["csi"]["volumeAttributes"].get("imageName")
        for pv in kube.get("/api/v1/persistentvolumes")["items"]
        if pv["spec"].get("csi")
    }
    others = [
        i
        for i in ceph_cluster.rbd_json("ls", POOL)
        if i.startswith("csi-vol-") and i not in referenced | {f"csi-vol-{live}", f"csi-vol-{gone}"}
    ]
    claim = {"namespace": namespace, "name": "data-etcd-0"}
    elsewhere = {"namespace": namespace, "name": "unrelated"}
    pvs = [csi_pv(f"live-{unique}", ceph_cluster.fsid, live, claim)]
    pvs += [
        csi_pv(f"other-{unique}-{n}", ceph_cluster.fsid, i.removeprefix("csi-vol-"), elsewhere)
        for n, i in enumerate(others)
    ]
    for pv in pvs:
        pv["spec"]["storageClassName"] = csi_storage_class.name
        kube.create("/api/v1/persistentvolumes", pv)
        created.append(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
    pvc = {
        "metadata": {"name": "data-etcd-0", "labels": {"app": "etcd"}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": csi_storage_class.name,
            "volumeName": f"live-{unique}",
            "resources": {"requests": {"storage": "4Mi"}},
        },
    }
    kube.create(ns_path(namespace, "persistentvolumeclaims"), pvc)
    pvc_path = ns_path(namespace, "persistentvolumeclaims", "data-etcd-0")
    wait_for(lambda: kube.get(pvc_path)["status"].get("phase") == "Bound", 30, "the PVC to bind")

    # The lock's holder ran on node-a, whose kubelet is gone; an operator tainted it.
    node_a = f"node-a-{unique}"
    kube.create(
        "/api/v1/nodes",
        {
            "metadata": {"name": node_a},
            "spec": {
                "taints": [
                    {
                        "key": "node.kubernetes.io/out-of-service",
                        "value": "nodeshutdown",
                        "effect": "NoExecute",
                    }
                ]
            },
        },
    )
    created.append(f"/api/v1/nodes/{node_a}")
    kube.patch(
        f"/api/v1/nodes/{node_a}/status",
        {
            "status": {
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                "conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeLost"}],
            }
        },
    )
    kubeconfig = str(testbed_cluster.kubeconfig)
    from_cluster = ["--kubeconfig", kubeconfig, "--storage-class", csi_storage_class.name]

    checked = runner.invoke(ceph_app, ["check", *from_cluster])
    assert checked.exit_code == 0, checked.output
    assert "verdict: ok" in checked.output

    orphans = runner.invoke(ceph_app, ["orphans", *from_cluster, "--json"])
    assert orphans.exit_code == 0, orphans.output
    found = [o["image"] for o in json.loads(orphans.output)["report"]["orphans"]]
    assert found == [f"csi-vol-{gone}"]

    fenced = runner.invoke(
        ceph_app,
        ["locks", *from_cluster, "--namespace", namespace, "--selector", "app=etcd", "--fence"],
    )
    assert fenced.exit_code == 0, fenced.output
    assert fenced.output.startswith(f"{POOL}/csi-vol-{live}: fenced\n"), fenced.output
    assert f"{node_a} is down" in fenced.output
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/csi-vol-{live}") == []

    missing_sc = runner.invoke(
        ceph_app, ["check", "--kubeconfig", kubeconfig, "--storage-class", "nope"]
    )
    assert missing_sc.exit_code == 2
    assert "storageclass nope not found" in missing_sc.output
