"""Ceph fixtures, a plugin of the whole test session (`tests/conftest.py`): one mini cluster
per session, fresh users and images per test, and a ceph-csi StorageClass on the test bed that
the `ceph` suite and the operator's end-to-end tests both put volumes on."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from quorumkeeper.ceph.client import CephTarget
from quorumkeeper.ceph.render import RenderInput, manifests
from tests.ceph.minicluster import ClientUser, MiniCluster, csi_caps
from tests.polling import loopback_subnet

if TYPE_CHECKING:
    from testbed.kube import Kube

POOL = "k8s"

NEEDED = ("ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "rbd", "ceph")


def _mon_ip() -> str:
    """127.<test network>.150.x is this suite's range; xdist workers each get their own."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return f"{loopback_subnet(150)}.{1 + int(worker or 0)}"


@pytest.fixture(scope="session")
def ceph_cluster() -> Iterator[MiniCluster]:
    missing = [b for b in NEEDED if shutil.which(b) is None]
    try:
        import rados  # type: ignore[import-not-found]  # noqa: F401
    except ImportError:
        missing.append("python rados bindings")
    if missing:
        pytest.skip(f"Ceph not installed ({', '.join(missing)}): run scripts/install-ceph.sh")
    workdir = Path(tempfile.mkdtemp(prefix="qk-ceph-"))
    cluster = MiniCluster(dir=workdir, ip=_mon_ip())
    try:
        cluster.start()
    except BaseException:
        cluster.stop()  # keep workdir: its logs explain the failure
        raise
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:8]


@pytest.fixture
def admin_target(ceph_cluster: MiniCluster) -> CephTarget:
    return CephTarget(
        monitors=[ceph_cluster.mon_addr], user="admin", key=ceph_cluster.admin_key, timeout=5.0
    )


@dataclass(frozen=True)
class CsiStorageClass:
    """A ceph-csi StorageClass in the test bed, with the Ceph user its Secret names."""

    name: str
    user: ClientUser


@pytest.fixture
def csi_namespace(namespace: str) -> str:
    """Where `csi_storage_class` puts its ConfigMap and Secret: the test's namespace. A suite
    with namespaces of its own overrides this fixture."""
    return namespace


@pytest.fixture
def csi_storage_class(
    ceph_cluster: MiniCluster, kube: Kube, csi_namespace: str, unique: str
) -> Iterator[CsiStorageClass]:
    """The csi ConfigMap, Secret and StorageClass exactly as `render ceph` writes them, for a
    fresh least-privilege user on the `k8s` pool; the StorageClass is deleted afterwards (the
    namespace takes the rest)."""
    user = ceph_cluster.create_user(f"csi-{unique}", csi_caps(POOL))
    spec = RenderInput(
        monitors=[ceph_cluster.mon_addr],
        pool=POOL,
        cluster_id=ceph_cluster.fsid,
        user=user.name,
        key=user.key,
        namespace=csi_namespace,
        storage_class=f"ceph-rbd-{unique}",
    )
    config_map, secret, storage_class = manifests(spec)
    kube.create(f"/api/v1/namespaces/{csi_namespace}/configmaps", config_map)
    kube.create(f"/api/v1/namespaces/{csi_namespace}/secrets", secret)  # stringData, encoded by it
    kube.create("/apis/storage.k8s.io/v1/storageclasses", storage_class)
    yield CsiStorageClass(spec.storage_class, user)
    kube.delete(f"/apis/storage.k8s.io/v1/storageclasses/{spec.storage_class}")
