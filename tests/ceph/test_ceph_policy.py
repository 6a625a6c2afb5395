"""Pure policy of the ceph package: no daemons, so these run everywhere (no `ceph` marker)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quorumkeeper.ceph.caps import Severity, analyse_caps
from quorumkeeper.ceph.client import CephError, ImageInfo, Locker, Watcher, address_ip
from quorumkeeper.ceph.kube import csi_flags, node_state, rbd_volume, target_from
from quorumkeeper.ceph.locks import Liveness, NodeState, NodeStatus, NodeView, classify
from quorumkeeper.ceph.render import RenderInput, manifests

KEY = "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=="
HOLDER = Locker(client="client.41", cookie="mount", address="10.0.0.5:0/1234")


def info(*watchers: str) -> ImageInfo:
    return ImageInfo(
        name="csi-vol-x",
        size=1,
        created=datetime.now(UTC),
        lockers=(HOLDER,),
        watchers=tuple(Watcher(client="client.41", address=a) for a in watchers),
    )


@pytest.mark.parametrize(
    ("nodes", "watchers", "status", "liveness"),
    [
        (
            (NodeState("w1", ("10.0.0.5",), ready=True),),
            ("10.0.0.5:0/1234",),
            NodeStatus.READY,
            Liveness.LIVE,
        ),
        ((NodeState("w1", ("10.0.0.5",), ready=True),), (), NodeStatus.READY, Liveness.STALE),
        (
            (NodeState("w1", ("10.0.0.5",), ready=False),),
            ("10.0.0.5:0/1234",),
            NodeStatus.NOT_READY,
            Liveness.STALE,
        ),
        (
            (NodeState("w2", ("10.0.0.6",), ready=True),),
            ("10.0.0.5:0/1234",),
            NodeStatus.GONE,
            Liveness.STALE,
        ),
        (
            (NodeState("w1", ("10.0.0.5",), ready=True, out_of_service=True),),
            ("10.0.0.5:0/1234",),
            NodeStatus.DOWN,
            Liveness.STALE,
        ),
    ],
)
def test_classify(
    nodes: tuple[NodeState, ...], watchers: tuple[str, ...], status: NodeStatus, liveness: Liveness
) -> None:
    (lock,) = classify(info(*watchers), NodeView(nodes))
    assert (lock.node_status, lock.liveness) == (status, liveness)


def test_node_deleted_from_the_api_can_be_confirmed_down_by_ip() -> None:
    (lock,) = classify(info("10.0.0.5:0/1234"), NodeView(confirmed_down=frozenset({"10.0.0.5"})))
    assert (lock.node_status, lock.liveness) == (NodeStatus.DOWN, Liveness.STALE)


def test_without_node_list_a_watching_holder_is_live() -> None:
    (lock,) = classify(info("10.0.0.5:0/1234"), NodeView(known=False))
    assert (lock.node_status, lock.liveness) == (NodeStatus.UNKNOWN, Liveness.LIVE)


def test_address_ip() -> None:
    assert address_ip("10.0.0.5:0/1234") == "10.0.0.5"
    assert address_ip("v1:[fd00::5]:0/99") == "fd00::5"


@pytest.mark.parametrize(
    ("caps", "verdict"),
    [
        ({"mon": "allow *", "osd": "allow *", "mgr": "allow *"}, Severity.WARN),
        ({"mon": "profile rbd", "osd": "profile rbd-read-only pool=k8s"}, Severity.FAIL),
        (
            {"mon": "profile rbd", "osd": "profile rbd pool=other", "mgr": "profile rbd"},
            Severity.FAIL,
        ),
        (
            {
                "mon": 'allow r, allow command "osd blocklist"',
                "osd": "allow rwx pool k8s",
                "mgr": "profile rbd pool=k8s",
            },
            Severity.OK,
        ),
    ],
)
def test_caps_analysis(caps: dict[str, str], verdict: Severity) -> None:
    worst = max((f.severity for f in analyse_caps("u", "k8s", caps)), key=list(Severity).index)
    assert worst == verdict


def test_placeholder_key_is_reported_against_the_secret() -> None:
    spec = RenderInput(monitors=["10.0.0.1"], pool="k8s", cluster_id="fsid", user="u")
    with pytest.raises(CephError) as caught:
        target_from(manifests(spec))
    assert caught.value.field == "secret"
    assert "not a cephx key" in str(caught.value)


def test_rendered_manifests_read_back() -> None:
    spec = RenderInput(
        monitors=["10.0.0.1:6789"], pool="k8s", cluster_id="fsid", user="client.u", key=KEY
    )
    target, pool = target_from(manifests(spec))
    assert (target.monitors, target.user, target.key, pool) == (
        ["10.0.0.1:6789"],
        "u",
        KEY,
        "k8s",
    )


def test_kube_objects_parse() -> None:
    node = node_state(
        {
            "metadata": {"name": "w1"},
            "spec": {
                "taints": [{"key": "node.kubernetes.io/out-of-service", "effect": "NoExecute"}]
            },
            "status": {
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                "conditions": [{"type": "Ready", "status": "Unknown"}],
            },
        }
    )
    assert node == NodeState("w1", ("10.0.0.5",), ready=False, out_of_service=True)
    pv = {
        "metadata": {"name": "pvc-1"},
        "spec": {
            "csi": {
                "driver": "rbd.csi.ceph.com",
                "volumeHandle": "h",
                "volumeAttributes": {"pool": "k8s", "imageName": "csi-vol-1"},
            },
            "claimRef": {"namespace": "db", "name": "data-etcd-0"},
        },
    }
    vol = rbd_volume(pv)
    assert vol is not None
    assert (vol.image, vol.claim) == ("csi-vol-1", "db/data-etcd-0")
    assert rbd_volume({"metadata": {"name": "x"}, "spec": {"hostPath": {}}}) is None


def csi_workload(kind: str, *args: str) -> dict[str, object]:
    container = {"name": "csi-rbdplugin", "args": list(args)}
    return {"kind": kind, "spec": {"template": {"spec": {"containers": [container]}}}}


def test_instance_id_comes_from_ceph_csi_flags_never_a_guess() -> None:
    provisioner = csi_workload("Deployment", "--type=rbd", "--instanceid=k8s-a", "--clustername=a")
    nodeplugin = csi_workload("DaemonSet", "--type=rbd", "--instanceid=k8s-a")
    cephfs = csi_workload("Deployment", "--type=cephfs", "--instanceid=other")
    assert csi_flags([provisioner, nodeplugin, cephfs]) == {
        "instanceid": "k8s-a",
        "clustername": "a",
    }
    # ceph-csi's own default when the flag is absent (docs/deploy-rbd.md), not ours.
    assert csi_flags([csi_workload("Deployment", "--type=rbd")]) == {"instanceid": "default"}
    assert csi_flags([cephfs]) == {}
    with pytest.raises(CephError) as caught:
        csi_flags([provisioner, csi_workload("DaemonSet", "--type=rbd", "--instanceid=k8s-b")])
    assert caught.value.field == "instanceid"
    assert "pass --instance-id" in str(caught.value)
