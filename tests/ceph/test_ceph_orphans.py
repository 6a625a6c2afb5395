"""Orphan images: detected after their PVs are deleted, removed only when nobody uses them."""

from __future__ import annotations

import uuid

import pytest

from quorumkeeper.ceph.client import CephError, connect
from quorumkeeper.ceph.orphans import delete_orphans, find_orphans, handle_uuid
from tests.ceph.minicluster import Holder, MiniCluster, csi_caps, target_for

pytestmark = pytest.mark.ceph


def handle(image_uuid: str) -> str:
    """A volume handle as ceph-csi writes it into a PV."""
    return f"0001-0024-ceph-test-cluster-0000000000000001-{image_uuid}"


def test_orphans_after_pv_deletion_and_safe_delete(ceph_cluster: MiniCluster, unique: str) -> None:
    pool = f"orphans-{unique}"
    ceph_cluster.mon_command({"prefix": "osd pool create", "pool": pool, "pg_num": 8})
    ceph_cluster.mon_command({"prefix": "osd pool application enable", "pool": pool, "app": "rbd"})
    user = ceph_cluster.create_user(f"orph-{unique}", csi_caps(pool))
    kept, dropped, watched = (str(uuid.uuid4()) for _ in range(3))
    for u in (kept, dropped, watched):
        ceph_cluster.rbd(
            "create", "--size", "4M", "--image-feature", "layering", f"{pool}/csi-vol-{u}"
        )
    ceph_cluster.rbd("create", "--size", "4M", f"{pool}/not-from-csi")

    with connect(target_for(ceph_cluster, user)) as client:
        before = find_orphans(client, pool, [handle(u) for u in (kept, dropped, watched)])
        assert before.orphans == ()
        assert before.foreign == ("not-from-csi",)

        # Two PVs deleted (reclaim Retain); one image is still in use by a live client.
        holder = Holder(ceph_cluster, user, pool, f"csi-vol-{watched}", "still-mounted")
        try:
            after = find_orphans(client, pool, [handle(kept)])
            assert sorted(o.image for o in after.orphans) == sorted(
                [f"csi-vol-{dropped}", f"csi-vol-{watched}"]
            )
            orphan = next(o for o in after.orphans if o.image == f"csi-vol-{dropped}")
            assert orphan.size == 4 << 20
            assert 0 <= orphan.age_s < 600
            assert orphan.watchers == 0

            deletions = {d.image: d for d in delete_orphans(client, after)}
            assert deletions[f"csi-vol-{dropped}"].deleted
            assert not deletions[f"csi-vol-{watched}"].deleted
            assert "watched by" in deletions[f"csi-vol-{watched}"].reason
        finally:
            holder.stop()
        assert sorted(client.list_images(pool)) == sorted(
            [f"csi-vol-{kept}", f"csi-vol-{watched}", "not-from-csi"]
        )


def test_bad_volume_handle_is_named() -> None:
    with pytest.raises(CephError) as caught:
        handle_uuid("pvc-1234")
    assert caught.value.field == "volume-handle"
