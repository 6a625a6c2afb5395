"""`check` against real daemons: the caps matrix and the seed's Permission denied."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from quorumkeeper.ceph.caps import Severity, caps_command
from quorumkeeper.ceph.check import check_access
from quorumkeeper.ceph.client import CephTarget
from tests.ceph.minicluster import MiniCluster, target_for

pytestmark = pytest.mark.ceph

POOL = "k8s"
CAPS_MATRIX = {
    "profile-rbd": (
        {
            "mon": "profile rbd",
            "osd": f"profile rbd pool={POOL}",
            "mgr": f"profile rbd pool={POOL}",
        },
        Severity.OK,
    ),
    "allow-rw": ({"mon": "allow rw", "osd": f"allow rwx pool={POOL}"}, Severity.WARN),
    "allow-r": ({"mon": "allow r", "osd": f"allow rwx pool={POOL}"}, Severity.FAIL),
    "blacklist-era": (
        {
            "mon": 'allow r, allow command "osd blacklist"',
            "osd": f"allow class-read object_prefix rbd_children, allow rwx pool={POOL}",
        },
        Severity.FAIL,
    ),
}
# Live probes can't see the missing mgr cap or over-broad mon rights, only what breaks.
PROBE_VERDICT = {"profile-rbd": Severity.OK, "allow-rw": Severity.OK}


@pytest.mark.parametrize("recipe", sorted(CAPS_MATRIX))
def test_caps_matrix(
    ceph_cluster: MiniCluster, admin_target: CephTarget, recipe: str, unique: str
) -> None:
    caps, expected = CAPS_MATRIX[recipe]
    user = ceph_cluster.create_user(f"{recipe}-{unique}", caps)
    target = target_for(ceph_cluster, user)

    exact = check_access(target, POOL, admin=admin_target)
    probed = check_access(target, POOL)

    assert exact.verdict == expected, exact.findings
    assert probed.verdict == PROBE_VERDICT.get(recipe, expected), probed.findings
    if expected == Severity.FAIL:
        assert caps_command(user.name, POOL) in exact.fixes
        assert caps_command(user.name, POOL) in probed.fixes
        assert any("blocklist" in f.message for f in probed.findings if f.subject == "caps.mon")


def test_seed_permission_denied_is_flagged_beforehand(
    ceph_cluster: MiniCluster, unique: str
) -> None:
    """The seed's failure: a user without `osd blocklist` cannot release a dead client's lock."""
    user = ceph_cluster.create_user(
        f"seed-{unique}", {"mon": "allow r", "osd": f"allow rwx pool={POOL}"}
    )
    report = check_access(target_for(ceph_cluster, user), POOL)
    assert not report.ok
    fix = caps_command(user.name, POOL)
    assert report.fixes == [fix]

    image = f"{POOL}/seed-{unique}"
    ceph_cluster.rbd("create", "--size", "4M", "--image-feature", "layering", image)
    ceph_cluster.rbd("lock", "add", image, "dead-node")  # held by a client that has exited
    locker = ceph_cluster.rbd_json("lock", "ls", image)[0]["locker"]

    args = ["rbd", *ceph_cluster.cli_args(user), "lock", "rm", image, "dead-node", locker]
    denied = subprocess.run(args, capture_output=True, text=True, timeout=30, check=False)
    assert denied.returncode == 13
    # rbd writes its message in pieces, and librbd's own log line may land between them.
    assert "rbd: releasing lock failed:" in denied.stderr
    assert "(13) Permission denied" in denied.stderr

    # The fix `check` printed, run verbatim as admin, makes the same removal work.
    fix_args = shlex.split(fix)
    subprocess.run(
        [fix_args[0], *ceph_cluster.cli_args(), *fix_args[1:]],
        check=True,
        timeout=30,
        capture_output=True,
    )
    assert check_access(target_for(ceph_cluster, user), POOL).ok
    subprocess.run(args, check=True, timeout=30, capture_output=True)
    assert ceph_cluster.rbd_json("lock", "ls", image) == []
