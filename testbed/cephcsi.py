"""Stand-in for ceph-csi's RBD driver (``rbd.csi.ceph.com``) in the test bed, on real Ceph.

ceph-csi needs containers and the kernel's rbd module, neither of which exists here, so this
module does its two jobs the closest way this machine allows:

* Controller (run by :mod:`testbed.provisioner`, like ceph-csi's provisioner pod): a PVC of a
  StorageClass with this provisioner gets an RBD image ``csi-vol-<uuid>`` in the class's pool,
  created as the class's provisioner-secret user, and a PV whose volume handle has ceph-csi's
  format.  The uuid is the PVC's, so a retried provisioning finds its image instead of leaking
  one (ceph-csi keeps that mapping in an omap journal).  A released PV with reclaim policy
  Delete loses its image, then the PV.
* Node (called by the CSI node plugin stand-in :mod:`testbed.csinode` on NodeStageVolume, as
  kubelet asks it to): the node's own Ceph client (the node-stage Secret's user, connecting from
  the node's address) takes the image's lock, ``rbd-fuse`` exposes the image as a file, a loop
  device makes it a block device, ext4 is made on first use and mounted on kubelet's staging
  path.  Unstaging undoes this and unlocks; a lost node's clients just die, leaving their lock
  and watchers behind.  The plugin runs in the node's network namespace
  (:func:`testbed.network.create_node_network`), so Ceph sees its clients at the node's address.

Differences from ceph-csi that tests may meet: the lock is an advisory exclusive lock (images
have ``layering`` only) that stays until someone fences it, where krbd's exclusive-lock feature
would be taken over automatically; there is no ControllerPublish step (the CSIDriver says
``attachRequired: false``, so there are no VolumeAttachments); StorageClass mountOptions are
not applied.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes.utils import parse_quantity

from testbed.kube import Kube, Obj, ns_path, volume_for
from testbed.procs import PDEATHSIG, Fatal, Timeout, stop, wait_for

log = logging.getLogger("testbed.cephcsi")

DRIVER = "rbd.csi.ceph.com"
CSI_CONFIG_MAP = "ceph-csi-config"
IMAGE_PREFIX = "csi-vol-"
HOLDER = Path(__file__).with_name("rbd_holder.py")
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
DELETION_SECRET = "volume.kubernetes.io/provisioner-deletion-secret-"
CEPH_TIMEOUT = 10.0


class CsiError(Exception):
    """A volume can't be provisioned or staged now; the message says why."""


@dataclass(frozen=True)
class Credentials:
    """Where and as whom to reach Ceph, from a ceph-csi Secret and the csi ConfigMap."""

    monitors: str  # comma-separated, as mon_host and -m take them
    user: str
    key: str

    def cli(self) -> list[str]:
        return ["-c", "/dev/null", "-m", self.monitors, "--id", self.user, "--key", self.key]


def credentials(api: Kube, secret_name: str, namespace: str, cluster_id: str) -> Credentials:
    """The user of Secret ``namespace/secret_name`` and the monitors of ``cluster_id``; the
    csi ConfigMap is read from the Secret's namespace, where ceph-csi's deployment keeps it."""
    secret = api.get(ns_path(namespace, "secrets", secret_name))
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    config_map = api.get(ns_path(namespace, "configmaps", CSI_CONFIG_MAP))
    monitors = _monitors([config_map], cluster_id)
    if not monitors:
        raise CsiError(f"clusterID {cluster_id} is not in {namespace}/{CSI_CONFIG_MAP}")
    return Credentials(monitors, data["userID"], data["userKey"])


def _monitors(config_maps: list[Obj], cluster_id: str) -> str:
    """The monitors of ``cluster_id`` in ceph-csi config maps (``config.json``), comma-joined."""
    for config_map in config_maps:
        clusters = json.loads((config_map.get("data") or {}).get("config.json", "[]"))
        for cluster in clusters:
            if cluster.get("clusterID") == cluster_id:
                return ",".join(cluster["monitors"])
    return ""


def node_credentials(api: Kube, secrets: dict[str, str], cluster_id: str) -> Credentials:
    """What NodeStageVolume gets: the node-stage Secret's data (kubelet reads it for the plugin)
    and the monitors of ``cluster_id`` from any namespace's csi ConfigMap (ceph-csi's node plugin
    has it mounted from its own)."""
    config_maps = api.get("/api/v1/configmaps", fieldSelector=f"metadata.name={CSI_CONFIG_MAP}")[
        "items"
    ]
    monitors = _monitors(config_maps, cluster_id)
    if not monitors:
        raise CsiError(f"clusterID {cluster_id} is in no {CSI_CONFIG_MAP} ConfigMap")
    try:
        return Credentials(monitors, secrets["userID"], secrets["userKey"])
    except KeyError as exc:
        raise CsiError(f"the node-stage secret has no {exc.args[0]}") from exc


@contextlib.contextmanager
def _ioctx(creds: Credentials, pool: str) -> Iterator[Any]:
    import rados  # type: ignore[import-not-found]  # only hosts with Ceph get here

    timeout = str(int(CEPH_TIMEOUT))
    conn = rados.Rados(
        conffile="/dev/null",
        rados_id=creds.user,
        conf={
            "mon_host": creds.monitors,
            "key": creds.key,
            "rados_mon_op_timeout": timeout,
            "rados_osd_op_timeout": timeout,
        },
    )
    conn.connect(timeout=int(CEPH_TIMEOUT))
    try:
        with conn.open_ioctx(pool) as ioctx:
            yield ioctx
    finally:
        conn.shutdown()


# ---------------------------------------------------------------- controller


class Controller:
    """CreateVolume and DeleteVolume, driven by the test bed's provisioner loop."""

    def __init__(self, api: Kube) -> None:
        self.api = api

    def ensure_driver(self) -> None:
        """Declare that the driver has no attach step, so the attach/detach controller makes
        no VolumeAttachments that nothing here would ever mark attached."""
        body: Obj = {
            "metadata": {"name": DRIVER},
            "spec": {"attachRequired": False, "podInfoOnMount": False},
        }
        self.api.ensure("/apis/storage.k8s.io/v1/csidrivers", body)

    def provision(self, pvc: Obj, sc: Obj) -> None:
        import rbd  # type: ignore[import-not-found]

        meta, spec, params = pvc["metadata"], pvc["spec"], sc.get("parameters") or {}
        secret = _secret_ref(params, "provisioner")
        cluster_id, pool = params["clusterID"], params["pool"]
        creds = credentials(self.api, secret["name"], secret["namespace"], cluster_id)
        image_uuid = meta["uid"]
        image = IMAGE_PREFIX + image_uuid
        size = int(parse_quantity(spec["resources"]["requests"]["storage"]))  # type: ignore[no-untyped-call]
        features = 0
        for feature in params.get("imageFeatures", "layering").split(","):
            features |= getattr(rbd, f"RBD_FEATURE_{feature.strip().upper().replace('-', '_')}")
        with _ioctx(creds, pool) as ioctx:
            with contextlib.suppress(rbd.ImageExists):
                rbd.RBD().create(ioctx, image, size, old_format=False, features=features)
            pool_id = ioctx.get_pool_id()
        handle = f"0001-{len(cluster_id):04x}-{cluster_id}-{pool_id:016x}-{image_uuid}"
        annotations = {
            PROVISIONED_BY: DRIVER,
            DELETION_SECRET + "name": secret["name"],
            DELETION_SECRET + "namespace": secret["namespace"],
        }
        csi = {
            "driver": DRIVER,
            "volumeHandle": handle,
            "fsType": params.get("csi.storage.k8s.io/fstype", "ext4"),
            "volumeAttributes": {
                "clusterID": cluster_id,
                "pool": pool,
                "imageFeatures": params.get("imageFeatures", "layering"),
                "imageName": image,
            },
            "nodeStageSecretRef": _secret_ref(params, "node-stage"),
        }
        body = volume_for(pvc, sc, annotations, {"csi": csi})
        self.api.ensure("/api/v1/persistentvolumes", body)
        log.info("provisioned %s/%s for %s/%s", pool, image, meta["namespace"], meta["name"])

    def delete(self, pv: Obj) -> None:
        """Remove the image, then the PV; an image still in use is retried on the next pass."""
        import rbd

        annotations, csi = pv["metadata"]["annotations"], pv["spec"]["csi"]
        attrs = csi["volumeAttributes"]
        creds = credentials(
            self.api,
            annotations[DELETION_SECRET + "name"],
            annotations[DELETION_SECRET + "namespace"],
            attrs["clusterID"],
        )
        with _ioctx(creds, attrs["pool"]) as ioctx:
            try:
                rbd.RBD().remove(ioctx, attrs["imageName"])
            except rbd.ImageNotFound:
                pass
            except rbd.ImageBusy:
                return  # a client still watches it, e.g. a dead node's until Ceph times it out
        self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
        log.info("deleted %s/%s and %s", attrs["pool"], attrs["imageName"], pv["metadata"]["name"])


def _secret_ref(params: dict[str, str], role: str) -> dict[str, str]:
    prefix = f"csi.storage.k8s.io/{role}-secret-"
    return {"name": params[prefix + "name"], "namespace": params[prefix + "namespace"]}


# ---------------------------------------------------------------- node


@dataclass
class Staging:
    """One volume staged on one node: lock holder, rbd-fuse, loop device, ext4 mount on
    ``mount`` (kubelet's staging path); rbd-fuse's files live in ``dir``."""

    dir: Path
    mount: Path
    holder: subprocess.Popen[str]
    fuse: subprocess.Popen[bytes] | None = None
    loop: str = ""

    @property
    def fuse_dir(self) -> Path:
        return self.dir / "rbd"


class NodePlugin:
    """NodeStageVolume/NodeUnstageVolume of one node, in the node's network namespace.

    Processes are tied to the calling thread (PDEATHSIG), so a killed node plugin takes its
    Ceph clients with it, as a node that loses power does.
    """

    def __init__(self, node: str, root: Path) -> None:
        self.node, self.root = node, root

    def stage(
        self, volume: str, creds: Credentials, attributes: dict[str, str], mount: Path, fs_type: str
    ) -> Staging:
        """Lock, expose, format on first use and mount the image named by a PV's volume
        ``attributes`` on ``mount``; CsiError if it can't."""
        pool, image = attributes["pool"], attributes["imageName"]
        staging = Staging(self.root / volume, mount, self._hold(creds, pool, image))
        try:
            self._attach(staging, creds, pool, image, fs_type)
        except BaseException:
            self.unstage(staging)
            raise
        log.info("%s: staged %s/%s at %s", self.node, pool, image, staging.mount)
        return staging

    def _hold(self, creds: Credentials, pool: str, image: str) -> subprocess.Popen[str]:
        argv = [sys.executable, str(HOLDER), creds.monitors, creds.user, creds.key, pool, image]
        holder = subprocess.Popen(
            [*PDEATHSIG, *argv, self.node],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert holder.stdout is not None
        if not holder.stdout.readline().strip():
            _, err = holder.communicate(timeout=CEPH_TIMEOUT)
            raise CsiError(err.strip().splitlines()[-1] if err.strip() else "no lock taken")
        return holder

    def _attach(
        self, staging: Staging, creds: Credentials, pool: str, image: str, fs_type: str
    ) -> None:
        staging.fuse_dir.mkdir(parents=True, exist_ok=True)
        staging.mount.mkdir(parents=True, exist_ok=True)
        log_file = staging.dir / "rbd-fuse.log"
        with open(log_file, "ab") as out:
            staging.fuse = subprocess.Popen(
                [
                    *PDEATHSIG,
                    "rbd-fuse",
                    "-f",
                    *creds.cli(),
                    "-p",
                    pool,
                    "-r",
                    image,
                    str(staging.fuse_dir),
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        fuse = staging.fuse

        def exposed() -> bool:
            if fuse.poll() is not None:
                raise Fatal(f"rbd-fuse exited: {log_file.read_text().strip()[-300:]}")
            return (staging.fuse_dir / image).exists()

        try:
            wait_for(exposed, CEPH_TIMEOUT, f"rbd-fuse to expose {pool}/{image}", interval=0.05)
        except (Fatal, Timeout) as exc:
            raise CsiError(str(exc)) from exc
        staging.loop = _run("losetup", "-f", "--show", str(staging.fuse_dir / image)).strip()
        blkid = subprocess.run(
            ["blkid", "-p", "-o", "value", "-s", "TYPE", staging.loop],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if not blkid.stdout.strip():
            _run(f"mkfs.{fs_type}", "-q", staging.loop)
        _run("mount", "-t", fs_type, staging.loop, str(staging.mount))

    def unstage(self, staging: Staging) -> None:
        """Clean NodeUnstageVolume: flush and unmount, detach, stop rbd-fuse, then unlock."""
        if os.path.ismount(staging.mount):
            _run("sync", "-f", str(staging.mount))
            _run("umount", str(staging.mount))
        if staging.loop:
            _run("losetup", "-d", staging.loop)
            wait_for(lambda: not _loop_busy(staging.loop), 30, f"{staging.loop} released")
            staging.loop = ""
        if staging.fuse is not None:
            stop(staging.fuse)  # rbd-fuse unmounts itself on SIGTERM
        clear_leftovers(staging.dir)
        self.unlock(staging)
        log.info("%s: unstaged %s", self.node, staging.dir.name)

    @staticmethod
    def unlock(staging: Staging) -> None:
        """Let the holder unlock and disconnect (a no-op if it is gone)."""
        if staging.holder.poll() is None:
            staging.holder.communicate("release\n", timeout=CEPH_TIMEOUT)


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        raise CsiError(f"{' '.join(argv[:2])} failed (rc {proc.returncode}): {proc.stderr}")
    return proc.stdout


def _loop_busy(device: str) -> bool:
    return Path(f"/sys/block/{Path(device).name}/loop/backing_file").exists()


def _leftovers(root: Path) -> tuple[list[str], list[str]]:
    """Mount points under ``root`` (deepest first) and loop devices backed by files there."""
    prefix = str(root.resolve())
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].encode().decode("unicode_escape")
        if target == prefix or target.startswith(prefix + "/"):
            mounts.append(target)
    listed = subprocess.run(
        ["losetup", "--list", "--json", "--output", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    ).stdout
    loops = [
        str(device["name"])
        for device in json.loads(listed or "{}").get("loopdevices", [])
        if (device.get("back-file") or "").startswith(prefix + "/")
    ]
    return sorted(mounts, key=len, reverse=True), loops


def clear_leftovers(root: Path) -> None:
    """Free the loop devices and lazily unmount what a killed node agent left under ``root``
    (a real node's mounts die with the node).  Loop devices go first: once the file system
    they read from is unmounted, their backing file no longer shows where it was."""
    mounts, loops = _leftovers(root)
    for device in loops:
        subprocess.run(["losetup", "-d", device], capture_output=True, timeout=30, check=False)
    for target in mounts:
        subprocess.run(["umount", "-l", target], capture_output=True, timeout=30, check=False)
