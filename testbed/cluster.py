"""The whole test bed: pod bridge, control plane, volume provisioner and N real nodes."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from testbed import cephcsi, network
from testbed.controlplane import CLUSTER_DOMAIN, ControlPlane
from testbed.kube import Kube, Obj, condition_true
from testbed.node import Node, kill_leftovers, node_cgroup, remove_cgroups, unmount_under
from testbed.procs import Fatal, spawn, stop, wait_for
from testbed.versions import Binaries

REPO_ROOT = Path(__file__).resolve().parent.parent


def node_names(count: int) -> list[str]:
    return [f"node-{i}" for i in range(1, count + 1)]


@dataclass
class Cluster:
    """A running test bed; ``start()`` then ``stop()``, or use it as a context manager."""

    state_dir: Path
    node_count: int = 3
    binaries: Binaries = field(default_factory=Binaries.from_cache)
    control_plane: ControlPlane = field(init=False)
    running: dict[str, Node] = field(default_factory=dict)
    provisioner: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.control_plane = ControlPlane(self.state_dir, self.binaries)

    @property
    def kubeconfig(self) -> Path:
        return self.control_plane.kubeconfig

    @property
    def nodes(self) -> list[str]:
        return node_names(self.node_count)

    @property
    def mountpoints_log(self) -> Path:
        return self.state_dir / "created-mountpoints"

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def api(self) -> Kube:
        return Kube.from_kubeconfig(self.kubeconfig)

    def start(self, timeout: float = 90.0) -> None:
        missing = self.binaries.missing()
        if missing:
            raise FileNotFoundError(
                f"missing {', '.join(map(str, missing))}: run scripts/build-kubernetes.sh"
                " and scripts/build-node.sh"
            )
        try:
            for name in self.nodes:  # leftovers of a killed earlier run
                kill_leftovers(name, self.binaries)
            network.delete_node_networks()
            network.create_bridge()
            self.control_plane.start(timeout)
            self.provisioner = spawn(
                [
                    sys.executable,
                    "-m",
                    "testbed.provisioner",
                    f"--kubeconfig={self.kubeconfig}",
                    f"--root={self.state_dir / 'volumes'}",
                ],
                self.control_plane.logs / "provisioner.log",
                env=self._env(),
            )
            for name in self.nodes:
                self.start_node(name)
            self.wait_nodes_ready(self.nodes, timeout)
        except BaseException:
            self.stop()
            raise

    def _env(self) -> dict[str, str]:
        pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        return {**os.environ, "PYTHONPATH": pythonpath}

    def node(self, name: str) -> Node:
        """The node ``name`` (whether running or not)."""
        pki = self.control_plane.pki
        assert pki is not None, "the control plane is not started"
        return Node(
            name=name,
            index=self.nodes.index(name) + 1,
            state_dir=self.state_dir / "nodes" / name,
            server=self.control_plane.server,
            pki=pki,
            binaries=self.binaries,
            cluster_dns=network.BRIDGE_IP,
            cluster_domain=CLUSTER_DOMAIN,
            mountpoints_log=self.mountpoints_log,
            admin_kubeconfig=self.kubeconfig,
        )

    def start_node(self, name: str) -> None:
        """Start (or restart) node ``name``: its containerd and kubelet, its node IP on the
        bridge; a restart after :meth:`stop_node` finds its images and Node object still there."""
        cephcsi.clear_leftovers(self.state_dir / "nodes" / name)
        node = self.node(name)
        if not network.netns_path(network.node_netns(node.index)).exists():
            network.create_node_network(node.index)
        self.running[name] = node
        node.start()

    def stop_node(self, name: str, kill: bool = False) -> None:
        """Node loss: stop (or SIGKILL) kubelet, containerd, the shims and every process of the
        node's cgroups; the node controller then marks the Node NotReady."""
        self.running.pop(name).stop(kill=kill)

    def freeze_node(self, name: str, frozen: bool = True) -> None:
        """Hang node ``name`` (or let it go on): nothing on it runs, nothing on it dies."""
        self.running[name].freeze(frozen)

    def container_pid(self, pod: Obj, container: int = 0) -> int:
        """The host PID of the pod's ``container``-th container (running), for fault tests."""
        status = pod["status"]["containerStatuses"][container]
        runtime, _, container_id = status["containerID"].partition("://")
        assert runtime == "containerd", status["containerID"]
        return self.running[pod["spec"]["nodeName"]].container_pid(container_id)

    def node_ready(self, name: str) -> bool:
        return condition_true(self.api().get(f"/api/v1/nodes/{name}"), "Ready")

    def node_up(self, name: str) -> bool:
        """Ready, holding its Lease (kubelet creates it just after reporting Ready), and with
        the ceph-csi node plugin stand-in registered."""
        api = self.api()
        lease = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        drivers = api.get(f"/apis/storage.k8s.io/v1/csinodes/{name}")["spec"]["drivers"] or []
        return (
            self.node_ready(name)
            and api.get(lease)["spec"]["holderIdentity"] == name
            and cephcsi.DRIVER in {d["name"] for d in drivers}
        )

    def wait_nodes_ready(self, names: list[str], timeout: float) -> None:
        def ready() -> bool:
            for node in self.running.values():
                try:
                    node.check_alive()
                except RuntimeError as exc:
                    raise Fatal(str(exc)) from exc
            return all(self.node_up(n) for n in names)

        wait_for(ready, timeout, f"nodes {names} up", interval=0.5)

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the kubectl built with the control plane against this cluster."""
        return subprocess.run(
            [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            check=check,
            capture_output=True,
            text=True,
        )

    def stop(self) -> None:
        """Stop everything started here; remove its namespaces, links and mount points."""
        for name in list(self.running):
            self.stop_node(name)
        if self.provisioner is not None:
            stop(self.provisioner)
            self.provisioner = None
        self.control_plane.stop()
        cephcsi.clear_leftovers(self.state_dir / "nodes")
        unmount_under(self.state_dir / "nodes")
        for name in self.nodes:
            remove_cgroups(node_cgroup(name))
        network.delete_node_networks()
        network.delete_bridge()
        self._remove_mountpoints()

    def _remove_mountpoints(self) -> None:
        """Remove mount points the agents had to create on the host, if they are still empty."""
        if not self.mountpoints_log.exists():
            return
        paths = {Path(p) for p in self.mountpoints_log.read_text().splitlines() if p}
        for path in sorted(paths, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                if path.is_dir():
                    path.rmdir()
                elif path.stat().st_size == 0:
                    path.unlink()
        self.mountpoints_log.unlink()
