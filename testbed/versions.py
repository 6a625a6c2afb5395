"""Pinned versions and cache paths of the test bed's binaries.

The versions live in ``versions.env`` so the build script and Python read the same pins.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from quorumkeeper import distributions

_ENV_FILE = Path(__file__).with_name("versions.env")


def _read_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in _ENV_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key] = value
    return pins


_PINS = _read_pins()
KUBERNETES_VERSION = _PINS["KUBERNETES_VERSION"]
COREDNS_VERSION = _PINS["COREDNS_VERSION"]
CONTAINERD_VERSION = _PINS["CONTAINERD_VERSION"]
RUNC_VERSION = _PINS["RUNC_VERSION"]
PAUSE_IMAGE = f"registry.k8s.io/pause:{_PINS['PAUSE_VERSION']}"
BUSYBOX_IMAGE = f"docker.io/library/busybox:{_PINS['BUSYBOX_VERSION']}"
# Debian's containernetworking-plugins (installed by scripts/build-node.sh).
CNI_DIR = Path("/usr/lib/cni")


def images_dir() -> Path:
    return distributions.cache_dir() / "images"


def _archive(image: str) -> Path:
    """``registry.k8s.io/pause:3.10.2`` -> ``<cache>/images/pause-3.10.2.tar`` (build-node.sh)."""
    repository, _, tag = image.rpartition(":")
    return images_dir() / f"{repository.rsplit('/', 1)[-1]}-{tag}.tar"


# Every image a node holds: full name -> OCI archive, imported into each node's containerd.
IMAGE_ARCHIVES = {image: _archive(image) for image in (PAUSE_IMAGE, BUSYBOX_IMAGE)}


@dataclass(frozen=True)
class Binaries:
    """Paths of every binary the test bed runs."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    coredns: Path
    etcd: Path
    etcdctl: Path
    kubelet: Path
    containerd: Path
    containerd_shim: Path
    ctr: Path
    runc: Path
    cni_dir: Path

    @classmethod
    def from_cache(cls) -> Binaries:
        root = distributions.cache_dir()
        kube = root / f"kubernetes-{KUBERNETES_VERSION}" / "bin"
        etcd = distributions.etcd_dir()
        containerd = root / f"containerd-{CONTAINERD_VERSION}" / "bin"
        return cls(
            kube_apiserver=kube / "kube-apiserver",
            kube_controller_manager=kube / "kube-controller-manager",
            kube_scheduler=kube / "kube-scheduler",
            kubectl=kube / "kubectl",
            coredns=root / f"coredns-{COREDNS_VERSION}" / "bin" / "coredns",
            etcd=etcd / "etcd",
            etcdctl=etcd / "etcdctl",
            kubelet=kube / "kubelet",
            containerd=containerd / "containerd",
            containerd_shim=containerd / "containerd-shim-runc-v2",
            ctr=containerd / "ctr",
            runc=root / f"runc-{RUNC_VERSION}" / "bin" / "runc",
            cni_dir=CNI_DIR,
        )

    def missing(self) -> list[Path]:
        """Binaries and image archives not built yet: run scripts/build-kubernetes.sh and
        scripts/build-node.sh to fill the cache."""
        paths = [p for p in vars(self).values() if not os.access(p, os.X_OK)]
        return paths + [p for p in IMAGE_ARCHIVES.values() if not p.is_file()]
