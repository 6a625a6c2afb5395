"""Pinned versions and cache paths of the test bed's binaries.

The versions live in ``versions.env`` so the build script and Python read the same pins.
"""

from __future__ import annotations

import hashlib
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from quorumkeeper import versions
from quorumkeeper.runtimes.local import distributions

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
DEBIAN_SUITE = _PINS["DEBIAN_SUITE"]
DEBIAN_PACKAGES = _PINS["DEBIAN_PACKAGES"]
# Debian's containernetworking-plugins (installed by scripts/build-node.sh).
CNI_DIR = Path("/usr/lib/cni")


def images_dir() -> Path:
    return distributions.cache_dir() / "images"


def etcdutl() -> Path:
    """etcdutl of the pinned etcd: the upstream etcd image carries it, quorumkeeper doesn't."""
    return distributions.cache_dir() / f"etcdutl-v{versions.ETCD_VERSION}" / "bin" / "etcdutl"


def csi_proto_dir() -> Path:
    """Python stubs of the CSI spec and kubelet's plugin registration API (build-node.sh)."""
    return distributions.cache_dir() / f"csi-proto-{KUBERNETES_VERSION}"


def debian_rootfs() -> Path:
    """The Debian root file system layer (a tar) the toolbox and ZooKeeper images start from."""
    packages = hashlib.sha256(DEBIAN_PACKAGES.encode()).hexdigest()[:8]
    return images_dir() / f"debian-{DEBIAN_SUITE}-{packages}-rootfs.tar"


def _toolbox_tag() -> str:
    """The toolbox image's tag: its server and its root file system's packages, so a change of
    either builds a new image."""
    content = Path(__file__).with_name("toolbox.py").read_bytes()
    return hashlib.sha256(content + debian_rootfs().name.encode()).hexdigest()[:12]


PAUSE_IMAGE = f"registry.k8s.io/pause:{_PINS['PAUSE_VERSION']}"
BUSYBOX_IMAGE = f"docker.io/library/busybox:{_PINS['BUSYBOX_VERSION']}"


def etcd_images(version: str) -> tuple[str, str]:
    """Upstream publishes etcd under both names; pods may use either."""
    return (f"quay.io/coreos/etcd:v{version}", f"gcr.io/etcd-development/etcd:v{version}")


def zookeeper_image(version: str) -> str:
    return f"docker.io/library/zookeeper:{version}"


ETCD_IMAGES = etcd_images(versions.ETCD_VERSION)
TOOLBOX_IMAGE = f"docker.io/quorumkeeper/testbed-toolbox:{_toolbox_tag()}"
ZOOKEEPER_IMAGE = zookeeper_image(versions.ZOOKEEPER_VERSION)
UPGRADED_FROM = {
    "etcd": versions.ETCD_PREVIOUS_VERSION,
    "zookeeper": versions.ZOOKEEPER_PREVIOUS_VERSION,
}
"""The releases the upgrade tests start from, beside the pinned ones on every node (the
previous minor of each store, `quorumkeeper.versions`)."""


def _archive(image: str) -> Path:
    """``registry.k8s.io/pause:3.10.2`` -> ``<cache>/images/pause-3.10.2.tar`` (build-node.sh)."""
    repository, _, tag = image.rpartition(":")
    return images_dir() / f"{repository.rsplit('/', 1)[-1]}-{tag}.tar"


# Every image archive a node holds: archive -> the names it carries.
IMAGE_ARCHIVES: dict[Path, tuple[str, ...]] = {
    _archive(image[0]): image
    for image in (
        (PAUSE_IMAGE,),
        (BUSYBOX_IMAGE,),
        ETCD_IMAGES,
        etcd_images(UPGRADED_FROM["etcd"]),
        (TOOLBOX_IMAGE,),
        (ZOOKEEPER_IMAGE,),
        (zookeeper_image(UPGRADED_FROM["zookeeper"]),),
    )
}


def shell_assignments() -> str:
    """Names and paths for scripts/build-node.sh, as shell assignments."""
    values = {
        "PAUSE_IMAGE": PAUSE_IMAGE,
        "PAUSE_ARCHIVE": _archive(PAUSE_IMAGE),
        "BUSYBOX_IMAGE": BUSYBOX_IMAGE,
        "BUSYBOX_ARCHIVE": _archive(BUSYBOX_IMAGE),
        "ETCD_VERSION": versions.ETCD_VERSION,
        "ETCD_PREVIOUS_VERSION": UPGRADED_FROM["etcd"],
        "ETCDUTL": etcdutl(),
        "DEBIAN_ROOTFS": debian_rootfs(),
        "TOOLBOX_IMAGE": TOOLBOX_IMAGE,
        "TOOLBOX_ARCHIVE": _archive(TOOLBOX_IMAGE),
        "ZOOKEEPER_VERSION": versions.ZOOKEEPER_VERSION,
        "ZOOKEEPER_PREVIOUS_VERSION": UPGRADED_FROM["zookeeper"],
    }
    # Per release: VAR_<version with _ for .>, so the script builds each image the same way.
    for version in (versions.ETCD_VERSION, UPGRADED_FROM["etcd"]):
        key = version.replace(".", "_")
        values[f"ETCD_DIR_{key}"] = distributions.etcd_dir(version)
        values[f"ETCD_IMAGES_{key}"] = " ".join(etcd_images(version))
        values[f"ETCD_ARCHIVE_{key}"] = _archive(etcd_images(version)[0])
    for version in (versions.ZOOKEEPER_VERSION, UPGRADED_FROM["zookeeper"]):
        key = version.replace(".", "_")
        values[f"ZOOKEEPER_LIB_{key}"] = distributions.zookeeper_lib_dir(version)
        values[f"ZOOKEEPER_IMAGE_{key}"] = zookeeper_image(version)
        values[f"ZOOKEEPER_ARCHIVE_{key}"] = _archive(zookeeper_image(version))
    return "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())


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
        stubs = csi_proto_dir() / "csi_pb2_grpc.py"
        return paths + [p for p in [*IMAGE_ARCHIVES, stubs] if not p.is_file()]


if __name__ == "__main__":
    print(shell_assignments(), end="")
