"""Suite-wide settings, and the Kubernetes test bed shared by every suite that needs it.

The test bed is started by the first test that asks for it and stopped right after the last
one (in collection order), so the `testbed` and `ceph` suites share one start-up (6-14 s) and
it does not idle (three kubelets and containerds, a few % of a core) through the suites that run
after them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # imported lazily: suites without the test bed skip the Kubernetes client
    from testbed.cluster import Cluster
    from testbed.kube import Kube

# Ceph's fixtures serve the `ceph` suite and the operator's tests on RBD volumes alike.
pytest_plugins = ["tests.ceph.fixtures"]

logging.getLogger("kazoo").setLevel(logging.ERROR)  # reconnects during fault tests are expected

# The suite's ZooKeeper servers live a minute or two each, so the JVM's optimising compiler (C2)
# spends CPU on code it never uses: with C1 alone, a 3 -> 5 -> 3 scale took 30 CPU-seconds of
# Java instead of 52 and 36 s instead of 52 (two cores, one other build running). Members
# inherit the environment of the keeper that starts them; the JVM picks this variable up.
os.environ.setdefault("JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1")

_LAST_USER = pytest.StashKey[str]()
_STOP = pytest.StashKey[Callable[[], None]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    users = [i.nodeid for i in items if "testbed_cluster" in getattr(i, "fixturenames", ())]
    if users:
        config.stash[_LAST_USER] = users[-1]


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Stop the test bed once its last user is done instead of at the end of the session."""
    if item.config.stash.get(_LAST_USER, None) == item.nodeid and _STOP in item.config.stash:
        item.config.stash[_STOP]()


@pytest.fixture(scope="session")
def testbed_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Control plane plus three real nodes (kubelet, containerd, runc), one for the session.

    Its state (logs, etcd, volumes) lives outside pytest's rotated temp dirs and is kept for
    debugging when a test failed.
    """
    from testbed.cluster import Cluster

    state_dir = Path(tempfile.mkdtemp(prefix="qk-testbed-"))
    started = time.monotonic()
    cluster = Cluster(state_dir)
    cluster.start()
    print(f"test bed up in {time.monotonic() - started:.1f}s, state in {state_dir}")

    def stop() -> None:
        if request.config.stash.get(_STOP, None) is None:
            return
        del request.config.stash[_STOP]
        cluster.stop()
        if request.session.testsfailed:
            print(f"test bed state kept in {state_dir}")
        else:
            shutil.rmtree(state_dir)

    request.config.stash[_STOP] = stop
    yield cluster
    stop()


@pytest.fixture(scope="session")
def kubeconfig(testbed_cluster: Cluster) -> Path:
    """Admin kubeconfig of the test bed, for kubectl and the Kubernetes client."""
    return testbed_cluster.kubeconfig


@pytest.fixture(scope="session")
def kube(testbed_cluster: Cluster) -> Kube:
    """JSON access to the test bed's API server."""
    return testbed_cluster.api()


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists), deleted afterwards."""
    from testbed.kube import ns_path
    from testbed.procs import wait_for

    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    name = f"{slug}-{uuid.uuid4().hex[:5]}"
    kube.create("/api/v1/namespaces", {"metadata": {"name": name}})
    wait_for(
        lambda: kube.get(ns_path(name, "serviceaccounts", "default")),
        30,
        f"default ServiceAccount in {name}",
    )
    yield name
    kube.delete(f"/api/v1/namespaces/{name}")
