"""The ZooKeeper pod's probes, run by real bash and openssl against real servers speaking TLS
with enforced authentication, as the operator renders them by default: Ready only while serving,
alive while the JVM answers, so a member waiting for a quorum is kept, not restarted."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from quorumkeeper.model import Endpoint
from quorumkeeper.runtimes.kubernetes.objects import (
    TLS_MOUNT,
    TRUST_KEY,
    Membership,
    member_tls,
    placement,
)
from quorumkeeper.runtimes.kubernetes.render import cluster_objects
from quorumkeeper.runtimes.kubernetes.resources import parse_resource
from tests.polling import wait_until
from tests.zookeeper.conftest import Ensemble

pytestmark = pytest.mark.zookeeper

Obj = dict[str, Any]


def probes() -> tuple[Obj, Obj]:
    """(readiness, liveness) of the rendered ZooKeeper container."""
    resource = parse_resource(
        {
            "apiVersion": "quorumkeeper.io/v1alpha1",
            "kind": "ZookeeperCluster",
            "metadata": {"name": "zk", "namespace": "apps"},
            "spec": {"members": 3, "version": "3.9.5", "storage": {"size": "1Gi"}},
        }
    )
    objects = cluster_objects(resource, Membership.steady(placement(resource), 3), "pw")
    sts = next(o for o in objects if o["kind"] == "StatefulSet")
    container = sts["spec"]["template"]["spec"]["containers"][0]
    return container["readinessProbe"], container["livenessProbe"]


class Pods:
    """Runs a probe as the kubelet would for the pod of one endpoint: its `POD_NAME` and
    `POD_IP` in the environment, and the TLS Secret's files (`member_tls`) at a folder of the
    test's, filled from the ensemble's own authority."""

    def __init__(self, ensemble: Ensemble, mount: Path) -> None:
        assert ensemble.authority is not None
        self.authority = ensemble.authority
        self.mount = mount
        mount.mkdir()
        shutil.copyfile(self.authority.trust, mount / TRUST_KEY)

    def passes(self, probe: Obj, endpoint: Endpoint) -> bool:
        issued = self.authority.member(endpoint)
        mounted = member_tls(endpoint.name)
        for source, name in (
            (issued.certificate, mounted.certificate.name),
            (issued.key, mounted.key.name),
        ):
            shutil.copyfile(source, self.mount / name)
        script = probe["exec"]["command"][2].replace(str(TLS_MOUNT), str(self.mount))
        env = {"POD_NAME": endpoint.name, "POD_IP": endpoint.address, "PATH": os.environ["PATH"]}
        result = subprocess.run(
            [*probe["exec"]["command"][:2], script],
            env=env,
            capture_output=True,
            timeout=probe["timeoutSeconds"],
        )
        return result.returncode == 0


def test_ready_while_serving_alive_while_answering(
    ensemble_factory: Callable[..., Ensemble], tmp_path: Path
) -> None:
    readiness, liveness = probes()
    assert "openssl s_client" in readiness["exec"]["command"][2], "rendered secured by default"
    ensemble = ensemble_factory()
    pods = Pods(ensemble, tmp_path / "tls-secret")
    passes = pods.passes
    store = ensemble.bootstrap()
    first, second = ensemble.endpoint(0), ensemble.endpoint(1)
    assert passes(readiness, first) and passes(liveness, first)

    ensemble.join(store, second)
    wait_until(lambda: passes(readiness, second), 30, f"{second.name} Ready")
    # Two voters, one stopped: the other has no quorum. It is not Ready (no client traffic)
    # but alive, so the kubelet leaves it waiting for its peer instead of restarting it.
    ensemble.stop(first)
    wait_until(lambda: not passes(readiness, second), 30, f"{second.name} not Ready")
    assert passes(liveness, second)
    assert not passes(readiness, first) and not passes(liveness, first)
