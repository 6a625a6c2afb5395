"""The --kubeconfig paths, with real Ceph daemons behind and a stub API server in front.

The stub serves just the GETs these commands make (StorageClass, Secret, csi ConfigMap, PVs,
PVCs, nodes), so the Kubernetes client, kubeconfig handling and JSON parsing run for real.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml
from typer.testing import CliRunner

from quorumkeeper.ceph.render import RenderInput, manifests
from quorumkeeper.cli.ceph import ceph_app
from tests.ceph.minicluster import MiniCluster, csi_caps

pytestmark = pytest.mark.ceph

POOL = "k8s"
NS = "ceph-csi-rbd"
runner = CliRunner()


def pv(name: str, image_uuid: str, claim: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "csi": {
                "driver": "rbd.csi.ceph.com",
                "volumeHandle": f"0001-0024-fsid-0000000000000001-{image_uuid}",
                "volumeAttributes": {"pool": POOL, "imageName": f"csi-vol-{image_uuid}"},
            },
            "claimRef": {"namespace": "db", "name": claim},
        },
    }


class StubApi(ThreadingHTTPServer):
    objects: dict[str, Any]


class Handler(BaseHTTPRequestHandler):
    server: StubApi

    def do_GET(self) -> None:
        body = self.server.objects.get(urlparse(self.path).path)
        code = 200 if body is not None else 404
        data = json.dumps(body or {"kind": "Status", "code": 404, "reason": "NotFound"}).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[StubApi, Path]]:
    server = StubApi(("127.0.150.30", 0), Handler)
    server.objects = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "stub",
                "clusters": [
                    {
                        "name": "stub",
                        "cluster": {"server": f"http://127.0.150.30:{server.server_port}"},
                    }
                ],
                "users": [{"name": "stub", "user": {"token": "t"}}],
                "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
            }
        )
    )
    yield server, kubeconfig
    server.shutdown()
    server.server_close()


def test_kubeconfig_paths(
    ceph_cluster: MiniCluster, api: tuple[StubApi, Path], unique: str
) -> None:
    server, kubeconfig = api
    user = ceph_cluster.create_user(f"kube-{unique}", csi_caps(POOL))
    spec = RenderInput(
        monitors=[ceph_cluster.mon_addr],
        pool=POOL,
        cluster_id=ceph_cluster.fsid,
        user=user.name,
        key=user.key,
        namespace=NS,
    )
    cm, secret, sc = manifests(spec)
    secret = {
        **secret,
        "data": {
            k: base64.b64encode(v.encode()).decode() for k, v in secret.pop("stringData").items()
        },
    }
    live, gone = str(uuid.uuid4()), str(uuid.uuid4())
    for u in (live, gone):
        ceph_cluster.rbd(
            "create", "--size", "4M", "--image-feature", "layering", f"{POOL}/csi-vol-{u}"
        )
    ceph_cluster.rbd("lock", "add", f"{POOL}/csi-vol-{live}", "node-a-mount", user=user)
    others = [
        pv(f"other-{i}", i.removeprefix("csi-vol-"), "x")
        for i in ceph_cluster.rbd_json("ls", POOL)
        if i.startswith("csi-vol-") and i not in (f"csi-vol-{live}", f"csi-vol-{gone}")
    ]
    server.objects = {
        f"/apis/storage.k8s.io/v1/storageclasses/{sc['metadata']['name']}": sc,
        f"/api/v1/namespaces/{NS}/secrets/{secret['metadata']['name']}": secret,
        f"/api/v1/namespaces/{NS}/configmaps/ceph-csi-config": cm,
        "/api/v1/persistentvolumes": {"items": [pv("pv-live", live, "data-etcd-0"), *others]},
        "/api/v1/namespaces/db/persistentvolumeclaims": {
            "items": [{"metadata": {"name": "data-etcd-0", "namespace": "db"}}]
        },
        "/api/v1/nodes": {
            "items": [
                {
                    "metadata": {"name": "node-a"},
                    "spec": {
                        "taints": [
                            {
                                "key": "node.kubernetes.io/out-of-service",
                                "value": "nodeshutdown",
                                "effect": "NoExecute",
                            }
                        ]
                    },
                    "status": {
                        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                        "conditions": [{"type": "Ready", "status": "Unknown"}],
                    },
                }
            ]
        },
    }
    from_cluster = ["--kubeconfig", str(kubeconfig), "--storage-class", "ceph-rbd"]

    checked = runner.invoke(ceph_app, ["check", *from_cluster])
    assert checked.exit_code == 0, checked.output
    assert "verdict: ok" in checked.output

    orphans = runner.invoke(ceph_app, ["orphans", *from_cluster, "--json"])
    assert orphans.exit_code == 0, orphans.output
    found = [o["image"] for o in json.loads(orphans.output)["report"]["orphans"]]
    assert found == [f"csi-vol-{gone}"]

    fenced = runner.invoke(
        ceph_app,
        ["locks", *from_cluster, "--namespace", "db", "--selector", "app=etcd", "--fence"],
    )
    assert fenced.exit_code == 0, fenced.output
    assert f"{POOL}/csi-vol-{live}: fenced" in fenced.output
    assert "node-a is down" in fenced.output
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/csi-vol-{live}") == []

    missing_sc = runner.invoke(
        ceph_app, ["check", "--kubeconfig", str(kubeconfig), "--storage-class", "nope"]
    )
    assert missing_sc.exit_code == 2
    assert "storageclass nope not found" in missing_sc.output
