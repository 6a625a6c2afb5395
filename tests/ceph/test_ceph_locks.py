"""Lock inspection and fencing against real daemons and a really killed client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from quorumkeeper.ceph.client import CephError, connect
from quorumkeeper.ceph.locks import (
    FenceAction,
    Liveness,
    NodeState,
    NodeStatus,
    NodeView,
    fence_image,
    inspect_image,
)
from tests.ceph.minicluster import ClientUser, Holder, MiniCluster, csi_caps, target_for, wait_until

pytestmark = pytest.mark.ceph

POOL = "k8s"
CSI_CAPS = csi_caps(POOL)


def node_a(ready: bool = True) -> NodeState:
    # Every client of the mini cluster connects from 127.0.0.1: that host plays "node-a".
    return NodeState(name="node-a", addresses=("127.0.0.1",), ready=ready)


@pytest.fixture
def csi_user(ceph_cluster: MiniCluster, unique: str) -> ClientUser:
    return ceph_cluster.create_user(f"csi-{unique}", CSI_CAPS)


@pytest.fixture
def image(ceph_cluster: MiniCluster, unique: str) -> str:
    name = f"vol-{unique}"
    ceph_cluster.rbd("create", "--size", "4M", "--image-feature", "layering", f"{POOL}/{name}")
    return name


@pytest.fixture
def holder(ceph_cluster: MiniCluster, csi_user: ClientUser, image: str) -> Iterator[Holder]:
    h = Holder(ceph_cluster, csi_user, POOL, image, "node-a-mount")
    yield h
    h.stop()


def test_live_holder_is_never_fenced(
    ceph_cluster: MiniCluster, csi_user: ClientUser, image: str, holder: Holder
) -> None:
    with connect(target_for(ceph_cluster, csi_user)) as client:
        state = inspect_image(client, POOL, image, NodeView((node_a(),)))
        assert [lk.liveness for lk in state.locks] == [Liveness.LIVE]
        assert state.locks[0].locker.address == holder.address
        assert [w.address for w in state.watchers] == [holder.address]

        result = fence_image(client, POOL, image, NodeView((node_a(),)))
        assert result.action == FenceAction.REFUSED
        assert "is live" in result.reasons[0]

        # NotReady is not enough while its client still watches: it may be partitioned.
        result = fence_image(client, POOL, image, NodeView((node_a(ready=False),)))
        assert result.action == FenceAction.REFUSED
        assert "--node-down node-a" in result.reasons[0]
        assert "out-of-service" in result.reasons[0]

        assert holder.address not in client.blocklist()
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}")[0]["id"] == "node-a-mount"


def test_killed_client_is_fenced_and_a_second_client_takes_the_lock(
    ceph_cluster: MiniCluster, csi_user: ClientUser, image: str, holder: Holder, unique: str
) -> None:
    holder.kill()
    target = target_for(ceph_cluster, csi_user)
    with connect(target) as client:
        # The dead client's watch lingers ~30 s, so without confirmation it still counts.
        refused = fence_image(client, POOL, image, NodeView((node_a(),)))
        assert refused.action == FenceAction.REFUSED

        down = NodeView((node_a(ready=False),), confirmed_down=frozenset({"node-a"}))
        state = inspect_image(client, POOL, image, down)
        assert state.locks[0].node_status == NodeStatus.DOWN
        assert state.locks[0].liveness == Liveness.STALE

        result = fence_image(client, POOL, image, down)
        assert result.action == FenceAction.FENCED, result.reasons
        assert result.blocklisted[0] == holder.address
        assert holder.address in client.blocklist()
        assert [lk.cookie for lk in result.removed] == ["node-a-mount"]
        wait_until(lambda: not client.image_info(POOL, image).watchers, 10, "dead watcher to clear")

    node_b = ceph_cluster.create_user(f"node-b-{unique}", CSI_CAPS)
    ceph_cluster.rbd("lock", "add", f"{POOL}/{image}", "node-b-mount", user=node_b)
    assert [lk["id"] for lk in ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}")] == [
        "node-b-mount"
    ]


def test_lock_without_watcher_is_stale_and_fenced_while_node_ready(
    ceph_cluster: MiniCluster, csi_user: ClientUser, image: str
) -> None:
    ceph_cluster.rbd("lock", "add", f"{POOL}/{image}", "gone-client", user=csi_user)
    with connect(target_for(ceph_cluster, csi_user)) as client:
        state = inspect_image(client, POOL, image, NodeView((node_a(),)))
        assert state.locks[0].liveness == Liveness.STALE
        assert "no longer watches" in state.locks[0].reasons[0]
        result = fence_image(client, POOL, image, NodeView((node_a(),)))
        assert result.action == FenceAction.FENCED
        assert client.image_info(POOL, image).lockers == ()
        assert fence_image(client, POOL, image, NodeView()).action == FenceAction.NOTHING


def test_fencing_without_the_blocklist_right_changes_nothing(
    ceph_cluster: MiniCluster, image: str, unique: str
) -> None:
    weak = ceph_cluster.create_user(
        f"weak-{unique}", {"mon": "allow r", "osd": f"allow rwx pool={POOL}"}
    )
    ceph_cluster.rbd("lock", "add", f"{POOL}/{image}", "gone-client")
    with connect(target_for(ceph_cluster, weak)) as client:
        with pytest.raises(CephError) as caught:
            fence_image(client, POOL, image, NodeView((node_a(),)))
        assert caught.value.field == "caps"
        assert caught.value.errno == 13
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}")[0]["id"] == "gone-client"
