"""Orphan cleanup fails closed: issue 11's seven-image pool, empty and failing PV sources, and a
deletion that half fails, all against the real mini cluster and through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from quorumkeeper.ceph.client import CephError, connect
from quorumkeeper.ceph.orphans import Action, Ownership, PvRef, find_orphans, handle_uuid
from quorumkeeper.cli.ceph import ceph_app
from tests.ceph.apistandin import ApiStandIn
from tests.ceph.minicluster import ClientUser, Holder, MiniCluster, csi_caps, target_for

pytestmark = pytest.mark.ceph

runner = CliRunner()
OURS, THEIRS = "k8s-a", "k8s-b"


def handle(image_uuid: str) -> str:
    """A volume handle as ceph-csi writes it into a PV."""
    return f"0001-0024-ceph-test-cluster-0000000000000001-{image_uuid}"


@dataclass
class SevenImages:
    """Issue 11's pool: image names by their number in the issue."""

    pool: str
    user: ClientUser
    names: dict[int, str]
    uuids: dict[int, str]
    holder: Holder

    def flags(self, cluster: MiniCluster) -> list[str]:
        return [
            "-m",
            cluster.mon_addr,
            "--user",
            self.user.name,
            "--key",
            self.user.key,
            "--pool",
            self.pool,
            "--timeout",
            "5",
            "--instance-id",
            OURS,
            "--cluster-name",
            OURS,
        ]


@pytest.fixture
def seven(ceph_cluster: MiniCluster, unique: str) -> Iterator[SevenImages]:
    pool = f"orphans-{unique}"
    ceph_cluster.create_rbd_pool(pool)
    user = ceph_cluster.create_user(f"orph-{unique}", csi_caps(pool))
    uuids = {n: str(uuid.uuid4()) for n in range(1, 8)}
    names = {n: f"csi-vol-{u}" for n, u in uuids.items()}
    names[3] = f"csi-snap-{uuids[3]}"

    def rbd(*args: str) -> None:
        ceph_cluster.rbd(*args)

    # (6) a volume with a protected snapshot; (1) a PV's clone of it; (3) the clone standing
    # for a VolumeSnapshot, made from the same snapshot.
    rbd("create", "--size", "4M", "--image-feature", "layering", f"{pool}/{names[6]}")
    rbd("snap", "create", f"{pool}/{names[6]}@base")
    rbd("snap", "protect", f"{pool}/{names[6]}@base")
    for n in (1, 3):
        rbd("clone", "--image-feature", "layering", f"{pool}/{names[6]}@base", f"{pool}/{names[n]}")
    for n in (2, 4, 5, 7):
        rbd("create", "--size", "4M", "--image-feature", "layering", f"{pool}/{names[n]}")
    for n in (1, 2, 4, 5, 6):
        ceph_cluster.csi_journal_add(pool, OURS, f"pvc-{uuids[n]}", uuids[n], names[n])
    ceph_cluster.csi_journal_add(
        pool, OURS, f"snapshot-{uuids[3]}", uuids[3], names[3], snapshot=True
    )
    # (7) another Kubernetes cluster's volume in the shared pool, as its ceph-csi left it.
    ceph_cluster.csi_journal_add(pool, THEIRS, f"pvc-{uuids[7]}", uuids[7], names[7])
    rbd("image-meta", "set", f"{pool}/{names[7]}", "csi.ceph.com/cluster/name", THEIRS)
    rbd("trash", "mv", f"{pool}/{names[4]}")  # (4) trashed by hand, no deferment
    holder = Holder(ceph_cluster, user, pool, names[5], "node-a-mount")  # (5) in use
    yield SevenImages(pool, user, names, uuids, holder)
    holder.stop()


def images(cluster: MiniCluster, pool: str) -> list[str]:
    return sorted(cluster.rbd_json("ls", pool))


def trash(cluster: MiniCluster, pool: str) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in cluster.rbd_json("trash", "ls", "--long", pool)}


def test_seven_image_pool_listing_and_delete(
    ceph_cluster: MiniCluster, seven: SevenImages, tmp_path: Path
) -> None:
    names = seven.names
    handles = tmp_path / "handles"
    handles.write_text(handle(seven.uuids[1]) + "\n")
    base = ["orphans", *seven.flags(ceph_cluster), "--handles-file", str(handles)]

    listed = runner.invoke(ceph_app, [*base, "--json"])
    assert listed.exit_code == 0, listed.output
    plan = json.loads(listed.output)["plan"]
    verdicts = {v["image"]: v for v in plan["images"] + plan["trash"]}
    assert set(verdicts) == set(names.values())

    def kept(n: int, *phrases: str) -> None:
        v = verdicts[names[n]]
        assert v["action"] == "keep", (n, v)
        why = " | ".join(v["reasons"])
        for phrase in phrases:
            assert phrase in why, (n, phrase, why)

    kept(1, "referenced by PV " + handle(seven.uuids[1]))
    assert verdicts[names[2]]["action"] == "trash"
    assert verdicts[names[2]]["owner"] == f"{OURS} (pvc-{seven.uuids[2]})"
    kept(3, f"snapshot clone standing for VolumeSnapshot content snapshot-{seven.uuids[3]}")
    # (4) stays in the trash on --delete; only the separate --purge-trash may remove it.
    assert verdicts[names[4]]["action"] == "purge"
    assert "in the RBD trash since" in verdicts[names[4]]["reasons"][0]
    kept(5, "watched by client.", seven.holder.address, "locked by")
    kept(
        6,
        "parent of clone(s) ",
        f"{seven.pool}/{names[1]}",
        f"{seven.pool}/{names[3]}",
        "has snapshot(s) base (protected)",
    )
    kept(
        7,
        f"named by the journal of ceph-csi instance '{THEIRS}' (csi.volumes.{THEIRS}",
        f"csi.ceph.com/cluster/name='{THEIRS}', not this cluster's '{OURS}'",
    )
    assert verdicts[names[7]]["owner"] == THEIRS

    dry = runner.invoke(ceph_app, base)
    assert dry.exit_code == 0, dry.output
    assert f"dry run, nothing changed: --delete would move {names[2]} to the trash" in dry.output
    before = images(ceph_cluster, seven.pool)
    assert before == sorted(names[n] for n in (1, 2, 3, 5, 6, 7))

    deleted = runner.invoke(ceph_app, [*base, "--delete", "--yes"])
    assert deleted.exit_code == 0, deleted.output
    assert f"ok {names[2]}: moved to the trash, restorable until" in deleted.output
    assert "1 of 1 moved to the trash" in deleted.output
    assert images(ceph_cluster, seven.pool) == sorted(names[n] for n in (1, 3, 5, 6, 7))
    trashed = trash(ceph_cluster, seven.pool)
    assert set(trashed) == {names[2], names[4]}
    status = trashed[names[2]]["status"]  # as `rbd trash ls --long` words it
    deferred = datetime.strptime(status.removeprefix("protected until "), "%a %b %d %H:%M:%S %Y")
    assert deferred.replace(tzinfo=UTC) - datetime.now(UTC) > timedelta(days=2.9)
    restore = f"rbd trash restore -p {seven.pool} {trashed[names[2]]['id']}"
    assert restore in deleted.output

    # The purge is its own step: it removes (4) (ours, deferment over), never (2) (deferred).
    purged = runner.invoke(ceph_app, [*base, "--purge-trash", "--yes"])
    assert purged.exit_code == 0, purged.output
    assert f"ok {names[4]}: removed from the trash" in purged.output
    assert set(trash(ceph_cluster, seven.pool)) == {names[2]}
    assert images(ceph_cluster, seven.pool) == sorted(names[n] for n in (1, 3, 5, 6, 7))


# --- evidence that is empty, partial or failing ------------------------------------------


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiStandIn]:
    stand_in = ApiStandIn(tmp_path)
    yield stand_in
    stand_in.stop()


def test_empty_pv_list_deletes_nothing_unless_the_journal_agrees(
    ceph_cluster: MiniCluster, seven: SevenImages, api: ApiStandIn
) -> None:
    flags = seven.flags(ceph_cluster)
    before = (images(ceph_cluster, seven.pool), set(trash(ceph_cluster, seven.pool)))
    api.pvs = []
    refused = runner.invoke(
        ceph_app,
        ["orphans", *flags, "--kubeconfig", str(api.kubeconfig), "--delete", "--yes"],
    )
    assert refused.exit_code == 2, refused.output
    assert "pvs: the PV list is empty" in " ".join(refused.output.split())
    assert "pass --no-pvs" in " ".join(refused.output.split())

    # The override needs this instance's journal: a wrong instance id has none.
    wrong = [*flags, "--instance-id", "k8s-typo"]
    no_journal = runner.invoke(
        ceph_app,
        ["orphans", *wrong, "--kubeconfig", str(api.kubeconfig), "--no-pvs", "--delete", "-y"],
    )
    assert no_journal.exit_code == 2, no_journal.output
    assert "csi.volumes.k8s-typo does not exist" in " ".join(no_journal.output.split())
    assert (images(ceph_cluster, seven.pool), set(trash(ceph_cluster, seven.pool))) == before

    # With the journal, only journal-named, unused images go: here (1) too, as no PV is left.
    agreed = runner.invoke(
        ceph_app,
        ["orphans", *flags, "--kubeconfig", str(api.kubeconfig), "--no-pvs", "--delete", "-y"],
    )
    assert agreed.exit_code == 0, agreed.output
    moved = {
        line.split()[1].rstrip(":") for line in agreed.output.splitlines() if line.startswith("ok ")
    }
    assert moved == {seven.names[1], seven.names[2]}


@pytest.mark.parametrize(
    ("status", "allowed", "expected"),
    [
        (403, True, "refused this kubeconfig's user access to persistentvolumes (403"),
        (500, True, "reading persistentvolumes from the API server failed"),
        (200, False, "may not list persistentvolumes, so any PV list it got could be partial"),
    ],
    ids=["forbidden", "server-error", "filtered"],
)
def test_failing_pv_source_deletes_nothing(
    ceph_cluster: MiniCluster,
    seven: SevenImages,
    api: ApiStandIn,
    status: int,
    allowed: bool,
    expected: str,
) -> None:
    before = (images(ceph_cluster, seven.pool), set(trash(ceph_cluster, seven.pool)))
    api.pv_status, api.allowed = status, allowed
    api.pvs = [
        {
            "metadata": {"name": "pv-1"},
            "spec": {"csi": {"driver": "rbd.csi.ceph.com", "volumeHandle": handle(seven.uuids[1])}},
        }
    ]
    for extra in ([], ["--delete", "--yes"], ["--no-pvs", "--delete", "--yes"]):
        result = runner.invoke(
            ceph_app,
            ["orphans", *seven.flags(ceph_cluster), "--kubeconfig", str(api.kubeconfig), *extra],
        )
        assert result.exit_code == 2, (extra, result.output)
        text = " ".join(result.output.split())
        assert "kubeconfig:" in text and expected in text, (extra, text)
    assert (images(ceph_cluster, seven.pool), set(trash(ceph_cluster, seven.pool))) == before


# --- one image fails, the others are still moved, and the output says which --------------


def test_half_failing_delete_reports_each_image_and_exits_non_zero(
    ceph_cluster: MiniCluster, unique: str, tmp_path: Path
) -> None:
    pool = f"half-{unique}"
    ceph_cluster.create_rbd_pool(pool)
    user = ceph_cluster.create_user(f"half-{unique}", csi_caps(pool))
    ids = sorted(str(uuid.uuid4()) for _ in range(4))
    names = [f"csi-vol-{u}" for u in ids]  # handled in this order
    for u, name in zip(ids, names, strict=True):
        ceph_cluster.rbd("create", "--size", "4M", "--image-feature", "layering", f"{pool}/{name}")
        ceph_cluster.csi_journal_add(pool, OURS, f"pvc-{u}", u, name)
    unrelated = tmp_path / "handles"
    unrelated.write_text(handle(str(uuid.uuid4())) + "\n")  # one PV, of some other image
    args = [
        *["-m", ceph_cluster.mon_addr, "--user", user.name, "--key", user.key, "--pool", pool],
        *["--instance-id", OURS, "--handles-file", str(unrelated), "--delete"],
    ]
    # A real process, so images can change between its listing and the answer to its prompt:
    # the first gets a user, the third is removed by someone else.
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("quorumkeeper")), "ceph", "orphans", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "250"},
    )
    holder = None
    try:
        assert proc.stdout is not None and proc.stderr is not None and proc.stdin is not None
        prompt = ""
        while "?" not in prompt:
            char = proc.stderr.read(1)
            assert char, f"no prompt; stdout: {proc.stdout.read()}"
            prompt += char
        assert all(n in prompt for n in names), prompt
        holder = Holder(ceph_cluster, user, pool, names[0], "late-mount")
        ceph_cluster.rbd("rm", f"{pool}/{names[2]}")
        stdout, stderr = proc.communicate("y\n", timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        if holder is not None:
            holder.stop()
    assert proc.returncode == 1, (stdout, stderr)
    lines = [
        ln.strip() for ln in stdout.splitlines() if ln.strip().startswith(("ok ", "NOT DONE "))
    ]
    # One line per image, in the order handled; neither failure stopped the ones after it.
    assert [line.split(":")[0].split()[-1] for line in lines] == names, stdout
    assert lines[0].startswith(f"NOT DONE {names[0]}: not moved: watched by")
    assert "(since the listing)" in lines[0]
    assert lines[1].startswith(f"ok {names[1]}: moved to the trash, restorable until")
    assert lines[2].startswith(f"NOT DONE {names[2]}: failed: image {pool}/{names[2]} does not")
    assert lines[3].startswith(f"ok {names[3]}: moved to the trash, restorable until")
    assert "2 of 4 moved to the trash" in stdout
    assert images(ceph_cluster, pool) == [names[0]]
    assert set(trash(ceph_cluster, pool)) == {names[1], names[3]}


# --- the library's own refusals ------------------------------------------------------------


def test_unreadable_journal_refuses(
    ceph_cluster: MiniCluster, seven: SevenImages, unique: str
) -> None:
    """A user that may list images but not read objects' omaps proves nothing."""
    blind = ceph_cluster.create_user(
        f"blind-{unique}",
        {"mon": "profile rbd", "osd": f"allow rx pool={seven.pool} object_prefix rbd_"},
    )
    with connect(target_for(ceph_cluster, blind)) as client, pytest.raises(CephError) as caught:
        find_orphans(client, seven.pool, [PvRef("pv", handle(seven.uuids[1]))], Ownership(OURS))
    assert caught.value.field == "journal"
    assert f"csi.volumes.{OURS}" in str(caught.value)


def test_explicit_listing_is_ownership_but_not_over_contrary_evidence(
    ceph_cluster: MiniCluster, seven: SevenImages, unique: str
) -> None:
    stray = f"left-by-hand-{unique}"
    ceph_cluster.rbd(
        "create", "--size", "4M", "--image-feature", "layering", f"{seven.pool}/{stray}"
    )
    with connect(target_for(ceph_cluster, seven.user)) as client:
        explicit = frozenset({stray, seven.names[7]})
        plan = find_orphans(
            client,
            seven.pool,
            [PvRef("pv", handle(seven.uuids[1]))],
            Ownership(OURS, OURS, explicit),
        )
        by_image = {v.image: v for v in plan.images}
        assert by_image[stray].action == Action.TRASH
        assert by_image[stray].owner == "listed by you"
        assert by_image[seven.names[7]].action == Action.KEEP
        without = find_orphans(
            client, seven.pool, [PvRef("pv", handle(seven.uuids[1]))], Ownership(OURS)
        )
        assert {v.image: v for v in without.images}[stray].action == Action.KEEP


def test_bad_volume_handle_and_deferment_are_named(ceph_cluster: MiniCluster) -> None:
    with pytest.raises(CephError) as caught:
        handle_uuid("pvc-1234")
    assert caught.value.field == "volume-handle"
    bad = runner.invoke(ceph_app, ["orphans", "--deferment", "0", "--no-pvs"])
    assert bad.exit_code == 2
    assert "deferment: '0' is not a duration" in " ".join(bad.output.split())
    missing = runner.invoke(
        ceph_app,
        [
            "orphans",
            "-m",
            ceph_cluster.mon_addr,
            "--user",
            "admin",
            "--key",
            ceph_cluster.admin_key,
            "--pool",
            "k8s",
            "--no-pvs",
        ],
    )
    assert missing.exit_code == 2
    assert "instance-id: which ceph-csi instance" in " ".join(missing.output.split())
