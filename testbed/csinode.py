"""Stand-in for ceph-csi's RBD node plugin: a CSI node plugin that kubelet drives over gRPC.

ceph-csi's node plugin maps images with krbd or rbd-nbd, neither of which exists here; this one
speaks the same CSI gRPC API on a unix socket and registers the same driver name
(``rbd.csi.ceph.com``) through kubelet's plugin registration API, as ceph-csi's
node-driver-registrar side-car does, then stages images with :class:`testbed.cephcsi.NodePlugin`
(the node's own Ceph client, rbd-fuse, a loop device and ext4).

* Registration (``<kubelet root>/plugins_registry/rbd.csi.ceph.com-reg.sock``): GetInfo names the
  driver, its CSI socket and the CSI version; kubelet then calls NodeGetInfo.
* Identity and Node services (``<kubelet root>/plugins/rbd.csi.ceph.com/csi.sock``): the node
  has STAGE_UNSTAGE_VOLUME; NodeStageVolume mounts the image's file system on kubelet's staging
  path, NodePublishVolume bind-mounts that into the pod's volume path; the reverse calls undo it.
  Errors are returned as gRPC INTERNAL with ceph-csi's kind of message, which kubelet puts into
  the pod's FailedMount event (e.g. ``rbd image k8s/csi-vol-... is locked by ...``).

It runs as ``python -m testbed.csinode --node NAME --kubelet-dir DIR --state-dir DIR --kubeconfig
PATH`` inside the node's network namespace, so Ceph sees its clients at the node's address.  The
kubeconfig is only used to read ceph-csi's ConfigMap (the monitors of a clusterID).  Protocol
sources: the CSI spec's ``csi.proto`` and kubelet's ``pluginregistration/v1/api.proto``, compiled
by ``scripts/build-node.sh`` from the versions kubelet is built with.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from testbed.cephcsi import DRIVER, NodePlugin, Staging, node_credentials
from testbed.kube import Kube
from testbed.versions import csi_proto_dir

# Compiled by scripts/build-node.sh into the cache, so mypy sees these modules as Any (see the
# override in pyproject.toml) and the servicers below subclass Any: hence their ignore[misc].
sys.path.insert(0, str(csi_proto_dir()))
import csi_pb2
import csi_pb2_grpc
import pluginregistration_pb2
import pluginregistration_pb2_grpc

log = logging.getLogger("testbed.csinode")
CSI_VERSION = "1.0.0"


def registration_socket(kubelet_dir: Path) -> Path:
    return kubelet_dir / "plugins_registry" / f"{DRIVER}-reg.sock"


def csi_socket(kubelet_dir: Path) -> Path:
    return kubelet_dir / "plugins" / DRIVER / "csi.sock"


def _mounted(path: Path) -> bool:
    return os.path.ismount(path)


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


class Registration(pluginregistration_pb2_grpc.RegistrationServicer):  # type: ignore[misc]
    """Kubelet's plugin watcher asks who we are, then tells whether it registered us."""

    def __init__(self, endpoint: Path) -> None:
        self.endpoint = endpoint

    def GetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pluginregistration_pb2.PluginInfo(
            type="CSIPlugin",
            name=DRIVER,
            endpoint=str(self.endpoint),
            supported_versions=[CSI_VERSION],
        )

    def NotifyRegistrationStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        if not request.plugin_registered:
            log.error("kubelet refused the registration: %s", request.error)
        return pluginregistration_pb2.RegistrationStatusResponse()


class Identity(csi_pb2_grpc.IdentityServicer):  # type: ignore[misc]
    def GetPluginInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginInfoResponse(name=DRIVER, vendor_version="testbed-stand-in")

    def GetPluginCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.GetPluginCapabilitiesResponse()  # a node plugin only: no controller

    def Probe(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.ProbeResponse()


class Node(csi_pb2_grpc.NodeServicer):  # type: ignore[misc]
    """The node service: stage and publish RBD volumes, idempotently as CSI requires."""

    def __init__(self, name: str, api: Kube, state_dir: Path) -> None:
        self.name, self.api = name, api
        self.plugin = NodePlugin(name, state_dir)
        self.staged: dict[str, Staging] = {}  # by volume id
        self.lock = threading.Lock()  # kubelet may call for different volumes at once

    def NodeGetInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
        return csi_pb2.NodeGetInfoResponse(node_id=self.name)

    def NodeGetCapabilities(self, request: Any, context: grpc.ServicerContext) -> Any:
        stage = csi_pb2.NodeServiceCapability.RPC.STAGE_UNSTAGE_VOLUME
        capability = csi_pb2.NodeServiceCapability(
            rpc=csi_pb2.NodeServiceCapability.RPC(type=stage)
        )
        return csi_pb2.NodeGetCapabilitiesResponse(capabilities=[capability])

    def NodeStageVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        volume, mount = request.volume_id, Path(request.staging_target_path)
        with self.lock:
            if volume in self.staged and _mounted(mount):
                return csi_pb2.NodeStageVolumeResponse()
            attributes = dict(request.volume_context)
            fs_type = request.volume_capability.mount.fs_type or "ext4"
            try:
                creds = node_credentials(self.api, dict(request.secrets), attributes["clusterID"])
                self.staged[volume] = self.plugin.stage(volume, creds, attributes, mount, fs_type)
            except Exception as exc:
                log.warning("%s: staging %s failed: %s", self.name, volume, exc)
                context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return csi_pb2.NodeStageVolumeResponse()

    def NodeUnstageVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        volume = request.volume_id
        with self.lock:
            staging = self.staged.pop(volume, None)
            try:
                if staging is not None:
                    self.plugin.unstage(staging)
                elif _mounted(Path(request.staging_target_path)):
                    _run("umount", request.staging_target_path)
            except Exception as exc:
                log.warning("%s: unstaging %s failed: %s", self.name, volume, exc)
                context.abort(grpc.StatusCode.INTERNAL, str(exc))
        return csi_pb2.NodeUnstageVolumeResponse()

    def NodePublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        target = Path(request.target_path)
        if not _mounted(target):
            target.mkdir(parents=True, exist_ok=True)
            _run("mount", "--bind", request.staging_target_path, str(target))
            if request.readonly:
                _run("mount", "-o", "remount,bind,ro", str(target))
        return csi_pb2.NodePublishVolumeResponse()

    def NodeUnpublishVolume(self, request: Any, context: grpc.ServicerContext) -> Any:
        target = Path(request.target_path)
        if _mounted(target):
            _run("umount", str(target))
        if target.is_dir():
            target.rmdir()
        return csi_pb2.NodeUnpublishVolumeResponse()


def _listen(server: grpc.Server, socket: Path) -> None:
    socket.parent.mkdir(parents=True, exist_ok=True)
    socket.unlink(missing_ok=True)
    server.add_insecure_port(f"unix://{socket}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node", required=True)
    parser.add_argument("--kubelet-dir", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    node = Node(args.node, Kube.from_kubeconfig(args.kubeconfig), args.state_dir)
    endpoint = csi_socket(args.kubelet_dir)
    csi = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    csi_pb2_grpc.add_IdentityServicer_to_server(Identity(), csi)
    csi_pb2_grpc.add_NodeServicer_to_server(node, csi)
    _listen(csi, endpoint)
    csi.start()
    # Registration last: kubelet calls the CSI socket as soon as it sees this one.
    registrar = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    pluginregistration_pb2_grpc.add_RegistrationServicer_to_server(
        Registration(endpoint), registrar
    )
    _listen(registrar, registration_socket(args.kubelet_dir))
    registrar.start()
    log.info("%s: serving %s at %s", args.node, DRIVER, endpoint)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    done.wait()
    registrar.stop(0)
    csi.stop(0)


if __name__ == "__main__":
    main()
