"""Lock inspection and fencing against real daemons and a really killed client."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import rados  # type: ignore[import-not-found]
import rbd  # type: ignore[import-not-found]
from typer.testing import CliRunner

from quorumkeeper.ceph.caps import caps_command
from quorumkeeper.ceph.client import CephError, Locker, connect
from quorumkeeper.ceph.locks import (
    FenceAction,
    Liveness,
    NodeState,
    NodeStatus,
    NodeView,
    Role,
    classify,
    fence_image,
    identities,
    inspect_image,
)
from quorumkeeper.cli.ceph import ceph_app
from tests.ceph.minicluster import ClientUser, Holder, MiniCluster, csi_caps, target_for, wait_until
from tests.ceph.test_ceph_cli import run_admin

pytestmark = pytest.mark.ceph

POOL = "k8s"
runner = CliRunner()
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


def test_fencing_without_the_blocklist_right_names_the_cap_and_the_fix(
    ceph_cluster: MiniCluster, image: str, unique: str
) -> None:
    weak = ceph_cluster.create_user(
        f"weak-{unique}", {"mon": "allow r", "osd": f"allow rwx pool={POOL}"}
    )
    ceph_cluster.rbd("lock", "add", f"{POOL}/{image}", "gone-client")
    fix = caps_command(weak.name, POOL)
    with connect(target_for(ceph_cluster, weak)) as client:
        with pytest.raises(CephError) as caught:
            fence_image(client, POOL, image, NodeView((node_a(),)))
        assert caught.value.field == "caps"
        assert caught.value.errno == 13
        message = str(caught.value)
        assert "needs the mon capability to run 'osd blocklist'" in message
        assert f"client.{weak.name} lacks" in message
        assert message.endswith(f"Grant it with: {fix}")
        assert "nothing was changed" in message
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}")[0]["id"] == "gone-client"

    # The CLI says the same, and the printed fix, run verbatim, makes the fence work.
    flags = ["-m", ceph_cluster.mon_addr, "--user", weak.name, "--key", weak.key, "--pool", POOL]
    args = ["locks", *flags, "--image", image, "--node", "node-a=127.0.0.1", "--fence"]
    refused = runner.invoke(ceph_app, args)
    assert refused.exit_code == 2, refused.output
    assert fix in " ".join(refused.output.split())
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}")[0]["id"] == "gone-client"
    run_admin(ceph_cluster, fix)
    fenced = runner.invoke(ceph_app, args)
    assert fenced.exit_code == 0, fenced.output
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}") == []


@pytest.fixture
def bystander(ceph_cluster: MiniCluster, csi_user: ClientUser, image: str) -> Iterator[str]:
    """Another live client on the same host as the holder, with the image open (a watcher)."""
    conn = rados.Rados(
        conffile="/dev/null",
        rados_id=csi_user.name,
        conf={"mon_host": ceph_cluster.mon_addr, "key": csi_user.key},
    )
    conn.connect(timeout=10)
    ioctx = conn.open_ioctx(POOL)
    img = rbd.Image(ioctx, image)
    yield str(conn.get_addrs())
    img.close()
    ioctx.close()
    conn.shutdown()


def test_fence_hits_exactly_the_stale_holder(
    ceph_cluster: MiniCluster, csi_user: ClientUser, image: str, holder: Holder, bystander: str
) -> None:
    holder.kill()
    down = NodeView((node_a(ready=False),), confirmed_down=frozenset({"node-a"}))
    with connect(target_for(ceph_cluster, csi_user)) as client:
        state = inspect_image(client, POOL, image, down)
        watchers = {w.watcher.address: w for w in state.watcher_states}
        assert watchers[holder.address].holds_lock
        assert not watchers[bystander].holds_lock
        assert {w.role for w in state.watcher_states} == {Role.CLIENT}

        before = set(client.blocklist())
        result = fence_image(client, POOL, image, down)
        assert result.action == FenceAction.FENCED, result.reasons
        assert result.blocklisted == (holder.address,)
        assert f"other watchers left alone: {bystander}" in result.reasons
        assert set(client.blocklist()) - before == {holder.address}  # nonce and all
        wait_until(
            lambda: (
                holder.address not in {w.address for w in client.image_info(POOL, image).watchers}
            ),
            15,
            "the fenced holder's watch to go",
        )
        assert bystander in {w.address for w in client.image_info(POOL, image).watchers}


def test_own_session_and_ceph_daemons_are_never_fenced(
    ceph_cluster: MiniCluster, csi_user: ClientUser, image: str
) -> None:
    down_by_ip = NodeView(confirmed_down=frozenset({"127.0.0.1"}), known=False)
    with connect(target_for(ceph_cluster, csi_user)) as client:
        # This session itself holds the lock (as an operator process using the same client
        # would); the library has no public call for it, so the test takes the connection.
        ioctx = client._conn.open_ioctx(POOL)
        own = rbd.Image(ioctx, image)
        own.lock_exclusive("this-tool")
        try:
            ids = identities(client)
            assert ids.own == client.own_address()
            state = inspect_image(client, POOL, image, down_by_ip, ids)
            assert [lk.role for lk in state.locks] == [Role.OWN_SESSION]
            assert [w.role for w in state.watcher_states] == [Role.OWN_SESSION]
            result = fence_image(client, POOL, image, down_by_ip, ids=ids)
            assert result.action == FenceAction.REFUSED
            assert "held by this tool's own session" in result.reasons[0]
            assert ids.own not in client.blocklist()

            # Daemons are recognised by the addresses in the cluster maps (a profile rbd user
            # can't read the mgr map, and says so); a lock held at a daemon's address is
            # refused. No daemon takes RBD locks here, so the lock record is built by hand.
            osd = next(a for a, name in ids.daemons.items() if name == "osd.0")
            assert any(name == "mon.a" for name in ids.daemons.values())
            assert any("mgr dump" in u for u in ids.unread)
            info = client.image_info(POOL, image)
            forged = dataclasses.replace(info, lockers=(Locker("client.9", "x", osd),), watchers=())
            (lock,) = classify(forged, down_by_ip, ids)
            assert (lock.role, lock.daemon) == (Role.DAEMON, "osd.0")
        finally:
            own.unlock("this-tool")
            own.close()
            ioctx.close()


def test_node_down_naming_this_tools_own_address_is_refused(
    ceph_cluster: MiniCluster, csi_user: ClientUser, image: str
) -> None:
    ceph_cluster.rbd("lock", "add", f"{POOL}/{image}", "gone-client", user=csi_user)
    blocklist = ceph_cluster.mon_command({"prefix": "osd blocklist ls", "format": "json"})
    flags = ["-m", ceph_cluster.mon_addr, "--user", csi_user.name, "--key", csi_user.key]
    base = ["locks", *flags, "--pool", POOL, "--image", image, "--fence"]
    for extra, named in (
        (["--node-down", "127.0.0.1"], "--node-down 127.0.0.1: 127.0.0.1 is the address"),
        (
            ["--node", "node-a=127.0.0.1", "--node-down", "node-a"],
            "--node-down node-a: node node-a is the address",
        ),
    ):
        result = runner.invoke(ceph_app, [*base, *extra])
        assert result.exit_code == 2, result.output
        text = " ".join(result.output.split())
        assert f"node-down: {named} this tool runs from" in text, text
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}")[0]["id"] == "gone-client"
    assert ceph_cluster.mon_command({"prefix": "osd blocklist ls", "format": "json"}) == blocklist
