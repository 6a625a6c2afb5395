"""Volume provisioner: PVCs of the ``testbed-local`` StorageClass get a directory each, PVCs of
a ceph-csi RBD StorageClass an RBD image (through :mod:`testbed.cephcsi`).

Local PersistentVolumes are hostPath volumes without node affinity: every node of the test bed
shares this machine's filesystem, so a volume follows its pod to another node the way network
storage would, which is what pod-migration tests need.

Run as ``python -m testbed.provisioner --kubeconfig PATH --root DIR``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from testbed import cephcsi
from testbed.kube import Kube, Obj, volume_for

log = logging.getLogger("testbed.provisioner")
STORAGE_CLASSES = "/apis/storage.k8s.io/v1/storageclasses"
STORAGE_CLASS = "testbed-local"
PROVISIONER = "testbed.quorumkeeper.io/local"


class Provisioner:
    def __init__(self, api: Kube, root: Path) -> None:
        self.api, self.root = api, root
        self.rbd = cephcsi.Controller(api)
        self.stopping = threading.Event()

    def ensure_storage_class(self) -> None:
        body = {
            "metadata": {
                "name": STORAGE_CLASS,
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "Immediate",
        }
        self.api.ensure(STORAGE_CLASSES, body)

    def sync(self) -> None:
        classes = {
            sc["metadata"]["name"]: sc
            for sc in self.api.get(STORAGE_CLASSES)["items"]
            if sc["provisioner"] in (PROVISIONER, cephcsi.DRIVER)
        }
        for pvc in self.api.get("/api/v1/persistentvolumeclaims")["items"]:
            sc = classes.get(pvc["spec"].get("storageClassName") or "")
            if sc and pvc["status"].get("phase") == "Pending" and not pvc["spec"].get("volumeName"):
                if sc["provisioner"] == PROVISIONER:
                    self._provision(pvc, sc)
                else:
                    self._guarded(self.rbd.provision, pvc, sc)
        for pv in self.api.get("/api/v1/persistentvolumes")["items"]:
            annotations = pv["metadata"].get("annotations") or {}
            if pv["status"].get("phase") not in ("Released", "Failed") or (
                pv["spec"].get("persistentVolumeReclaimPolicy") != "Delete"
            ):
                continue
            by = annotations.get("pv.kubernetes.io/provisioned-by")
            if by == PROVISIONER:
                shutil.rmtree(pv["spec"]["hostPath"]["path"], ignore_errors=True)
                self.api.delete(f"/api/v1/persistentvolumes/{pv['metadata']['name']}")
                log.info("deleted %s", pv["metadata"]["name"])
            elif by == cephcsi.DRIVER:
                self._guarded(self.rbd.delete, pv)

    @staticmethod
    def _guarded(call: Callable[..., None], *objs: Obj) -> None:
        """A failing RBD call (Ceph absent or busy) is logged and retried next pass without
        holding up the other volumes."""
        try:
            call(*objs)
        except Exception:
            log.exception("%s of %s failed", call.__name__, objs[0]["metadata"]["name"])

    def _provision(self, pvc: Obj, sc: Obj) -> None:
        meta = pvc["metadata"]
        name = f"pvc-{meta['uid']}"
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        # hostPath volumes ignore a pod's fsGroup, so the folder is open to every pod user, as
        # local-path-provisioner makes its folders (0777): pods under restricted Pod Security
        # run as non-root and must be able to write their volume.
        path.chmod(0o777)
        body = volume_for(
            pvc,
            sc,
            {"pv.kubernetes.io/provisioned-by": PROVISIONER},
            {"hostPath": {"path": str(path), "type": "Directory"}},
        )
        self.api.ensure("/api/v1/persistentvolumes", body)
        log.info("provisioned %s for %s/%s", name, meta["namespace"], meta["name"])

    def run(self) -> None:
        self.ensure_storage_class()
        self.rbd.ensure_driver()
        while not self.stopping.wait(0.5):
            try:
                self.sync()
            except Exception:
                log.exception("provisioner sync failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--root", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    provisioner = Provisioner(Kube.from_kubeconfig(args.kubeconfig), args.root)
    signal.signal(signal.SIGTERM, lambda *_: provisioner.stopping.set())
    provisioner.run()


if __name__ == "__main__":
    main()
