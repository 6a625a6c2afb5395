"""How a ZooKeeper pod takes renewed certificates and a CA rotation's phases without a restart:
the rendered pod runs a sidecar beside the server with TLS (and none without), its template
carries no certificate generation (etcd's still does, and restarts), and the sidecar, run by
real bash on a folder laid out as the kubelet lays out a Secret volume, brings a swapped
Secret's keystore and trust bundle into the server's folder by a rename."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from quorumkeeper.runtimes.kubernetes.objects import TLS_MOUNT, TRUST_KEY
from quorumkeeper.runtimes.kubernetes.render import TLS_ANNOTATION, fingerprint, statefulset
from quorumkeeper.runtimes.kubernetes.resources import ClusterResource, parse_resource
from quorumkeeper.runtimes.kubernetes.zookeeper_pod import (
    KEYSTORE_NAME,
    TLS_COPY_SECONDS,
    TRUST_NAME,
    ZOOKEEPER_MOUNT,
)
from tests.polling import wait_until

pytestmark = pytest.mark.operator

Obj = dict[str, Any]


def resource(kind: str, **spec: object) -> ClusterResource:
    version = "3.9.5" if kind == "ZookeeperCluster" else "3.7.3"
    return parse_resource(
        {
            "apiVersion": "quorumkeeper.io/v1alpha1",
            "kind": kind,
            "metadata": {"name": "c", "namespace": "apps"},
            "spec": {"members": 3, "version": version, "storage": {"size": "1Gi"}, **spec},
        }
    )


def template(cluster: ClusterResource, generation: str) -> Obj:
    rendered: Obj = statefulset(cluster, 3, generation)["spec"]["template"]
    return rendered


def test_with_tls_a_zookeeper_pod_runs_the_sidecar_and_no_generation_restarts_it() -> None:
    zookeeper = resource("ZookeeperCluster")
    pod = template(zookeeper, "ca-1 renewed never")
    server, sidecar = pod["spec"]["containers"]
    assert (server["name"], sidecar["name"]) == ("zookeeper", "tls-files")
    assert sidecar["image"] == server["image"]
    assert sidecar["securityContext"] == server["securityContext"]
    assert sidecar["resources"] == {"requests": {"cpu": "5m", "memory": "16Mi"}}
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts["tls"] == {"name": "tls", "mountPath": str(TLS_MOUNT), "readOnly": True}
    assert mounts["data"] == {"name": "data", "mountPath": ZOOKEEPER_MOUNT}
    assert TLS_ANNOTATION not in pod["metadata"].get("annotations", {})
    assert fingerprint(zookeeper, "ca-1 renewed never") == fingerprint(zookeeper, "ca-2 renewed x")

    etcd = resource("EtcdCluster")
    etcd_pod = template(etcd, "ca-1 renewed never")
    assert [c["name"] for c in etcd_pod["spec"]["containers"]] == ["etcd"]
    assert etcd_pod["metadata"]["annotations"][TLS_ANNOTATION] == "ca-1 renewed never"
    assert fingerprint(etcd, "ca-1 renewed never") != fingerprint(etcd, "ca-2 renewed x")


def test_without_tls_a_zookeeper_pod_has_no_sidecar() -> None:
    pod = template(resource("ZookeeperCluster", tls=False, auth=False), "")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["zookeeper"]
    assert "volumes" not in pod["spec"] or all(v["name"] != "tls" for v in pod["spec"]["volumes"])


def publish(tls: Path, version: int, files: dict[str, str]) -> None:
    """`files` as the kubelet publishes a Secret's new content: a new timestamped folder, then
    the `..data` link swapped onto it by a rename; each key is a link through `..data`, so the
    files a reader opens by name never change in place."""
    folder = tls / f"..{version}"
    folder.mkdir()
    for key, text in files.items():
        (folder / key).write_text(text)
        if not (tls / key).is_symlink():
            (tls / key).symlink_to(Path("..data") / key)
    (tls / "..data_tmp").symlink_to(folder.name)
    (tls / "..data_tmp").rename(tls / "..data")


def test_the_sidecar_renames_a_swapped_secrets_files_into_the_servers_folder(
    tmp_path: Path,
) -> None:
    sidecar = template(resource("ZookeeperCluster"), "")["spec"]["containers"][1]
    tls, conf = tmp_path / "tls", tmp_path / "conf"
    tls.mkdir()
    conf.mkdir()
    publish(tls, 1, {"c-1.pem": "key and certificate 1\n", TRUST_KEY: "old CA\n"})
    command = [part.replace(str(TLS_MOUNT), str(tls)) for part in sidecar["command"]]
    env = {"POD_NAME": "c-1", "ZOO_CONF_DIR": str(conf), "PATH": os.environ["PATH"]}
    assert {e["name"] for e in sidecar["env"]} == set(env) - {"PATH"}
    keystore, trust = conf / KEYSTORE_NAME, conf / TRUST_NAME
    with subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) as running:
        try:
            wait_until(lambda: trust.is_file(), 10, "the files taken")
            assert keystore.read_text() == "key and certificate 1\n"
            first = keystore.stat().st_ino, trust.stat().st_ino
            publish(tls, 2, {"c-1.pem": "key and certificate 2\n", TRUST_KEY: "old CA\nnew CA\n"})
            wait_until(
                lambda: trust.read_text() == "old CA\nnew CA\n",
                3 * TLS_COPY_SECONDS,
                "the new trust bundle taken",
            )
            assert keystore.read_text() == "key and certificate 2\n"
            # Renamed onto the names, never written in place: a new file each, owner-only.
            assert keystore.stat().st_ino != first[0] and trust.stat().st_ino != first[1]
            for taken in (keystore, trust):
                assert taken.stat().st_mode & 0o777 == 0o600
            assert sorted(p.name for p in conf.iterdir()) == [KEYSTORE_NAME, TRUST_NAME]
        finally:
            running.send_signal(signal.SIGTERM)
            code = running.wait(timeout=3)  # at once, not after its period
        assert code == 0, running.stderr.read() if running.stderr else ""
