"""The ZooKeeper pod's probes, run by real bash against real servers: Ready only while serving,
alive while the JVM answers, so a member waiting for a quorum is kept, not restarted."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from quorumkeeper.runtimes.kubernetes.objects import Membership, placement
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


def passes(probe: Obj, pod_ip: str) -> bool:
    """Run the exec probe as the kubelet would, in an environment with the pod's IP."""
    env = {"POD_IP": pod_ip, "PATH": os.environ["PATH"]}
    result = subprocess.run(
        probe["exec"]["command"], env=env, capture_output=True, timeout=probe["timeoutSeconds"]
    )
    return result.returncode == 0


def test_ready_while_serving_alive_while_answering(
    ensemble_factory: Callable[..., Ensemble],
) -> None:
    readiness, liveness = probes()
    ensemble = ensemble_factory(secure=False)  # the operator's pods speak plain text so far
    store = ensemble.bootstrap()
    first, second = ensemble.endpoint(0), ensemble.endpoint(1)
    assert passes(readiness, first.address) and passes(liveness, first.address)

    ensemble.join(store, second)
    wait_until(lambda: passes(readiness, second.address), 30, f"{second.name} Ready")
    # Two voters, one stopped: the other has no quorum. It is not Ready (no client traffic)
    # but alive, so the kubelet leaves it waiting for its peer instead of restarting it.
    ensemble.stop(first)
    wait_until(lambda: not passes(readiness, second.address), 30, f"{second.name} not Ready")
    assert passes(liveness, second.address)
    assert not passes(readiness, first.address) and not passes(liveness, first.address)
