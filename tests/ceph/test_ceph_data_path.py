"""A local-runtime etcd member whose data lives on an RBD image, moved between two "nodes".

No kernel RBD or NBD here, so a node attaches the image the way this machine allows:
`rbd-fuse` exposes the image as a file, a loop device turns that into a block device, and
ext4 on it is mounted as the member's data directory. Each node is its own Ceph client
identity holding the image's lock, as ceph-csi's node plugin would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quorumkeeper import versions
from quorumkeeper.ceph.client import connect
from quorumkeeper.ceph.locks import FenceAction, NodeState, NodeView, fence_image
from quorumkeeper.model import Endpoint, Peer
from quorumkeeper.runtimes.local import distributions
from quorumkeeper.runtimes.local.launchers import EtcdLauncher
from quorumkeeper.runtimes.local.processes import wait_for_exit
from quorumkeeper.spec import EtcdSettings
from quorumkeeper.stores.base import StoreError
from quorumkeeper.stores.etcd.client import EtcdStore
from tests.ceph.minicluster import ClientUser, Holder, MiniCluster, csi_caps, target_for, wait_until
from tests.local_runtime import spawner
from tests.polling import loopback_subnet

pytestmark = pytest.mark.ceph

POOL = "k8s"
MEMBER_ADDRESS = f"{loopback_subnet(150)}.20"  # this suite's loopback range


def _sh(*args: str) -> str:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=True).stdout


@dataclass
class Attachment:
    """One node's view of the image: fuse file, loop device, ext4 mount, lock holder."""

    fuse: subprocess.Popen[bytes]
    fuse_dir: Path
    loop: str
    mountpoint: Path
    holder: Holder

    def detach(self) -> None:
        """Clean detach: flush and unmount ext4, free the loop device."""
        if os.path.ismount(self.mountpoint):
            _sh("umount", str(self.mountpoint))
        if self.loop:
            _sh("losetup", "-d", self.loop)
            self.loop = ""

    def die(self) -> None:
        """The node's Ceph clients vanish without a goodbye, like a powered-off node."""
        if self.fuse.poll() is None:
            os.kill(self.fuse.pid, signal.SIGKILL)
        self.fuse.wait(timeout=10)
        self.holder.stop()
        subprocess.run(["fusermount", "-u", str(self.fuse_dir)], capture_output=True, timeout=30)


def attach(
    cluster: MiniCluster,
    user: ClientUser,
    image: str,
    workdir: Path,
    mountpoint: Path,
    *,
    mkfs: bool,
    stack: contextlib.ExitStack,
) -> Attachment:
    holder = Holder(cluster, user, POOL, image, f"{user.name}-mount")
    stack.callback(holder.stop)
    fuse_dir = workdir / f"fuse-{user.name}"
    fuse_dir.mkdir()
    fuse = subprocess.Popen(
        ["rbd-fuse", "-f", *cluster.cli_args(user), "-p", POOL, "-r", image, str(fuse_dir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    att = Attachment(fuse, fuse_dir, "", mountpoint, holder)
    stack.callback(att.die)
    stack.callback(att.detach)
    wait_until(lambda: (fuse_dir / image).exists(), 10, f"rbd-fuse to expose {image}")
    att.loop = _sh("losetup", "-f", "--show", str(fuse_dir / image)).strip()
    if mkfs:
        _sh("mkfs.ext4", "-q", "-F", att.loop)
    mountpoint.mkdir(parents=True, exist_ok=True)
    _sh("mount", att.loop, str(mountpoint))
    mountpoint.chmod(0o700)  # etcd insists on a private data directory
    with contextlib.suppress(FileNotFoundError):
        (mountpoint / "lost+found").rmdir()
    return att


@pytest.fixture
def etcd_binary() -> Path:
    try:
        return distributions.etcd_binary()
    except distributions.DistributionMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture
def stack() -> Iterator[contextlib.ExitStack]:
    with contextlib.ExitStack() as s:
        yield s


def _wait_written(store: EtcdStore, key: str, value: str) -> None:
    def put() -> bool:
        try:
            store.write_probe(key, value)
        except StoreError:
            return False
        return True

    wait_until(put, 30, "etcd member to accept a write", step=0.2)


def _read(store: EtcdStore, key: str) -> str | None:
    box: list[str | None] = []

    def get() -> bool:
        try:
            box.append(store.read(key))
        except StoreError:
            return False
        return True

    wait_until(get, 30, "etcd member to serve a read", step=0.2)
    return box[0]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for losetup and mount")
@pytest.mark.skipif(shutil.which("rbd-fuse") is None, reason="rbd-fuse not installed")
def test_member_data_survives_fence_and_reattach_from_another_node(
    ceph_cluster: MiniCluster,
    etcd_binary: Path,
    tmp_path: Path,
    unique: str,
    stack: contextlib.ExitStack,
) -> None:
    image = f"member-{unique}"
    ceph_cluster.rbd("create", "--size", "256M", "--image-feature", "layering", f"{POOL}/{image}")
    node_a_user = ceph_cluster.create_user(f"node-a-{unique}", csi_caps(POOL))
    node_b_user = ceph_cluster.create_user(f"node-b-{unique}", csi_caps(POOL))

    endpoint = Endpoint(name="etcd-0", ordinal=0, address=MEMBER_ADDRESS)
    alone = [Peer(endpoint, member_id=None)]
    launcher = EtcdLauncher(versions.ETCD_VERSION, EtcdSettings(), unique)
    runtime = spawner(tmp_path / "members", launcher, "etcd", MEMBER_ADDRESS.rsplit(".", 1)[0])
    data_dir = runtime.data_dir(endpoint)
    store = EtcdStore([endpoint])
    stack.callback(store.close)

    # Node A: attach, format, run the member and write through the store.
    node_a = attach(ceph_cluster, node_a_user, image, tmp_path, data_dir, mkfs=True, stack=stack)
    stack.callback(runtime.stop, endpoint)
    runtime.start(endpoint, alone, bootstrap=True)
    value = uuid.uuid4().hex
    _wait_written(store, "quorumkeeper/ceph-data-path", value)
    assert runtime.launcher.has_data(data_dir)

    # Stop the member, then node A dies with its lock still on the image.
    pid = runtime.pid(endpoint)
    assert pid is not None
    runtime.stop(endpoint)
    assert wait_for_exit(pid, 10)
    node_a.detach()
    node_a.die()
    assert not runtime.launcher.has_data(data_dir)  # the data left with the volume

    locked = subprocess.run(
        ["rbd", *ceph_cluster.cli_args(node_b_user), "lock", "add", f"{POOL}/{image}", "early"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert locked.returncode == 16, locked.stderr  # EBUSY: node A's lock still blocks node B

    # Fence from node B's identity: node A is confirmed down.
    view = NodeView(
        (NodeState("node-a", ("127.0.0.1",), ready=False),), confirmed_down=frozenset({"node-a"})
    )
    with connect(target_for(ceph_cluster, node_b_user)) as client:
        result = fence_image(client, POOL, image, view)
        assert result.action == FenceAction.FENCED, result.reasons
        assert result.blocklisted == (node_a.holder.address,)  # the holder, nothing else
        wait_until(
            lambda: (
                node_a.holder.address
                not in {w.address for w in client.image_info(POOL, image).watchers}
            ),
            15,
            "A's holder to stop watching",
        )

    # Node B: attach without formatting and start the same member on the same data.
    attach(ceph_cluster, node_b_user, image, tmp_path, data_dir, mkfs=False, stack=stack)
    stack.callback(runtime.stop, endpoint)
    assert runtime.launcher.has_data(data_dir)
    runtime.start(endpoint, alone, bootstrap=False)
    assert _read(store, "quorumkeeper/ceph-data-path") == value
    lockers = ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}")
    assert [lk["id"] for lk in lockers] == [f"{node_b_user.name}-mount"]
