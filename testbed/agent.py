"""Node agent: the test bed's stand-in for kubelet and the container runtime of one node.

It registers a Node (labelled kubernetes.io/hostname), keeps it alive with a Lease and the Ready
condition, runs the pods bound to it as local processes through :mod:`testbed.runtime`, and
serves their logs on port 10250 of its loopback InternalIP (``kubectl logs``; exec and attach
are not served).
Stopping it (SIGTERM) or killing it (SIGKILL) kills its pods' processes and stops the heartbeats,
so the node controller marks the node NotReady: that is how tests simulate node loss.

Run as ``python -m testbed.agent --node NAME --index I --kubeconfig PATH --state-dir DIR``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import ipaddress
import logging
import platform
import signal
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from testbed import network
from testbed.kube import MERGE_PATCH, ApiError, Kube, Obj
from testbed.pki import self_signed
from testbed.runtime import NodeInfo, PodWorker, now
from testbed.versions import KUBERNETES_VERSION

log = logging.getLogger("testbed.agent")
LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
LEASE_RENEW_SECONDS = 2.0
STATUS_UPDATE_SECONDS = 10.0
SYNC_SECONDS = 0.5


KUBELET_PORT = 10250


def node_host_ip(index: int) -> str:
    """Each node's InternalIP: a loopback address of the test bed's 127.0.200.0/24 range."""
    return f"127.0.200.{10 + index}"


class NodeAgent:
    """Registers one node and runs its pods until stopped."""

    def __init__(self, node: NodeInfo, index: int, api: Kube) -> None:
        self.node, self.index, self.api = node, index, api
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.cidr = network.node_pod_cidr(index)
        self.node_uid = ""
        self.ip_cursor = 0

    # ---------------------------------------------------------------- node

    def register(self) -> None:
        body: Obj = {
            "metadata": {
                "name": self.node.name,
                "labels": {
                    "kubernetes.io/hostname": self.node.name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": {"podCIDR": str(self.cidr), "podCIDRs": [str(self.cidr)]},
        }
        try:
            created = self.api.create("/api/v1/nodes", body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            path = f"/api/v1/nodes/{self.node.name}"
            created = self.api.patch(path, {"metadata": body["metadata"]})
        self.node_uid = created["metadata"]["uid"]
        self.post_status()
        self.renew_lease()

    def post_status(self) -> None:
        t = now()

        def condition(kind: str, status: str, reason: str) -> Obj:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "lastHeartbeatTime": t,
                "message": "testbed node agent",
            }

        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", "ephemeral-storage": "100Gi"}
        status = {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID"),
                condition("Ready", "True", "KubeletReady"),
            ],
            # The second InternalIP is where the node's Ceph clients connect from.
            "addresses": [
                {"type": "InternalIP", "address": self.node.host_ip},
                {"type": "InternalIP", "address": network.node_storage_ip(self.index)},
                {"type": "Hostname", "address": self.node.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": KUBELET_PORT}},
            "nodeInfo": {
                "machineID": self.node.name,
                "systemUUID": self.node.name,
                "bootID": self.node_uid,
                "kernelVersion": platform.release(),
                "osImage": "quorumkeeper test bed",
                "containerRuntimeVersion": "testbed://" + KUBERNETES_VERSION,
                "kubeletVersion": KUBERNETES_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }
        # A merge patch replaces the lists: a strategic one merges addresses by type.
        self.api.patch(
            f"/api/v1/nodes/{self.node.name}/status", {"status": status}, content_type=MERGE_PATCH
        )

    def renew_lease(self) -> None:
        renew = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body: Obj = {
            "metadata": {
                "name": self.node.name,
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Node",
                        "name": self.node.name,
                        "uid": self.node_uid,
                    }
                ],
            },
            "spec": {
                "holderIdentity": self.node.name,
                "leaseDurationSeconds": 40,
                "renewTime": renew,
            },
        }
        try:
            self.api.patch(f"{LEASES}/{self.node.name}", body)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self.api.create(LEASES, body)

    def heartbeat(self) -> None:
        """Lease every 2 s and the Ready condition every 10 s, like kubelet's two heartbeats."""
        since_status = 0.0
        while not self.stopping.wait(LEASE_RENEW_SECONDS):
            try:
                self.renew_lease()
                since_status += LEASE_RENEW_SECONDS
                if since_status >= STATUS_UPDATE_SECONDS:
                    self.post_status()
                    since_status = 0.0
            except Exception:
                log.exception("heartbeat of %s failed", self.node.name)

    # ---------------------------------------------------------------- pods

    def sync(self) -> None:
        """Start workers for new pods, hand updates to running ones, drop vanished ones."""
        selector = f"spec.nodeName={self.node.name}"
        pods = self.api.get("/api/v1/pods", fieldSelector=selector)["items"]
        seen = set()
        # IPs recorded in the API stay reserved, e.g. for pods this agent re-adopts after a restart.
        reserved = {p.get("status", {}).get("podIP") for p in pods}
        for pod in pods:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            worker = self.workers.get(uid)
            if worker is None:
                if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and not pod[
                    "metadata"
                ].get("deletionTimestamp"):
                    continue  # finished before this agent started: nothing to run
                worker = PodWorker(self.api, self.node, pod, self._allocate_ip(pod, reserved))
                self.workers[uid] = worker
                worker.start()
            else:
                worker.update(pod)
        for uid, worker in list(self.workers.items()):
            if uid not in seen:
                worker.lost.set()  # force-deleted: kill without a grace period
            if worker.done:
                worker.join()
                del self.workers[uid]

    def _allocate_ip(self, pod: Obj, reserved: set[str | None]) -> str:
        """Keep a pod's IP across agent restarts, else take the node's next free one."""
        current = pod.get("status", {}).get("podIP")
        if current and ipaddress.ip_address(current) in self.cidr:
            return str(current)
        used = reserved | {w.pod_ip for w in self.workers.values()}
        # Round robin like CNI host-local IPAM: a fresh IP never meets a peer's stale ARP entry.
        hosts = [str(h) for h in self.cidr.hosts()][1:]
        for step in range(len(hosts)):
            candidate = hosts[(self.ip_cursor + step) % len(hosts)]
            if candidate not in used:
                self.ip_cursor = (self.ip_cursor + step + 1) % len(hosts)
                return candidate
        raise RuntimeError(f"pod CIDR {self.cidr} of {self.node.name} is exhausted")

    def container_log(self, path: str, query: dict[str, list[str]]) -> bytes | None:
        """Body of kubelet's ``/containerLogs/{ns}/{pod}/{container}``, the API behind
        ``kubectl logs`` (no ``--follow``); None when there is no such container."""
        parts = path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            return None
        _, namespace, pod, name = parts
        for worker in list(self.workers.values()):
            if (worker.namespace, worker.pod_name) != (namespace, pod):
                continue
            for c in worker.containers + worker.init_containers:
                if c.name == name:
                    previous = query.get("previous", ["false"])[0] == "true"
                    log_file = c.previous_log if previous else c.log
                    data = log_file.read_bytes() if log_file else b""
                    tail = query.get("tailLines")
                    if tail:
                        lines = data.splitlines(keepends=True)
                        data = b"".join(lines[-int(tail[0]) :]) if int(tail[0]) else b""
                    return data
        return None

    def serve_kubelet_api(self) -> ThreadingHTTPServer:
        """Serve container logs on the node's InternalIP, where the API server looks for them."""
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlparse(self.path)
                body = agent.container_log(url.path, parse_qs(url.query))
                self.send_response(404 if body is None else 200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(body if body is not None else b"not found\n")

            def log_message(self, format: str, *args: object) -> None:
                log.debug(format, *args)

        server = ThreadingHTTPServer((self.node.host_ip, KUBELET_PORT), Handler)
        cert, key = self_signed(self.node.state_dir / "pki", "kubelet", self.node.host_ip)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, name="kubelet-api", daemon=True).start()
        return server

    def run(self) -> None:
        server = self.serve_kubelet_api()
        self.register()
        beat = threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True)
        beat.start()
        while not self.stopping.wait(SYNC_SECONDS):
            try:
                self.sync()
            except Exception:
                log.exception("pod sync of %s failed", self.node.name)
        # Node loss: kill every container; API objects and Ceph locks stay as a dead node left them.
        for worker in self.workers.values():
            worker.node_lost = True
            worker.lost.set()
        for worker in self.workers.values():
            worker.join()
        beat.join()
        server.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--node", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--mountpoints-log", required=True, type=Path)
    parser.add_argument("--cluster-domain", default="cluster.local")
    parser.add_argument("--dns-ip", default=network.BRIDGE_IP)
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(threadName)s %(levelname)s %(message)s"
    )
    node = NodeInfo(
        name=args.node,
        host_ip=node_host_ip(args.index),
        state_dir=args.state_dir,
        mountpoints_log=args.mountpoints_log,
        cluster_domain=args.cluster_domain,
        dns_ip=args.dns_ip,
        storage_netns=network.create_node_storage_network(args.index),
    )
    agent = NodeAgent(node, args.index, Kube.from_kubeconfig(args.kubeconfig))
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    with contextlib.suppress(KeyboardInterrupt):
        agent.run()


if __name__ == "__main__":
    main()
