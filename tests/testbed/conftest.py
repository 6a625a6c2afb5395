"""Fixtures of the Kubernetes test bed: one cluster for the package, a namespace per test.

To use the test bed from tests elsewhere, move these fixtures to a conftest.py that covers them.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.cluster import Cluster
from testbed.kube import Kube, ns_path
from testbed.procs import wait_for


@pytest.fixture(scope="package")
def testbed_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """Control plane plus three node agents, shared by every test of this package.

    Started once per session and stopped after this package's last test, so it does not idle
    (about 10% of a core) through the rest of the session.  Its state (logs, etcd, volumes)
    lives outside pytest's rotated temp dirs and is kept for debugging when a test failed.
    """
    state_dir = Path(tempfile.mkdtemp(prefix="qk-testbed-"))
    started = time.monotonic()
    with Cluster(state_dir) as cluster:
        print(f"test bed up in {time.monotonic() - started:.1f}s, state in {state_dir}")
        yield cluster
    if request.session.testsfailed:
        print(f"test bed state kept in {state_dir}")
    else:
        shutil.rmtree(state_dir)


@pytest.fixture(scope="package")
def kubeconfig(testbed_cluster: Cluster) -> Path:
    """Admin kubeconfig of the test bed, for kubectl and the Kubernetes client."""
    return testbed_cluster.kubeconfig


@pytest.fixture(scope="package")
def kube(testbed_cluster: Cluster) -> Kube:
    """JSON access to the test bed's API server."""
    return testbed_cluster.api()


@pytest.fixture
def namespace(kube: Kube, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace, ready for pods (its default ServiceAccount exists), deleted afterwards."""
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
