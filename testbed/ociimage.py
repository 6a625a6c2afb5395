"""Write an OCI image archive from local files, for nodes that have no registry to pull from.

``python -m testbed.ociimage --name registry.k8s.io/pause:3.10.2 [--name ...] --output pause.tar
--layer DIR_OR_TAR... [--entrypoint JSON] [--cmd JSON] [--env K=V...] [--user U] [--workdir D]``

The archive follows the OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256``) with
uncompressed layers; ``index.json`` lists the manifest once per name, each in
``io.containerd.image.name``, the name ``ctr images import`` gives it (containerd's archive
importer reads that annotation).
Layers are written reproducibly: sorted entries, owner root, times zero, unless ``--keep-owners``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"


def _walk(root: Path) -> Iterator[Path]:
    """Every path under ``root`` in a stable order, parents before children."""
    for directory, subdirectories, files in os.walk(root):
        subdirectories.sort()
        here = Path(directory)
        if here != root:
            yield here
        for name in sorted(files):
            yield here / name
        for name in subdirectories:
            if (here / name).is_symlink():
                yield here / name


def directory_layer(root: Path, output: Path, keep_owners: bool) -> None:
    """Tar ``root``'s contents as a layer rooted at ``/``; hard links stay hard links."""
    with tarfile.open(output, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk(root):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
            info.mtime = 0
            if not keep_owners:
                info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as content:
                    tar.addfile(info, content)
            else:
                tar.addfile(info)


def _blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _file_blob(blobs: Path, path: Path) -> dict[str, Any]:
    sha = hashlib.sha256()
    with open(path, "rb") as layer:
        for chunk in iter(lambda: layer.read(1 << 20), b""):
            sha.update(chunk)
    digest = sha.hexdigest()
    os.replace(path, blobs / digest)
    return {"digest": f"sha256:{digest}", "size": (blobs / digest).stat().st_size}


def write_archive(
    names: list[str],
    layers: list[Path],
    output: Path,
    image_config: dict[str, Any],
    keep_owners: bool = False,
) -> None:
    """Write the image named ``names`` (``registry/repository:tag`` each) made of ``layers``.

    A layer is a directory (tarred here) or an existing uncompressed tar file (used as is).
    ``image_config`` is the OCI config's ``config`` object (Entrypoint, Cmd, Env, User...).
    """
    with tempfile.TemporaryDirectory(dir=output.parent) as work:
        layout = Path(work) / "layout"
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)
        descriptors = []
        for number, layer in enumerate(layers):
            staged = Path(work) / f"layer-{number}.tar"
            if layer.is_dir():
                directory_layer(layer, staged, keep_owners)
            else:
                subprocess.run(["cp", layer, staged], check=True)
            descriptors.append({"mediaType": LAYER_MEDIA_TYPE, **_file_blob(blobs, staged)})
        config: dict[str, Any] = {
            "architecture": "amd64",
            "os": "linux",
            "config": image_config,
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descriptors]},
        }
        config_blob = _blob(blobs, json.dumps(config, sort_keys=True).encode())
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": {"mediaType": CONFIG_MEDIA_TYPE, **config_blob},
            "layers": descriptors,
        }
        manifest_blob = _blob(blobs, json.dumps(manifest, sort_keys=True).encode())
        index: dict[str, Any] = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": MANIFEST_MEDIA_TYPE,
                    **manifest_blob,
                    "annotations": {
                        "io.containerd.image.name": name,
                        "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                    },
                }
                for name in names
            ],
        }
        (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
        (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        partial = output.with_suffix(".partial")
        with tarfile.open(partial, "w") as tar:
            for path in [layout / "oci-layout", layout / "index.json", *sorted(blobs.iterdir())]:
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(layout)))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = stat.S_IMODE(info.mode)
                with open(path, "rb") as content:
                    tar.addfile(info, content)
        os.replace(partial, output)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", action="append", required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--layer", type=Path, action="append", required=True)
    parser.add_argument("--entrypoint", type=json.loads)
    parser.add_argument("--cmd", type=json.loads)
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--user")
    parser.add_argument("--workdir")
    parser.add_argument("--expose", action="append", default=[])
    parser.add_argument("--keep-owners", action="store_true")
    args = parser.parse_args()
    config: dict[str, Any] = {
        "Env": args.env or ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
    }
    for key, value in [
        ("Entrypoint", args.entrypoint),
        ("Cmd", args.cmd),
        ("User", args.user),
        ("WorkingDir", args.workdir),
    ]:
        if value is not None:
            config[key] = value
    if args.expose:
        config["ExposedPorts"] = {port: {} for port in args.expose}
    write_archive(args.name, args.layer, args.output, config, args.keep_owners)


if __name__ == "__main__":
    main()
