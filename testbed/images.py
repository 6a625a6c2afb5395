"""Image -> local command table: how the container runtime stand-in runs an image's processes.

Nothing here pulls images.  A container's image names an entry of :data:`IMAGES`; the entry says
which executables the image provides (each becomes a wrapper on the container's PATH, so commands
like ``etcdctl`` in probes and scripts work) and the image's default entrypoint.  Host tools such
as ``sh`` stay visible too, the way a base image would provide them.

To support another image, add an entry to :data:`IMAGES` below.  The ZooKeeper classpath comes
from the environment variable ``QUORUMKEEPER_ZOOKEEPER_CLASSPATH`` of the node agents (they
inherit it from the process that starts the test bed).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from testbed.versions import Binaries

ZOOKEEPER_CLASSPATH_ENV = "QUORUMKEEPER_ZOOKEEPER_CLASSPATH"
TOOLBOX_IMAGE = "quorumkeeper/testbed-toolbox"


class ImageError(Exception):
    """The image has no local command here (reported like an image pull error)."""


@dataclass(frozen=True)
class LocalImage:
    """What an image provides: executables by name (argv prefixes), default entrypoint and args."""

    executables: Callable[[], dict[str, list[str]]] = dict
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)


def _etcd() -> dict[str, list[str]]:
    binaries = Binaries.from_cache()
    return {"etcd": [str(binaries.etcd)], "etcdctl": [str(binaries.etcdctl)]}


def _zookeeper() -> dict[str, list[str]]:
    classpath = os.environ.get(ZOOKEEPER_CLASSPATH_ENV)
    if not classpath:
        raise ImageError(f"set {ZOOKEEPER_CLASSPATH_ENV} to run ZooKeeper images")
    java = shutil.which("java") or "java"
    return {
        "zookeeper-server": [
            java,
            "-cp",
            classpath,
            "org.apache.zookeeper.server.quorum.QuorumPeerMain",
        ],
        "java": [java],
    }


def _python() -> dict[str, list[str]]:
    return {"python": [sys.executable], "python3": [sys.executable]}


def _toolbox() -> dict[str, list[str]]:
    return {"toolbox": [sys.executable, str(Path(__file__).with_name("toolbox.py"))]}


_HOST_USERLAND = LocalImage(entrypoint=["sh"])

# Keys are image repositories without registry, tag or digest; a key without "/" also matches
# any repository whose last path component it is (quay.io/coreos/etcd -> "etcd").
IMAGES: dict[str, LocalImage] = {
    "etcd": LocalImage(executables=_etcd, entrypoint=["etcd"]),
    # Args are QuorumPeerMain's: the zoo.cfg path.
    "zookeeper": LocalImage(executables=_zookeeper, entrypoint=["zookeeper-server"]),
    "python": LocalImage(executables=_python, entrypoint=["python3"]),
    TOOLBOX_IMAGE: LocalImage(executables=_toolbox, entrypoint=["toolbox"]),
    "busybox": _HOST_USERLAND,
    "alpine": _HOST_USERLAND,
    "debian": _HOST_USERLAND,
    "ubuntu": _HOST_USERLAND,
}


def repository(image: str) -> str:
    """``docker.io/library/etcd:v3@sha256:..`` -> ``etcd``."""
    name = image.split("@", 1)[0]
    last_slash = name.rfind("/")
    if ":" in name[last_slash + 1 :]:
        name = name[: name.rfind(":")]
    for prefix in ("docker.io/", "index.docker.io/", "library/"):
        name = name.removeprefix(prefix)
    return name


def lookup(image: str) -> LocalImage:
    repo = repository(image)
    found = IMAGES.get(repo) or IMAGES.get(repo.rsplit("/", 1)[-1])
    if found is None:
        raise ImageError(f"no local command for image {image!r}; add it to testbed/images.py")
    return found
