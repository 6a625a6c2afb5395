"""Fixtures for the `ceph` suite: one mini cluster per session, fresh users and images per test."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from quorumkeeper.ceph.client import CephTarget
from tests.ceph.minicluster import MiniCluster

NEEDED = ("ceph-mon", "ceph-osd", "ceph-authtool", "monmaptool", "rbd", "ceph")


def _mon_ip() -> str:
    """127.0.150.x is this suite's range; xdist workers each get their own address."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    return f"127.0.150.{1 + int(worker or 0)}"


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
