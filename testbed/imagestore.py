"""The nodes' image store: every image archive imported and unpacked once, kept in the cache.

Importing the Debian-based images takes seconds per node and per run; instead a containerd root
holding all of them is built once (``python -m testbed.imagestore``, run by
``scripts/build-node.sh``) and each node starts from a hard-linked copy of it.  Content blobs and
unpacked snapshots are never written in place (a container writes to its own upper layer), so
links are safe; containerd's two bolt databases are written in place and are copied.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

import tomli_w

from testbed.procs import spawn, stop, wait_for
from testbed.versions import (
    CONTAINERD_VERSION,
    IMAGE_ARCHIVES,
    Binaries,
    debian_rootfs,
    images_dir,
)


def store_dir() -> Path:
    """The store for the current archives and containerd: a new one when either changes."""
    key = hashlib.sha256(CONTAINERD_VERSION.encode())
    for archive, names in sorted(IMAGE_ARCHIVES.items()):
        key.update(f"{archive.name} {archive.stat().st_size} {' '.join(names)}\n".encode())
    return images_dir() / f"store-{key.hexdigest()[:16]}"


def ctr(binaries: Binaries, socket: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``ctr`` in the CRI's namespace against the containerd at ``socket``."""
    return subprocess.run(
        [str(binaries.ctr), f"--address={socket}", "-n", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=False,
    )


def build(binaries: Binaries) -> Path:
    """Build the store unless it exists; returns its folder."""
    store = store_dir()
    if store.is_dir():
        return store
    partial = store.with_name(store.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="qk-store-") as state:
        socket = Path(state) / "containerd.sock"
        config = Path(state) / "config.toml"
        config.write_text(
            tomli_w.dumps(
                {
                    "version": 3,
                    "root": str(partial),
                    "state": str(Path(state) / "state"),
                    "grpc": {"address": str(socket)},
                    "ttrpc": {"address": f"{socket}.ttrpc"},
                    "disabled_plugins": ["io.containerd.grpc.v1.cri", "io.containerd.nri.v1.nri"],
                }
            )
        )
        containerd = spawn([binaries.containerd, f"--config={config}"], Path(state) / "log")
        try:
            wait_for(lambda: ctr(binaries, socket, "version").returncode == 0, 30, "containerd")
            for archive in sorted(IMAGE_ARCHIVES):
                result = ctr(binaries, socket, "images", "import", "--local", str(archive))
                if result.returncode != 0:
                    raise RuntimeError(f"importing {archive}: {result.stderr}")
        finally:
            stop(containerd)
    partial.rename(store)
    return store


def clone(binaries: Binaries, root: Path) -> None:
    """Make ``root`` a containerd root holding every image (building the store if needed)."""
    store = build(binaries)
    if subprocess.run(["cp", "-al", str(store), str(root)], check=False).returncode != 0:
        # Hard links need one file system; elsewhere (a state dir on tmpfs) copy instead.
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run(["cp", "-a", str(store), str(root)], check=True)
    for database in root.rglob("*.db"):
        copy = database.with_name(database.name + ".copy")
        shutil.copy2(database, copy)
        copy.replace(database)


def prune() -> list[Path]:
    """Remove earlier builds' archives, root file systems and stores from the images folder
    (nodes run on hard-linked copies, so a running test bed keeps what it uses); returns them."""
    keep = {*IMAGE_ARCHIVES, debian_rootfs(), store_dir()}
    stale = [p for p in images_dir().iterdir() if p not in keep]
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return stale


if __name__ == "__main__":
    print(build(Binaries.from_cache()))
    for path in prune():
        print(f"removed {path}")
