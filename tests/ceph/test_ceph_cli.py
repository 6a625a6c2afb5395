"""The `ceph` and `render ceph` commands end to end, and every bad input they must refuse."""

from __future__ import annotations

import shlex
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from quorumkeeper.ceph.check import check_access
from quorumkeeper.ceph.client import CephError, CephTarget, connect
from quorumkeeper.cli.ceph import ceph_app, render_app
from tests.ceph.minicluster import ClientUser, MiniCluster, csi_caps, target_for

pytestmark = pytest.mark.ceph

POOL = "k8s"
runner = CliRunner()


def flags(
    cluster: MiniCluster, user: ClientUser, timeout: float = 5, mon: str | None = None
) -> list[str]:
    return [
        "-m",
        mon or cluster.mon_addr,
        "--user",
        user.name,
        "--key",
        user.key,
        "--pool",
        POOL,
        "--timeout",
        str(timeout),
    ]


def run_admin(cluster: MiniCluster, command: str) -> None:
    """Run a printed `ceph ...` command verbatim as the cluster admin."""
    args = shlex.split(command)
    subprocess.run(
        [args[0], *cluster.cli_args(), *args[1:]], check=True, timeout=30, capture_output=True
    )


@pytest.mark.parametrize("policy", ["Delete", "Retain"])
def test_render_then_check_the_rendered_manifests(
    ceph_cluster: MiniCluster, tmp_path: Path, unique: str, policy: str
) -> None:
    user = f"csi-render-{unique}-{policy.lower()}"
    base = [
        "-m",
        ceph_cluster.mon_addr,
        "--pool",
        POOL,
        "--cluster-id",
        ceph_cluster.fsid,
        "--user",
        user,
        "--reclaim-policy",
        policy.lower(),
    ]
    first = runner.invoke(render_app, ["ceph", *base])
    assert first.exit_code == 0, first.output
    create = first.output.splitlines()[1].removeprefix("#").strip()
    assert create.startswith(f"ceph auth get-or-create client.{user} mon 'profile rbd'")
    run_admin(ceph_cluster, create)  # the printed least-privilege command, verbatim

    key = ceph_cluster.mon_command({"prefix": "auth get-key", "entity": f"client.{user}"}).strip()
    out = tmp_path / "ceph.yaml"
    second = runner.invoke(render_app, ["ceph", *base, "--key", key, "-o", str(out)])
    assert second.exit_code == 0, second.output
    docs = {d["kind"]: d for d in yaml.safe_load_all(out.read_text()) if d}
    sc = docs["StorageClass"]
    assert sc["provisioner"] == "rbd.csi.ceph.com"
    assert sc["reclaimPolicy"] == policy
    assert sc["parameters"]["imageFeatures"] == "layering"
    assert sc["parameters"]["csi.storage.k8s.io/fstype"] == "ext4"
    assert sc["parameters"]["pool"] == POOL
    assert docs["Secret"]["stringData"] == {"userID": user, "userKey": key}
    assert ceph_cluster.mon_addr in docs["ConfigMap"]["data"]["config.json"]

    checked = runner.invoke(ceph_app, ["check", "--manifests", str(out), "--json"])
    assert checked.exit_code == 0, checked.output
    assert '"verdict": "ok"' in checked.output


def test_render_rejects_bad_input_naming_the_flag() -> None:
    result = runner.invoke(
        render_app,
        ["ceph", "-m", "10.0.0.1:6789", "--pool", "k8s", "--cluster-id", "", "--user", "bad user"],
    )
    assert result.exit_code == 2
    assert "--cluster-id" in result.output
    assert "--user" in result.output


def test_check_cli_prints_the_fix(ceph_cluster: MiniCluster, unique: str) -> None:
    weak = ceph_cluster.create_user(f"cli-weak-{unique}", {"mon": "allow r", "osd": "allow rwx"})
    result = runner.invoke(ceph_app, ["check", *flags(ceph_cluster, weak)])
    assert result.exit_code == 1
    assert f"fix: ceph auth caps client.{weak.name} mon 'profile rbd'" in result.output
    assert "verdict: fail" in result.output

    admin = ["--admin-user", "admin", "--admin-key", ceph_cluster.admin_key]
    exact = runner.invoke(ceph_app, ["check", *flags(ceph_cluster, weak), *admin, "--json"])
    assert exact.exit_code == 1
    assert "cannot run 'osd blocklist'" in exact.output
    assert "no 'mgr profile rbd pool=k8s'" in exact.output


def test_locks_cli_lists_and_fences(ceph_cluster: MiniCluster, unique: str) -> None:
    user = ceph_cluster.create_user(f"cli-locks-{unique}", csi_caps(POOL))
    image = f"cli-lock-{unique}"
    ceph_cluster.rbd("create", "--size", "4M", "--image-feature", "layering", f"{POOL}/{image}")
    ceph_cluster.rbd("lock", "add", f"{POOL}/{image}", "old-node", user=user)
    common = ["locks", *flags(ceph_cluster, user), "--image", image, "--node", "node-a=127.0.0.1"]

    listed = runner.invoke(ceph_app, [*common, "--json"])
    assert listed.exit_code == 0, listed.output
    assert '"liveness": "stale"' in listed.output

    fenced = runner.invoke(ceph_app, [*common, "--fence"])
    assert fenced.exit_code == 0, fenced.output
    assert f"{POOL}/{image}: fenced" in fenced.output
    assert ceph_cluster.rbd_json("lock", "ls", f"{POOL}/{image}") == []


def test_orphans_cli_moves_to_trash_after_confirmation(
    ceph_cluster: MiniCluster, tmp_path: Path, unique: str
) -> None:
    user = ceph_cluster.create_user(f"cli-orph-{unique}", csi_caps(POOL))
    instance = f"cli-{unique}"
    kept, gone = str(uuid.uuid4()), str(uuid.uuid4())
    for u in (kept, gone):
        ceph_cluster.rbd(
            "create", "--size", "4M", "--image-feature", "layering", f"{POOL}/csi-vol-{u}"
        )
        ceph_cluster.csi_journal_add(POOL, instance, f"pvc-{u}", u, f"csi-vol-{u}")
    handles = tmp_path / "handles"
    handles.write_text(f"0001-0024-x-0000000000000001-{kept}\n")
    # Other tests' images share the pool: not in this instance's journal, so never candidates.
    cmd = [
        "orphans",
        *flags(ceph_cluster, user),
        "--instance-id",
        instance,
        "--handles-file",
        str(handles),
        "--delete",
    ]

    declined = runner.invoke(ceph_app, cmd, input="n\n")
    assert declined.exit_code == 1
    assert f"csi-vol-{gone}" in ceph_cluster.rbd_json("ls", POOL)

    accepted = runner.invoke(ceph_app, cmd, input="y\n")
    assert accepted.exit_code == 0, accepted.output
    assert f"ok csi-vol-{gone}: moved to the trash" in accepted.output
    assert "1 of 1 moved to the trash" in accepted.output
    images = ceph_cluster.rbd_json("ls", POOL)
    assert f"csi-vol-{gone}" not in images
    assert f"csi-vol-{kept}" in images
    assert f"csi-vol-{gone}" in {e["name"] for e in ceph_cluster.rbd_json("trash", "ls", POOL)}

    refused = runner.invoke(
        ceph_app, ["orphans", *flags(ceph_cluster, user), "--instance-id", instance]
    )
    assert refused.exit_code == 2
    assert "no PVs given" in refused.output


# --- bad input: each a clear error, within a bounded time, nothing changed ----------------


@pytest.fixture
def silent_mon() -> Iterator[str]:
    """A port that accepts TCP but never speaks Ceph: the slowest way a monitor can fail."""
    sock = socket.socket()
    sock.bind(("127.0.150.250", 0))
    sock.listen(8)
    yield f"127.0.150.250:{sock.getsockname()[1]}"
    sock.close()


def cluster_state(cluster: MiniCluster) -> tuple[object, ...]:
    pools = cluster.mon_command({"prefix": "osd pool ls", "format": "json"})
    return (
        pools,
        cluster.rbd_json("ls", POOL),
        cluster.mon_command({"prefix": "osd blocklist ls", "format": "json"}),
    )


def test_bad_inputs_fail_clearly_fast_and_change_nothing(
    ceph_cluster: MiniCluster, silent_mon: str, unique: str
) -> None:
    user = ceph_cluster.create_user(f"bad-{unique}", csi_caps(POOL))
    ceph_cluster.mon_command({"prefix": "osd pool create", "pool": f"plain-{unique}", "pg_num": 8})
    wrong_key = subprocess.run(
        ["ceph-authtool", "--gen-print-key"], capture_output=True, text=True, check=True
    ).stdout.strip()
    before = cluster_state(ceph_cluster)
    good = flags(ceph_cluster, user, timeout=3)

    def mon(address: str) -> list[str]:
        return flags(ceph_cluster, user, timeout=3, mon=address)

    cases = {
        # name: (command line, exit code, text the error must contain)
        "monitor refuses": (["check", *mon("127.0.150.251:6789")], 1, "unreachable"),
        "monitor silent": (["locks", *mon(silent_mon)], 2, "monitors: no monitor"),
        "wrong key": (["locks", *good, "--key", wrong_key], 2, "key: the monitors rejected"),
        "missing pool": (["check", *good, "--pool", "nope"], 1, "pool 'nope' does not exist"),
        "pool without rbd": (
            ["check", *good, "--pool", f"plain-{unique}"],
            1,
            f"rbd pool init plain-{unique}",
        ),
        "missing image": (["locks", *good, "--image", "nope"], 2, "image: image k8s/nope does not"),
        "malformed key": (["check", *good, "--key", "not base64!"], 2, "key: Value error, not a"),
        "unknown node-down": (["locks", *good, "--node-down", "w9"], 2, "'w9' is neither"),
        "missing flags": (["check", "-m", ceph_cluster.mon_addr], 2, "missing --pool, --user"),
        "bad monitor": (["check", *mon("10.0.0.1:x")], 2, "monitors"),
    }
    for name, (args, code, text) in cases.items():
        started = time.monotonic()
        result = runner.invoke(ceph_app, args)
        elapsed = time.monotonic() - started
        assert result.exit_code == code, (name, result.output)
        assert text in " ".join(result.output.split()), (name, result.output)
        assert elapsed < 8, (name, elapsed)
    assert cluster_state(ceph_cluster) == before


def test_library_errors_name_the_field(ceph_cluster: MiniCluster, unique: str) -> None:
    user = ceph_cluster.create_user(f"lib-{unique}", csi_caps(POOL))
    bad_key = CephTarget(
        monitors=[ceph_cluster.mon_addr],
        user=user.name,
        key="AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
        timeout=3,
    )
    with pytest.raises(CephError) as caught, connect(bad_key):
        pass
    assert caught.value.field == "key"
    report = check_access(bad_key, POOL)
    assert not report.ok
    assert report.findings[-1].subject == "key"
    with connect(target_for(ceph_cluster, user)) as client:
        with pytest.raises(CephError) as missing:
            client.image_info(POOL, "does-not-exist")
        assert missing.value.field == "image"
