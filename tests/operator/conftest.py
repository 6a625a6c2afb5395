"""A real API server (etcd and kube-apiserver of the test bed's control plane) for the operator's
resource tests: schemas, CEL rules, subresources and server-side dry-runs need nothing more.

It binds the suite's own loopback address (`QUORUMKEEPER_TEST_NETWORK`), so it runs beside a full
test bed or another suite's API server.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client, config

from quorumkeeper.runtimes.kubernetes.crd import crds
from quorumkeeper.runtimes.kubernetes.resources import GROUP, Kind
from testbed.controlplane import ControlPlane
from testbed.kube import Kube
from testbed.procs import wait_for
from testbed.versions import Binaries
from tests.polling import loopback_subnet


@dataclass(frozen=True)
class ApiServer:
    control_plane: ControlPlane
    kube: Kube

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """kubectl against this API server; the result is returned whatever its exit status."""
        return subprocess.run(
            [
                str(self.control_plane.binaries.kubectl),
                f"--kubeconfig={self.control_plane.kubeconfig}",
                *args,
            ],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def apply(
        self, objects: list[dict[str, object]], *extra: str
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", *extra, stdin=yaml.safe_dump_all(objects))


@pytest.fixture(scope="session")
def api_server() -> Iterator[ApiServer]:
    binaries = Binaries.from_cache()
    missing = [
        p for p in (binaries.etcd, binaries.kube_apiserver, binaries.kubectl) if not p.exists()
    ]
    if missing:
        pytest.fail(f"missing {', '.join(map(str, missing))}: run scripts/build-kubernetes.sh")
    state_dir = Path(tempfile.mkdtemp(prefix="qk-operator-api-"))
    control_plane = ControlPlane(
        state_dir, binaries, host=f"{loopback_subnet(250)}.1", api_only=True
    )
    control_plane.start()
    try:
        yield ApiServer(control_plane, Kube.from_kubeconfig(control_plane.kubeconfig))
    finally:
        control_plane.stop()
    shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def namespace(api_server: ApiServer) -> str:
    """A fresh namespace. Left in place: without a controller manager nothing finalizes a
    deleted namespace, and the API server is thrown away after the session."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    api_server.kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    return name


@pytest.fixture(scope="session")
def installed(api_server: ApiServer) -> ApiServer:
    """The CRDs applied and established."""
    result = api_server.apply(crds())
    assert result.returncode == 0, result.stderr
    for kind in Kind:
        name = f"{kind.plural}.{GROUP}"
        wait_for(functools.partial(established, api_server, name), 30, f"{name} established")
    return api_server


def established(api_server: ApiServer, name: str) -> bool:
    crd = api_server.kube.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}")
    return any(
        c["type"] == "Established" and c["status"] == "True"
        for c in crd.get("status", {}).get("conditions", [])
    )


@pytest.fixture
def api(api_server: ApiServer) -> Iterator[client.ApiClient]:
    """A Kubernetes client of the API server, as the operator makes one."""
    made = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(api_server.control_plane.kubeconfig)
    )
    yield made
    made.close()
