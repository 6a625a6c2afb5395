"""The --kubeconfig paths against the test bed's real API server and the real Ceph mini cluster.

The objects are created in the API server as ceph-csi and a cluster operator would leave them:
the rendered StorageClass, Secret and csi ConfigMap, statically provisioned PVs with ceph-csi
volume handles bound to PVCs, and a Node whose kubelet is gone, tainted out-of-service.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from quorumkeeper.cli.ceph import ceph_app
from testbed.cluster import Cluster
from testbed.kube import ApiError, Kube, ns_path
from testbed.procs import wait_for
from tests.ceph.fixtures import POOL, CsiStorageClass
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


def csi_deployment(instance: str) -> dict[str, Any]:
    """ceph-csi's RBD provisioner Deployment, reduced to what names its instance."""
    labels = {"app": "csi-rbdplugin-provisioner"}
    return {
        "metadata": {"name": "csi-rbdplugin-provisioner"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "csi-rbdplugin",
                            "image": "quay.io/cephcsi/cephcsi:v3.12.0",
                            "args": [
                                "--type=rbd",
                                "--controllerserver=true",
                                f"--instanceid={instance}",
                            ],
                        }
                    ]
                },
            },
        },
    }


def service_account_kubeconfig(kube: Kube, admin: Path, namespace: str, tmp_path: Path) -> Path:
    """A kubeconfig for a fresh ServiceAccount with no RBAC grants beyond the defaults."""
    kube.create(ns_path(namespace, "serviceaccounts"), {"metadata": {"name": "reader"}})
    token = kube.create(
        ns_path(namespace, "serviceaccounts", "reader") + "/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )["status"]["token"]
    config = yaml.safe_load(admin.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    path = tmp_path / "reader.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    return path


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
    tmp_path: Path,
) -> None:
    user = csi_storage_class.user

    live, gone = str(uuid.uuid4()), str(uuid.uuid4())
    for u in (live, gone):
        ceph_cluster.rbd(
            "create", "--size", "4M", "--image-feature", "layering", f"{POOL}/csi-vol-{u}"
        )
    ceph_cluster.rbd("lock", "add", f"{POOL}/csi-vol-{live}", "node-a-mount", user=user)

    # ceph-csi's journal names both as this cluster's, under the instance id its Deployment
    # gives (replicas 0: only its flags matter here). Other tests' images in the shared pool are
    # in no journal of this instance, so they are never candidates.
    instance = f"kube-{unique}"
    for u in (live, gone):
        ceph_cluster.csi_journal_add(POOL, instance, f"pv-{u}", u, f"csi-vol-{u}")
    kube.create(f"/apis/apps/v1/namespaces/{namespace}/deployments", csi_deployment(instance))
    claim = {"namespace": namespace, "name": "data-etcd-0"}
    pvs = [csi_pv(f"live-{unique}", ceph_cluster.fsid, live, claim)]
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
    ceph_flags = ["-m", ceph_cluster.mon_addr, "--user", user.name, "--key", user.key]
    ceph_flags += ["--pool", POOL]

    checked = runner.invoke(ceph_app, ["check", *from_cluster])
    assert checked.exit_code == 0, checked.output
    assert "verdict: ok" in checked.output

    orphans = runner.invoke(ceph_app, ["orphans", *from_cluster, "--json"])
    assert orphans.exit_code == 0, orphans.output
    plan = json.loads(orphans.output)["plan"]
    assert plan["instance_id"] == instance
    found = [v["image"] for v in plan["images"] if v["action"] == "trash"]
    assert found == [f"csi-vol-{gone}"]
    verdicts = {v["image"]: v for v in plan["images"]}
    assert verdicts[f"csi-vol-{live}"]["reasons"][0] == f"referenced by PV live-{unique}"

    # A user the API server won't let list every PV gets no say over what is unreferenced.
    reader = service_account_kubeconfig(kube, testbed_cluster.kubeconfig, namespace, tmp_path)
    limited = runner.invoke(
        ceph_app,
        [
            "orphans",
            *ceph_flags,
            "--instance-id",
            instance,
            "--kubeconfig",
            str(reader),
            "--delete",
            "--yes",
        ],
    )
    assert limited.exit_code == 2, limited.output
    assert "may not list persistentvolumes" in " ".join(limited.output.split())
    assert f"csi-vol-{gone}" in ceph_cluster.rbd_json("ls", POOL)

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
