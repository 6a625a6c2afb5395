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

    @classmethod
    def from_cache(cls) -> Binaries:
        root = distributions.cache_dir()
        kube = root / f"kubernetes-{KUBERNETES_VERSION}" / "bin"
        etcd = distributions.etcd_dir()
        return cls(
            kube_apiserver=kube / "kube-apiserver",
            kube_controller_manager=kube / "kube-controller-manager",
            kube_scheduler=kube / "kube-scheduler",
            kubectl=kube / "kubectl",
            coredns=root / f"coredns-{COREDNS_VERSION}" / "bin" / "coredns",
            etcd=etcd / "etcd",
            etcdctl=etcd / "etcdctl",
        )

    def missing(self) -> list[Path]:
        """Binaries not built yet: run scripts/build-kubernetes.sh to fill the cache."""
        return [p for p in vars(self).values() if not os.access(p, os.X_OK)]
